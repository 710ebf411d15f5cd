package agent

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bgplb/bgplb/routeragent/pinning"
	"github.com/bgplb/bgplb/routeragent/policy"
)

// TestPassWorkIsOChanges counts what a pass does, not how long it takes:
// with 1,000 routes installed, a pass after one change decides the paths
// of that prefix only, reads no full path list, and plans one prefix; a
// pass with nothing changed does nothing at all. A peer reaching its
// maxPrefixes makes the pass full again (earliest paths win, a decision
// over all of them).
func TestPassWorkIsOChanges(t *testing.T) {
	sp := &fakeSpeaker{eor: map[netip.Addr]bool{pA: true, pB: true}}
	base := netip.MustParseAddr("192.168.254.1")
	var pfxs []netip.Prefix
	for a, i := base, 0; i < 200; a, i = a.Next(), i+1 {
		pfxs = append(pfxs, netip.PrefixFrom(a, 32))
		sp.paths = append(sp.paths, policy.Path{Peer: pA, NextHop: pA, Prefix: pfxs[i]})
	}
	rt := &fakeRoutes{}
	a := testAgent(t, sp, rt)
	a.reconcile(t.Context(), true)
	if len(rt.installed) != 200 || a.last.examined != 200 {
		t.Fatalf("first pass: %d installed, %d examined", len(rt.installed), a.last.examined)
	}
	reads, full := sp.fullReads, rt.fullPasses

	// Nothing changed: no work.
	a.reconcile(t.Context(), false)
	if sp.fullReads != reads || rt.fullPasses != full || rt.planned != 0 {
		t.Errorf("pass over unchanged state: %d full reads, %d full route passes, %d prefixes planned; want none",
			sp.fullReads-reads, rt.fullPasses-full, rt.planned)
	}

	// One more path for an existing prefix (ECMP) and one withdrawal.
	sp.paths = append(sp.paths[1:], policy.Path{Peer: pB, NextHop: pB, Prefix: pfxs[5]})
	a.reconcile(t.Context(), false)
	if sp.fullReads != reads || rt.fullPasses != full {
		t.Errorf("pass over two changes read every path (%d) or planned every route (%d)", sp.fullReads-reads, rt.fullPasses-full)
	}
	if a.last.examined != 2 || rt.planned != 2 {
		t.Errorf("pass over two changes: %d paths decided, %d prefixes planned; want 2, 2", a.last.examined, rt.planned)
	}
	if _, ok := rt.installed[pfxs[0]]; ok {
		t.Errorf("withdrawn %s still installed", pfxs[0])
	}
	if d := cmp.Diff([]netip.Addr{pA, pB}, rt.installed[pfxs[5]], cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); d != "" {
		t.Errorf("ECMP route (-want +got):\n%s", d)
	}
	st := a.Snapshot()
	if st.Prefix.Accepted != 200 || st.Routes.Installed != 199 {
		t.Errorf("status after incremental passes: %d accepted, %d installed; want 200, 199", st.Prefix.Accepted, st.Routes.Installed)
	}

	// A rejected path is decided and shown like in a full pass.
	sp.paths = append(sp.paths, policy.Path{Peer: pB, NextHop: pB, Prefix: netip.MustParsePrefix("10.0.0.1/32")})
	a.reconcile(t.Context(), false)
	if st := a.Snapshot(); st.Prefix.Rejected != 1 || st.Prefix.ByReason[policy.RejectOutsideSubnets] != 1 || sp.fullReads != reads {
		t.Errorf("rejection in an incremental pass: %+v (full reads %d)", st.Prefix, sp.fullReads-reads)
	}
}

// TestIncrementalFallsBackAtLimit: a change that takes a peer over its
// maxPrefixes is decided by a full pass (the earliest paths are kept).
func TestIncrementalFallsBackAtLimit(t *testing.T) {
	sp := &fakeSpeaker{eor: map[netip.Addr]bool{pA: true}}
	rt := &fakeRoutes{}
	a := testAgent(t, sp, rt)
	const limit = 3
	a.config().Neighbors[0].MaxPrefixes = limit
	addr := netip.MustParseAddr("192.168.254.1")
	for i := 0; i < limit; i, addr = i+1, addr.Next() {
		sp.paths = append(sp.paths, policy.Path{Peer: pA, NextHop: pA, Prefix: netip.PrefixFrom(addr, 32), Seq: uint64(i)})
	}
	a.reconcile(t.Context(), true)
	reads := sp.fullReads
	sp.paths = append(sp.paths, policy.Path{Peer: pA, NextHop: pA, Prefix: netip.PrefixFrom(addr, 32), Seq: uint64(limit)})
	a.reconcile(t.Context(), false)
	if sp.fullReads != reads+1 {
		t.Errorf("a peer over maxPrefixes was decided incrementally")
	}
	if _, ok := rt.installed[netip.PrefixFrom(addr, 32)]; ok {
		t.Errorf("the path over maxPrefixes was installed")
	}
}

