package controller_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/internal/testenv"
	"github.com/bgplb/bgplb/routeragent/agent"
	agentbgp "github.com/bgplb/bgplb/routeragent/bgp"
	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/routes"
)

// memRoutes stands in for the router's kernel table (package routes): it
// installs what the agent wants and records when each prefix got a route.
type memRoutes struct {
	mu        sync.Mutex
	installed map[netip.Prefix][]netip.Addr
	at        map[netip.Prefix]time.Time
}

func (m *memRoutes) Load() (map[netip.Prefix][]netip.Addr, error) { return nil, nil }

// The in-memory table keeps no weights and installs plain multipath.
func (m *memRoutes) SetWeights(routes.Weights) {}
func (m *memRoutes) Details() routes.Details {
	return routes.Details{NexthopGroups: routes.ModeMultipath, Reason: "in-memory test table"}
}

func (m *memRoutes) set(desired map[netip.Prefix][]netip.Addr, prefixes []netip.Prefix) {
	now := time.Now()
	for _, p := range prefixes {
		nhs := desired[p]
		if len(nhs) == 0 {
			delete(m.installed, p)
			continue
		}
		if _, had := m.installed[p]; !had {
			m.at[p] = now
		}
		m.installed[p] = slices.Clone(nhs)
	}
}

func (m *memRoutes) Reconcile(desired map[netip.Prefix][]netip.Addr, _ bool) routes.Result {
	m.mu.Lock()
	defer m.mu.Unlock()
	all := slices.Collect(maps.Keys(desired))
	all = append(all, slices.Collect(maps.Keys(m.installed))...)
	m.set(desired, all)
	return routes.Result{Installed: maps.Clone(m.installed), InstalledCount: len(m.installed)}
}

func (m *memRoutes) ReconcileChanged(desired map[netip.Prefix][]netip.Addr, changed []netip.Prefix) routes.Result {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.set(desired, changed)
	return routes.Result{InstalledCount: len(m.installed)}
}

func (m *memRoutes) Installed() map[netip.Prefix][]netip.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.installed)
}

func (m *memRoutes) installedAt(p netip.Prefix) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.at[p]
	_, still := m.installed[p]
	return t, ok && still
}

// routerAgent is a real bgplb-routeragent (policy, verdicts, its GoBGP) on
// 127.0.0.1 with its kernel table in memory.
type routerAgent struct {
	a      *agent.Agent
	routes *memRoutes
	port   int
	cfg    func(subnets ...string) *config.Config
}

