package controller

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/bgplb/bgplb/internal/iprange"
	"github.com/bgplb/bgplb/speaker/bgp"
	"github.com/bgplb/bgplb/speaker/bgp/bgptest"
	"github.com/bgplb/bgplb/speaker/model"
)

// speakerChurn is issue 7's churn at the speaker's own rate, without an
// apiserver in the way (the envtest apiserver takes about 45 Services/s on
// 2 cores, see test/faults): 10,000 Services are announced, then for d the
// oldest Service is deleted and a new one created at rate per second each,
// in passes every 10 ms as the reconciler's workqueue coalesces events
// (plan, decide, Set or SetPrefixes into a real GoBGP, UPDATEs to an
// in-process router). The load offered is the schedule, not what the loop
// managed: by the end exactly rate*d creates and rate*d deletes have been
// offered (a pass that falls behind gets a bigger batch, as events coalesce
// in the workqueue). It returns what was offered and what the passes
// applied; the caller checks the counts and the router's table.
type churnRun struct {
	router   *bgptest.Router
	services []model.Service // alive, oldest first
	creates  int
	deletes  int
	// announced and withdrawn count the paths the churn's passes added and
	// withdrew (bgp.Changes); replaced counts the prefixes one batch both
	// deleted and re-created (the address came round again), which need
	// no UPDATE.
	announced, withdrawn, replaced int
	// maxBatch is the most creates one pass carried.
	maxBatch int
	took     time.Duration
	passes   int
	fulls    int
	// before is measured after the warm-up, after at the end.
	before, after usage
}

// usage is the live heap (after a GC) and the goroutine count.
type usage struct {
	heap       uint64
	goroutines int
}

func measure() usage {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return usage{heap: m.HeapAlloc, goroutines: runtime.NumGoroutine()}
}

// passHarness is the speaker's core without Kubernetes: node n1 with one
// pool (10.128.0.0/16), one advertisement and one peer, the speaker's real
// GoBGP (bgp.Manager) announcing to an in-process router on 127.0.0.1, and
// the reconciler's pass (plan, decide, Set or SetPrefixes).
type passHarness struct {
	cfg           model.Input
	router        *bgptest.Router
	mgr           *bgp.Manager
	inc           *incremental
	passes, fulls int
}

func newPassHarness(tb testing.TB) *passHarness {
	ctx := context.Background()
	lo4 := netip.MustParseAddr("127.0.0.1")
	pool, _ := iprange.ParsePool([]string{"10.128.0.0/16"})
	h := &passHarness{inc: newIncremental(), cfg: model.Input{
		Node:           "n1",
		Nodes:          []model.Node{{Name: "n1", Ready: true}},
		Pools:          []model.Pool{{Name: "p", Ranges: pool}},
		Peers:          []model.Peer{{Name: "r", Address: lo4}},
		Advertisements: []model.BGPAdvertisement{{Name: "a", Communities: []string{"65000:1"}}},
	}}
	// The router first, then the speaker's server (see bgptest).
	h.router = bgptest.Start(tb, lo4, 64512, bgptest.Neighbor{Address: lo4, ASN: 65001})
	h.mgr = bgp.NewManager(logr.Discard())
	tb.Cleanup(func() { _ = h.mgr.Shutdown(context.Background(), bgp.ShutdownOptions{}) })
	if err := h.mgr.SetPeers(ctx, []bgp.PeerConfig{{Name: "r", Address: lo4, Port: h.router.Port, PeerASN: 64512, MyASN: 65001,
		RouterID: netip.MustParseAddr("10.0.0.1"), ConnectRetry: time.Second}}); err != nil {
		tb.Fatal(err)
	}
	h.router.WaitEstablished(tb, lo4, time.Minute)
	return h
}

// pass runs one reconcile pass over services, of which changed changed,
// and returns what it changed on the session.
func (h *passHarness) pass(tb testing.TB, services []model.Service, changed []string, lookup func(string) (model.Service, bool)) bgp.Changes {
	ctx := context.Background()
	in := h.cfg
	in.Services = services
	c := configOf(in)
	p := h.inc.plan(c, changed, lookup, len(services), time.Now())
	var ch bgp.Changes
	var err error
	if p.full {
		h.fulls++
		ch, err = h.mgr.Set(ctx, "r", model.Desired(in).Peers["r"])
	} else {
		sub := in
		sub.Services = p.services
		ch, err = h.mgr.SetPrefixes(ctx, "r", p.prefixes, model.Desired(sub).Peers["r"])
	}
	if err != nil {
		tb.Fatal(err)
	}
	h.passes++
	h.inc.done(p, c, services, lookup, true, time.Now())
	return ch
}