func TestDecidePrefixes(t *testing.T) {
	lan := netip.MustParsePrefix("192.168.2.0/24")
	pol := &policy.Policy{ServiceSubnets: []netip.Prefix{netip.MustParsePrefix("192.168.254.0/24")}, Connected: []netip.Prefix{lan}}
	out := netip.MustParsePrefix("10.0.0.1/32")
	got, _ := decidePrefixes(pol, []netip.Prefix{svc1, svc2, out}, []policy.Path{
		{Peer: pB, NextHop: pB, Prefix: svc1},
		{Peer: pA, NextHop: pA, Prefix: svc1},
		{Peer: pA, NextHop: pA, Prefix: out},
		{Peer: pA, NextHop: pA, Prefix: netip.MustParsePrefix("192.168.254.9/32")}, // not asked for
	})
	want := []prefixDecision{
		{prefix: svc1, nextHops: []netip.Addr{pA, pB}},
		{prefix: svc2},
		{prefix: out, rejected: []policy.Rejected{{Path: policy.Path{Peer: pA, NextHop: pA, Prefix: out}, Reason: policy.RejectOutsideSubnets}}},
	}
	if d := cmp.Diff(want, got, cmp.AllowUnexported(prefixDecision{}), cmp.Comparer(func(x, y netip.Addr) bool { return x == y }),
		cmp.Comparer(func(x, y netip.Prefix) bool { return x == y })); d != "" {
		t.Errorf("decidePrefixes (-want +got):\n%s", d)
	}
}

// TestDeferResync: the periodic full pass waits while a bulk of route
// changes arrives (then the heap release runs it), but one interval at
// most; without a bulk it runs at once.
func TestDeferResync(t *testing.T) {
	a := &Agent{}
	if a.deferResync() {
		t.Fatal("deferred without a bulk")
	}
	a.churn = releaseAfterChanges
	if !a.deferResync() || !a.resyncLater {
		t.Fatal("not deferred during a bulk")
	}
	if a.deferResync() {
		t.Fatal("deferred a second interval: a constant bulk would never get its full pass")
	}
}

// pinsAfterRoutes is a fakePins that notes, at each Apply, whether the
// route it watches was already in the (fake) kernel.
type pinsAfterRoutes struct {
	fakePins
	rt           *fakeRoutes
	watch        netip.Prefix
	routeAtApply []bool
}

func (p *pinsAfterRoutes) Apply(subnets []netip.Prefix, pins []pinning.Pin, full bool) error {
	_, in := p.rt.installed[p.watch]
	p.routeAtApply = append(p.routeAtApply, in)
	return p.fakePins.Apply(subnets, pins, full)
}

// TestIncrementalRouteBeforePins: a route from a new next hop (a peer's
// first route, the benchmark's "one more route during the bulk") reaches
// the kernel before the pass applies the pins for that next hop, as in a
// full pass; the pins' nftables transaction and table reads (5-50 ms during
// a bulk) no longer delay the route.
func TestIncrementalRouteBeforePins(t *testing.T) {
	sp := &fakeSpeaker{eor: map[netip.Addr]bool{pA: true}}
	sp.paths = []policy.Path{{Peer: pA, NextHop: pA, Prefix: svc1}}
	rt := &fakeRoutes{}
	a := testAgent(t, sp, rt)
	pins := &pinsAfterRoutes{fakePins: fakePins{failed: map[netip.Addr]bool{}}, rt: rt, watch: svc2}
	a.deps.Pins = pins
	a.reconcile(t.Context(), true)

	pC := netip.MustParseAddr("192.168.2.22")
	sp.paths = append(sp.paths, policy.Path{Peer: pC, NextHop: pC, Prefix: svc2})
	reads := sp.fullReads
	a.reconcile(t.Context(), false)
	if sp.fullReads != reads {
		t.Fatal("the pass was not incremental")
	}
	if len(pins.routeAtApply) != 2 || !pins.routeAtApply[1] {
		t.Fatalf("pins applied %d times; route %s in the kernel at the incremental Apply: %v, want true",
			len(pins.routeAtApply), svc2, pins.routeAtApply)
	}
	if got := pins.pinned(); len(got) != 2 || got[1] != pC {
		t.Fatalf("pins after the incremental pass: %v, want %s and %s", got, pA, pC)
	}
}
