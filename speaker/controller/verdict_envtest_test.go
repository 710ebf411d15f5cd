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
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/internal/testenv"
	"github.com/bgplb/bgplb/internal/verdict"
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
func verdictLab(t testing.TB, node string) (*speakerFixture, *routerAgent) {
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
	endpointSlice(t, svc, node, true)
	// The router's GoBGP started above, before the node's (the race rule
	// of speaker/bgp/bgptest).
	return startSpeaker(t, node), router
}

// TestRouterVerdictOnService: the router rejects a Service's address
// outside its service subnets; the Service's bgplb.io/Routed condition says
// so with the reason, an event tells it, the BGPSessionState counts it; the
// router's configuration is fixed and the condition turns to Installed.
func TestRouterVerdictOnService(t *testing.T) {
	testenv.Skip(t, env)
	f, router := verdictLab(t, "node-v")

	waitCondition(t, "default", "wide", v1.RoutedReasonRejected, "router 127.0.0.1 rejected 10.1.1.1/32: outside-service-subnets")
	if c := routedCondition(t, "default", "wide"); c.Status != metav1.ConditionFalse {
		t.Errorf("rejected condition has status %s", c.Status)
	}
	waitEvent(t, f, "Warning RouteRejected router 127.0.0.1 rejected 10.1.1.1/32: outside-service-subnets (node node-v, peer agent)")
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
	waitEvent(t, f, "Normal RouteInstalled router 127.0.0.1 installed 10.1.1.1/32 via 1 node (node node-v, peer agent)")
	if v := gaugeValue(t, f.reg, "bgplb_speaker_prefixes_routed"); v != 1 {
		t.Errorf("bgplb_speaker_prefixes_routed = %v, want 1", v)
	}

	measureRoutedLatency(t, f, router)
}

// measureRoutedLatency logs how long after the router's (in-memory) kernel
// table got the route the Service's condition said Installed, the router
// being reconfigured back and forth. A measurement, not an assertion (see
// docs/benchmarks.md); BGPLB_VERDICT_ROUNDS sets the rounds (default 5).
func measureRoutedLatency(t *testing.T, f *speakerFixture, router *routerAgent) {
	rounds := envInt("BGPLB_VERDICT_ROUNDS", 5)
	pfx := netip.MustParsePrefix("10.1.1.1/32")
	// total: route installed -> condition seen; bgpLeg: -> the speaker's
	// GoBGP holds the verdict (agent pass, BGP, the speaker's watch).
	var total, bgpLeg []time.Duration
	for range rounds {
		router.a.Reload(router.cfg("192.168.254.0/24"))
		waitCondition(t, "default", "wide", v1.RoutedReasonRejected, "router 127.0.0.1 rejected 10.1.1.1/32: outside-service-subnets")
		// One change at a time, as an administrator's reload is.
		time.Sleep(300 * time.Millisecond)
		got := make(chan time.Time, 1)
		stop := make(chan struct{})
		go func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if v, ok := f.bgp.Verdicts("agent")[pfx]; ok && v.State == verdict.Installed {
					got <- time.Now()
					return
				}
				time.Sleep(200 * time.Microsecond)
			}
		}()
		router.a.Reload(router.cfg("192.168.254.0/24", "10.1.1.0/24"))
		var seen time.Time
		for deadline := time.Now().Add(wait); ; {
			if c := routedCondition(t, "default", "wide"); c != nil && c.Reason == v1.RoutedReasonInstalled {
				seen = time.Now()
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the condition never said Installed")
			}
			time.Sleep(time.Millisecond)
		}
		close(stop)
		at, ok := router.routes.installedAt(pfx)
		if !ok {
			t.Fatal("condition Installed without a route in the router's table")
		}
		total = append(total, seen.Sub(at))
		select {
		case b := <-got:
			bgpLeg = append(bgpLeg, b.Sub(at))
		default:
		}
	}
	pct := func(d []time.Duration) string {
		if len(d) == 0 {
			return "none"
		}
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return fmt.Sprintf("p50 %v, p99 %v, max %v", d[len(d)/2], d[(len(d)*99)/100], d[len(d)-1])
	}
	t.Logf("route installed -> Service condition Installed, %d rounds: %s; of which route installed -> verdict at the speaker: %s",
		len(total), pct(total), pct(bgpLeg))
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}
