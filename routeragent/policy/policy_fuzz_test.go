package policy

import (
	"net/netip"
	"slices"
	"testing"
)

// FuzzEvaluate: for any received path (prefix, next hop, peer: any bytes,
// either family, mapped, zoned or invalid) under any LAN subnets, service
// subnets, own address and max-prefix limit, the decision never panics and:
//   - an accepted path is a host route (/32, /128) inside a service subnet
//     whose next hop is the announcing peer itself, on a LAN subnet and not
//     one of the router's own addresses;
//   - a rejected path has exactly one reason, from Reasons, and the reason
//     is the first failed check in the documented order (default route,
//     family, host route, service subnets, next hop = peer, next hop on the
//     LAN), every earlier check holding;
//   - Evaluate of n copies of the path (growing Seq) accepts exactly
//     min(n, limit) of them when Check accepts it and none otherwise, and
//     rejects the rest with max-prefixes or Check's reason: every path comes
//     out once;
//   - DesiredRoutes of the accepted paths is one route to the peer.
//
// Seeds: testdata/fuzz/FuzzEvaluate.
func FuzzEvaluate(f *testing.F) {
	type seed struct {
		prefix, nh, peer, lan, svc, local string
		bits                              uint8
		limit, n                          uint8
	}
	for _, s := range []seed{
		{"192.168.254.1", "192.168.2.20", "192.168.2.20", "192.168.2.0/24", "192.168.254.0/24", "192.168.2.1", 32, 2, 3},
		{"2001:db8:254::1", "2001:db8:2::20", "2001:db8:2::20", "2001:db8:2::/64", "2001:db8:254::/64", "2001:db8:2::1", 128, 0, 2},
		{"0.0.0.0", "192.168.2.20", "192.168.2.20", "192.168.2.0/24", "0.0.0.0/0", "192.168.2.1", 0, 1, 1},
		{"192.168.2.0", "192.168.2.20", "192.168.2.20", "192.168.2.0/24", "192.168.0.0/16", "192.168.2.1", 24, 1, 1},
		{"10.1.1.1", "192.168.2.20", "192.168.2.20", "192.168.2.0/24", "192.168.254.0/24", "192.168.2.1", 32, 1, 1},
		{"192.168.254.1", "192.168.2.21", "192.168.2.20", "192.168.2.0/24", "192.168.254.0/24", "192.168.2.1", 32, 1, 1},
		{"192.168.254.1", "192.168.2.1", "192.168.2.1", "192.168.2.0/24", "192.168.254.0/24", "192.168.2.1", 32, 1, 1},
		{"192.168.254.1", "::ffff:192.168.2.20", "192.168.2.20", "192.168.2.0/24", "192.168.254.0/24", "192.168.2.1", 32, 1, 1},
		{"::ffff:192.168.254.1", "192.168.2.20", "::ffff:192.168.2.20", "::ffff:192.168.2.0/120", "::ffff:192.168.254.0/120", "::", 128, 1, 1},
		{"fe80::1", "fe80::20%lan0", "fe80::20%lan0", "fe80::/64", "fe80::/64", "fe80::1", 128, 1, 1},
		{"192.168.254.1", "2001:db8:2::20", "2001:db8:2::20", "2001:db8:2::/64", "192.168.254.0/24", "", 32, 1, 1},
		{"", "", "", "", "", "", 255, 0, 0},
		{"192.168.2.20", "192.168.2.20", "192.168.2.20", "192.168.2.0/24", "192.168.2.0/24", "192.168.2.1", 32, 1, 1},
	} {
		f.Add(s.prefix, s.bits, s.nh, s.peer, s.lan, s.svc, s.local, s.limit, s.n)
	}
	f.Fuzz(func(t *testing.T, prefixAddr string, bits uint8, nhS, peerS, lanS, svcS, localS string, limit, n uint8) {
		// Unparsable text becomes the zero (invalid) value: the policy must
		// cope with those too.
		a, _ := netip.ParseAddr(prefixAddr)
		prefix, err := a.Prefix(int(bits))
		if err != nil {
			prefix = netip.PrefixFrom(a, int(bits)) // invalid, not masked
		}
		nh, _ := netip.ParseAddr(nhS)
		peer, _ := netip.ParseAddr(peerS)
		lan, _ := netip.ParsePrefix(lanS)
		svc, _ := netip.ParsePrefix(svcS)
		local, _ := netip.ParseAddr(localS)
		p := &Policy{
			ServiceSubnets: []netip.Prefix{svc},
			Connected:      []netip.Prefix{lan},
			Local:          []netip.Addr{local},
			MaxPrefixes:    func(netip.Addr) int { return int(limit) },
		}
		path := Path{Peer: peer, Prefix: prefix, NextHop: nh}
		r := p.Check(path)
		checkDecision(t, p, path, r)

		n %= 8
		paths := make([]Path, n)
		for i := range paths {
			paths[i] = path
			paths[i].Seq = uint64(i)
		}
		acc, rej := p.Evaluate(paths)
		if len(acc)+len(rej) != int(n) {
			t.Fatalf("%d paths in, %d accepted + %d rejected out", n, len(acc), len(rej))
		}
		want := 0
		if r == Accept {
			want = int(n)
			if limit > 0 && want > int(limit) {
				want = int(limit)
			}
		}
		if len(acc) != want {
			t.Fatalf("%s: %d of %d copies accepted (limit %d), want %d", r, len(acc), n, limit, want)
		}
		for _, rj := range rej {
			if rj.Reason != r && !(r == Accept && rj.Reason == RejectMaxPrefixes) {
				t.Fatalf("copy rejected with %q, Check said %q", rj.Reason, r)
			}
		}
		routes := DesiredRoutes(acc)
		if len(acc) > 0 {
			if nhs := routes[prefix.Masked()]; len(routes) != 1 || len(nhs) != 1 || nhs[0] != peer.Unmap() {
				t.Fatalf("routes of %d accepted copies: %v", len(acc), routes)
			}
		} else if len(routes) != 0 {
			t.Fatalf("routes without accepted paths: %v", routes)
		}
	})
}

