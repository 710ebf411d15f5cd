package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bgplb/bgplb/test/lab"
)

// BenchmarkDrainZeroFailures counts failed requests through the router while
// the cluster changes under a Service: a client loop of short HTTP requests
// (a new TCP connection each, 2 s timeout; the router hashes connections
// over the next hops by ports) to an externalTrafficPolicy Local
// Service with 4 endpoints, during
//   - drain: node1 cordoned (spec and taint), its two pods terminating
//     (serving) while their replacements start on node2, then gone;
//   - rolling: a rolling update of the 4 replicas, one at a time: the new pod
//     on the other node starts, turns ready, the old one terminates
//     (serving), then is gone;
//   - restart: node1's speaker stopped with SIGTERM and started again.
//
// A node without a serving local endpoint refuses connections (the lab's
// kube-proxy stand-in, lab.SetLocalRefuse), as kube-proxy drops them for a
// Local Service. Run with `make bench-drain` (root, envtest binaries);
// BGPLB_BENCH_DRAIN=1 gates it because it takes the shared lab for a while.
// BGPLB_BENCH_DRAIN_BASELINE=1 first restarts both speakers with
// --graceful-shutdown-on-drain=false --graceful-shutdown-delay=0 (announce
// plainly through a drain, withdraw at once on SIGTERM: the behaviour of
// MetalLB and of bgplb before issue 21, minus the withdrawal on cordon) and
// restores the defaults at the end.
func BenchmarkDrainZeroFailures(b *testing.B) {
	if os.Getenv("BGPLB_BENCH_DRAIN") == "" {
		b.Skip("set BGPLB_BENCH_DRAIN=1 (make bench-drain)")
	}
	if theLab == nil {
		b.Skip("skipping: " + skipWhy)
	}
	l := theLab
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var speakerArgs []string
	if os.Getenv("BGPLB_BENCH_DRAIN_BASELINE") != "" {
		speakerArgs = []string{"--graceful-shutdown-on-drain=false", "--graceful-shutdown-delay=0"}
	}
	restartSpeaker := func(node string, args []string) {
		b.Helper()
		if err := l.Stop("speaker-"+node, syscall.SIGTERM); err != nil {
			b.Fatal(err)
		}
		if err := l.StartSpeakerWith(node, args...); err != nil {
			b.Fatal(err)
		}
	}
	if speakerArgs != nil {
		for _, n := range []string{lab.Node1, lab.Node2} {
			restartSpeaker(n, speakerArgs)
		}
		defer func() {
			for _, n := range []string{lab.Node1, lab.Node2} {
				restartSpeaker(n, nil)
			}
		}()
	}
	// BGPLB_BENCH_DRAIN_NEXTHOP_GROUPS=multipath|resilient restarts the
	// agent with that routes.nexthopGroups for the run (issue 21: the
	// router's hash-threshold multipath against resilient groups).
	nhg := os.Getenv("BGPLB_BENCH_DRAIN_NEXTHOP_GROUPS")
	if nhg != "" {
		restartAgent := func(m lab.AgentMode) {
			b.Helper()
			if err := l.StopAgent(); err != nil {
				b.Fatal(err)
			}
			if err := l.StartAgent(m); err != nil {
				b.Fatal(err)
			}
			if err := l.WaitAgentPeers(ctx, 2, time.Minute); err != nil {
				b.Fatal(err)
			}
		}
		restartAgent(lab.AgentMode{Firewall: true, Redirects: true, NexthopGroups: nhg})
		defer restartAgent(lab.AgentMode{Firewall: true, Redirects: true})
	}
	const name = "bench-drain"
	if err := l.CreateService(ctx, lab.ServiceSpec{Name: name, Local: true, EndpointsOn: []string{lab.Node1, lab.Node2}}); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = l.DeleteService(context.Background(), name) }()
	ip, err := l.WaitServiceIP(ctx, name, 30*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	pfx := netip.PrefixFrom(ip, 32)
	// Each request is a new connection from a new port: hashed by ports,
	// they reach both nodes, so a change on either one shows.
	if err := l.SetRouterL4Hash(true); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = l.SetRouterL4Hash(false) }()
	defer func() {
		for _, n := range []string{lab.Node1, lab.Node2} {
			_ = l.SetLocalRefuse(n, ip, false)
		}
		_ = l.Cordon(context.Background(), lab.Node1, false)
	}()

	// apply writes the pods as the endpointslice controller would, with the
	// kube-proxy stand-in following each node's serving endpoints first (a
	// pod exits before its endpoint leaves the slice, and listens before it
	// turns ready).
	apply := func(pods []lab.Pod) {
		b.Helper()
		for _, n := range []string{lab.Node1, lab.Node2} {
			serving := false
			for _, p := range pods {
				serving = serving || (p.Node == n && p.Serving)
			}
			if err := l.SetLocalRefuse(n, ip, !serving); err != nil {
				b.Fatal(err)
			}
		}
		if err := l.SetPods(ctx, name, pods); err != nil {
			b.Fatal(err)
		}
	}
	ready := func(name, node string) lab.Pod { return lab.Pod{Name: name, Node: node, Ready: true, Serving: true} }
	starting := func(name, node string) lab.Pod { return lab.Pod{Name: name, Node: node} }
	terminating := func(p lab.Pod) lab.Pod { p.Ready, p.Serving, p.Terminating = false, true, true; return p }
	waitBoth := func() {
		b.Helper()
		if err := l.WaitRoute(ctx, pfx, []netip.Addr{node1, node2}, time.Minute); err != nil {
			b.Fatal(err)
		}
	}
	settle := func(d time.Duration) { time.Sleep(d) }

	initial := []lab.Pod{ready("a1", lab.Node1), ready("a2", lab.Node1), ready("a3", lab.Node2), ready("a4", lab.Node2)}
	apply(initial)
	waitBoth()
	if _, _, err := getEventually(ctx, l, ip, 10*time.Second); err != nil {
		b.Fatal(err)
	}

	cases := []struct {
		name string
		run  func()
	}{
		{"drain", func() {
			if err := l.Cordon(ctx, lab.Node1, true); err != nil {
				b.Fatal(err)
			}
			if speakerArgs == nil {
				// The agent takes node1 out of the ECMP set (GRACEFUL_SHUTDOWN).
				if err := l.WaitRoute(ctx, pfx, []netip.Addr{node2}, time.Minute); err != nil {
					b.Fatal(err)
				}
			} else {
				settle(500 * time.Millisecond)
			}
			pods := []lab.Pod{terminating(initial[0]), terminating(initial[1]), initial[2], initial[3], starting("b1", lab.Node2), starting("b2", lab.Node2)}
			apply(pods)
			settle(300 * time.Millisecond)
			pods[4], pods[5] = ready("b1", lab.Node2), ready("b2", lab.Node2)
			apply(pods)
			settle(time.Second) // the evicted pods' termination grace period
			apply(pods[2:])
			settle(time.Second)
		}},
		{"rolling", func() {
			pods := []lab.Pod{ready("a1", lab.Node1), ready("a2", lab.Node1), ready("a3", lab.Node2), ready("a4", lab.Node2)}
			for i := 0; i < 4; i++ {
				old := pods[0]
				other := lab.Node1
				if old.Node == lab.Node1 {
					other = lab.Node2
				}
				nu := fmt.Sprintf("n%d", i+1)
				pods = append(pods, starting(nu, other))
				apply(pods)
				settle(200 * time.Millisecond)
				pods[len(pods)-1] = ready(nu, other)
				apply(pods)
				settle(200 * time.Millisecond)
				pods[0] = terminating(old)
				apply(pods)
				settle(500 * time.Millisecond)
				pods = pods[1:]
				apply(pods)
				settle(300 * time.Millisecond)
			}
		}},
		{"speaker-restart", func() {
			restartSpeaker(lab.Node1, speakerArgs)
			waitBoth()
			settle(time.Second)
		}},
	}
	var report []string
	for _, c := range cases {
		// Every case starts with both nodes serving and announcing.
		if c.name != "drain" {
			if err := l.Cordon(ctx, lab.Node1, false); err != nil {
				b.Fatal(err)
			}
			apply(initial)
			waitBoth()
		}
		loop := startClientLoop(l, ip, 2)
		start := time.Now()
		c.run()
		st := loop.stop()
		line := fmt.Sprintf("%-16s %6d requests in %5.1fs, %d failed", c.name, st.total, time.Since(start).Seconds(), st.failed)
		if st.failed > 0 {
			line += " (" + st.errors() + ")"
		}
		report = append(report, line)
		b.ReportMetric(float64(st.failed), c.name+"-failed")
		b.ReportMetric(float64(st.total), c.name+"-requests")
	}
	mode := "defaults"
	if speakerArgs != nil {
		mode = "baseline " + strings.Join(speakerArgs, " ")
	}
	if nhg != "" {
		mode += "; router routes.nexthopGroups: " + nhg
	}
	fmt.Printf("failed requests through the router (externalTrafficPolicy Local, 4 endpoints on 2 nodes; speakers: %s):\n", mode)
	for _, r := range report {
		fmt.Println("  " + r)
	}
}

