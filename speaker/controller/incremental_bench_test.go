package controller

import (
	"fmt"
	"net/netip"
	"sort"
	"testing"
	"time"

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
	h := newPassHarness(b)
	h.pass(b, services, nil, lookup)
	if !h.router.Wait(time.Minute, func(routes map[netip.Prefix]bgptest.Route) bool { return len(routes) == n }) {
		b.Fatalf("router has %d of %d routes", h.router.Len(), n)
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
		h.pass(b, services, []string{services[k].ID}, lookup)
		if !h.router.Wait(time.Minute, func(routes map[netip.Prefix]bgptest.Route) bool { return len(routes) == want }) {
			b.Fatalf("router has %d routes, want %d", h.router.Len(), want)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "ms-p50")
	b.ReportMetric(float64(lat[(len(lat)*99)/100].Microseconds())/1000, "ms-p99")
}
