package agent

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/pinning"
	"github.com/bgplb/bgplb/routeragent/policy"
)

// fakePins records what the agent applies.
type fakePins struct {
	pins    []pinning.Pin
	subnets []netip.Prefix
	applies int
	removed int
	failed  map[netip.Addr]bool
	loaded  map[netip.Addr]int
}

func (f *fakePins) Apply(subnets []netip.Prefix, pins []pinning.Pin, _ bool) error {
	f.subnets, f.pins = subnets, pins
	f.applies++
	return nil
}

func (f *fakePins) Remove() error {
	f.pins = nil
	f.removed++
	return nil
}

func (f *fakePins) Failed(nhs []netip.Addr) (map[netip.Addr]bool, error) {
	out := map[netip.Addr]bool{}
	for _, nh := range nhs {
		if f.failed[nh] {
			out[nh] = true
		}
	}
	return out, nil
}

func (f *fakePins) Load() (map[netip.Addr]int, error) { return f.loaded, nil }

func (f *fakePins) pinned() []netip.Addr {
	var out []netip.Addr
	for _, p := range f.pins {
		out = append(out, p.NextHop)
	}
	return out
}

// TestPinsFollowPasses: a next hop stays pinned while it drains
// (GRACEFUL_SHUTDOWN: out of the route, still announced), lingers after
// its withdrawal, and goes at once when its neighbour failed or its BFD
// session is down; an incremental pass pins a new next hop; pinning
// turned off removes everything.
func TestPinsFollowPasses(t *testing.T) {
	sp := &fakeSpeaker{eor: map[netip.Addr]bool{pA: true, pB: true}}
	sp.paths = []policy.Path{{Peer: pA, NextHop: pA, Prefix: svc1}, {Peer: pB, NextHop: pB, Prefix: svc1}}
	rt := &fakeRoutes{}
	a := testAgent(t, sp, rt)
	pins := &fakePins{failed: map[netip.Addr]bool{}}
	a.deps.Pins = pins
	a.reconcile(t.Context(), true)
	if !slices.Equal(pins.pinned(), []netip.Addr{pA, pB}) {
		t.Fatalf("pins: %v", pins.pins)
	}
	if !slices.Equal(pins.subnets, []netip.Prefix{netip.MustParsePrefix("192.168.254.0/24")}) {
		t.Fatalf("subnets: %v", pins.subnets)
	}

	// pA drains: out of the route, still pinned.
	sp.paths[0].GracefulShutdown = true
	a.reconcile(t.Context(), false)
	if !slices.Equal(rt.installed[svc1], []netip.Addr{pB}) || !slices.Equal(pins.pinned(), []netip.Addr{pA, pB}) {
		t.Fatalf("draining: route %v, pins %v", rt.installed[svc1], pins.pins)
	}
	// pA withdraws (its last endpoint gone, or its speaker stopping): it
	// lingers (routes.pinLinger, 60 s by default).
	sp.paths = sp.paths[1:]
	a.reconcile(t.Context(), true)
	if !slices.Equal(pins.pinned(), []netip.Addr{pA, pB}) || a.pins.wake == nil {
		t.Fatalf("withdrawn: pins %v", pins.pins)
	}
	// Its neighbour entry failed: gone at once.
	pins.failed[pA] = true
	a.reconcile(t.Context(), true)
	if !slices.Equal(pins.pinned(), []netip.Addr{pB}) {
		t.Fatalf("neighbour failed: pins %v", pins.pins)
	}

	// A new next hop in an incremental pass is pinned at once.
	pC := netip.MustParseAddr("192.168.2.22")
	sp.paths = append(sp.paths, policy.Path{Peer: pC, NextHop: pC, Prefix: svc2})
	reads := sp.fullReads
	a.reconcile(t.Context(), false)
	if sp.fullReads != reads {
		t.Fatalf("the pass was not incremental")
	}
	if !slices.Equal(pins.pinned(), []netip.Addr{pB, pC}) {
		t.Fatalf("incremental: pins %v", pins.pins)
	}

	// pB's BFD session goes down: its paths leave, its pin too.
	a.bfd.down = map[netip.Addr]bool{pB: true}
	a.pins.announced = nil
	a.pinAfterFull(a.config(), []policy.Path{{Peer: pC, NextHop: pC, Prefix: svc2}}, nil, 0, true)
	if !slices.Equal(pins.pinned(), []netip.Addr{pC}) {
		t.Fatalf("BFD down: pins %v", pins.pins)
	}
	a.bfd.down = nil

	// Turned off by a reload: removed.
	off := *a.config()
	f := false
	off.Routes.PinConnections = &f
	a.mu.Lock()
	a.cfg = &off
	a.mu.Unlock()
	a.reconcile(t.Context(), true)
	if pins.removed != 1 || pins.pins != nil {
		t.Fatalf("off: removed %d, pins %v", pins.removed, pins.pins)
	}
}

