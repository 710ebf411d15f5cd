package controllers_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	bgplbv1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/controllers"
)

// statusWatcher records, per Service name, when a watch first showed it
// with an address.
type statusWatcher struct {
	mu       sync.Mutex
	assigned map[string]time.Time
	notify   chan struct{}
	stop     func()
}

func watchAssigned(b *testing.B, ns string) *statusWatcher {
	b.Helper()
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		b.Fatal(err)
	}
	w, err := cs.CoreV1().Services(ns).Watch(context.Background(), metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	sw := &statusWatcher{assigned: map[string]time.Time{}, notify: make(chan struct{}, 1), stop: w.Stop}
	go func() {
		for ev := range w.ResultChan() {
			now := time.Now()
			if ev.Type != watch.Added && ev.Type != watch.Modified {
				continue
			}
			s, ok := ev.Object.(*corev1.Service)
			if !ok || len(s.Status.LoadBalancer.Ingress) == 0 {
				continue
			}
			sw.mu.Lock()
			if _, seen := sw.assigned[s.Name]; !seen {
				sw.assigned[s.Name] = now
			}
			sw.mu.Unlock()
			select {
			case sw.notify <- struct{}{}:
			default:
			}
		}
	}()
	return sw
}

func (sw *statusWatcher) waitFor(b *testing.B, n int) {
	b.Helper()
	deadline := time.After(10 * time.Minute)
	for {
		sw.mu.Lock()
		got := len(sw.assigned)
		sw.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-sw.notify:
		case <-time.After(time.Second):
		case <-deadline:
			b.Fatalf("only %d of %d Services assigned", got, n)
		}
	}
}

func percentile(d []time.Duration, p float64) time.Duration {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	i := int(float64(len(d)-1) * p)
	return d[i]
}

func benchPool(b *testing.B) {
	b.Helper()
	p := &bgplbv1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "bench"}, Spec: bgplbv1.IPPoolSpec{Addresses: []string{"10.128.0.0/16"}}}
	if err := env.Client.Create(context.Background(), p); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { deletePool(b, "bench") })
}

// BenchmarkCreateServices creates n Services at once (64 concurrent
// clients) and measures Services/s until all have an address, and the
// create-to-status latency of each (from just before its Create call to the
// watch event that shows its address).
func BenchmarkCreateServices(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			setup(b)
			benchPool(b)
			startController(b, controllers.Options{ServeServicesWithoutClass: true, ServiceWorkers: 16})
			for i := 0; b.Loop(); i++ {
				ns := namespace(b, fmt.Sprintf("bench-%d-%d", n, i), nil)
				sw := watchAssigned(b, ns)
				created := make([]time.Time, n)
				returned := make([]time.Time, n)
				start := time.Now()
				var wg sync.WaitGroup
				work := make(chan int)
				for range 64 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for j := range work {
							created[j] = time.Now()
							if err := env.Client.Create(context.Background(), newService(ns, fmt.Sprint("s", j))); err != nil {
								b.Error(err)
							}
							returned[j] = time.Now()
						}
					}()
				}
				for j := range n {
					work <- j
				}
				close(work)
				wg.Wait()
				sw.waitFor(b, n)
				sw.stop()
				var last time.Time
				lat := make([]time.Duration, 0, n)
				ours := make([]time.Duration, 0, n) // from Create returning
				sw.mu.Lock()
				for j := range n {
					t := sw.assigned[fmt.Sprint("s", j)]
					if t.After(last) {
						last = t
					}
					lat = append(lat, t.Sub(created[j]))
					ours = append(ours, t.Sub(returned[j]))
				}
				sw.mu.Unlock()
				total := last.Sub(start)
				b.ReportMetric(float64(n)/total.Seconds(), "services/s")
				b.ReportMetric(total.Seconds(), "s-to-all-assigned")
				b.ReportMetric(float64(percentile(lat, 0.50).Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "p99-ms")
				b.ReportMetric(float64(percentile(ours, 0.50).Microseconds())/1000, "p50-after-create-ms")
				b.ReportMetric(float64(percentile(ours, 0.99).Microseconds())/1000, "p99-after-create-ms")
				b.StopTimer()
				b.Logf("n=%d: %.1f s to all assigned (%.0f Services/s), create-to-status p50 %v p99 %v; from Create returning p50 %v p99 %v",
					n, total.Seconds(), float64(n)/total.Seconds(), percentile(lat, 0.5), percentile(lat, 0.99), percentile(ours, 0.5), percentile(ours, 0.99))
				// Best effort: deleting 10,000 Services in one collection
				// call can outlast the apiserver's request timeout.
				if err := env.Client.DeleteAllOf(context.Background(), &corev1.Service{}, client.InNamespace(ns)); err != nil {
					b.Logf("clean up: %v", err)
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkSingleService creates one Service at a time and measures its
// create-to-status latency.
func BenchmarkSingleService(b *testing.B) {
	setup(b)
	benchPool(b)
	startController(b, controllers.Options{ServeServicesWithoutClass: true})
	ns := namespace(b, "bench-single", nil)
	sw := watchAssigned(b, ns)
	defer sw.stop()
	var lat []time.Duration
	i := 0
	for b.Loop() {
		name := fmt.Sprint("s", i)
		start := time.Now()
		if err := env.Client.Create(context.Background(), newService(ns, name)); err != nil {
			b.Fatal(err)
		}
		sw.waitFor(b, i+1)
		sw.mu.Lock()
		lat = append(lat, sw.assigned[name].Sub(start))
		sw.mu.Unlock()
		i++
	}
	b.ReportMetric(float64(percentile(lat, 0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "p99-ms")
}

// BenchmarkAssignExisting measures the controller alone: n Services are
// created while it is stopped (untimed), then it starts and the benchmark
// times how long it takes until every Service shows an address. This
// separates our throughput from the apiserver's cost of creating Services
// (whose ClusterIP allocator counts every allocated address on each create
// in Kubernetes 1.34, so creating 10,000 Services is quadratic).
func BenchmarkAssignExisting(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			setup(b)
			benchPool(b)
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				ns := namespace(b, fmt.Sprintf("bench-existing-%d-%d", n, i), nil)
				var wg sync.WaitGroup
				work := make(chan int)
				for range 64 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for j := range work {
							if err := env.Client.Create(context.Background(), newService(ns, fmt.Sprint("s", j))); err != nil {
								b.Error(err)
							}
						}
					}()
				}
				for j := range n {
					work <- j
				}
				close(work)
				wg.Wait()
				sw := watchAssigned(b, ns)
				b.StartTimer()
				start := time.Now()
				c := startController(b, controllers.Options{ServeServicesWithoutClass: true, ServiceWorkers: 16})
				sw.waitFor(b, n)
				total := time.Since(start)
				b.StopTimer()
				sw.stop()
				c.stop()
				b.ReportMetric(float64(n)/total.Seconds(), "services/s")
				b.ReportMetric(total.Seconds(), "s-to-all-assigned")
				b.Logf("n=%d existing Services: %.1f s from controller start to all assigned (%.0f Services/s)", n, total.Seconds(), float64(n)/total.Seconds())
				if err := env.Client.DeleteAllOf(context.Background(), &corev1.Service{}, client.InNamespace(ns)); err != nil {
					b.Logf("clean up: %v", err)
				}
				b.StartTimer()
			}
		})
	}
}
