package controller

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/bgplb/bgplb/speaker/model"
)

// announced is a fake BGP side with Set's and SetPrefixes's semantics.
type announced map[string]map[netip.Prefix]model.Advertisement

func (a announced) set(peer string, desired []model.Advertisement) {
	a[peer] = map[netip.Prefix]model.Advertisement{}
	for _, d := range desired {
		a[peer][d.Prefix] = d
	}
}

func (a announced) setPrefixes(peer string, prefixes []netip.Prefix, desired []model.Advertisement) {
	if a[peer] == nil {
		a[peer] = map[netip.Prefix]model.Advertisement{}
	}
	want := map[netip.Prefix]model.Advertisement{}
	for _, d := range desired {
		want[d.Prefix] = d
	}
	for _, p := range prefixes {
		if d, ok := want[p]; ok {
			a[peer][p] = d
		} else {
			delete(a[peer], p)
		}
	}
}

func (a announced) list(peer string) []model.Advertisement {
	var out []model.Advertisement
	for _, d := range a[peer] {
		out = append(out, d)
	}
	slices.SortFunc(out, func(x, y model.Advertisement) int { return x.Prefix.Addr().Compare(y.Prefix.Addr()) })
	return out
}

// TestIncrementalEqualsFull drives random Service changes (addresses,
// shared addresses, endpoints, labels, deletions) and occasional
// configuration changes through the planner, applies each pass as the
// reconciler does, and checks after every step that what is announced
// equals a full decision over everything.
func TestIncrementalEqualsFull(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	cfg := model.Input{
		Node:  "self",
		Nodes: []model.Node{{Name: "self", Ready: true}},
		Pools: []model.Pool{
			{Name: "p1", Ranges: []model.AddrRange{{First: netip.MustParseAddr("10.0.0.0"), Last: netip.MustParseAddr("10.0.0.15")}}},
			{Name: "p2", Ranges: []model.AddrRange{{First: netip.MustParseAddr("10.0.1.0"), Last: netip.MustParseAddr("10.0.1.15")}}},
		},
		Peers: []model.Peer{{Name: "r1", Address: netip.MustParseAddr("192.168.2.1")}, {Name: "r2", Address: netip.MustParseAddr("192.168.2.2")}},
		Advertisements: []model.BGPAdvertisement{
			{Name: "all", Pools: []string{"p1"}, Peers: []string{"r1"}, Communities: []string{"65000:1"}},
			{Name: "web", Pools: []string{"p1", "p2"}, ServiceSelectors: []model.LabelSelector{{MatchLabels: map[string]string{"app": "web"}}}, LocalPref: ptrU32(200)},
		},
	}
	services := map[string]model.Service{}
	randomService := func(name string) model.Service {
		s := model.Service{Namespace: "ns", Name: name, ID: "ns/" + name, TrafficPolicy: model.TrafficPolicyCluster}
		// 32 addresses over 40 Services: many shared, some outside pools.
		for n := rng.IntN(3); n > 0; n-- {
			s.IPs = append(s.IPs, netip.AddrFrom4([4]byte{10, 0, byte(rng.IntN(3)), byte(rng.IntN(16))}))
		}
		if rng.IntN(2) == 0 {
			s.Labels = map[string]string{"app": "web"}
		}
		if rng.IntN(2) == 0 {
			s.TrafficPolicy = model.TrafficPolicyLocal
		}
		for n := rng.IntN(3); n > 0; n-- {
			s.Endpoints = append(s.Endpoints, model.Endpoint{NodeName: []string{"self", "other"}[rng.IntN(2)], Ready: rng.IntN(3) > 0, Serving: true})
		}
		return s
	}
	lookup := func(k string) (model.Service, bool) {
		s, ok := services[k]
		return s, ok && len(s.IPs) > 0
	}
	all := func() []model.Service {
		var out []model.Service
		for _, s := range services {
			if len(s.IPs) > 0 {
				out = append(out, s)
			}
		}
		return out
	}

	inc := newIncremental()
	bgp := announced{}
	now := time.Unix(0, 0)
	var changed []string
	for i := range 40 {
		k := fmt.Sprintf("svc%d", i)
		services["ns/"+k] = randomService(k)
		changed = append(changed, "ns/"+k)
	}
	var fulls, incs int
	for step := range 400 {
		in := cfg
		in.Services = all()
		c := configOf(in)
		p := inc.plan(c, changed, lookup, len(in.Services), now)
		if p.full {
			fulls++
			res := model.Desired(in)
			for _, peer := range []string{"r1", "r2"} {
				bgp.set(peer, res.Peers[peer])
			}
		} else {
			incs++
			sub := in
			sub.Services = p.services
			res := model.Desired(sub)
			for _, peer := range []string{"r1", "r2"} {
				bgp.setPrefixes(peer, p.prefixes, res.Peers[peer])
			}
		}
		inc.done(p, c, in.Services, lookup, true, now)

		want := model.Desired(in)
		for _, peer := range []string{"r1", "r2"} {
			if diff := cmp.Diff(want.Peers[peer], bgp.list(peer), cmpopts.EquateEmpty(), cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})); diff != "" {
				t.Fatalf("step %d (full=%v %s), peer %s: announced differs from a full decision (-want +got):\n%s", step, p.full, p.reason, peer, diff)
			}
		}

		// Next step: change one to three Services, sometimes the config.
		changed = nil
		for n := 1 + rng.IntN(3); n > 0; n-- {
			k := fmt.Sprintf("svc%d", rng.IntN(45))
			if rng.IntN(6) == 0 {
				delete(services, "ns/"+k)
			} else {
				services["ns/"+k] = randomService(k)
			}
			changed = append(changed, "ns/"+k)
		}
		if rng.IntN(25) == 0 {
			cfg.Advertisements = slices.Clone(cfg.Advertisements)
			cfg.Advertisements[0].Communities = []string{fmt.Sprintf("65000:%d", step)}
		}
		now = now.Add(time.Second)
	}
	if incs < 300 || fulls < 10 {
		t.Fatalf("%d incremental and %d full passes: the test did not exercise both", incs, fulls)
	}
}

