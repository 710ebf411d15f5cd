package bgp

import (
	"net/netip"
	"runtime"
	"testing"

	"github.com/bgplb/bgplb/internal/verdict"
)

// BenchmarkSetVerdicts100k: the verdicts of 100,000 prefixes from one peer
// arrive as incremental passes of 1,000 prefixes (as during a bulk), with
// no peer able to receive them (the export goroutine is not running). It
// reports the live heap the wanted verdicts keep per prefix (issue 20: a
// map per prefix kept about 400 bytes each).
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