// clientLoop runs workers that each send one request after another.
type clientLoop struct {
	total, failed atomic.Int64
	mu            sync.Mutex
	errs          map[string]int
	done          chan struct{}
	wg            sync.WaitGroup
}

type loopStats struct {
	total, failed int64
	errs          map[string]int
}

func (s loopStats) errors() string {
	var out []string
	for e, n := range s.errs {
		out = append(out, fmt.Sprintf("%dx %s", n, e))
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

func startClientLoop(l *lab.Lab, ip netip.Addr, workers int) *clientLoop {
	c := &clientLoop{errs: map[string]int{}, done: make(chan struct{})}
	for range workers {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			for {
				select {
				case <-c.done:
					return
				default:
				}
				_, err := l.ClientGet(context.Background(), ip.String(), 2*time.Second)
				c.total.Add(1)
				if err != nil {
					c.failed.Add(1)
					msg := err.Error()
					if i := strings.LastIndex(msg, ": "); i >= 0 {
						msg = msg[i+2:]
					}
					c.mu.Lock()
					c.errs[msg]++
					c.mu.Unlock()
				}
			}
		}()
	}
	return c
}

func (c *clientLoop) stop() loopStats {
	close(c.done)
	c.wg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	return loopStats{total: c.total.Load(), failed: c.failed.Load(), errs: c.errs}
}