func speakerChurn(tb testing.TB, n, rate int, d time.Duration) *churnRun {
	h := newPassHarness(tb)
	run := &churnRun{router: h.router}

	// Services by key; addresses are handed out round-robin over n*6/5 of
	// the /16 (as the controller's per-range cursor does over a pool), so an
	// address is reused only long after its Service was deleted, and the
	// warm-up has used every address once (GoBGP keeps some state per
	// prefix it has seen, which is bounded by the pool, not a leak).
	byKey := map[string]model.Service{}
	next := 0
	newService := func() model.Service {
		i := next
		next++
		a := i % (n * 6 / 5)
		ip := netip.AddrFrom4([4]byte{10, 128, byte(a >> 8), byte(a)})
		name := fmt.Sprintf("svc-%d", i)
		return model.Service{Namespace: "churn", Name: name, ID: "churn/" + name, TrafficPolicy: model.TrafficPolicyCluster,
			IPs: []netip.Addr{ip}, Endpoints: []model.Endpoint{{NodeName: "n2", Ready: true, Serving: true}}}
	}
	lookup := func(k string) (model.Service, bool) { s, ok := byKey[k]; return s, ok }
	pass := func(changed []string) bgp.Changes { return h.pass(tb, run.services, changed, lookup) }

	var changed []string
	for range n * 6 / 5 {
		s := newService()
		byKey[s.ID] = s
		run.services = append(run.services, s)
		changed = append(changed, s.ID)
	}
	pass(changed)
	if !run.router.Wait(time.Minute, func(r map[netip.Prefix]bgptest.Route) bool { return len(r) == n*6/5 }) {
		tb.Fatalf("router has %d of %d routes after the warm-up", run.router.Len(), n*6/5)
	}
	changed = changed[:0]
	for _, s := range run.services[:n/5] {
		delete(byKey, s.ID)
		changed = append(changed, s.ID)
	}
	run.services = run.services[n/5:]
	pass(changed)
	if !run.router.Wait(time.Minute, func(r map[netip.Prefix]bgptest.Route) bool { return len(r) == n }) {
		tb.Fatalf("router has %d of %d routes after the warm-up", run.router.Len(), n)
	}
	run.before = measure()
	h.passes, h.fulls = 0, 0

	// offer replaces the oldest Services until total creates (and
	// deletes) have been offered, in one pass.
	offer := func(total int) {
		changed = changed[:0]
		created := map[netip.Prefix]bool{}
		var deleted []netip.Prefix
		batch := 0
		for ; run.creates < total; batch++ {
			old := run.services[0]
			run.services = run.services[1:]
			delete(byKey, old.ID)
			s := newService()
			byKey[s.ID] = s
			run.services = append(run.services, s)
			changed = append(changed, old.ID, s.ID)
			deleted = append(deleted, netip.PrefixFrom(old.IPs[0], 32))
			created[netip.PrefixFrom(s.IPs[0], 32)] = true
			run.creates++
			run.deletes++
		}
		for _, p := range deleted {
			if created[p] {
				run.replaced++
			}
		}
		run.maxBatch = max(run.maxBatch, batch)
		ch := pass(changed)
		run.announced += len(ch.Added)
		run.withdrawn += len(ch.Withdrawn)
	}
	start := time.Now()
	for {
		elapsed := time.Since(start)
		if elapsed >= d {
			break
		}
		// Everything due by now: behind schedule, the batch grows (as
		// events coalesce in the workqueue).
		offer(int(elapsed.Seconds() * float64(rate)))
		time.Sleep(10 * time.Millisecond)
	}
	// The rest of the schedule, due by d: the run offers rate*d in all.
	offer(int(d.Seconds() * float64(rate)))
	run.took = time.Since(start)
	run.passes, run.fulls = h.passes, h.fulls
	return run
}

// wantRoutes are the /32s of the Services alive.
func (c *churnRun) wantRoutes() map[netip.Prefix]bool {
	want := map[netip.Prefix]bool{}
	for _, s := range c.services {
		want[netip.PrefixFrom(s.IPs[0], 32)] = true
	}
	return want
}

