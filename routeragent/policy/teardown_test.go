package policy

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestOverLimitAndExclude(t *testing.T) {
	a, b := netip.MustParseAddr("192.168.2.20"), netip.MustParseAddr("192.168.2.21")
	path := func(peer netip.Addr, pfx string, seq uint64) Path {
		return Path{Peer: peer, Prefix: netip.MustParsePrefix(pfx), NextHop: peer, Seq: seq}
	}
	pol := &Policy{
		ServiceSubnets: []netip.Prefix{netip.MustParsePrefix("192.168.254.0/24")},
		Connected:      []netip.Prefix{netip.MustParsePrefix("192.168.2.0/24")},
		MaxPrefixes:    func(netip.Addr) int { return 2 },
	}
	acc, rej := pol.Evaluate([]Path{
		path(a, "192.168.254.1/32", 1), path(a, "192.168.254.2/32", 2), path(a, "192.168.254.3/32", 3),
		path(b, "192.168.254.1/32", 4), path(b, "10.0.0.1/32", 5),
	})
	over := OverLimit(rej)
	if d := cmp.Diff(map[netip.Addr]bool{a: true}, over); d != "" {
		t.Fatalf("OverLimit (-want +got):\n%s", d)
	}
	acc, rej = Exclude(acc, rej, over)
	if d := cmp.Diff([]Path{path(b, "192.168.254.1/32", 4)}, acc, cmp.Comparer(func(x, y netip.Addr) bool { return x == y }),
		cmp.Comparer(func(x, y netip.Prefix) bool { return x == y })); d != "" {
		t.Errorf("accepted after Exclude (-want +got):\n%s", d)
	}
	var got []string
	for _, r := range rej {
		got = append(got, r.Path.Peer.String()+" "+r.Path.Prefix.String()+" "+string(r.Reason))
	}
	want := []string{
		"192.168.2.20 192.168.254.1/32 max-prefixes", "192.168.2.20 192.168.254.2/32 max-prefixes",
		"192.168.2.20 192.168.254.3/32 max-prefixes", "192.168.2.21 10.0.0.1/32 outside-service-subnets",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("rejected after Exclude (-want +got):\n%s", d)
	}
}
