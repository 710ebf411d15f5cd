package bgp

import (
	"net/netip"
	"runtime"
	"slices"
	"testing"

	api "github.com/osrg/gobgp/v3/api"

	"github.com/bgplb/bgplb/internal/verdict"
)

// wantedBytesPerPrefix: the verdicts of n prefixes from one peer that can
// receive them arrive as incremental passes of 1,000 prefixes (as during a
// bulk; the export goroutine is not running). It returns the live heap the
// wanted verdicts keep per prefix.
func wantedBytesPerPrefix(n int) float64 {
	const pass = 1000
	peer := netip.MustParseAddr("192.168.2.20")
	prefixes := make([]netip.Prefix, n)
	for i := range prefixes {
		prefixes[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
	}
	v := verdict.Verdict{State: verdict.Installed, Width: 1, Via: true}
	s := New(Config{}, nil)
	s.peers[peer] = &peerInfo{state: "established", addPathRecv: true}
	vs := make([]VerdictPath, pass)
	before := liveHeap()
	for start := 0; start < n; start += pass {
		for i := range vs {
			vs[i] = VerdictPath{Peer: peer, Prefix: prefixes[start+i], Verdict: v}
		}
		s.SetVerdicts(false, prefixes[start:start+pass], vs)
	}
	s.verdicts.dirty = map[verdictKey]struct{}{} // as the export goroutine leaves it
	after := liveHeap()
	runtime.KeepAlive(s)
	runtime.KeepAlive(prefixes)
	return float64(int64(after)-int64(before)) / float64(n)
}

// BenchmarkSetVerdicts100k reports the live heap the wanted verdicts of
// 100,000 prefixes keep per prefix (issue 20: a map per prefix kept about
// 750 bytes each, a slice of full verdicts 164).
func BenchmarkSetVerdicts100k(b *testing.B) {
	var perPrefix float64
	b.ReportAllocs()
	for b.Loop() {
		perPrefix = wantedBytesPerPrefix(100000)
	}
	b.ReportMetric(perPrefix, "live-B/prefix")
}

// TestWantedVerdictBytesPerPrefix bounds the wanted verdicts' cost per
// prefix with one peer: a map slot (the prefix, 32 bytes, and a slice
// header, 24) and the slice's one 48-byte wantedVerdict (peer 24, packed
// verdict 12, generation 8). 132 bytes at 100,000 prefixes; with the whole
// verdict.Verdict in it (80 bytes) it was 164, with a map per prefix 751.
func TestWantedVerdictBytesPerPrefix(t *testing.T) {
	const n, bound = 100000, 145
	got := wantedBytesPerPrefix(n)
	t.Logf("%.1f live bytes per prefix's wanted verdict (%d prefixes)", got, n)
	if got > bound {
		t.Errorf("the wanted verdicts keep %.1f bytes per prefix, want at most %d", got, bound)
	}
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
		if got, ok := s.verdicts.get(verdictKey{addr(peer), p}); !ok || got.verdict() != v {
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

// TestPackedVerdict: a kept verdict reads back as it was set, for every
// state and reason; a reason the communities cannot carry packs as none,
// as verdict.Encode sends it.
func TestPackedVerdict(t *testing.T) {
	for _, st := range []verdict.State{verdict.Installed, verdict.Rejected, verdict.Pending} {
		for _, r := range verdict.Reasons {
			for _, w := range []int{0, 1, 16, 1 << 20} {
				v := verdict.Verdict{State: st, Reason: r, Width: w, Via: w == 1}
				if got := packVerdict(v).verdict(); got != v {
					t.Errorf("packed %v reads %v", v, got)
				}
			}
		}
	}
	if got := packVerdict(verdict.Verdict{State: verdict.Rejected, Reason: "no-such-reason"}).verdict(); got != (verdict.Verdict{State: verdict.Rejected}) {
		t.Errorf("an unknown reason packs as %v, want none", got)
	}
}