func startRouterAgent(t testing.TB, subnets ...string) *routerAgent {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	r := &routerAgent{routes: &memRoutes{installed: map[netip.Prefix][]netip.Addr{}, at: map[netip.Prefix]time.Time{}}, port: port}
	r.cfg = func(subnets ...string) *config.Config {
		c, err := config.Parse([]byte(fmt.Sprintf(`asn: 64512
routerID: 127.0.0.1
listen: {address: 127.0.0.1, port: %d}
neighbors: [{prefix: 127.0.0.0/8, asn: 65010, allowUnauthenticated: true}]
serviceSubnets: [%s]
lanInterfaces: [lo]
`, port, strings.Join(subnets, ", "))))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	cfg := r.cfg(subnets...)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ready := make(chan struct{})
	var once sync.Once
	r.a = agent.New(cfg, agent.Deps{
		Speaker: agentbgp.New(agent.BGPConfig(cfg, nil), log),
		Routes:  r.routes,
		// The speaker's session comes from 127.0.0.1, its next hop.
		LAN: func([]string) ([]netip.Prefix, []netip.Addr, []string, error) {
			return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, nil, nil, nil
		},
		Notify: func(s string) {
			if s == "READY=1" {
				once.Do(func() { close(ready) })
			}
		},
	}, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := r.a.Run(ctx); err != nil {
			t.Errorf("router agent: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-ready:
	case <-done:
		t.Fatal("router agent stopped before it was ready")
	}
	return r
}

func routedCondition(t testing.TB, ns, name string) *metav1.Condition {
	t.Helper()
	s := &corev1.Service{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, s); err != nil {
		t.Fatal(err)
	}
	return meta.FindStatusCondition(s.Status.Conditions, v1.ServiceConditionRouted)
}

func waitCondition(t testing.TB, ns, name, reason, message string) {
	t.Helper()
	eventually(t, fmt.Sprintf("condition %s %s", reason, message), func() error {
		c := routedCondition(t, ns, name)
		if c == nil || c.Reason != reason || c.Message != message {
			return fmt.Errorf("condition %+v", c)
		}
		return nil
	})
}

// waitEvent reads the recorder's events until one contains want.
func waitEvent(t testing.TB, f *speakerFixture, want string) {
	t.Helper()
	deadline := time.After(wait)
	var seen []string
	for {
		select {
		case e := <-f.events.Events:
			if strings.Contains(e, want) {
				return
			}
			seen = append(seen, e)
		case <-deadline:
			t.Fatalf("no event %q; saw %q", want, seen)
		}
	}
}

// verdictLab: a node announcing 10.1.1.1, outside the router's service
// subnets (the pool is wider than the router allows), to a real router
// agent.
func verdictLab(t testing.TB, node string, hooks fixtureHooks) (*speakerFixture, *routerAgent, *discoveryv1.EndpointSlice) {
	t.Helper()
	router := startRouterAgent(t, "192.168.254.0/24")
	readyNode(t, node, map[string]string{"verdict": "yes"})
	// No garbage collector in envtest: remove the session state (after the
	// speaker stopped) so other tests do not see it.
	t.Cleanup(func() {
		_ = env.Client.DeleteAllOf(context.Background(), &v1.BGPSessionState{}, client.MatchingLabels{v1.LabelSessionNode: node})
	})
	create(t, &v1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "wide"}, Spec: v1.IPPoolSpec{Addresses: []string{"10.1.1.0/24"}}})
	create(t, &v1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "agent"}, Spec: v1.BGPPeerSpec{
		PeerAddress: "127.0.0.1", PeerPort: ptr.To(int32(router.port)), PeerASN: 64512, MyASN: 65010,
		NodeSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"verdict": "yes"}}},
	}})
	create(t, &v1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "wide"}, Spec: v1.BGPAdvertisementSpec{IPPools: []string{"wide"}}})
	svc := lbService(t, "default", "wide", "10.1.1.1", corev1.ServiceExternalTrafficPolicyCluster)
	slice := endpointSlice(t, svc, node, true)
	// The router's GoBGP started above, before the node's (the race rule
	// of speaker/bgp/bgptest).
	return startSpeakerWith(t, node, hooks), router, slice
}

