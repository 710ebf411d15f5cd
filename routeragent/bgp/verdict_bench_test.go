package bgp

import (
	"context"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/bgplb/bgplb/internal/verdict"
	"github.com/bgplb/bgplb/routeragent/bgp/bgptest"
)

// BenchmarkVerdictMemory10k: what sending 10,000 verdicts to one speaker
// costs the agent's heap (its own bookkeeping and GoBGP's paths), after a
// GC. It measures once, whatever b.N is. BGPLB_VERDICT_HEAP_PROFILE=file
// writes the heap profile.
func BenchmarkVerdictMemory10k(b *testing.B) {
	for i := 0; i < b.N; i++ {
		if i > 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		port := freePortTB(b)
		agent := New(Config{
			ASN: 64500, RouterID: addr("127.0.0.1"), ListenAddresses: []string{"127.0.0.1"}, ListenPort: port, IPv4: true,
			Neighbors: []Neighbor{{Prefix: pfx("127.0.0.0/8"), ASN: 64512, HoldTime: 9 * time.Second, Keepalive: 3 * time.Second}},
		}, testLogger())
		if err := agent.Start(ctx); err != nil {
			b.Fatal(err)
		}
		defer agent.Stop()
		sp, err := bgptest.Start(ctx, bgptest.Config{ASN: 64512, RouterID: "127.0.0.2", Local: addr("127.0.0.2"), Router: addr("127.0.0.1"),
			RouterASN: 64500, RouterPort: uint32(port), NoTTLSecurity: true, AddPathReceive: true})
		if err != nil {
			b.Fatal(err)
		}
		defer sp.Stop()
		waitForTB(b, "session up", func() bool { return agent.VerdictReports()[addr("127.0.0.2")].AddPathReceive })
		const n = 10000
		vs := make([]VerdictPath, 0, n)
		base := addr("10.200.0.0").As4()
		for j := range n {
			a := base
			a[2], a[3] = byte(j>>8), byte(j)
			p := netip.PrefixFrom(netip.AddrFrom4(a), 32)
			if err := sp.Announce(ctx, p, netip.Addr{}); err != nil {
				b.Fatal(err)
			}
			vs = append(vs, VerdictPath{Peer: addr("127.0.0.2"), Prefix: p, Verdict: verdict.Verdict{State: verdict.Installed, Width: 1, Via: true}})
		}
		waitForTB(b, "paths at the router", func() bool { return len(agent.Paths()) == n })
		before := heapInUse()
		agent.SetVerdicts(true, nil, vs)
		waitForTB(b, "verdicts sent", func() bool { return agent.VerdictReports()[addr("127.0.0.2")].Sent == n })
		time.Sleep(time.Second) // GoBGP's export to the peer
		after := heapInUse()
		b.ReportMetric(float64(after-before)/(1<<20), "heap-MB-per-10k-verdicts")
		if f := os.Getenv("BGPLB_VERDICT_HEAP_PROFILE"); f != "" {
			out, err := os.Create(f)
			if err != nil {
				b.Fatal(err)
			}
			if err := pprof.WriteHeapProfile(out); err != nil {
				b.Fatal(err)
			}
			_ = out.Close()
		}
		runtime.KeepAlive(vs)
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