// TestPinsResume: a restarted agent keeps the slots it finds in the kernel.
func TestPinsResume(t *testing.T) {
	sp := &fakeSpeaker{eor: map[netip.Addr]bool{pA: true, pB: true}}
	sp.paths = []policy.Path{{Peer: pA, NextHop: pA, Prefix: svc1}, {Peer: pB, NextHop: pB, Prefix: svc1}}
	a := testAgent(t, sp, &fakeRoutes{})
	pins := &fakePins{loaded: map[netip.Addr]int{pA: 7, pB: 3}}
	a.deps.Pins = pins
	a.resumePins()
	a.reconcile(t.Context(), true)
	if !slices.Equal(pins.pins, []pinning.Pin{{NextHop: pA, Slot: 7}, {NextHop: pB, Slot: 3}}) {
		t.Fatalf("pins after a restart: %v", pins.pins)
	}
}

func TestMaxPins(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want int
	}{
		{"neighbors: [{address: 192.168.2.5, asn: 1, allowUnauthenticated: true}]", 1},
		{"neighbors: [{prefix: 192.168.2.0/24, asn: 1, allowUnauthenticated: true}]\nmaxDynamicPeers: 10", 10},
		{"neighbors: [{prefix: 192.168.2.0/24, asn: 1, allowUnauthenticated: true}]", pinning.MaxSlots},
	} {
		cfg, err := config.Parse([]byte("asn: 64500\nrouterID: 192.168.2.1\nserviceSubnets: [192.168.254.0/24]\nlanInterfaces: [lan0]\n" + tc.yaml + "\n"))
		if err != nil {
			t.Fatal(err)
		}
		if got := maxPins(cfg); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.yaml, got, tc.want)
		}
	}
}

// TestAnnouncedOf: every next hop of the accepted paths, with its peer,
// however many and in whatever order; the stale routes' next hops too.
func TestAnnouncedOf(t *testing.T) {
	var accepted []policy.Path
	var want []netip.Addr
	for i := range 20 {
		nh := netip.AddrFrom4([4]byte{192, 168, 2, byte(100 + i)})
		want = append(want, nh)
		for j := range 3 {
			accepted = append(accepted, policy.Path{Peer: nh, NextHop: nh, Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, 254, byte(j)}), 32)})
		}
	}
	// Interleaved, as ECMP routes list them.
	slices.SortStableFunc(accepted, func(x, y policy.Path) int { return x.Prefix.Addr().Compare(y.Prefix.Addr()) })
	nhs, peers := announcedOf(accepted, map[netip.Prefix][]netip.Addr{svc1: {pA}}, 1)
	for _, nh := range append(want, pA) {
		if !nhs[nh] {
			t.Errorf("%s missing", nh)
		}
	}
	if len(nhs) != 21 || peers[want[5]] != want[5] {
		t.Errorf("got %d next hops, peer of %s %s", len(nhs), want[5], peers[want[5]])
	}
}
