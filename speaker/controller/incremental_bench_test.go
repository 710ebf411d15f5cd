package controller

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/bgplb/bgplb/speaker/bgp"
	"github.com/bgplb/bgplb/speaker/bgp/bgptest"
	"github.com/bgplb/bgplb/speaker/model"
)

// BenchmarkIncrementalEndpointChange10k is issue 3's "one EndpointSlice
// change to the UPDATE on the wire, inside the speaker" with the reconciler's
// incremental pass: 10,000 Services announced to an in-process GoBGP router
// on 127.0.0.1; each op flips one Service's only endpoint between ready and
// not ready and runs the pass as Reconcile does (plan, decide the touched
// Services, SetPrefixes) until the router has received the UPDATE. Compare
// BenchmarkEndpointChange10k in speaker/bgp, the full pass.
func BenchmarkIncrementalEndpointChange10k(b *testing.B) {
	const n = 10000
	ctx := context.Background()
	lo4 := netip.MustParseAddr("127.0.0.1")
	pool, _ := model.ParseAddresses([]string{"10.128.0.0/16"})
	cfg := model.Input{
		Node:           "n1",
		Nodes:          []model.Node{{Name: "n1", Ready: true}},
		Pools:          []model.Pool{{Name: "p", Ranges: pool}},
		Peers:          []model.Peer{{Name: "r", Address: lo4}},
		Advertisements: []model.BGPAdvertisement{{Name: "a", Communities: []string{"65000:1"}}},
	}
	services := make([]model.Service, n)
	index := map[string]int{}
	base := netip.MustParseAddr("10.128.0.0").As4()
	for i := range services {
		ip := base
		ip[2], ip[3] = byte(i>>8), byte(i)
		name := fmt.Sprintf("svc-%d", i)
		services[i] = model.Service{
			Namespace: "bench", Name: name, ID: "bench/" + name, TrafficPolicy: model.TrafficPolicyCluster,
			IPs:       []netip.Addr{netip.AddrFrom4(ip)},
			Endpoints: []model.Endpoint{{NodeName: "n2", Ready: true, Serving: true}},
		}
		index[services[i].ID] = i
	}
	lookup := func(k string) (model.Service, bool) {
		i, ok := index[k]
		if !ok {
			return model.Service{}, false
		}
		return services[i], true
	}

	// The router first, then the speaker's server (see bgptest).
	r := bgptest.Start(b, lo4, 64512, bgptest.Neighbor{Address: lo4, ASN: 65001})
	m := bgp.NewManager(logr.Discard(), nil)
	if err := m.SetPeers(ctx, []bgp.PeerConfig{{Name: "r", Address: lo4, Port: r.Port, PeerASN: 64512, MyASN: 65001,
		RouterID: netip.MustParseAddr("10.0.0.1"), ConnectRetry: time.Second}}); err != nil {
		b.Fatal(err)
	}
	defer m.Shutdown(ctx, bgp.ShutdownOptions{})
	r.WaitEstablished(b, lo4, time.Minute)

	inc := newIncremental()
	now := time.Now()
	pass := func(changed []string) {
		in := cfg
		in.Services = services
		c := configOf(in)
		p := inc.plan(c, changed, lookup, n, now)
		var err error
		if p.full {
			_, err = m.Set(ctx, "r", model.Desired(in).Peers["r"])
		} else {
			sub := in
			sub.Services = p.services
			_, err = m.SetPrefixes(ctx, "r", p.prefixes, model.Desired(sub).Peers["r"])
		}
		if err != nil {
			b.Fatal(err)
		}
		inc.done(p, c, in.Services, lookup, true, now)
	}
	pass(nil)
	if !r.Wait(time.Minute, func(routes map[netip.Prefix]bgptest.Route) bool { return len(routes) == n }) {
		b.Fatalf("router has %d of %d routes", r.Len(), n)
	}

	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		const k = 4242 // the same Service goes down and comes back
		ep := &services[k].Endpoints[0]
		ready := ep.Ready
		ep.Ready, ep.Serving = !ready, !ready
		want := n - 1
		if !ready {
			want = n
		}
		start := time.Now()
		pass([]string{services[k].ID})
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
