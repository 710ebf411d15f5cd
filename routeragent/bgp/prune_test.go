package bgp

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/bgplb/bgplb/routeragent/bgp/bgptest"
)

// TestPrefixLimit: a dynamic peer that sends more paths than PrefixLimit
// (acceptable or not: GoBGP counts before any policy) is torn down by
// GoBGP with a Cease, its paths dropped and the
// teardown reported; another peer keeps its session and path.
func TestPrefixLimit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	port := freePort(t)
	s := New(Config{
		ASN: 64500, RouterID: addr("127.0.0.1"), ListenAddresses: []string{"127.0.0.1"}, ListenPort: port, IPv4: true,
		Neighbors: []Neighbor{{Prefix: pfx("127.0.0.0/8"), ASN: 64512, HoldTime: 9 * time.Second, Keepalive: 3 * time.Second, PrefixLimit: 20}},
	}, testLogger())
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	var sp []*bgptest.Speaker
	for _, local := range []string{"127.0.0.6", "127.0.0.7"} {
		x, err := bgptest.Start(ctx, bgptest.Config{ASN: 64512, RouterID: local, Local: addr(local), Router: addr("127.0.0.1"),
			RouterASN: 64500, RouterPort: uint32(port)})
		if err != nil {
			t.Fatal(err)
		}
		defer x.Stop()
		sp = append(sp, x)
	}
	waitFor(t, "both sessions up", func() bool {
		up := 0
		for _, p := range s.Peers() {
			if p.Up {
				up++
			}
		}
		return up == 2
	})
	if err := sp[1].Announce(ctx, pfx("192.168.254.1/32"), netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	a := addr("10.0.0.0")
	for range 30 {
		if err := sp[0].Announce(ctx, netip.PrefixFrom(a, 32), netip.Addr{}); err != nil {
			t.Fatal(err)
		}
		a = a.Next()
	}
	var limited []netip.Addr
	waitFor(t, "the prefix-limit teardown", func() bool {
		limited = append(limited, s.PrefixLimitTeardowns()...)
		return len(limited) > 0
	})
	if limited[0] != addr("127.0.0.6") {
		t.Errorf("torn down: %v, want 127.0.0.6", limited)
	}
	waitFor(t, "the flooding peer's paths dropped", func() bool {
		for _, p := range s.Paths() {
			if p.Peer == addr("127.0.0.6") {
				return false
			}
		}
		return true
	})
	for _, p := range s.Peers() {
		if p.Address == addr("127.0.0.6") && p.Received > 20 {
			t.Errorf("flooding peer holds %d paths, limit 20", p.Received)
		}
	}
	if paths := s.Paths(); len(paths) < 1 || !sp[1].Established(ctx) {
		t.Errorf("the other peer lost its session or path: %v", paths)
	}
}
