package bgp

import (
	"net/netip"
	"runtime"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
)

// receivedBytesPerPath feeds n paths of one peer (all with the same
// attributes, as a speaker sends them) through the watch handler and
// returns the live heap they keep per path once the agent has taken the
// changes.
func receivedBytesPerPath(t testing.TB, n int) float64 {
	t.Helper()
	s := New(Config{}, testLogger())
	s.onEvent(peerEvent("192.0.2.9", api.PeerState_ESTABLISHED, api.PeerState_UP))
	attrs := []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(0), bgp.NewPathAttributeNextHop("192.0.2.9"),
		bgp.NewPathAttributeCommunities([]uint32{0xFDE80001})}
	paths := peerPaths(t, "192.0.2.9", n, attrs)
	before := liveHeap()
	for _, p := range paths {
		s.mu.Lock()
		s.onPath(p)
		s.mu.Unlock()
	}
	if changed, _ := s.TakeChanges(); len(changed) != n {
		t.Fatalf("%d prefixes changed, want %d", len(changed), n)
	}
	after := liveHeap()
	runtime.KeepAlive(paths)
	if got := len(s.Paths()); got != n {
		t.Fatalf("%d paths held, want %d", got, n)
	}
	runtime.KeepAlive(s)
	return float64(int64(after)-int64(before)) / float64(n)
}

// peerPaths are n watched paths from peer for the /32s 10.0.0.0, 10.0.0.1,
// ..., all with attrs.
func peerPaths(t testing.TB, peer string, n int, attrs []bgp.PathAttributeInterface) []*api.Path {
	t.Helper()
	paths := make([]*api.Path, n)
	for i := range paths {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		p, err := apiutil.NewPath(bgp.NewIPAddrPrefix(32, a.String()), false, attrs, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		p.NeighborIp = peer
		paths[i] = p
	}
	return paths
}

func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestReceivedCopyBytesPerPath bounds what the speaker's copy of a peer's
// adj-RIB-in costs per path (issue 20). A path is a map slot of a
// netip.Prefix (32 bytes) and a ribEntry (16 bytes): 48 bytes, plus a
// control byte, in Go's swiss tables that split into halves when 7/8 full,
// so between 56 and 112 bytes a path depending on how full the tables are.
// 30,000 paths is just after the tables split (the emptiest they get): 120
// bytes here; the entries with the attributes copied in (72-byte slots)
// kept 167 (105 at 100,000 paths, where 48-byte slots keep 74). The bound
// catches a per-path allocation or a wider entry.
func TestReceivedCopyBytesPerPath(t *testing.T) {
	const n, bound = 30000, 130
	got := receivedBytesPerPath(t, n)
	t.Logf("%.1f live bytes per received path (%d paths)", got, n)
	if got > bound {
		t.Errorf("the received copy keeps %.1f bytes per path, want at most %d", got, bound)
	}
}

// BenchmarkOnPath is the watch handler's cost for one received path as a
// speaker sends it (ORIGIN, AS_PATH, NEXT_HOP, COMMUNITIES), new prefixes
// each time: what the agent pays per path of a bulk on top of GoBGP's own
// watch (issue 20).
func BenchmarkOnPath(b *testing.B) {
	s := New(Config{}, testLogger())
	s.onEvent(peerEvent("192.0.2.9", api.PeerState_ESTABLISHED, api.PeerState_UP))
	attrs := []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(0),
		bgp.NewPathAttributeAsPath([]bgp.AsPathParamInterface{bgp.NewAs4PathParam(bgp.BGP_ASPATH_ATTR_TYPE_SEQ, []uint32{64512})}),
		bgp.NewPathAttributeNextHop("192.0.2.9"), bgp.NewPathAttributeCommunities([]uint32{0xFDE80001})}
	const n = 1 << 16
	paths := peerPaths(b, "192.0.2.9", n, attrs)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%n == 0 {
			b.StopTimer()
			s.TakeChanges()
			s.mu.Lock()
			s.peers = map[netip.Addr]*peerInfo{}
			s.mu.Unlock()
			s.onEvent(peerEvent("192.0.2.9", api.PeerState_ESTABLISHED, api.PeerState_UP))
			b.StartTimer()
		}
		s.mu.Lock()
		s.onPath(paths[i%n])
		s.mu.Unlock()
	}
}
