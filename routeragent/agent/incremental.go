package agent

import (
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/policy"
	"github.com/bgplb/bgplb/routeragent/routes"
)

// An incremental pass decides and programs only the prefixes whose paths
// changed since the last pass (Speaker.TakeChanges), so a bulk of n routes
// arriving over many coalesced signals costs O(n) in all, not O(n) per pass
// (issue 20: 100,000 routes made every pass walk, sort and diff 100,000
// paths while the next UPDATEs waited). It is exact only while every path is
// decided on its own (policy.Check): no peer at its maxPrefixes limit
// (which keeps a peer's earliest paths, a decision over all of them), no
// max-prefix hold-down, no routes kept from a previous run, the same
// configuration and LAN as the last full pass, and no next hop draining
// (GRACEFUL_SHUTDOWN): a draining next hop's path is accepted, and counts
// for its peer, but is left out of the route, so the route no longer tells
// the accepted paths; drains are rare and short, so those passes are full.
// Otherwise the pass is full.

// prefixDecision is what the policy made of the paths of one prefix.
type prefixDecision struct {
	prefix netip.Prefix
	// nextHops are the accepted paths' next hops, sorted, distinct, less
	// the draining ones while another remains (policy.NextHops; none: no
	// route).
	nextHops []netip.Addr
	rejected []policy.Rejected
}

// decidePrefixes decides every path of the changed prefixes on its own
// (paths holds every path now received for them). draining counts the next
// hops carrying GRACEFUL_SHUTDOWN (policy.NextHops). Pure.
func decidePrefixes(pol *policy.Policy, changed []netip.Prefix, paths []policy.Path) (ds []prefixDecision, draining int) {
	idx := make(map[netip.Prefix]int, len(changed))
	out := make([]prefixDecision, len(changed))
	for i, pfx := range changed {
		idx[pfx] = i
		out[i].prefix = pfx
	}
	// Draining paths are rare: set aside, so the common case appends next
	// hops directly (a slice of paths per prefix cost 2.5x the memory).
	var gshut map[int][]policy.Path
	for _, p := range paths {
		i, ok := idx[p.Prefix]
		if !ok {
			continue
		}
		d := &out[i]
		if r := pol.Check(p); r != policy.Accept {
			d.rejected = append(d.rejected, policy.Rejected{Path: p, Reason: r})
			continue
		}
		if p.GracefulShutdown {
			if gshut == nil {
				gshut = map[int][]policy.Path{}
			}
			gshut[i] = append(gshut[i], p)
			continue
		}
		if nh := p.NextHop.Unmap(); !slices.Contains(d.nextHops, nh) {
			d.nextHops = append(d.nextHops, nh)
		}
	}
	for i, ps := range gshut {
		for _, nh := range out[i].nextHops {
			ps = append(ps, policy.Path{Prefix: out[i].prefix, NextHop: nh})
		}
		var n int
		out[i].nextHops, n = policy.NextHops(ps)
		draining += n
	}
	for i := range out {
		slices.SortFunc(out[i].nextHops, netip.Addr.Compare)
	}
	return out, draining
}

// acceptedDelta is the change in accepted paths per peer that applying ds
// to fromBGP makes. An accepted path's next hop is its peer (policy.Check),
// so a route's next hops are the peers whose paths for it were accepted.
func acceptedDelta(fromBGP map[netip.Prefix][]netip.Addr, ds []prefixDecision) map[netip.Addr]int {
	delta := map[netip.Addr]int{}
	for _, d := range ds {
		for _, nh := range fromBGP[d.prefix] {
			delta[nh]--
		}
		for _, nh := range d.nextHops {
			delta[nh]++
		}
	}
	return delta
}

// overAnyLimit reports whether a peer would hold more accepted paths than
// its maxPrefixes after the delta.
func overAnyLimit(pol *policy.Policy, counts, delta map[netip.Addr]int) bool {
	for peer, d := range delta {
		if d <= 0 || pol.MaxPrefixes == nil {
			continue
		}
		if limit := pol.MaxPrefixes(peer); limit > 0 && counts[peer]+d > limit {
			return true
		}
	}
	return false
}

// incrementalOK reports whether the pass may be incremental (see above).
func (a *Agent) incrementalOK(cfg *config.Config, now time.Time) bool {
	if a.last.cfg != cfg || a.stale != nil || a.last.fromBGP == nil || a.last.overLimit || len(a.last.draining) > 0 {
		return false
	}
	a.recordPrefixLimitTeardowns(cfg, now)
	a.expireHoldDowns(cfg, now)
	return len(a.maxPfx.holdDown) == 0
}