// TestRouterVerdictOnService: the router rejects a Service's address
// outside its service subnets; the Service's bgplb.io/Routed condition says
// so with the reason, an event tells it, the BGPSessionState counts it; the
// router's configuration is fixed and the condition turns to Installed.
func TestRouterVerdictOnService(t *testing.T) {
	testenv.Skip(t, env)
	trace := &stageTrace{done: make(chan struct{})}
	t.Cleanup(func() { close(trace.done) })
	f, router, slice := verdictLab(t, "node-v", trace.hooks())

	waitCondition(t, "default", "wide", v1.RoutedReasonRejected, "router 127.0.0.1 rejected 10.1.1.1/32: outside-service-subnets")
	if c := routedCondition(t, "default", "wide"); c.Status != metav1.ConditionFalse {
		t.Errorf("rejected condition has status %s", c.Status)
	}
	waitEvent(t, f, "Warning RouteRejected router 127.0.0.1 rejected 10.1.1.1/32: outside-service-subnets")
	eventually(t, "BGPSessionState counts the rejection", func() error {
		s := &v1.BGPSessionState{}
		if err := env.Client.Get(context.Background(), client.ObjectKey{Name: "node-v-agent"}, s); err != nil {
			return err
		}
		if s.Status.RoutesRejected == nil || *s.Status.RoutesRejected != 1 || s.Status.RoutesInstalled == nil || *s.Status.RoutesInstalled != 0 {
			return fmt.Errorf("status %+v", s.Status)
		}
		return nil
	})

	// The router's administrator widens its service subnets.
	router.a.Reload(router.cfg("192.168.254.0/24", "10.1.1.0/24"))
	waitCondition(t, "default", "wide", v1.RoutedReasonInstalled, "router 127.0.0.1 installed 10.1.1.1/32 via 1 node")
	if c := routedCondition(t, "default", "wide"); c.Status != metav1.ConditionTrue {
		t.Errorf("installed condition has status %s", c.Status)
	}
	waitEvent(t, f, "Normal RouteInstalled router 127.0.0.1 installed 10.1.1.1/32 via 1 node")
	if v := gaugeValue(t, f.reg, "bgplb_speaker_prefixes_routed"); v != 1 {
		t.Errorf("bgplb_speaker_prefixes_routed = %v, want 1", v)
	}

	measureRoutedLatency(t, router, trace)

	// No usable endpoint anywhere: no node announces the Service, and the
	// condition says so instead of keeping its last verdict.
	setEndpoint(t, slice, "node-v", false)
	waitCondition(t, "default", "wide", v1.RoutedReasonNotAnnounced, "no node announces it: no usable endpoint")
	if c := routedCondition(t, "default", "wide"); c.Status != metav1.ConditionFalse {
		t.Errorf("not announced condition has status %s", c.Status)
	}
	waitEvent(t, f, "Normal RouteNotAnnounced no node announces it: no usable endpoint")
	// Announced again: the router's verdict is back.
	setEndpoint(t, slice, "node-v", true)
	waitCondition(t, "default", "wide", v1.RoutedReasonInstalled, "router 127.0.0.1 installed 10.1.1.1/32 via 1 node")
	// A new Service on a router that reports: its condition waits for the
	// router's verdict instead of saying NotReported first.
	svc2 := lbService(t, "default", "wide2", "10.1.1.2", corev1.ServiceExternalTrafficPolicyCluster)
	endpointSlice(t, svc2, "node-v", true)
	waitCondition(t, "default", "wide2", v1.RoutedReasonInstalled, "router 127.0.0.1 installed 10.1.1.2/32 via 1 node")
	for deadline := time.After(wait); ; {
		select {
		case e := <-f.events.Events:
			if strings.Contains(e, " Route") && strings.Contains(e, "10.1.1.2/32") && !strings.Contains(e, "RouteInstalled") {
				t.Errorf("event before the router's verdict on a new Service: %s", e)
			}
			if !strings.Contains(e, "installed 10.1.1.2/32") {
				continue
			}
		case <-deadline:
			t.Fatal("no RouteInstalled event for the new Service")
		}
		break
	}

	// A deleted Service is forgotten: the passes after its deletion do
	// not write its condition again and again (each pass patched every
	// Service deleted since the speaker started, and kept them all).
	if err := env.Client.Delete(context.Background(), svc2); err != nil {
		t.Fatal(err)
	}
	for _, later := range []struct{ name, addr string }{{"wide3", "10.1.1.3"}, {"wide4", "10.1.1.4"}} {
		s := lbService(t, "default", later.name, later.addr, corev1.ServiceExternalTrafficPolicyCluster)
		endpointSlice(t, s, "node-v", true)
		waitCondition(t, "default", later.name, v1.RoutedReasonInstalled, "router 127.0.0.1 installed "+later.addr+"/32 via 1 node")
	}
	if n := trace.notFoundPatches("default/wide2"); n > 1 {
		t.Errorf("%d status patches of the deleted Service default/wide2 (at most 1 is in flight when it goes)", n)
	}

	// The Service loses its address: bgplb no longer handles it.
	svc := &corev1.Service{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: "wide"}, svc); err != nil {
		t.Fatal(err)
	}
	svc.Status.LoadBalancer.Ingress = nil
	if err := env.Client.Status().Update(context.Background(), svc); err != nil {
		t.Fatal(err)
	}
	const unhandled = "no node announces it: bgplb does not handle it (not a LoadBalancer Service of bgplb, or no address)"
	waitCondition(t, "default", "wide", v1.RoutedReasonNotAnnounced, unhandled)
	waitEvent(t, f, "Normal RouteNotAnnounced "+unhandled)
}

