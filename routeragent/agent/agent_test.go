package agent

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bgplb/bgplb/routeragent/bgp"
	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/policy"
	"github.com/bgplb/bgplb/routeragent/routes"
)

// Fakes for the side-effect boundaries: these tests need no root.

type fakeSpeaker struct {
	paths        []policy.Path
	eor          map[netip.Addr]bool
	decodeErrors int
	// taken: the paths per prefix at the last TakeChanges, to report the
	// prefixes whose paths differ now, as the real speaker notes them.
	taken map[netip.Prefix][]policy.Path
	// fullReads counts Paths calls (each reads every path).
	fullReads int
}

func byPrefix(paths []policy.Path) map[netip.Prefix][]policy.Path {
	out := map[netip.Prefix][]policy.Path{}
	for _, p := range paths {
		out[p.Prefix] = append(out[p.Prefix], p)
	}
	for _, ps := range out {
		slices.SortFunc(ps, func(x, y policy.Path) int { return x.Peer.Compare(y.Peer) })
	}
	return out
}

func (f *fakeSpeaker) TakeChanges() (changed []netip.Prefix, paths []policy.Path) {
	now := byPrefix(f.paths)
	for pfx, ps := range now {
		if !slices.Equal(ps, f.taken[pfx]) {
			changed = append(changed, pfx)
			paths = append(paths, ps...)
		}
	}
	for pfx := range f.taken {
		if _, ok := now[pfx]; !ok {
			changed = append(changed, pfx)
		}
	}
	f.taken = now
	return changed, paths
}

func (f *fakeSpeaker) Start(context.Context) error { return nil }
func (f *fakeSpeaker) Stop()                       {}
func (f *fakeSpeaker) Changed() <-chan struct{}    { return nil }
func (f *fakeSpeaker) Paths() []policy.Path {
	f.fullReads++
	return slices.Clone(f.paths)
}
func (f *fakeSpeaker) Peers() []bgp.PeerState {
	var out []bgp.PeerState
	for a, e := range f.eor {
		out = append(out, bgp.PeerState{Address: a, ASN: 64512, State: "established", Up: true, EndOfRIB: e})
	}
	slices.SortFunc(out, func(x, y bgp.PeerState) int { return x.Address.Compare(y.Address) })
	return out
}
func (f *fakeSpeaker) EndOfRIB(a netip.Addr) bool                           { return f.eor[a] }
func (f *fakeSpeaker) SetNeighbors(context.Context, bgp.Config) error       { return nil }
func (f *fakeSpeaker) Disconnect(context.Context, netip.Addr, string) error { return nil }
func (f *fakeSpeaker) Reset(context.Context, netip.Addr, string) error      { return nil }
func (f *fakeSpeaker) DecodeErrors() int                                    { return f.decodeErrors }
func (f *fakeSpeaker) PrefixLimitTeardowns() []netip.Addr                   { return nil }

type fakeRoutes struct {
	installed map[netip.Prefix][]netip.Addr
	foreign   map[netip.Prefix]bool
	// fullPasses counts Reconcile calls; planned counts the prefixes
	// ReconcileChanged was asked to look at.
	fullPasses, planned int
	weights             routes.Weights
}

func (f *fakeRoutes) Installed() map[netip.Prefix][]netip.Addr { return maps.Clone(f.installed) }
func (f *fakeRoutes) SetWeights(w routes.Weights)              { f.weights = w }
func (f *fakeRoutes) Details() routes.Details {
	return routes.Details{NexthopGroups: routes.ModeMultipath, Reason: "fake"}
}

func (f *fakeRoutes) ReconcileChanged(desired map[netip.Prefix][]netip.Addr, changed []netip.Prefix) routes.Result {
	var res routes.Result
	f.planned += len(changed)
	for _, p := range changed {
		switch {
		case len(desired[p]) == 0:
			delete(f.installed, p)
		case f.foreign[p]:
			res.Conflicts = append(res.Conflicts, routes.Conflict{Prefix: p, Protocol: 4})
		default:
			if f.installed == nil {
				f.installed = map[netip.Prefix][]netip.Addr{}
			}
			f.installed[p] = slices.Clone(desired[p])
		}
	}
	return res
}

func (f *fakeRoutes) Load() (map[netip.Prefix][]netip.Addr, error) {
	return maps.Clone(f.installed), nil
}
func (f *fakeRoutes) Reconcile(desired map[netip.Prefix][]netip.Addr, full bool) routes.Result {
	var res routes.Result
	f.fullPasses++
	next := map[netip.Prefix][]netip.Addr{}
	for p, nhs := range desired {
		if f.foreign[p] {
			res.Conflicts = append(res.Conflicts, routes.Conflict{Prefix: p, Protocol: 4})
			continue
		}
		next[p] = slices.Clone(nhs)
	}
	f.installed = next
	res.Installed = maps.Clone(next)
	return res
}

var (
	pA, pB = netip.MustParseAddr("192.168.2.20"), netip.MustParseAddr("192.168.2.21")
	svc1   = netip.MustParsePrefix("192.168.254.1/32")
	svc2   = netip.MustParsePrefix("192.168.254.2/32")
)

func testAgent(t testing.TB, sp Speaker, rt Routes) *Agent {
	t.Helper()
	return testAgentSubnets(t, sp, rt, "192.168.254.0/24")
}

