package agent

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bgplb/bgplb/internal/verdict"
	"github.com/bgplb/bgplb/routeragent/bgp"
	"github.com/bgplb/bgplb/routeragent/policy"
	"github.com/bgplb/bgplb/routeragent/routes"
)

// verdictSpeaker is fakeSpeaker that keeps the verdicts as
// bgp.Speaker.SetVerdicts does (full: replace all; otherwise replace those
// of the given prefixes).
type verdictSpeaker struct {
	fakeSpeaker
	verdicts map[verdictKey]verdict.Verdict
	calls    int
}

type verdictKey struct {
	peer   netip.Addr
	prefix netip.Prefix
}

func (f *verdictSpeaker) SetVerdicts(full bool, prefixes []netip.Prefix, vs []bgp.VerdictPath) {
	f.calls++
	if f.verdicts == nil || full {
		f.verdicts = map[verdictKey]verdict.Verdict{}
	}
	for _, p := range prefixes {
		for k := range f.verdicts {
			if k.prefix == p {
				delete(f.verdicts, k)
			}
		}
	}
	for _, v := range vs {
		f.verdicts[verdictKey{v.Peer, v.Prefix}] = v.Verdict
	}
}

func checkVerdicts(t *testing.T, what string, got, want map[verdictKey]verdict.Verdict) {
	t.Helper()
	if d := cmp.Diff(want, got, cmp.AllowUnexported(verdictKey{}), cmp.Comparer(func(x, y netip.Addr) bool { return x == y }),
		cmp.Comparer(func(x, y netip.Prefix) bool { return x == y })); d != "" {
		t.Errorf("%s: verdicts (-want +got):\n%s", what, d)
	}
}

// TestVerdictsFollowPasses: full and incremental passes report, per path,
// installed with the width of the kernel route, or rejected with the
// policy's reason; a new ECMP member updates every speaker's width, a
// withdrawn path loses its verdict, and a foreign route in the kernel is a
// rejection.
func TestVerdictsFollowPasses(t *testing.T) {
	sp := &verdictSpeaker{fakeSpeaker: fakeSpeaker{eor: map[netip.Addr]bool{pA: true, pB: true}}}
	outside := netip.MustParsePrefix("10.1.1.1/32")
	sp.paths = []policy.Path{
		{Peer: pA, NextHop: pA, Prefix: svc1},
		{Peer: pA, NextHop: pA, Prefix: outside},
	}
	rt := &fakeRoutes{foreign: map[netip.Prefix]bool{}}
	a := testAgent(t, &sp.fakeSpeaker, rt)
	a.deps.Speaker = sp // the same fake, with SetVerdicts

	a.reconcile(t.Context(), true)
	checkVerdicts(t, "full pass", sp.verdicts, map[verdictKey]verdict.Verdict{
		{pA, svc1}:    {State: verdict.Installed, Width: 1, Via: true},
		{pA, outside}: {State: verdict.Rejected, Reason: string(policy.RejectOutsideSubnets)},
	})

	// B joins svc1 (incremental): both speakers read width 2.
	sp.paths = append(sp.paths, policy.Path{Peer: pB, NextHop: pB, Prefix: svc1})
	a.reconcile(t.Context(), false)
	if rt.fullPasses != 1 {
		t.Fatalf("the change was not an incremental pass (%d full passes)", rt.fullPasses)
	}
	checkVerdicts(t, "incremental pass", sp.verdicts, map[verdictKey]verdict.Verdict{
		{pA, svc1}:    {State: verdict.Installed, Width: 2, Via: true},
		{pB, svc1}:    {State: verdict.Installed, Width: 2, Via: true},
		{pA, outside}: {State: verdict.Rejected, Reason: string(policy.RejectOutsideSubnets)},
	})

	// A withdraws the rejected prefix; a foreign route takes svc2, which B
	// announces.
	rt.foreign[svc2] = true
	sp.paths = []policy.Path{{Peer: pA, NextHop: pA, Prefix: svc1}, {Peer: pB, NextHop: pB, Prefix: svc1}, {Peer: pB, NextHop: pB, Prefix: svc2}}
	a.reconcile(t.Context(), false)
	checkVerdicts(t, "withdrawal and conflict", sp.verdicts, map[verdictKey]verdict.Verdict{
		{pA, svc1}: {State: verdict.Installed, Width: 2, Via: true},
		{pB, svc1}: {State: verdict.Installed, Width: 2, Via: true},
		{pB, svc2}: {State: verdict.Rejected, Reason: "route-conflict"},
	})

	// A full pass decides the same.
	a.reconcile(t.Context(), true)
	checkVerdicts(t, "full pass again", sp.verdicts, map[verdictKey]verdict.Verdict{
		{pA, svc1}: {State: verdict.Installed, Width: 2, Via: true},
		{pB, svc1}: {State: verdict.Installed, Width: 2, Via: true},
		{pB, svc2}: {State: verdict.Rejected, Reason: "route-conflict"},
	})
}

func TestDecideVerdicts(t *testing.T) {
	accepted := []policy.Path{
		{Peer: pA, NextHop: pA, Prefix: svc1},
		{Peer: pB, NextHop: pB, Prefix: svc1}, // draining: left out of the route
		{Peer: pA, NextHop: pA, Prefix: svc2}, // the kernel refused it
	}
	rejected := []policy.Rejected{{Path: policy.Path{Peer: pB, NextHop: pA, Prefix: svc1}, Reason: policy.RejectNextHopNotPeer}}
	o := outcomeOf(map[netip.Prefix][]netip.Addr{svc1: {pA}, svc2: {pA}}, routes.Result{Errors: []routes.PrefixError{{Prefix: svc2}}})
	got := decideVerdicts(accepted, rejected, o)
	want := []bgp.VerdictPath{
		{Peer: pB, Prefix: svc1, Verdict: verdict.Verdict{State: verdict.Rejected, Reason: "next-hop-not-peer", Width: 1}},
		{Peer: pA, Prefix: svc1, Verdict: verdict.Verdict{State: verdict.Installed, Width: 1, Via: true}},
		{Peer: pB, Prefix: svc1, Verdict: verdict.Verdict{State: verdict.Installed, Width: 1, Reason: "draining"}},
		{Peer: pA, Prefix: svc2, Verdict: verdict.Verdict{State: verdict.Pending, Reason: "route-error"}},
	}
	if d := cmp.Diff(want, got, cmp.Comparer(func(x, y netip.Addr) bool { return x == y }), cmp.Comparer(func(x, y netip.Prefix) bool { return x == y })); d != "" {
		t.Errorf("verdicts (-want +got):\n%s", d)
	}
}
