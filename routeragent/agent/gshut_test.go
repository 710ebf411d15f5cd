package agent

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bgplb/bgplb/routeragent/policy"
)

// TestGracefulShutdown: two real GoBGP speakers announce a /32 (ECMP width
// 2 in the router's kernel). One re-announces it with GRACEFUL_SHUTDOWN
// (RFC 8326, 65535:0): its next hop leaves the route while the other
// remains. The other withdraws: the draining next hop is the last and is
// installed again. The other announces again and the first drops
// GRACEFUL_SHUTDOWN: back to width 2.
func TestGracefulShutdown(t *testing.T) {
	l := newLab(t)
	s1ns := l.host(t, "s1", "192.168.2.20")
	s2ns := l.host(t, "s2", "192.168.2.21")
	l.startAgent(t, l.writeConfig(t, "firewall: {mode: \"off\"}\n"))
	s1 := startSpeaker(t, s1ns, "192.168.2.20")
	s2 := startSpeaker(t, s2ns, "192.168.2.21")
	s1.do("up")
	s2.do("up")
	const vip = "192.168.254.7/32"
	s1.do("announce " + vip)
	s2.do("announce " + vip)
	waitFor(t, "ECMP width 2", func() bool { return l.hasRoute(t, vip, "192.168.2.20", "192.168.2.21") })

	s1.do("announce-gshut " + vip)
	waitFor(t, "the draining next hop gone, the other kept", func() bool { return l.hasRoute(t, vip, "192.168.2.21") })
	// The kernel has the route a moment before the pass is recorded (with
	// a nexthop group it changes first, then the route's pass ends).
	waitFor(t, "status routes.draining 1", func() bool { return l.status(t).Routes.Draining == 1 })

	s2.do("withdraw " + vip)
	waitFor(t, "the draining next hop installed again as the last", func() bool { return l.hasRoute(t, vip, "192.168.2.20") })

	s2.do("announce " + vip)
	waitFor(t, "the draining next hop left again", func() bool { return l.hasRoute(t, vip, "192.168.2.21") })
	s1.do("announce " + vip)
	waitFor(t, "back to ECMP width 2", func() bool { return l.hasRoute(t, vip, "192.168.2.20", "192.168.2.21") })
	waitFor(t, "status routes.draining 0", func() bool { return l.status(t).Routes.Draining == 0 })
}

func TestDecidePrefixesGracefulShutdown(t *testing.T) {
	lan := netip.MustParsePrefix("192.168.2.0/24")
	pol := &policy.Policy{ServiceSubnets: []netip.Prefix{netip.MustParsePrefix("192.168.254.0/24")}, Connected: []netip.Prefix{lan}}
	for _, tc := range []struct {
		name         string
		paths        []policy.Path
		want         []netip.Addr
		wantDraining int
	}{
		{"both plain", []policy.Path{{Peer: pB, NextHop: pB, Prefix: svc1}, {Peer: pA, NextHop: pA, Prefix: svc1}}, []netip.Addr{pA, pB}, 0},
		{"one draining leaves", []policy.Path{{Peer: pB, NextHop: pB, Prefix: svc1}, {Peer: pA, NextHop: pA, Prefix: svc1, GracefulShutdown: true}}, []netip.Addr{pB}, 1},
		{"the last stays", []policy.Path{{Peer: pA, NextHop: pA, Prefix: svc1, GracefulShutdown: true}}, []netip.Addr{pA}, 1},
		{"all draining stay", []policy.Path{{Peer: pB, NextHop: pB, Prefix: svc1, GracefulShutdown: true}, {Peer: pA, NextHop: pA, Prefix: svc1, GracefulShutdown: true}}, []netip.Addr{pA, pB}, 2},
		{"a rejected plain path does not push a draining one out", []policy.Path{{Peer: pA, NextHop: pA, Prefix: svc1, GracefulShutdown: true}, {Peer: pB, NextHop: pA, Prefix: svc1}}, []netip.Addr{pA}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ds, draining := decidePrefixes(pol, []netip.Prefix{svc1}, tc.paths)
			if d := cmp.Diff(tc.want, ds[0].nextHops, cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); d != "" {
				t.Errorf("next hops (-want +got):\n%s", d)
			}
			if draining != tc.wantDraining {
				t.Errorf("draining = %d, want %d", draining, tc.wantDraining)
			}
		})
	}
}

// TestGracefulShutdownPasses: with fakes, a re-announcement that only adds
// GRACEFUL_SHUTDOWN changes the route; passes are full while a next hop
// drains (the accepted counts stay those of a full pass), incremental again
// after.
func TestGracefulShutdownPasses(t *testing.T) {
	sp := &fakeSpeaker{eor: map[netip.Addr]bool{pA: true, pB: true}}
	sp.paths = []policy.Path{{Peer: pA, NextHop: pA, Prefix: svc1}, {Peer: pB, NextHop: pB, Prefix: svc1}}
	rt := &fakeRoutes{}
	a := testAgent(t, sp, rt)
	a.reconcile(t.Context(), true)
	eq := cmp.Comparer(func(x, y netip.Addr) bool { return x == y })
	if d := cmp.Diff([]netip.Addr{pA, pB}, rt.installed[svc1], eq); d != "" {
		t.Fatalf("ECMP route (-want +got):\n%s", d)
	}

	reads := sp.fullReads
	sp.paths[0].GracefulShutdown = true
	a.reconcile(t.Context(), false)
	if d := cmp.Diff([]netip.Addr{pB}, rt.installed[svc1], eq); d != "" {
		t.Errorf("route with pA draining (-want +got):\n%s", d)
	}
	if sp.fullReads != reads+1 {
		t.Errorf("a draining next hop was decided incrementally (%d full reads)", sp.fullReads-reads)
	}
	st := a.Snapshot()
	if st.Routes.Draining != 1 || st.Prefix.Accepted != 2 {
		t.Errorf("status while draining: %d draining, %d accepted; want 1, 2", st.Routes.Draining, st.Prefix.Accepted)
	}
	if len(st.Routes.List) != 1 || st.Routes.List[0].Draining != 1 {
		t.Errorf("route status while draining: %+v; want %s with 1 draining", st.Routes.List, svc1)
	}

	sp.paths = sp.paths[:1] // pB withdraws: the draining pA is the last
	a.reconcile(t.Context(), false)
	if d := cmp.Diff([]netip.Addr{pA}, rt.installed[svc1], eq); d != "" {
		t.Errorf("route with only pA, draining (-want +got):\n%s", d)
	}

	sp.paths = []policy.Path{{Peer: pA, NextHop: pA, Prefix: svc1}, {Peer: pB, NextHop: pB, Prefix: svc1}}
	a.reconcile(t.Context(), false) // full: the last pass had a draining next hop
	reads = sp.fullReads
	sp.paths = append(sp.paths, policy.Path{Peer: pA, NextHop: pA, Prefix: svc2})
	a.reconcile(t.Context(), false)
	if sp.fullReads != reads {
		t.Errorf("no next hop draining, yet the pass was full")
	}
	if d := cmp.Diff([]netip.Addr{pA, pB}, rt.installed[svc1], eq); d != "" {
		t.Errorf("ECMP route after the drain (-want +got):\n%s", d)
	}
	if st := a.Snapshot(); st.Routes.Draining != 0 || st.Prefix.Accepted != 3 {
		t.Errorf("status after the drain: %d draining, %d accepted; want 0, 3", st.Routes.Draining, st.Prefix.Accepted)
	}
}