// TestRouterVerdictOneEventPerChange: two nodes announce a Service to one
// router and hear its verdicts at once; each change of the Service's
// condition is written once and told by one event, not one per node.
func TestRouterVerdictOneEventPerChange(t *testing.T) {
	testenv.Skip(t, env)
	router := startRouterAgent(t, "192.168.254.0/24")
	nodes := []string{"node-e1", "node-e2"}
	for _, n := range nodes {
		readyNode(t, n, map[string]string{"verdict-events": n})
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			_ = env.Client.DeleteAllOf(context.Background(), &v1.BGPSessionState{}, client.MatchingLabels{v1.LabelSessionNode: n})
		}
	})
	create(t, &v1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "wide-e"}, Spec: v1.IPPoolSpec{Addresses: []string{"10.1.2.0/24"}}})
	// One BGPPeer per node: the router tells the sessions apart by their
	// source address, the node's next hop.
	for i, n := range nodes {
		create(t, &v1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "agent-" + n}, Spec: v1.BGPPeerSpec{
			PeerAddress: "127.0.0.1", PeerPort: ptr.To(int32(router.port)), PeerASN: 64512, MyASN: 65010,
			SourceAddress: fmt.Sprintf("127.0.0.%d", i+2),
			NodeSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"verdict-events": n}}},
		}})
	}
	create(t, &v1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "wide-e"}, Spec: v1.BGPAdvertisementSpec{IPPools: []string{"wide-e"}}})
	svc := lbService(t, "default", "wide-e", "10.1.2.1", corev1.ServiceExternalTrafficPolicyCluster)
	endpointSlice(t, svc, nodes[0], true)
	var fs []*speakerFixture
	for _, n := range nodes {
		fs = append(fs, startSpeaker(t, n))
	}
	// counted waits until both nodes' session states count the verdict
	// (written after the pass that wrote the condition and its event).
	counted := func(installed, rejected int32) {
		t.Helper()
		for _, n := range nodes {
			eventually(t, n+" counts the verdict", func() error {
				s := &v1.BGPSessionState{}
				if err := env.Client.Get(context.Background(), client.ObjectKey{Name: n + "-agent-" + n}, s); err != nil {
					return err
				}
				if ptr.Deref(s.Status.RoutesInstalled, -1) != installed || ptr.Deref(s.Status.RoutesRejected, -1) != rejected {
					return fmt.Errorf("status %+v", s.Status)
				}
				return nil
			})
		}
	}
	// events drains both nodes' events about the Service's route, once
	// each node finished a reconcile that started after the counts showed
	// (a pass may count a verdict that arrived after it reported on
	// verdicts: the next pass emits its event).
	events := func() []string {
		for _, f := range fs {
			settle(t, f)
		}
		var out []string
		for _, f := range fs {
			for {
				select {
				case e := <-f.events.Events:
					if strings.Contains(e, " Route") {
						out = append(out, e)
					}
					continue
				default:
				}
				break
			}
		}
		return out
	}
	rejected := "router 127.0.0.1 rejected 10.1.2.1/32: outside-service-subnets"
	installed := "router 127.0.0.1 installed 10.1.2.1/32 via 2 nodes"
	waitCondition(t, "default", "wide-e", v1.RoutedReasonRejected, rejected)
	counted(0, 1)
	// The nodes came up one after the other, so their first views may
	// have differed (one heard the verdict before the other announced):
	// what matters is what follows, when both hear each verdict at once.
	events()
	for i := range 3 {
		router.a.Reload(router.cfg("192.168.254.0/24", "10.1.2.0/24"))
		waitCondition(t, "default", "wide-e", v1.RoutedReasonInstalled, installed)
		counted(1, 0)
		if got, want := events(), []string{"Normal RouteInstalled " + installed}; !slices.Equal(got, want) {
			t.Errorf("round %d: events %q, want %q", i, got, want)
		}
		router.a.Reload(router.cfg("192.168.254.0/24"))
		waitCondition(t, "default", "wide-e", v1.RoutedReasonRejected, rejected)
		counted(0, 1)
		if got, want := events(), []string{"Warning RouteRejected " + rejected}; !slices.Equal(got, want) {
			t.Errorf("round %d: events %q, want %q", i, got, want)
		}
	}
}

