package bgp

import (
	"context"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"

	"github.com/bgplb/bgplb/routeragent/bgp/bgptest"
)

func peerEvent(a string, st api.PeerState_SessionState, admin api.PeerState_AdminState) *api.WatchEventResponse {
	return &api.WatchEventResponse{Event: &api.WatchEventResponse_Peer{Peer: &api.WatchEventResponse_PeerEvent{
		Type: api.WatchEventResponse_PeerEvent_STATE,
		Peer: &api.Peer{State: &api.PeerState{NeighborAddress: a, PeerAsn: 64512, SessionState: st, AdminState: admin}},
	}}}
}

func pathEvent(t *testing.T, peer, prefix string, withdraw bool) *api.WatchEventResponse {
	t.Helper()
	p := pfx(prefix)
	nlri := bgp.NewIPAddrPrefix(uint8(p.Bits()), p.Addr().String())
	attrs := []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(0), bgp.NewPathAttributeNextHop(peer)}
	path, err := apiutil.NewPath(nlri, withdraw, attrs, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	path.NeighborIp = peer
	return &api.WatchEventResponse{Event: &api.WatchEventResponse_Table{Table: &api.WatchEventResponse_TableEvent{Paths: []*api.Path{path}}}}
}

func peerAddrs(s *Speaker) []string {
	var out []string
	for _, p := range s.Peers() {
		out = append(out, p.Address.String()+" "+p.State)
	}
	return out
}

// TestDynamicPeersPruned: a dynamic peer's entry goes when its session is
// gone and it has no path left (in either order); an address: neighbour's
// entry stays; a prefix-limit teardown is reported once.
func TestDynamicPeersPruned(t *testing.T) {
	s := New(Config{Neighbors: []Neighbor{
		{Prefix: pfx("192.0.2.1/32"), Single: true, ASN: 64512},
		{Prefix: pfx("192.0.2.0/24"), ASN: 64512},
	}}, testLogger())
	steps := []struct {
		ev   *api.WatchEventResponse
		want []string
	}{
		{peerEvent("192.0.2.1", api.PeerState_ESTABLISHED, api.PeerState_UP), []string{"192.0.2.1 established"}},
		{peerEvent("192.0.2.9", api.PeerState_ESTABLISHED, api.PeerState_UP), []string{"192.0.2.1 established", "192.0.2.9 established"}},
		{pathEvent(t, "192.0.2.9", "192.168.254.1/32", false), []string{"192.0.2.1 established", "192.0.2.9 established"}},
		// Down with a path left (a graceful restart keeps it stale): kept.
		{peerEvent("192.0.2.9", api.PeerState_IDLE, api.PeerState_UP), []string{"192.0.2.1 established", "192.0.2.9 idle"}},
		// The last path withdrawn: forgotten.
		{pathEvent(t, "192.0.2.9", "192.168.254.1/32", true), []string{"192.0.2.1 established"}},
		// Withdrawals of an unknown peer create no entry.
		{pathEvent(t, "192.0.2.10", "192.168.254.1/32", true), []string{"192.0.2.1 established"}},
		// Paths gone first, then the session: forgotten at the state event.
		{peerEvent("192.0.2.11", api.PeerState_ESTABLISHED, api.PeerState_UP), []string{"192.0.2.1 established", "192.0.2.11 established"}},
		{peerEvent("192.0.2.11", api.PeerState_IDLE, api.PeerState_UP), []string{"192.0.2.1 established"}},
		// A connection attempt alone leaves nothing behind.
		{peerEvent("192.0.2.12", api.PeerState_ACTIVE, api.PeerState_UP), []string{"192.0.2.1 established"}},
		// The address: neighbour stays listed while down.
		{peerEvent("192.0.2.1", api.PeerState_IDLE, api.PeerState_UP), []string{"192.0.2.1 idle"}},
	}
	for i, st := range steps {
		s.onEvent(st.ev)
		if d := cmp.Diff(st.want, peerAddrs(s)); d != "" {
			t.Fatalf("after step %d: peers (-want +got):\n%s", i, d)
		}
	}
	if got := s.PrefixLimitTeardowns(); len(got) != 0 {
		t.Errorf("prefix-limit teardowns without one: %v", got)
	}
	s.onEvent(peerEvent("192.0.2.13", api.PeerState_ESTABLISHED, api.PeerState_UP))
	s.onEvent(peerEvent("192.0.2.13", api.PeerState_IDLE, api.PeerState_PFX_CT))
	s.onEvent(peerEvent("192.0.2.13", api.PeerState_IDLE, api.PeerState_PFX_CT))
	if d := cmp.Diff([]netip.Addr{addr("192.0.2.13")}, s.PrefixLimitTeardowns(), cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); d != "" {
		t.Errorf("prefix-limit teardowns (-want +got):\n%s", d)
	}
	if got := s.PrefixLimitTeardowns(); len(got) != 0 {
		t.Errorf("prefix-limit teardowns reported twice: %v", got)
	}
}

// TestPrefixLimit: a dynamic peer that sends more paths than PrefixLimit
// (acceptable or not: counted before any policy) is torn down with a
// Cease, its paths dropped, its entry forgotten and the teardown
// reported; another peer keeps its session and path. A small limit is GoBGP's own, a large one the
// speaker's count (see gobgpPrefixLimitMax).
func TestPrefixLimit(t *testing.T) {
	for _, limit := range []uint32{20, gobgpPrefixLimitMax + 20} {
		t.Run(strconv.Itoa(int(limit)), func(t *testing.T) { testPrefixLimit(t, limit) })
	}
}

func testPrefixLimit(t *testing.T, limit uint32) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	port := freePort(t)
	s := New(Config{
		ASN: 64500, RouterID: addr("127.0.0.1"), ListenAddresses: []string{"127.0.0.1"}, ListenPort: port, IPv4: true,
		Neighbors: []Neighbor{{Prefix: pfx("127.0.0.0/8"), ASN: 64512, HoldTime: 9 * time.Second, Keepalive: 3 * time.Second, PrefixLimit: limit, TTLSecurity: true}},
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
	for range limit + 10 {
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
		if p.Address == addr("127.0.0.6") && p.Received > int(limit) {
			t.Errorf("flooding peer holds %d paths, limit %d", p.Received, limit)
		}
	}
	if paths := s.Paths(); len(paths) < 1 || !sp[1].Established(ctx) {
		t.Errorf("the other peer lost its session or path: %v", paths)
	}
}