// testAgentSubnets is testAgent with other service subnets (a YAML list's
// items).
func testAgentSubnets(t testing.TB, sp Speaker, rt Routes, subnets string) *Agent {
	t.Helper()
	cfg, err := config.Parse([]byte(`asn: 64500
routerID: 192.168.2.1
neighbors: [{prefix: 192.168.2.0/24, asn: 64512, allowUnauthenticated: true}] # the test speakers have no secret
serviceSubnets: [` + subnets + `]
lanInterfaces: [lan0]
`))
	if err != nil {
		t.Fatal(err)
	}
	a := New(cfg, Deps{Speaker: sp, Routes: rt, LAN: func([]string) ([]netip.Prefix, []netip.Addr, []string, error) {
		return []netip.Prefix{netip.MustParsePrefix("192.168.2.0/24")}, []netip.Addr{netip.MustParseAddr("192.168.2.1")}, nil, nil
	}}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	a.retry, a.release = time.NewTimer(time.Hour), time.NewTimer(time.Hour)
	a.retry.Stop()
	a.release.Stop()
	a.refreshLAN()
	return a
}

// TestStaleUntilEndOfRIB: routes found at start keep each next hop until
// the peer with that address sent End-of-RIB, per peer.
func TestStaleUntilEndOfRIB(t *testing.T) {
	sp := &fakeSpeaker{eor: map[netip.Addr]bool{pA: false, pB: false}}
	rt := &fakeRoutes{installed: map[netip.Prefix][]netip.Addr{svc1: {pA, pB}, svc2: {pA}}}
	a := testAgent(t, sp, rt)
	stale, _ := rt.Load()
	a.stale, a.staleDeadline = stale, time.Now().Add(time.Hour)

	// A is back and announced svc1 only, no End-of-RIB yet: nothing changes.
	sp.paths = []policy.Path{{Peer: pA, NextHop: pA, Prefix: svc1}}
	a.reconcile(t.Context(), true)
	want := map[netip.Prefix][]netip.Addr{svc1: {pA, pB}, svc2: {pA}}
	cmpOpts := cmp.Comparer(func(x, y netip.Addr) bool { return x == y })
	if d := cmp.Diff(want, rt.installed, cmpOpts, cmp.Comparer(func(x, y netip.Prefix) bool { return x == y })); d != "" {
		t.Fatalf("before End-of-RIB (-want +got):\n%s", d)
	}
	// A sent End-of-RIB: A's stale svc2 goes; B's next hop on svc1 stays.
	sp.eor[pA] = true
	a.reconcile(t.Context(), false)
	want = map[netip.Prefix][]netip.Addr{svc1: {pA, pB}}
	if d := cmp.Diff(want, rt.installed, cmpOpts, cmp.Comparer(func(x, y netip.Prefix) bool { return x == y })); d != "" {
		t.Fatalf("after A's End-of-RIB (-want +got):\n%s", d)
	}
	if st := a.Snapshot(); st.Routes.Stale != 1 {
		t.Errorf("status staleKept = %d, want 1", st.Routes.Stale)
	}
	// B sent End-of-RIB without announcing svc1: the stale phase is over.
	sp.eor[pB] = true
	a.reconcile(t.Context(), false)
	want = map[netip.Prefix][]netip.Addr{svc1: {pA}}
	if d := cmp.Diff(want, rt.installed, cmpOpts, cmp.Comparer(func(x, y netip.Prefix) bool { return x == y })); d != "" {
		t.Fatalf("after B's End-of-RIB (-want +got):\n%s", d)
	}
	if a.stale != nil {
		t.Error("stale routes still tracked after every next hop's peer sent End-of-RIB")
	}
}

func TestStaleTimeout(t *testing.T) {
	sp := &fakeSpeaker{eor: map[netip.Addr]bool{}}
	rt := &fakeRoutes{installed: map[netip.Prefix][]netip.Addr{svc1: {pA}}}
	a := testAgent(t, sp, rt)
	a.stale, a.staleDeadline = maps.Clone(rt.installed), time.Now().Add(-time.Second)
	a.reconcile(t.Context(), true)
	if len(rt.installed) != 0 || a.stale != nil {
		t.Fatalf("after the stale timeout: installed %v, stale %v", rt.installed, a.stale)
	}
}

// TestMetrics scrapes the collector after a pass with an ECMP route, a
// rejected path and a conflict.
func TestMetrics(t *testing.T) {
	sp := &fakeSpeaker{eor: map[netip.Addr]bool{pA: true, pB: true}, paths: []policy.Path{
		{Peer: pA, NextHop: pA, Prefix: svc1},
		{Peer: pB, NextHop: pB, Prefix: svc1},
		{Peer: pB, NextHop: pB, Prefix: svc2},
		{Peer: pB, NextHop: pB, Prefix: netip.MustParsePrefix("10.0.0.1/32")},
	}}
	rt := &fakeRoutes{foreign: map[netip.Prefix]bool{svc2: true}}
	a := testAgent(t, sp, rt)
	a.reconcile(t.Context(), true)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{a: a})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			v := m.GetGauge().GetValue()
			if m.GetCounter() != nil {
				v = m.GetCounter().GetValue()
			}
			got[mf.GetName()+"{"+strings.Join(labels, ",")+"}"] = v
		}
	}
	want := map[string]float64{
		"bgplb_routeragent_ecmp_paths{}":                                                        2,
		"bgplb_routeragent_peers_up{}":                                                          2,
		"bgplb_routeragent_peer_up{peer=192.168.2.20}":                                          1,
		"bgplb_routeragent_routes_installed{}":                                                  1,
		"bgplb_routeragent_routes_desired{}":                                                    2,
		"bgplb_routeragent_route_conflicts{}":                                                   1,
		"bgplb_routeragent_routes_ecmp_width{width=2}":                                          1,
		"bgplb_routeragent_prefixes_accepted{peer=192.168.2.21}":                                2,
		"bgplb_routeragent_prefixes_rejected{peer=192.168.2.21,reason=outside-service-subnets}": 1,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}
