package faults

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bgplb/bgplb/speaker/bgp/bgptest"
)

// churnResult is what one churn round measured.
type churnResult struct {
	creates, deletes int
	apiTime          time.Duration // from the first create to the last delete returning
	convergeTime     time.Duration // from then to the router holding the desired set
	kept             map[string]netip.Addr
}

// churn creates n Services (each with a ready EndpointSlice) from workers
// goroutines and deletes each one lag creations later, except every
// keepEvery-th, which stays (keepEvery 0 keeps none). It then waits until
// every kept Service has an address and the router holds exactly their /32s.
func churn(tb testing.TB, c *cluster, router *bgptest.Router, prefix string, n, keepEvery, workers int) churnResult {
	tb.Helper()
	ctx := context.Background()
	const lag = 50
	keep := func(i int) bool { return keepEvery > 0 && i%keepEvery == 0 }
	name := func(i int) string { return prefix + "-" + strconv.Itoa(i) }

	var creates, deletes atomic.Int64
	var firstErr error
	var errOnce sync.Once
	fail := func(err error) { errOnce.Do(func() { firstErr = err }) }
	next := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := createService(ctx, c.Client, name(i)); err != nil {
					fail(err)
					continue
				}
				creates.Add(1)
				if j := i - lag; j >= 0 && !keep(j) {
					if err := deleteService(ctx, c.Client, name(j)); err != nil {
						fail(err)
						continue
					}
					deletes.Add(1)
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	// The last lag creations are deleted at the end.
	for j := max(0, n-lag); j < n; j++ {
		if !keep(j) {
			if err := deleteService(ctx, c.Client, name(j)); err != nil {
				fail(err)
			}
			deletes.Add(1)
		}
	}
	apiDone := time.Now()
	if firstErr != nil {
		tb.Fatalf("churn: %v", firstErr)
	}

	wantNames := map[string]bool{}
	for i := 0; i < n; i++ {
		if keep(i) {
			wantNames[name(i)] = true
		}
	}
	var kept map[string]netip.Addr
	eventually(tb, 5*time.Minute, "every kept Service has an address and no other is left", func() error {
		all, err := assigned(ctx, c.Client)
		if err != nil {
			return err
		}
		kept = map[string]netip.Addr{}
		for s, a := range all {
			if strings.HasPrefix(s, prefix+"-") {
				if !wantNames[s] {
					return fmt.Errorf("deleted Service %s still listed", s)
				}
				kept[s] = a
			}
		}
		if len(kept) != len(wantNames) {
			return fmt.Errorf("%d of %d kept Services have an address", len(kept), len(wantNames))
		}
		return nil
	})
	seen := map[netip.Addr]string{}
	for s, a := range kept {
		if o, dup := seen[a]; dup {
			tb.Fatalf("Services %s and %s share %v", s, o, a)
		}
		seen[a] = s
	}
	want := hostRoutes(kept)
	if !router.Wait(5*time.Minute, func(r map[netip.Prefix]bgptest.Route) bool { return sameSet(r, want) }) {
		tb.Fatalf("after churn: %s", describeDiff(router.Routes(), want))
	}
	return churnResult{
		creates: int(creates.Load()), deletes: int(deletes.Load()),
		apiTime: apiDone.Sub(start), convergeTime: time.Since(apiDone), kept: kept,
	}
}

// settled is the process's state after the garbage collector ran and the
// heap was returned to the OS.
type settled struct {
	goroutines int
	heapInuse  uint64
	rss        uint64
}

func settle() settled {
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return settled{goroutines: runtime.NumGoroutine(), heapInuse: m.HeapInuse, rss: rss()}
}

// rss is this process's resident set size from /proc/self/status.
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// churnFixture runs a control plane, a router, the controller and a speaker
// with one pool, and does a warm-up churn of warmup Services so that lazily
// started goroutines and caches exist before the baseline is taken.
//
// GoBGP v3.37 keeps about 0.5 KB (a table Destination and the withdrawn
// Path) in the speaker's global RIB for every distinct prefix it ever sent to
// an established peer, also after DeletePath; announcing the same prefix again
// reuses it (measured with a heap profile of AddPath/DeletePath rounds against
// an in-process peer). The growth is bounded by the pool size, and the
// controller's allocation cursor walks the whole pool; the leak test therefore
// uses a /24 that the warm-up walks through entirely. BenchmarkChurn uses a
// /16 and shows the growth.
func churnFixture(tb testing.TB, pool string, warmup int) (*cluster, *bgptest.Router) {
	tb.Helper()
	c := startCluster(tb)
	router := bgptest.Start(tb, lo4, 64512, bgptest.Neighbor{Address: lo4, ASN: 65010})
	setupObjects(tb, c, router, pool)
	startController(tb, c)
	startSpeaker(tb, c, nodeName)
	churn(tb, c, router, "warmup", warmup, 0, 8)
	return c, router
}

// deleteKept deletes what a churn round kept and waits for the router to
// hold nothing.
func deleteKept(tb testing.TB, c *cluster, router *bgptest.Router, kept map[string]netip.Addr) {
	tb.Helper()
	for s := range kept {
		if err := deleteService(context.Background(), c.Client, s); err != nil {
			tb.Fatal(err)
		}
	}
	if !router.Wait(5*time.Minute, func(r map[netip.Prefix]bgptest.Route) bool { return len(r) == 0 }) {
		tb.Fatalf("after deleting every Service: %s", describeDiff(router.Routes(), nil))
	}
}

// TestChurnEndsWithDesiredSetAndNoLeak churns 500 Services (created and
// deleted concurrently, 50 kept) through the controller and a speaker: the
// router ends with exactly the kept Services' /32s, each kept Service has
// its own address, and once everything is deleted the process is back to
// its pre-churn goroutine count (+10) and heap in use (+10%).
func TestChurnEndsWithDesiredSetAndNoLeak(t *testing.T) {
	// At most about 110 Services have an address at once (50 kept, 50 not
	// yet deleted, 8 in flight): a /24 is enough, and the warm-up walks it.
	c, router := churnFixture(t, "10.128.0.0/24", 300)
	before := settle()
	r := churn(t, c, router, "churn", 500, 10, 8)
	t.Logf("churn: %d creates, %d deletes in %v (%.0f API operations/s); router converged %v later; %d kept",
		r.creates, r.deletes, r.apiTime.Round(time.Millisecond),
		float64(r.creates+r.deletes)/r.apiTime.Seconds(), r.convergeTime.Round(time.Millisecond), len(r.kept))
	deleteKept(t, c, router, r.kept)

	// Goroutines of finished work (HTTP/2 streams, timers) exit on their own.
	var after settled
	eventually(t, time.Minute, "goroutines back to the baseline", func() error {
		after = settle()
		if after.goroutines > before.goroutines+10 {
			return fmt.Errorf("%d goroutines, %d before the churn", after.goroutines, before.goroutines)
		}
		return nil
	})
	t.Logf("before: %d goroutines, heap in use %.1f MiB, RSS %.1f MiB; after: %d goroutines, heap in use %.1f MiB, RSS %.1f MiB",
		before.goroutines, mib(before.heapInuse), mib(before.rss), after.goroutines, mib(after.heapInuse), mib(after.rss))
	if float64(after.heapInuse) > 1.10*float64(before.heapInuse) {
		t.Errorf("heap in use grew from %.1f MiB to %.1f MiB (more than 10%%)", mib(before.heapInuse), mib(after.heapInuse))
	}
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// BenchmarkChurn is issue 7's load test: BGPLB_CHURN_SERVICES (default
// 10,000) Services created and deleted concurrently (every 10th kept), through
// the controller and a speaker in this process. Reported: the API operation
// rate the envtest apiserver sustained (creates+deletes per second), the time
// from the last API call to the router holding exactly the kept set, and the
// goroutine, heap and RSS differences once everything is deleted again.
func BenchmarkChurn(b *testing.B) {
	n := 10000
	if v := os.Getenv("BGPLB_CHURN_SERVICES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatalf("BGPLB_CHURN_SERVICES: %v", err)
		}
	}
	c, router := churnFixture(b, bigPool, 300)
	before := settle()
	b.ResetTimer()
	var r churnResult
	for i := 0; i < b.N; i++ {
		r = churn(b, c, router, fmt.Sprintf("churn%d", i), n, 10, 32)
		deleteKept(b, c, router, r.kept)
	}
	b.StopTimer()
	time.Sleep(5 * time.Second) // let finished goroutines exit
	after := settle()
	b.ReportMetric(float64(r.creates+r.deletes)/r.apiTime.Seconds(), "api-ops/s")
	b.ReportMetric(float64(r.creates)/r.apiTime.Seconds(), "creates/s")
	b.ReportMetric(r.convergeTime.Seconds(), "s-to-converge")
	b.ReportMetric(float64(after.goroutines-before.goroutines), "goroutines-delta")
	b.ReportMetric(100*(float64(after.heapInuse)/float64(before.heapInuse)-1), "heap-delta-%")
	b.ReportMetric(100*(float64(after.rss)/float64(before.rss)-1), "rss-delta-%")
	b.ReportMetric(mib(before.heapInuse), "heap-before-MiB")
	b.ReportMetric(mib(after.rss), "rss-after-MiB")
}