func TestIncrementalPlan(t *testing.T) {
	cfg := model.Input{Node: "n", Advertisements: []model.BGPAdvertisement{{Name: "a"}}}
	now := time.Unix(100, 0)
	a := model.Service{Namespace: "ns", Name: "a", ID: "ns/a", IPs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}
	b := model.Service{Namespace: "ns", Name: "b", ID: "ns/b", IPs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}
	c := model.Service{Namespace: "ns", Name: "c", ID: "ns/c", IPs: []netip.Addr{netip.MustParseAddr("10.0.0.3")}}
	svcs := map[string]model.Service{"ns/a": a, "ns/b": b, "ns/c": c}
	lookup := func(k string) (model.Service, bool) { s, ok := svcs[k]; return s, ok }
	all := []model.Service{a, b, c}

	inc := newIncremental()
	if p := inc.plan(cfg, nil, lookup, 3, now); !p.full {
		t.Fatalf("first pass not full: %+v", p)
	}
	inc.done(passPlan{full: true}, cfg, all, lookup, true, now)

	// a moves from .1 (shared with b) to .2: b is decided again for .1.
	a.IPs = []netip.Addr{netip.MustParseAddr("10.0.0.2")}
	svcs["ns/a"] = a
	p := inc.plan(cfg, []string{"ns/a"}, lookup, 3, now.Add(time.Second))
	got := []string{}
	for _, s := range p.services {
		got = append(got, s.Key())
	}
	slices.Sort(got)
	want := passPlan{services: nil, prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32"), netip.MustParsePrefix("10.0.0.2/32")}, changed: []string{"ns/a"}}
	if p.full || !slices.Equal(got, []string{"ns/a", "ns/b"}) || !slices.Equal(p.prefixes, want.prefixes) {
		t.Fatalf("plan = full %v services %v prefixes %v; want incremental, [ns/a ns/b], %v", p.full, got, p.prefixes, want.prefixes)
	}
	inc.done(p, cfg, nil, lookup, true, now.Add(time.Second))

	for _, tc := range []struct {
		name    string
		cfg     model.Input
		ok      bool // previous pass result
		at      time.Duration
		changed int
		reason  string
	}{
		{"config changed", model.Input{Node: "n", Advertisements: []model.BGPAdvertisement{{Name: "a", Communities: []string{"no-export"}}}}, true, 2 * time.Second, 1, "configuration changed"},
		{"aggregation", model.Input{Node: "n", Advertisements: []model.BGPAdvertisement{{Name: "a", AggregationLength: 24}}}, true, 2 * time.Second, 1, "aggregation"},
		{"periodic", cfg, true, fullPassEvery, 1, "periodic"},
		{"after failure", cfg, false, 2 * time.Second, 1, "first pass or last pass failed"},
		{"many changes", cfg, true, 2 * time.Second, 20, "many changes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inc := newIncremental()
			inc.done(passPlan{full: true}, cfg, all, lookup, true, now)
			if !tc.ok {
				inc.done(passPlan{}, cfg, nil, lookup, false, now)
			}
			changed := make([]string, tc.changed)
			for i := range changed {
				changed[i] = "ns/a"
			}
			p := inc.plan(configOf(tc.cfg), changed, lookup, 3, now.Add(tc.at))
			if !p.full || p.reason != tc.reason {
				t.Fatalf("plan = full %v reason %q; want full, %q", p.full, p.reason, tc.reason)
			}
		})
	}
}

func ptrU32(v uint32) *uint32 { return &v }
