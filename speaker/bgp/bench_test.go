package bgp_test

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/bgplb/bgplb/internal/iprange"
	"github.com/bgplb/bgplb/speaker/bgp"
	"github.com/bgplb/bgplb/speaker/bgp/bgptest"
	"github.com/bgplb/bgplb/speaker/model"
)

// benchInput is a node with n Cluster-policy Services, each with one ready
// endpoint, in one pool, one peer and one advertisement.
func benchInput(n int) model.Input {
	pool, _ := iprange.ParsePool([]string{"10.128.0.0/16"})
	in := model.Input{
		Node:           "n1",
		Nodes:          []model.Node{{Name: "n1", Ready: true}},
		Pools:          []model.Pool{{Name: "p", Ranges: pool}},
		Peers:          []model.Peer{{Name: "r", Address: lo4}},
		Advertisements: []model.BGPAdvertisement{{Name: "a", Communities: []string{"65000:1"}}},
	}
	base := netip.MustParseAddr("10.128.0.0").As4()
	for i := 0; i < n; i++ {
		ip := base
		ip[2], ip[3] = byte(i>>8), byte(i)
		in.Services = append(in.Services, model.Service{
			Namespace: "bench", Name: fmt.Sprintf("svc-%d", i), TrafficPolicy: model.TrafficPolicyCluster,
			IPs:       []netip.Addr{netip.AddrFrom4(ip)},
			Endpoints: []model.Endpoint{{NodeName: "n2", Ready: true, Serving: true}},
		})
	}
	return in
}

// BenchmarkAnnounce10k: decide 10,000 Services and Set them into GoBGP, until
// the in-process router has received the last route. One op = all 10,000.
func BenchmarkAnnounce10k(b *testing.B) {
	const n = 10000
	in := benchInput(n)
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		r := bgptest.Start(b, lo4, 64512, bgptest.Neighbor{Address: lo4, ASN: 65001})
		m := bgp.NewManager(logr.Discard())
		p := bgp.PeerConfig{Name: "r", Address: lo4, Port: r.Port, PeerASN: 64512, MyASN: 65001,
			RouterID: netip.MustParseAddr("10.0.0.1"), ConnectRetry: time.Second}
		if err := m.SetPeers(ctx, []bgp.PeerConfig{p}); err != nil {
			b.Fatal(err)
		}
		r.WaitEstablished(b, lo4, time.Minute)
		b.StartTimer()

		start := time.Now()
		d := model.Desired(in)
		decided := time.Since(start)
		if _, err := m.Set(ctx, "r", d.Peers["r"]); err != nil {
			b.Fatal(err)
		}
		set := time.Since(start)
		if !r.Wait(time.Minute, func(routes map[netip.Prefix]bgptest.Route) bool { return len(routes) == n }) {
			b.Fatalf("router has %d of %d routes", r.Len(), n)
		}
		total := time.Since(start)

		b.StopTimer()
		b.ReportMetric(float64(decided.Microseconds())/1000, "ms-decide")
		b.ReportMetric(float64(set.Microseconds())/1000, "ms-set")
		b.ReportMetric(float64(total.Microseconds())/1000, "ms-last-route-at-peer")
		_ = m.Shutdown(ctx, bgp.ShutdownOptions{})
		b.StartTimer()
	}
}

// BenchmarkEndpointChange10k: with 10,000 Services announced, one Service
// loses its last ready endpoint and gets it back. Each op is one level-
// triggered pass as the speaker runs it (recompute Desired over all 10,000,
// diff, one DeletePath/AddPath) until the router has received the UPDATE.
// Reports p50/p99 over the ops.
func BenchmarkEndpointChange10k(b *testing.B) {
	const n = 10000
	in := benchInput(n)
	ctx := context.Background()
	r := bgptest.Start(b, lo4, 64512, bgptest.Neighbor{Address: lo4, ASN: 65001})
	m := bgp.NewManager(logr.Discard())
	p := bgp.PeerConfig{Name: "r", Address: lo4, Port: r.Port, PeerASN: 64512, MyASN: 65001,
		RouterID: netip.MustParseAddr("10.0.0.1"), ConnectRetry: time.Second}
	if err := m.SetPeers(ctx, []bgp.PeerConfig{p}); err != nil {
		b.Fatal(err)
	}
	defer m.Shutdown(ctx, bgp.ShutdownOptions{})
	r.WaitEstablished(b, lo4, time.Minute)
	if _, err := m.Set(ctx, "r", model.Desired(in).Peers["r"]); err != nil {
		b.Fatal(err)
	}
	if !r.Wait(time.Minute, func(routes map[netip.Prefix]bgptest.Route) bool { return len(routes) == n }) {
		b.Fatalf("router has %d of %d routes", r.Len(), n)
	}

	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		const k = 4242 // the same Service goes down and comes back
		ready := in.Services[k].Endpoints[0].Ready
		in.Services[k].Endpoints[0].Ready = !ready
		in.Services[k].Endpoints[0].Serving = !ready
		want := n - 1
		if !ready {
			want = n
		}
		start := time.Now()
		if _, err := m.Set(ctx, "r", model.Desired(in).Peers["r"]); err != nil {
			b.Fatal(err)
		}
		if !r.Wait(time.Minute, func(routes map[netip.Prefix]bgptest.Route) bool { return len(routes) == want }) {
			b.Fatalf("router has %d routes, want %d", r.Len(), want)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "ms-p50")
	b.ReportMetric(float64(lat[(len(lat)*99)/100].Microseconds())/1000, "ms-p99")
}
