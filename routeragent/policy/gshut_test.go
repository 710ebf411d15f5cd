package policy

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var (
	cmpAddr = cmp.Comparer(func(x, y netip.Addr) bool { return x == y })
	cmpPfx  = cmp.Comparer(func(x, y netip.Prefix) bool { return x == y })
)

func TestNextHopsGracefulShutdown(t *testing.T) {
	a, b, c := addr("192.168.2.20"), addr("192.168.2.21"), addr("192.168.2.22")
	p := pfx("192.168.254.1/32")
	path := func(nh netip.Addr, gshut bool) Path {
		return Path{Peer: nh, NextHop: nh, Prefix: p, GracefulShutdown: gshut}
	}
	for _, tc := range []struct {
		name         string
		paths        []Path
		want         []netip.Addr
		wantDraining int
	}{
		{"none", nil, nil, 0},
		{"no draining", []Path{path(b, false), path(a, false)}, []netip.Addr{a, b}, 0},
		{"one of two draining leaves", []Path{path(a, true), path(b, false)}, []netip.Addr{b}, 1},
		{"two of three draining leave", []Path{path(c, true), path(a, true), path(b, false)}, []netip.Addr{b}, 2},
		{"the last one stays", []Path{path(a, true)}, []netip.Addr{a}, 1},
		{"all draining all stay", []Path{path(b, true), path(a, true)}, []netip.Addr{a, b}, 2},
		{"draining twice counted once", []Path{path(a, true), path(a, true), path(b, false)}, []netip.Addr{b}, 1},
		{"same next hop also announced plainly stays", []Path{path(a, true), {Peer: b, NextHop: a, Prefix: p}}, []netip.Addr{a}, 0},
		{"mapped v4 next hop", []Path{path(addr("::ffff:192.168.2.20"), true), path(b, false)}, []netip.Addr{b}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, draining := NextHops(tc.paths)
			if d := cmp.Diff(tc.want, got, cmpAddr); d != "" {
				t.Errorf("next hops (-want +got):\n%s", d)
			}
			if draining != tc.wantDraining {
				t.Errorf("draining = %d, want %d", draining, tc.wantDraining)
			}
		})
	}
}

// DesiredRoutes and NextHops decide alike, prefix by prefix.
func TestDesiredRoutesGracefulShutdown(t *testing.T) {
	a, b := addr("192.168.2.20"), addr("192.168.2.21")
	p1, p2, p3 := pfx("192.168.254.1/32"), pfx("192.168.254.2/32"), pfx("192.168.254.3/32")
	got, draining := DesiredRoutesDraining([]Path{
		{Peer: a, NextHop: a, Prefix: p1, GracefulShutdown: true},
		{Peer: b, NextHop: b, Prefix: p1},
		{Peer: a, NextHop: a, Prefix: p2, GracefulShutdown: true},
		{Peer: b, NextHop: b, Prefix: p3, GracefulShutdown: true},
		{Peer: a, NextHop: a, Prefix: p3, GracefulShutdown: true},
	})
	want := map[netip.Prefix][]netip.Addr{p1: {b}, p2: {a}, p3: {a, b}}
	if d := cmp.Diff(want, got, cmpAddr, cmpPfx); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	if d := cmp.Diff(map[netip.Prefix]int{p1: 1, p2: 1, p3: 2}, draining, cmpPfx); d != "" {
		t.Errorf("draining (-want +got):\n%s", d)
	}
	if _, draining := DesiredRoutesDraining([]Path{{Peer: a, NextHop: a, Prefix: p1}}); draining != nil {
		t.Errorf("draining without GRACEFUL_SHUTDOWN = %v, want nil", draining)
	}
}