// TestSpeakerChurn1000PerSecond: 10,000 Services announced, then 1,000
// creates and 1,000 deletes per second for 30 s (30,000 of each, offered on
// that schedule) through the speaker's incremental passes into a real GoBGP
// and an in-process router. Every one of them is applied: the passes
// announced one path per create and withdrew one per delete (counted from
// what GoBGP was told, bgp.Changes), and the router's table ends equal to
// the Services alive; afterwards the goroutines are back and the live heap
// is within 10% of what it was after the warm-up. How far behind the
// schedule the passes fell (the biggest batch) is logged, not asserted: it
// depends on the machine's load; BenchmarkSpeakerChurn reports the rate.
func TestSpeakerChurn1000PerSecond(t *testing.T) {
	if testing.Short() {
		t.Skip("30 s of churn; not with -short")
	}
	const n, rate, d = 10000, 1000, 30 * time.Second
	run := speakerChurn(t, n, rate, d)
	t.Logf("churn: %d creates and %d deletes offered in %v, %d passes (%d full), at most %d creates in one pass; %d paths announced, %d withdrawn, %d prefixes replaced in one pass",
		run.creates, run.deletes, run.took.Round(time.Millisecond), run.passes, run.fulls, run.maxBatch,
		run.announced, run.withdrawn, run.replaced)
	offered := rate * int(d/time.Second)
	if run.creates != offered || run.deletes != offered {
		t.Fatalf("offered %d creates and %d deletes, want %d of each (%d/s for %v)", run.creates, run.deletes, offered, rate, d)
	}
	if run.announced+run.replaced != run.creates || run.withdrawn+run.replaced != run.deletes {
		t.Fatalf("applied %d announcements and %d withdrawals (+%d replaced prefixes) for %d creates and %d deletes",
			run.announced, run.withdrawn, run.replaced, run.creates, run.deletes)
	}
	want := run.wantRoutes()
	if !run.router.Wait(time.Minute, func(r map[netip.Prefix]bgptest.Route) bool {
		if len(r) != len(want) {
			return false
		}
		for p := range r {
			if !want[p] {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("router has %d routes, want the %d of the Services alive", run.router.Len(), len(want))
	}
	if run.creates < n {
		t.Fatalf("only %d creates in 30 s: the churn did not replace the 10,000 Services even once", run.creates)
	}
	// The same number of Services alive as after the warm-up: no growth.
	run.after = measure()
	t.Logf("after the warm-up: heap %.1f MiB, %d goroutines; after the churn: heap %.1f MiB, %d goroutines",
		float64(run.before.heap)/(1<<20), run.before.goroutines, float64(run.after.heap)/(1<<20), run.after.goroutines)
	if run.after.goroutines > run.before.goroutines+5 {
		t.Errorf("%d goroutines after the churn, %d before", run.after.goroutines, run.before.goroutines)
	}
	if float64(run.after.heap) > 1.1*float64(run.before.heap) {
		t.Errorf("live heap %.1f MiB after the churn, %.1f MiB before (more than +10%%)",
			float64(run.after.heap)/(1<<20), float64(run.before.heap)/(1<<20))
	}
}

// BenchmarkSpeakerChurn reports the creates+deletes per second the speaker's
// passes sustained while asked for 1,000 of each per second
// (BGPLB_SPEAKER_CHURN_RATE overrides it): the run ends when its last pass
// has applied the whole schedule, so a rate below the one asked for means
// the passes fell behind, as does a large max-creates/pass. It also reports
// the time until the router matched.
func BenchmarkSpeakerChurn(b *testing.B) {
	rate := 1000
	if v, err := strconv.Atoi(os.Getenv("BGPLB_SPEAKER_CHURN_RATE")); err == nil && v > 0 {
		rate = v
	}
	for i := 0; i < b.N; i++ {
		run := speakerChurn(b, 10000, rate, 30*time.Second)
		want := run.wantRoutes()
		t0 := time.Now()
		if !run.router.Wait(time.Minute, func(r map[netip.Prefix]bgptest.Route) bool { return len(r) == len(want) }) {
			b.Fatalf("router has %d routes, want %d", run.router.Len(), len(want))
		}
		b.ReportMetric(float64(run.creates)/run.took.Seconds(), "creates/s")
		b.ReportMetric(float64(run.deletes)/run.took.Seconds(), "deletes/s")
		b.ReportMetric(float64(time.Since(t0).Microseconds())/1000, "ms-router-matched-after")
		b.ReportMetric(float64(run.passes)/run.took.Seconds(), "passes/s")
		b.ReportMetric(float64(run.maxBatch), "max-creates/pass")
	}
}
