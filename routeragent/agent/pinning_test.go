package agent

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bgplb/bgplb/internal/netnstest"

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
	// The status shows both, pA lingering, pB announced.
	if ps := a.Snapshot().Pins; ps == nil || len(ps.Pinned) != 2 || ps.Pinned[0].NextHop != pA ||
		ps.Pinned[0].LingerUntil == nil || ps.Pinned[1].Withdrawn != nil || ps.Error != "" {
		t.Fatalf("status while pA lingers: %+v", ps)
	}
	got := gatherMetrics(t, a)
	for k, v := range map[string]float64{
		"bgplb_routeragent_pinned_next_hops{state=announced}": 1,
		"bgplb_routeragent_pinned_next_hops{state=lingering}": 1,
		"bgplb_routeragent_pin_overflow_next_hops{}":          0,
		"bgplb_routeragent_pins_applied{}":                    1,
	} {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
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
	if ps := a.Snapshot().Pins; ps != nil {
		t.Fatalf("status with pinning off: %+v", ps)
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

// pinAsk sends a line on c and returns the answering node's name.
func pinAsk(c net.Conn, r *bufio.Reader) (string, error) {
	if err := c.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
		return "", err
	}
	if _, err := c.Write([]byte("who\n")); err != nil {
		return "", err
	}
	s, err := r.ReadString('\n')
	return strings.TrimSpace(s), err
}

// TestPinningLab: the real agent (defaults: pinning on) with two GoBGP
// speakers announcing a /32 served on both, a client on the same LAN (the
// nodes answer it directly). Long-lived connections hashed over both next
// hops keep their node when s1 drains (GRACEFUL_SHUTDOWN: out of the route)
// and when it then withdraws (the linger), while new connections go to s2.
func TestPinningLab(t *testing.T) {
	l := newLab(t)
	s1ns := l.host(t, "s1", "192.168.2.20")
	s2ns := l.host(t, "s2", "192.168.2.21")
	client := l.host(t, "cl", "192.168.2.109")
	const vip, port = "192.168.254.7", "8080"
	addr := net.JoinHostPort(vip, port)
	for i, ns := range []*netnstest.NS{s1ns, s2ns} {
		ns.Exec("ip", "addr", "add", vip+"/32", "dev", "lo")
		netnstest.ServeName(t, ns, addr, fmt.Sprintf("s%d", i+1))
	}
	client.Exec("sysctl", "-qw", "net.ipv4.conf.all.accept_redirects=0", "net.ipv4.conf.eth0.accept_redirects=0")
	client.Exec("ip", "route", "add", vip, "via", "192.168.2.1")
	l.router.Exec("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=1")
	l.startAgent(t, l.writeConfig(t, "firewall: {mode: \"off\"}\n"))
	s1 := startSpeaker(t, s1ns, "192.168.2.20")
	s2 := startSpeaker(t, s2ns, "192.168.2.21")
	s1.do("up")
	s2.do("up")
	s1.do("announce " + vip + "/32")
	s2.do("announce " + vip + "/32")
	waitFor(t, "ECMP width 2", func() bool { return l.hasRoute(t, vip+"/32", "192.168.2.20", "192.168.2.21") })
	waitFor(t, "both next hops pinned", func() bool {
		out, err := l.router.Try("nft", "list", "set", "inet", pinning.NftTable, "live")
		return err == nil && strings.Contains(out, "0x01000000") && strings.Contains(out, "0x02000000")
	})

	type conn struct {
		c     net.Conn
		r     *bufio.Reader
		first string
	}
	var conns []conn
	count := map[string]int{}
	for i := 0; i < 64 && (i < 16 || count["s1"] == 0 || count["s2"] == 0); i++ {
		var c net.Conn
		if err := client.Do(func() (err error) {
			c, err = net.DialTimeout("tcp", addr, 2*time.Second)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		r := bufio.NewReader(c)
		who, err := pinAsk(c, r)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, conn{c, r, who})
		count[who]++
	}
	if count["s1"] == 0 || count["s2"] == 0 {
		t.Fatalf("connections did not reach both nodes: %v", count)
	}
	check := func(when string) {
		t.Helper()
		for i, c := range conns {
			if who, err := pinAsk(c.c, c.r); err != nil || who != c.first {
				t.Fatalf("connection %d (first on %s) %s: %q, %v", i, c.first, when, who, err)
			}
		}
		var c net.Conn
		if err := client.Do(func() (err error) {
			c, err = net.DialTimeout("tcp", addr, 2*time.Second)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if who, err := pinAsk(c, bufio.NewReader(c)); err != nil || who != "s2" {
			t.Fatalf("a new connection %s: %q, %v", when, who, err)
		}
	}

	s1.do("announce-gshut " + vip + "/32")
	waitFor(t, "s1 out of the route (GRACEFUL_SHUTDOWN)", func() bool { return l.hasRoute(t, vip+"/32", "192.168.2.21") })
	check("while s1 drains")
	s1.do("withdraw " + vip + "/32")
	waitFor(t, "s1's path gone", func() bool { return l.status(t).Prefix.Accepted == 1 })
	check("after s1 withdrew (lingering)")
	// The status says so once a full pass saw the withdrawal (the resync).
	waitFor(t, "status: s1 lingering, s2 announced", func() bool {
		ps := l.status(t).Pins
		return ps != nil && len(ps.Pinned) == 2 && ps.Pinned[0].NextHop.String() == "192.168.2.20" &&
			ps.Pinned[0].LingerUntil != nil && ps.Pinned[1].Withdrawn == nil
	})
}

// TestPinView: the status section from a decision (pure).
func TestPinView(t *testing.T) {
	w := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	st := pinning.State{Slots: map[netip.Addr]int{pA: 2, pB: 1}, Withdrawn: map[netip.Addr]time.Time{pA: w}}
	d := pinning.Decision{Pins: []pinning.Pin{{NextHop: pB, Slot: 1}, {NextHop: pA, Slot: 2}},
		Overflow: []netip.Addr{netip.MustParseAddr("192.168.2.99")}}
	v := pinView(st, d, time.Minute, errors.New("nft: no such table"))
	if len(v.Pinned) != 2 || v.Pinned[0].NextHop != pA || v.Pinned[0].Slot != 2 || v.Pinned[0].Mark != 2<<24 ||
		v.Pinned[0].Table != pinning.TableBase+2 || !v.Pinned[0].LingerUntil.Equal(w.Add(time.Minute)) ||
		v.Pinned[1].Withdrawn != nil || v.Overflow != 1 || v.Error != "nft: no such table" {
		t.Fatalf("view: %+v", v)
	}
}
