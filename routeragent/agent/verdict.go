package agent

import (
	"net/netip"
	"slices"

	"github.com/bgplb/bgplb/internal/verdict"
	"github.com/bgplb/bgplb/routeragent/bgp"
	"github.com/bgplb/bgplb/routeragent/policy"
	"github.com/bgplb/bgplb/routeragent/routes"
)

// The router's verdicts (docs/verdict.md): after every pass the agent tells
// each speaker, per path it announced, what the pass made of it, and the
// speaker turns that into a condition on its Services. The decision is pure
// (decideVerdicts); sending is the speaker's (bgp.Speaker.SetVerdicts),
// which only records and signals, so a pass never waits for it.

// verdictSink receives the verdicts of a pass. bgp.Speaker implements it; a
// Speaker that does not (the tests' fakes) reports nothing.
type verdictSink interface {
	SetVerdicts(full bool, prefixes []netip.Prefix, vs []bgp.VerdictPath)
}

// verdictReporter says what each peer is sent (bgp.Speaker implements it).
type verdictReporter interface {
	VerdictReports() map[netip.Addr]bgp.VerdictReport
}

// verdictReports returns what each established peer is sent, nil when the
// speaker does not report verdicts.
func (a *Agent) verdictReports() map[netip.Addr]bgp.VerdictReport {
	r, ok := a.deps.Speaker.(verdictReporter)
	if !ok {
		return nil
	}
	return r.VerdictReports()
}

// routeOutcome is what the kernel pass did with the prefixes.
type routeOutcome struct {
	// desired are the routes the kernel has after the pass, unless the
	// prefix is in conflicts (a foreign route holds it) or errors (the
	// kernel refused it; retried).
	desired           map[netip.Prefix][]netip.Addr
	conflicts, errors map[netip.Prefix]bool
}

func outcomeOf(desired map[netip.Prefix][]netip.Addr, res routes.Result) routeOutcome {
	o := routeOutcome{desired: desired}
	for _, c := range res.Conflicts {
		if o.conflicts == nil {
			o.conflicts = map[netip.Prefix]bool{}
		}
		o.conflicts[c.Prefix] = true
	}
	for _, e := range res.Errors {
		if o.errors == nil {
			o.errors = map[netip.Prefix]bool{}
		}
		o.errors[e.Prefix] = true
	}
	return o
}

// decideVerdicts decides the verdict on every accepted and rejected path.
// A rejected path carries its policy reason and the width of the route the
// other speakers' paths make, if any; an accepted one is installed when
// the kernel has its prefix's route (via its own next hop or not: a
// draining next hop is left out while another remains), rejected when a
// foreign route holds the prefix, pending otherwise. Pure.
func decideVerdicts(accepted []policy.Path, rejected []policy.Rejected, o routeOutcome) []bgp.VerdictPath {
	out := make([]bgp.VerdictPath, 0, len(accepted)+len(rejected))
	width := func(pfx netip.Prefix) int {
		if o.conflicts[pfx] || o.errors[pfx] {
			return 0
		}
		return len(o.desired[pfx])
	}
	for _, r := range rejected {
		out = append(out, bgp.VerdictPath{Peer: r.Path.Peer, Prefix: r.Path.Prefix, Verdict: verdict.Verdict{
			State: verdict.Rejected, Reason: string(r.Reason), Width: width(r.Path.Prefix),
		}})
	}
	for _, p := range accepted {
		pfx := p.Prefix
		var v verdict.Verdict
		switch nhs := o.desired[pfx]; {
		case o.conflicts[pfx]:
			v = verdict.Verdict{State: verdict.Rejected, Reason: "route-conflict"}
		case o.errors[pfx]:
			v = verdict.Verdict{State: verdict.Pending, Reason: "route-error"}
		case len(nhs) == 0:
			v = verdict.Verdict{State: verdict.Pending}
		default:
			v = verdict.Verdict{State: verdict.Installed, Width: len(nhs), Via: slices.Contains(nhs, p.NextHop.Unmap())}
			if !v.Via {
				v.Reason = "draining"
			}
		}
		out = append(out, bgp.VerdictPath{Peer: p.Peer, Prefix: pfx, Verdict: v})
	}
	return out
}

// acceptedOf lists the accepted paths of incremental decisions: an
// accepted path's next hop is its peer (policy.Check), so a prefix's next
// hops are the peers whose paths were accepted (no next hop drains in an
// incremental pass).
func acceptedOf(ds []prefixDecision) (accepted []policy.Path, rejected []policy.Rejected) {
	for _, d := range ds {
		for _, nh := range d.nextHops {
			accepted = append(accepted, policy.Path{Peer: nh, Prefix: d.prefix, NextHop: nh})
		}
		rejected = append(rejected, d.rejected...)
	}
	return accepted, rejected
}

// reportVerdicts hands a pass's verdicts to the speaker: every verdict for
// a full pass (full), those of the changed prefixes otherwise.
func (a *Agent) reportVerdicts(full bool, changed []netip.Prefix, accepted []policy.Path, rejected []policy.Rejected, o routeOutcome) {
	sink, ok := a.deps.Speaker.(verdictSink)
	if !ok {
		return
	}
	sink.SetVerdicts(full, changed, decideVerdicts(accepted, rejected, o))
}