// checkDecision checks one Check result against the properties an import
// decision must have, stated independently of Check's code.
func checkDecision(t *testing.T, p *Policy, path Path, r Reason) {
	t.Helper()
	pfx := path.Prefix.Masked()
	nh, peer := path.NextHop.Unmap(), path.Peer.Unmap()
	hostRoute := pfx.IsValid() && pfx.IsSingleIP()
	inService := slices.ContainsFunc(p.ServiceSubnets, func(s netip.Prefix) bool { return s.Contains(pfx.Addr()) })
	onLAN := slices.ContainsFunc(p.Connected, func(s netip.Prefix) bool { return s.Contains(nh) }) && !slices.Contains(p.Local, nh)
	if r == Accept {
		if !hostRoute || !inService || nh != peer || !onLAN {
			t.Fatalf("accepted %+v: host route %v, in a service subnet %v, next hop is the peer %v, on the LAN %v",
				path, hostRoute, inService, nh == peer, onLAN)
		}
		return
	}
	if !slices.Contains(Reasons, r) || r == RejectMaxPrefixes {
		t.Fatalf("Check gave %q, not one of its reasons", r)
	}
	// Each check in order: the reason is the first that fails.
	checks := []struct {
		reason Reason
		ok     bool
	}{
		{RejectDefaultRoute, pfx.Bits() != 0},
		{RejectFamilyMismatch, nh.IsValid() && nh.Is4() == pfx.Addr().Is4()},
		{RejectNotHostRoute, hostRoute},
		{RejectOutsideSubnets, inService},
		{RejectNextHopNotPeer, nh == peer},
		{RejectNextHopNotLAN, onLAN},
	}
	for _, c := range checks {
		if c.reason == r {
			if c.ok {
				t.Fatalf("%+v rejected as %q, but that check holds", path, r)
			}
			return
		}
		if !c.ok {
			t.Fatalf("%+v rejected as %q, but the earlier check %q fails", path, r, c.reason)
		}
	}
	t.Fatalf("%+v rejected as %q, which Check never returns", path, r)
}
