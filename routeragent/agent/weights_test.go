package agent

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bgplb/bgplb/routeragent/policy"
	"github.com/bgplb/bgplb/routeragent/routes"
)

func TestWeights(t *testing.T) {
	p1, p2 := netip.MustParsePrefix("192.168.254.1/32"), netip.MustParsePrefix("192.168.254.2/32")
	path := func(pfx netip.Prefix, nh netip.Addr, bw float32) policy.Path {
		return policy.Path{Peer: nh, Prefix: pfx, NextHop: nh, Bandwidth: bw}
	}
	w := weightsOf([]policy.Path{path(p1, pA, 375000), path(p1, pB, 125000), path(p2, pA, 0)})
	want := routes.Weights{p1: {pA: 375000, pB: 125000}}
	if d := cmp.Diff(want, w); d != "" {
		t.Fatalf("weightsOf (-want +got):\n%s", d)
	}
	// An incremental pass redoes the changed prefixes from their paths,
	// leaving out those the policy rejects (a next hop not on the LAN).
	pol := &policy.Policy{ServiceSubnets: []netip.Prefix{netip.MustParsePrefix("192.168.254.0/24")},
		Connected: []netip.Prefix{netip.MustParsePrefix("192.168.2.0/24")}}
	outside := netip.MustParseAddr("10.0.0.1")
	updateWeights(w, pol, []netip.Prefix{p1, p2}, []policy.Path{path(p1, pA, 250000), path(p1, pB, 250000), path(p2, outside, 1)})
	want = routes.Weights{p1: {pA: 250000, pB: 250000}}
	if d := cmp.Diff(want, w); d != "" {
		t.Fatalf("updateWeights (-want +got):\n%s", d)
	}
}