// reconcileChanges is an incremental pass. It reports false, having changed
// nothing, when a full pass must be made instead (a peer reaches its limit).
func (a *Agent) reconcileChanges(cfg *config.Config, start time.Time) bool {
	changed, paths := a.deps.Speaker.TakeChanges()
	if len(changed) == 0 {
		return true
	}
	pol := a.policy(cfg)
	ds, draining := decidePrefixes(pol, changed, paths)
	if draining > 0 {
		return false // see above: a full pass instead
	}
	delta := acceptedDelta(a.last.fromBGP, ds)
	if overAnyLimit(pol, a.last.accepted, delta) {
		return false
	}
	rejectedChanged := a.applyDecisions(ds, delta, len(paths))
	if a.weights == nil {
		a.weights = routes.Weights{}
	}
	updateWeights(a.weights, pol, changed, paths)
	a.deps.Routes.SetWeights(a.weights)
	res := a.deps.Routes.ReconcileChanged(a.last.fromBGP, changed)
	a.afterRoutes(res, start)
	// The pins after the routes, as in a full pass: a new next hop's
	// first pin costs an nftables transaction and a read of the pin
	// tables (5-50 ms during a bulk), which the route waited for.
	a.pinIncremental(cfg, ds)
	a.mergeResult(res, changed)
	acc, rej := acceptedOf(ds)
	a.reportVerdicts(false, changed, acc, rej, outcomeOf(a.last.fromBGP, res))
	if rejectedChanged {
		a.logRejections(a.last.rejected)
	}
	return true
}

// applyDecisions writes the decisions into the last pass's routes, counts
// and rejections (under a.mu: Snapshot reads them). It reports whether the
// rejections changed.
func (a *Agent) applyDecisions(ds []prefixDecision, delta map[netip.Addr]int, examined int) (rejectedChanged bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := &a.last
	for _, d := range ds {
		if len(d.nextHops) > 0 {
			p.fromBGP[d.prefix] = d.nextHops
		} else {
			delete(p.fromBGP, d.prefix)
		}
		if len(d.rejected) > 0 || len(a.rejectedBy[d.prefix]) > 0 {
			rejectedChanged = true
		}
		if len(d.rejected) > 0 {
			a.rejectedBy[d.prefix] = d.rejected
		} else {
			delete(a.rejectedBy, d.prefix)
		}
	}
	for peer, d := range delta {
		p.nAccepted += d
		if p.accepted[peer] += d; p.accepted[peer] <= 0 {
			delete(p.accepted, peer)
		}
	}
	if rejectedChanged {
		p.rejected = flattenRejected(a.rejectedBy)
	}
	p.examined = examined
	p.at = time.Now()
	return rejectedChanged
}

// mergeResult keeps the conflicts and errors of the prefixes the pass did
// not look at, and takes the pass's own for those it did.
func (a *Agent) mergeResult(res routes.Result, changed []netip.Prefix) {
	set := make(map[netip.Prefix]bool, len(changed))
	for _, pfx := range changed {
		set[pfx] = true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	last := &a.last.res
	last.Conflicts = append(slices.DeleteFunc(last.Conflicts, func(c routes.Conflict) bool { return set[c.Prefix] }), res.Conflicts...)
	last.Errors = append(slices.DeleteFunc(last.Errors, func(e routes.PrefixError) bool { return set[e.Prefix] }), res.Errors...)
	sort.Slice(last.Conflicts, func(i, j int) bool { return last.Conflicts[i].Prefix.Addr().Less(last.Conflicts[j].Prefix.Addr()) })
	sort.Slice(last.Errors, func(i, j int) bool { return last.Errors[i].Prefix.Addr().Less(last.Errors[j].Prefix.Addr()) })
	last.Added, last.Replaced, last.Deleted, last.InstalledCount = res.Added, res.Replaced, res.Deleted, res.InstalledCount
}

// indexRejected keys a full pass's rejections by prefix.
func indexRejected(rejected []policy.Rejected) map[netip.Prefix][]policy.Rejected {
	out := map[netip.Prefix][]policy.Rejected{}
	for _, r := range rejected {
		out[r.Path.Prefix] = append(out[r.Path.Prefix], r)
	}
	return out
}

// flattenRejected lists the rejections sorted by peer, then prefix, as
// policy.Evaluate returns them.
func flattenRejected(by map[netip.Prefix][]policy.Rejected) []policy.Rejected {
	var out []policy.Rejected
	for _, rs := range by {
		out = append(out, rs...)
	}
	sort.Slice(out, func(i, j int) bool {
		x, y := out[i].Path, out[j].Path
		if c := x.Peer.Compare(y.Peer); c != 0 {
			return c < 0
		}
		if c := x.Prefix.Addr().Compare(y.Prefix.Addr()); c != 0 {
			return c < 0
		}
		return x.Prefix.Bits() < y.Prefix.Bits()
	})
	return out
}

// deferResync reports whether the periodic full pass (routes.resyncInterval)
// waits for the end of the bulk of route changes in progress: the heap
// release a second after its last change runs it. A full pass re-reads
// every route from the kernel and decides every path; in the middle of a
// bulk of 100,000 routes it took 13 % of the agent's CPU and held every
// other change back for its length (issue 20). It waits one interval at
// most: the next tick runs it even while changes still pour in. Link
// events and errors still get their full pass at once.
func (a *Agent) deferResync() bool {
	if a.churn >= releaseAfterChanges && !a.resyncLater {
		a.resyncLater = true
		return true
	}
	return false
}
