package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bgplb/bgplb/routeragent/agent"
	"github.com/bgplb/bgplb/test/lab"
)

// routeWeights reads from the agent's status the installed next hops of
// pfx with their weights (all 1 when equal) and how routes are installed.
func routeWeights(l *lab.Lab, pfx netip.Prefix) (map[netip.Addr]uint16, string, error) {
	out, err := l.AgentCommand("status", "--json", "--config", l.AgentConfigPath())
	if err != nil {
		return nil, "", fmt.Errorf("status: %w: %s", err, out)
	}
	var st agent.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, "", fmt.Errorf("status: %w", err)
	}
	for _, r := range st.Routes.List {
		if r.Prefix != pfx {
			continue
		}
		w := map[netip.Addr]uint16{}
		for i, nh := range r.Installed {
			w[nh] = 1
			if len(r.Weights) == len(r.Installed) {
				w[nh] = r.Weights[i]
			}
		}
		return w, string(st.Routes.NexthopGroups), nil
	}
	return nil, string(st.Routes.NexthopGroups), nil
}

// waitWeights polls the status until pfx has weights want; it returns how
// long that took (measured, never asserted).
func waitWeights(t *testing.T, l *lab.Lab, pfx netip.Prefix, want map[netip.Addr]uint16) (time.Duration, string) {
	t.Helper()
	start := time.Now()
	var got map[netip.Addr]uint16
	var mode string
	var err error
	for time.Since(start) < 30*time.Second {
		got, mode, err = routeWeights(l, pfx)
		if err == nil && len(got) == len(want) {
			same := true
			for nh, w := range want {
				same = same && got[nh] == w
			}
			if same {
				return time.Since(start), mode
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("weights of %s: got %v (%v), want %v", pfx, got, err, want)
	return 0, ""
}

// countByNode sends n requests, each a new connection from a new port,
// from the lab's client to ip with 4 workers and counts which node
// answered.
func countByNode(t *testing.T, l *lab.Lab, ip netip.Addr, n int) map[string]int {
	t.Helper()
	var mu sync.Mutex
	counts := map[string]int{}
	var failed []string
	next := make(chan struct{}, n)
	for range n {
		next <- struct{}{}
	}
	close(next)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range next {
				body, err := l.ClientGet(context.Background(), ip.String(), 5*time.Second)
				mu.Lock()
				switch {
				case err != nil:
					failed = append(failed, err.Error())
				case strings.Contains(body, "hello from "+lab.Node1+" "):
					counts[lab.Node1]++
				case strings.Contains(body, "hello from "+lab.Node2+" "):
					counts[lab.Node2]++
				default:
					failed = append(failed, "unexpected answer "+body)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(failed) > 0 {
		t.Fatalf("%d of %d requests failed, first: %s", len(failed), n, failed[0])
	}
	return counts
}

// TestWeightedECMP (issue 13): a Local Service with 3 ready endpoints on
// node1 and 1 on node2 gets a router route weighted 3:1 (the speakers'
// link-bandwidth communities), and 4,000 short connections split 75/25
// within 5 points; moving an endpoint (2:2) makes the weights equal.
func TestWeightedECMP(t *testing.T) {
	l, ctx := setup(t)
	const name = "weighted"
	if err := l.CreateService(ctx, lab.ServiceSpec{Name: name, Local: true, EndpointsOn: []string{lab.Node1, lab.Node2}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.DeleteService(context.Background(), name) })
	ip, err := l.WaitServiceIP(ctx, name, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	pfx := netip.PrefixFrom(ip, 32)
	// Connections from one client spread over the next hops only when the
	// router hashes ports too.
	if err := l.SetRouterL4Hash(true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.SetRouterL4Hash(false) })
	ready := func(pod, node string) lab.Pod { return lab.Pod{Name: pod, Node: node, Ready: true, Serving: true} }
	if err := l.SetPods(ctx, name, []lab.Pod{ready("a1", lab.Node1), ready("a2", lab.Node1), ready("a3", lab.Node1), ready("a4", lab.Node2)}); err != nil {
		t.Fatal(err)
	}
	took, mode := waitWeights(t, l, pfx, map[netip.Addr]uint16{node1: 3, node2: 1})
	t.Logf("route weights 3:1 after %s (installed as %s)", took.Round(time.Millisecond), mode)
	if mode != "resilient" {
		t.Errorf("routes installed as %q, want resilient nexthop groups on this kernel", mode)
	}

	const n = 4000
	counts := countByNode(t, l, ip, n)
	share := float64(counts[lab.Node1]) / n
	t.Logf("%d connections: %v (node1 %.1f %%)", n, counts, 100*share)
	if share < 0.70 || share > 0.80 {
		t.Errorf("node1 took %.1f %% of the connections, want 75 %% +-5", 100*share)
	}

	// Scale to 2:2: one of node1's endpoints moves to node2.
	start := time.Now()
	if err := l.SetPods(ctx, name, []lab.Pod{ready("a1", lab.Node1), ready("a2", lab.Node1), ready("a4", lab.Node2), ready("a5", lab.Node2)}); err != nil {
		t.Fatal(err)
	}
	waitWeights(t, l, pfx, map[netip.Addr]uint16{node1: 1, node2: 1})
	t.Logf("weights followed the 2:2 endpoints in %s", time.Since(start).Round(time.Millisecond))
	if got, _, _ := routeWeights(l, pfx); !slices.Equal(sortedKeys(got), []netip.Addr{node1, node2}) {
		t.Errorf("next hops %v, want both nodes", got)
	}
}

func sortedKeys(m map[netip.Addr]uint16) []netip.Addr {
	out := make([]netip.Addr, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}
