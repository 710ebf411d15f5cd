package policy

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
)

func testPolicy() *Policy {
	return &Policy{
		ServiceSubnets: []netip.Prefix{pfx("192.168.254.0/24"), pfx("2001:db8:254::/64")},
		Connected:      []netip.Prefix{pfx("192.168.2.0/24"), pfx("2001:db8:2::/64")},
		Local:          []netip.Addr{addr("192.168.2.1"), addr("2001:db8:2::1")},
		MaxPrefixes:    func(netip.Addr) int { return 2 },
	}
}

func TestCheck(t *testing.T) {
	p := testPolicy()
	for _, tc := range []struct {
		name             string
		peer, nh, prefix string
		want             Reason
	}{
		{"accept v4", "192.168.2.20", "192.168.2.20", "192.168.254.1/32", Accept},
		{"accept v6", "2001:db8:2::20", "2001:db8:2::20", "2001:db8:254::1/128", Accept},
		{"default route", "192.168.2.20", "192.168.2.20", "0.0.0.0/0", RejectDefaultRoute},
		{"default route v6", "2001:db8:2::20", "2001:db8:2::20", "::/0", RejectDefaultRoute},
		{"the LAN itself", "192.168.2.20", "192.168.2.20", "192.168.2.0/24", RejectNotHostRoute},
		{"whole service subnet", "192.168.2.20", "192.168.2.20", "192.168.254.0/24", RejectNotHostRoute},
		{"outside subnets", "192.168.2.20", "192.168.2.20", "10.1.2.3/32", RejectOutsideSubnets},
		{"another peer's next hop", "192.168.2.20", "192.168.2.21", "192.168.254.1/32", RejectNextHopNotPeer},
		{"next hop off the LAN", "10.9.9.9", "10.9.9.9", "192.168.254.1/32", RejectNextHopNotLAN},
		{"next hop is the router", "192.168.2.1", "192.168.2.1", "192.168.254.1/32", RejectNextHopNotLAN},
		{"v4 prefix v6 next hop", "2001:db8:2::20", "2001:db8:2::20", "192.168.254.1/32", RejectFamilyMismatch},
		{"mapped peer address", "::ffff:192.168.2.20", "192.168.2.20", "192.168.254.1/32", Accept},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := p.Check(Path{Peer: addr(tc.peer), NextHop: addr(tc.nh), Prefix: pfx(tc.prefix)})
			if got != tc.want {
				t.Errorf("Check = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestEvaluateAndDesired(t *testing.T) {
	p := testPolicy()
	a, b := addr("192.168.2.20"), addr("192.168.2.21")
	in := []Path{
		{Peer: b, NextHop: b, Prefix: pfx("192.168.254.1/32"), Seq: 1},
		{Peer: a, NextHop: a, Prefix: pfx("192.168.254.1/32"), Seq: 2},
		{Peer: a, NextHop: a, Prefix: pfx("192.168.254.2/32"), Seq: 3},
		{Peer: a, NextHop: a, Prefix: pfx("192.168.254.3/32"), Seq: 4}, // over a's limit of 2
		{Peer: b, NextHop: a, Prefix: pfx("192.168.254.4/32"), Seq: 5}, // b announcing a's next hop
		{Peer: b, NextHop: b, Prefix: pfx("0.0.0.0/0"), Seq: 6},
	}
	acc, rej := p.Evaluate(in)
	wantAcc := []Path{in[1], in[2], in[0]}
	wantRej := []Rejected{
		{Path: in[3], Reason: RejectMaxPrefixes},
		{Path: in[5], Reason: RejectDefaultRoute},
		{Path: in[4], Reason: RejectNextHopNotPeer},
	}
	cmpAddr := cmp.Comparer(func(x, y netip.Addr) bool { return x == y })
	cmpPfx := cmp.Comparer(func(x, y netip.Prefix) bool { return x == y })
	if d := cmp.Diff(wantAcc, acc, cmpAddr, cmpPfx); d != "" {
		t.Errorf("accepted (-want +got):\n%s", d)
	}
	if d := cmp.Diff(wantRej, rej, cmpAddr, cmpPfx); d != "" {
		t.Errorf("rejected (-want +got):\n%s", d)
	}
	want := map[netip.Prefix][]netip.Addr{
		pfx("192.168.254.1/32"): {a, b},
		pfx("192.168.254.2/32"): {a},
	}
	if d := cmp.Diff(want, DesiredRoutes(acc), cmpAddr, cmpPfx); d != "" {
		t.Errorf("DesiredRoutes (-want +got):\n%s", d)
	}
}

func TestDesiredRoutesDedup(t *testing.T) {
	a := addr("192.168.2.20")
	got := DesiredRoutes([]Path{
		{Peer: a, NextHop: a, Prefix: pfx("192.168.254.9/32")},
		{Peer: a, NextHop: addr("::ffff:192.168.2.20"), Prefix: pfx("192.168.254.9/32")},
	})
	want := map[netip.Prefix][]netip.Addr{pfx("192.168.254.9/32"): {a}}
	if d := cmp.Diff(want, got, cmp.Comparer(func(x, y netip.Addr) bool { return x == y }),
		cmp.Comparer(func(x, y netip.Prefix) bool { return x == y })); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	if len(DesiredRoutes(nil)) != 0 {
		t.Error("DesiredRoutes(nil) not empty")
	}
}
