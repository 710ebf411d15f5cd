package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/bgplb/bgplb/test/lab"
)

// routeWatch records when each prefix first appeared in the router's kernel.
type routeWatch struct {
	mu   sync.Mutex
	seen map[netip.Prefix]time.Time
	done chan struct{}
}

func watchRoutes(l *lab.Lab) (*routeWatch, error) {
	w := &routeWatch{seen: map[netip.Prefix]time.Time{}, done: make(chan struct{})}
	ch := make(chan netlink.RouteUpdate, 4096)
	if err := l.RouterSubscribe(ch, w.done); err != nil {
		return nil, err
	}
	go func() {
		for u := range ch {
			now := time.Now()
			if u.Type != syscall.RTM_NEWROUTE || u.Dst == nil {
				continue
			}
			p, err := netip.ParsePrefix(u.Dst.String())
			if err != nil {
				continue
			}
			w.mu.Lock()
			if _, ok := w.seen[p]; !ok {
				w.seen[p] = now
			}
			w.mu.Unlock()
		}
	}()
	return w, nil
}

func (w *routeWatch) wait(p netip.Prefix, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		w.mu.Lock()
		t, ok := w.seen[p]
		w.mu.Unlock()
		if ok {
			return t, nil
		}
		time.Sleep(time.Millisecond)
	}
	return time.Time{}, fmt.Errorf("no kernel route for %s after %v", p, timeout)
}

func (w *routeWatch) stop() { close(w.done) }

// measureServiceToRoute creates n Services one after another and returns,
// for each, the time from the Create call to the route in the router's
// kernel. The Services are deleted afterwards and their routes awaited gone.
func measureServiceToRoute(ctx context.Context, b *testing.B, l *lab.Lab, tag string, n int) (toRoute, toClient []time.Duration) {
	w, err := watchRoutes(l)
	if err != nil {
		b.Fatal(err)
	}
	defer w.stop()
	var lat []time.Duration
	var prefixes []netip.Prefix
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("bench-%s-%d", tag, i)
		start := time.Now()
		if err := l.CreateService(ctx, lab.ServiceSpec{Name: name, EndpointsOn: []string{lab.Node1, lab.Node2}}); err != nil {
			b.Fatal(err)
		}
		ip, err := l.WaitServiceIP(ctx, name, 30*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		statusSeen := time.Now()
		p := netip.PrefixFrom(ip, 32)
		at, err := w.wait(p, 30*time.Second)
		if err != nil {
			b.Fatalf("%s: %v", tag, err)
		}
		lat = append(lat, at.Sub(start))
		prefixes = append(prefixes, p)
		// The client's first successful request, from the moment the
		// status write was seen (polled every 20 ms).
		for {
			if _, err := l.ClientGet(ctx, ip.String(), 200*time.Millisecond); err == nil {
				break
			}
			if time.Since(statusSeen) > 30*time.Second {
				b.Fatalf("%s: client cannot reach %s", tag, ip)
			}
		}
		toClient = append(toClient, time.Since(statusSeen))
	}
	for i := 0; i < n; i++ {
		if err := l.DeleteService(ctx, fmt.Sprintf("bench-%s-%d", tag, i)); err != nil {
			b.Fatal(err)
		}
	}
	for _, p := range prefixes {
		if err := l.WaitRoute(ctx, p, nil, 60*time.Second); err != nil {
			b.Fatal(err)
		}
	}
	return lat, toClient
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	idx := int(float64(len(s)-1) * p)
	return s[idx]
}

// BenchmarkServiceToRouterRoute measures, in the lab, the time from creating
// a Service to its route in the router's kernel, over 100 Services, with
// bgplb-routeragent and then with FRR (zebra + bgpd from Debian) on the
// router, and prints both side by side.
func BenchmarkServiceToRouterRoute(b *testing.B) {
	if theLab == nil {
		b.Skip("skipping: " + skipWhy)
	}
	l := theLab
	ctx := context.Background()
	const n = 100

	agent, agentClient := measureServiceToRoute(ctx, b, l, "agent", n)

	// Replace the agent with FRR: stop it and remove our routes (the
	// firewall exemption stays; it does not affect route programming).
	if err := l.StopAgent(); err != nil {
		b.Fatal(err)
	}
	if out, err := l.AgentCommand("flush", "--config", l.AgentConfigPath()); err != nil {
		b.Fatalf("flush: %v\n%s", err, out)
	}
	if err := l.StartFRR(); err != nil {
		b.Fatal(err)
	}
	frr, frrClient := measureServiceToRoute(ctx, b, l, "frr", n)
	if err := l.StopFRR(); err != nil {
		b.Error(err)
	}
	if err := l.StartAgent(lab.AgentMode{Firewall: true, Redirects: true}); err != nil {
		b.Fatal(err)
	}

	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	ap50, ap99 := percentile(agent, 0.5), percentile(agent, 0.99)
	fp50, fp99 := percentile(frr, 0.5), percentile(frr, 0.99)
	b.ReportMetric(ms(ap50), "agent-p50-ms")
	b.ReportMetric(ms(ap99), "agent-p99-ms")
	b.ReportMetric(ms(fp50), "frr-p50-ms")
	b.ReportMetric(ms(fp99), "frr-p99-ms")
	fmt.Fprintf(os.Stderr, "\nService creation -> route in the router's kernel, %d Services, one at a time:\n", n)
	fmt.Fprintf(os.Stderr, "  %-22s %10s %10s\n", "router", "p50", "p99")
	fmt.Fprintf(os.Stderr, "  %-22s %10v %10v\n", "bgplb-routeragent", ap50.Round(time.Microsecond*100), ap99.Round(time.Microsecond*100))
	fmt.Fprintf(os.Stderr, "  %-22s %10v %10v\n", "FRR 8.4 (zebra+bgpd)", fp50.Round(time.Microsecond*100), fp99.Round(time.Microsecond*100))
	fmt.Fprintf(os.Stderr, "  %-22s %10.2f %10.2f\n", "ratio FRR/agent", float64(fp50)/float64(ap50), float64(fp99)/float64(ap99))
	ac50, ac99 := percentile(agentClient, 0.5), percentile(agentClient, 0.99)
	fc50, fc99 := percentile(frrClient, 0.5), percentile(frrClient, 0.99)
	b.ReportMetric(ms(ac99), "agent-client-p99-ms")
	fmt.Fprintf(os.Stderr, "Status write seen -> the client's first successful HTTP request through the router:\n")
	fmt.Fprintf(os.Stderr, "  %-22s %10v %10v\n", "bgplb-routeragent", ac50.Round(time.Microsecond*100), ac99.Round(time.Microsecond*100))
	fmt.Fprintf(os.Stderr, "  %-22s %10v %10v\n", "FRR 8.4 (zebra+bgpd)", fc50.Round(time.Microsecond*100), fc99.Round(time.Microsecond*100))
}