// reconciles counts the fixture's finished reconciles.
func reconciles(t *testing.T, f *speakerFixture) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0.0
	for _, mf := range mfs {
		if mf.GetName() == "bgplb_speaker_reconciles_total" {
			for _, m := range mf.Metric {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n
}

// settle returns once a reconcile that started after settle was called
// has finished: kicked twice, each time waiting for a reconcile to finish
// (the first may have started before).
func settle(t *testing.T, f *speakerFixture) {
	t.Helper()
	for range 2 {
		n := reconciles(t, f)
		f.rec.Kick()
		eventually(t, "a reconcile", func() error {
			if reconciles(t, f) <= n {
				return fmt.Errorf("no reconcile finished")
			}
			return nil
		})
	}
}

// measureRoutedLatency logs how long after the router's (in-memory) kernel
// table got the route the Service's condition said Installed, the router
// being reconfigured back and forth. A measurement, not an assertion (see
// docs/benchmarks.md); BGPLB_VERDICT_ROUNDS sets the rounds (default 5).
func measureRoutedLatency(t *testing.T, router *routerAgent, trace *stageTrace) {
	rounds := envInt("BGPLB_VERDICT_ROUNDS", 5)
	pfx := netip.MustParsePrefix("10.1.1.1/32")
	// The test sees the condition through a watch, as a user's kubectl or
	// a controller would: polling the apiserver every millisecond would
	// load the very apiserver and CPUs it measures.
	conds := watchRouted(t, "default", "wide")
	next := func(reason string) time.Time {
		t.Helper()
		for deadline := time.After(wait); ; {
			select {
			case c := <-conds:
				if c.reason == reason {
					return c.at
				}
			case <-deadline:
				t.Fatalf("the condition never said %s", reason)
			}
		}
	}
	var total []time.Duration
	var stages []roundStages
	// The apiserver's own view of the writes: the Service status patches
	// (apiserver_request_duration_seconds) and all of its etcd writes.
	patches := map[string]string{"verb": "PATCH", "resource": "services", "subresource": "status"}
	etcdWrites := map[string]string{"operation": "update"}
	patchesBefore := apiserverHistograms(t, "apiserver_request_duration_seconds", patches)
	etcdBefore := apiserverHistograms(t, "etcd_request_duration_seconds", etcdWrites)
	cp := findControlPlane()
	// A round's stages are read when the next one starts: the status
	// patch may return after the test's watch saw its result.
	var last *pendingRound
	finish := func() {
		if last == nil {
			return
		}
		round := trace.round(last.installed, last.seen)
		round.waited = last.after.sub(last.before)
		stages = append(stages, round)
		last = nil
	}
	for range rounds {
		router.a.Reload(router.cfg("192.168.254.0/24"))
		next(v1.RoutedReasonRejected)
		// One change at a time, as an administrator's reload is.
		time.Sleep(300 * time.Millisecond)
		finish()
		trace.reset()
		before := readCPUWaits(cp)
		router.a.Reload(router.cfg("192.168.254.0/24", "10.1.1.0/24"))
		seen := next(v1.RoutedReasonInstalled)
		after := readCPUWaits(cp)
		at, ok := router.routes.installedAt(pfx)
		if !ok {
			t.Fatal("condition Installed without a route in the router's table")
		}
		total = append(total, seen.Sub(at))
		last = &pendingRound{installed: at, seen: seen, before: before, after: after}
	}
	time.Sleep(300 * time.Millisecond)
	finish()
	pct := func(d []time.Duration) string {
		if len(d) == 0 {
			return "none"
		}
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return fmt.Sprintf("p50 %v, p99 %v, max %v", d[len(d)/2], d[(len(d)*99)/100], d[len(d)-1])
	}
	var product []time.Duration
	for _, s := range stages {
		product = append(product, s.patchSent)
	}
	t.Logf("route installed -> Service condition Installed, %d rounds: %s; of which the product's part (route installed -> status patch sent: agent, BGP, speaker): %s",
		len(total), pct(total), pct(product))
	t.Logf("route installed -> Service condition Installed, %s", summarize(stages))
	t.Logf("over the rounds, the apiserver's Service status patches: %s; its etcd updates: %s",
		slowShare(patchesBefore, apiserverHistograms(t, "apiserver_request_duration_seconds", patches), 0.025, 0.05, 0.1),
		slowShare(etcdBefore, apiserverHistograms(t, "etcd_request_duration_seconds", etcdWrites), 0.025, 0.05, 0.1))
}

// pendingRound is a measured round whose stages are still to be read.
type pendingRound struct {
	installed, seen time.Time
	before, after   cpuWaits
}

// routedEvent is a change of the Routed condition as the test's watch saw
// it.
type routedEvent struct {
	reason string
	at     time.Time
}

// watchRouted reports each change of Service ns/name's Routed condition
// reason, timestamped on arrival.
func watchRouted(t *testing.T, ns, name string) <-chan routedEvent {
	t.Helper()
	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	w, err := wc.Watch(context.Background(), &corev1.ServiceList{}, client.InNamespace(ns),
		client.MatchingFields{"metadata.name": name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	out := make(chan routedEvent, 1000)
	go func() {
		last := ""
		for e := range w.ResultChan() {
			now := time.Now()
			s, ok := e.Object.(*corev1.Service)
			if !ok {
				continue
			}
			c := meta.FindStatusCondition(s.Status.Conditions, v1.ServiceConditionRouted)
			if c == nil || c.Reason == last {
				continue
			}
			last = c.Reason
			out <- routedEvent{c.Reason, now}
		}
	}()
	return out
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}
