package bgp

import (
	"net/netip"
	"runtime"
	"slices"
	"testing"

	api "github.com/osrg/gobgp/v3/api"

	"github.com/bgplb/bgplb/internal/verdict"
)

// BenchmarkSetVerdicts100k: the verdicts of 100,000 prefixes from one peer
// that can receive them arrive as incremental passes of 1,000 prefixes (as
// during a bulk; the export goroutine is not running). It reports the live
// heap the wanted verdicts keep per prefix (issue 20: a map per prefix kept
// about 750 bytes each).
func BenchmarkSetVerdicts100k(b *testing.B) {
	const n, pass = 100000, 1000
	peer := netip.MustParseAddr("192.168.2.20")
	prefixes := make([]netip.Prefix, n)
	for i := range prefixes {
		prefixes[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
	}
	v := verdict.Verdict{State: verdict.Installed, Width: 1, Via: true}
	var perPrefix float64
	b.ReportAllocs()
	for b.Loop() {
		s := New(Config{}, nil)
		s.peers[peer] = &peerInfo{state: "established", addPathRecv: true}
		var before runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		vs := make([]VerdictPath, pass)
		for start := 0; start < n; start += pass {
			for i := range vs {
				vs[i] = VerdictPath{Peer: peer, Prefix: prefixes[start+i], Verdict: v}
			}
			s.SetVerdicts(false, prefixes[start:start+pass], vs)
		}
		s.verdicts.dirty = map[verdictKey]struct{}{} // as the export goroutine leaves it
		var after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&after)
		perPrefix = float64(after.HeapAlloc-before.HeapAlloc) / n
		runtime.KeepAlive(s)
	}
	b.ReportMetric(perPrefix, "live-B/prefix")
}

// TestVerdictsKeptForAddPathPeersOnly: the verdicts for a peer that cannot
// (or is not yet known to) receive ADD-PATH are not kept (issue 20: they
// cost about 160 bytes a path for nothing); once the peer turns out
// capable, its prefixes are marked changed, so the agent's next pass
// reports their verdicts again, and they are kept.
func TestVerdictsKeptForAddPathPeersOnly(t *testing.T) {
	s := New(Config{}, testLogger())
	const peer = "192.0.2.9"
	s.onEvent(peerEvent(peer, api.PeerState_ESTABLISHED, api.PeerState_UP))
	prefixes := []netip.Prefix{pfx("10.0.0.1/32"), pfx("10.0.0.2/32")}
	for _, p := range prefixes {
		s.onEvent(pathEvent(t, peer, p.String(), false))
	}
	if changed, _ := s.TakeChanges(); len(changed) != 2 {
		t.Fatalf("changed %v, want both prefixes", changed)
	}
	v := verdict.Verdict{State: verdict.Installed, Width: 1, Via: true}
	vs := []VerdictPath{{Peer: addr(peer), Prefix: prefixes[0], Verdict: v}, {Peer: addr(peer), Prefix: prefixes[1], Verdict: v}}
	s.SetVerdicts(true, nil, vs)
	if n := len(s.verdicts.want); n != 0 {
		t.Fatalf("%d prefixes with verdicts kept for a peer without ADD-PATH receive, want 0", n)
	}
	select {
	case <-s.Changed(): // the events' own signals
	default:
	}
	if !s.setAddPathRecv(addr(peer), true) {
		t.Fatal("setAddPathRecv: the established peer was not found")
	}
	select {
	case <-s.Changed():
	default:
		t.Error("no change signalled when the peer turned out capable")
	}
	changed, paths := s.TakeChanges()
	slices.SortFunc(changed, netip.Prefix.Compare)
	if !slices.Equal(changed, prefixes) || len(paths) != 2 {
		t.Fatalf("after learning ADD-PATH receive: changed %v (%d paths), want %v", changed, len(paths), prefixes)
	}
	s.SetVerdicts(false, changed, vs)
	for _, p := range prefixes {
		if got, ok := s.verdicts.get(verdictKey{addr(peer), p}); !ok || got != v {
			t.Errorf("verdict on %s: %v %v, want %v kept", p, got, ok, v)
		}
	}
	// A peer that is down again is not capable: a full set withdraws its
	// kept verdicts (they are marked for the export goroutine).
	s.onEvent(peerEvent(peer, api.PeerState_IDLE, api.PeerState_UP))
	s.SetVerdicts(true, nil, vs)
	if n := len(s.verdicts.want); n != 0 {
		t.Errorf("%d prefixes with verdicts kept for a peer that went down, want 0", n)
	}
}
