package controller_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	v1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/internal/monitoring"
	"github.com/bgplb/bgplb/internal/testenv"
	"github.com/bgplb/bgplb/speaker/bgp"
	"github.com/bgplb/bgplb/speaker/bgp/bgptest"
	"github.com/bgplb/bgplb/speaker/controller"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

var lo4 = netip.MustParseAddr("127.0.0.1")

const wait = 30 * time.Second // upper bound for events, not a timing assertion

// speakerFixture runs a speaker for node against the envtest apiserver.
type speakerFixture struct {
	mgr     ctrl.Manager
	bgp     *bgp.Manager
	rec     *controller.Reconciler
	events  *record.FakeRecorder
	metrics *controller.Metrics
	reg     *prometheus.Registry
	cancel  context.CancelFunc
	stopped chan struct{}
}

// fixtureHooks let a test see inside the speaker it starts: wrap the
// reconciler's API client and its Speaker (e.g. to time them).
type fixtureHooks struct {
	client  func(client.Client) client.Client
	speaker func(*bgp.Manager) controller.Speaker
	// reconciler completes the reconciler before it starts (its BFD or
	// ReturnPath), with the fixture's metrics registry.
	reconciler func(*controller.Reconciler, *prometheus.Registry)
}

func startSpeaker(t testing.TB, node string) *speakerFixture {
	t.Helper()
	return startSpeakerWith(t, node, fixtureHooks{})
}

func startSpeakerWith(t testing.TB, node string, hooks fixtureHooks) *speakerFixture {
	t.Helper()
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  controller.CacheOptions(node, ""),
		// Several tests start a speaker in this process, one after the
		// other (TestSpeakerAgainstAPIServer, TestRouterVerdictOnService,
		// the BFD and return path tests).
		Controller: ctrlconfig.Controller{SkipNameValidation: ptr.To(true)},
		Logger:     testr.NewWithInterface(t, testr.Options{Verbosity: 0}),
	})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m, err := controller.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	f := &speakerFixture{mgr: mgr, events: record.NewFakeRecorder(100000), metrics: m, reg: reg, stopped: make(chan struct{})}
	log := testr.NewWithInterface(t, testr.Options{Verbosity: 0})
	f.bgp = bgp.NewManager(log)
	c := mgr.GetClient()
	if hooks.client != nil {
		c = hooks.client(c)
	}
	var sp controller.Speaker = f.bgp
	if hooks.speaker != nil {
		sp = hooks.speaker(f.bgp)
	}
	f.rec = controller.New(c, sp, f.events, m, log, controller.Options{
		NodeName: node, ServeServicesWithoutClass: true, ServiceEvents: true,
	})
	if hooks.reconciler != nil {
		hooks.reconciler(f.rec, reg)
	}
	if err := f.rec.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	go func() {
		defer close(f.stopped)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("manager: %v", err)
		}
	}()
	t.Cleanup(f.stop)
	return f
}

func (f *speakerFixture) stop() {
	select {
	case <-f.stopped:
		return
	default:
	}
	f.cancel()
	<-f.stopped
	_ = f.bgp.Shutdown(context.Background(), bgp.ShutdownOptions{})
}

func create(t testing.TB, obj client.Object) {
	t.Helper()
	if err := env.Client.Create(context.Background(), obj); err != nil {
		t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), obj) })
}

func readyNode(t testing.TB, name string, labels map[string]string) *corev1.Node {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	create(t, n)
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.2.10"}}
	if err := env.Client.Status().Update(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	return n
}

func lbService(t testing.TB, ns, name, ip string, policy corev1.ServiceExternalTrafficPolicy) *corev1.Service {
	t.Helper()
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeLoadBalancer,
			LoadBalancerClass:     ptr.To(v1.LoadBalancerClass),
			ExternalTrafficPolicy: policy,
			Ports:                 []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}},
		},
	}
	create(t, s)
	// Stand in for bgplb-controller: write the assigned address.
	s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip}}
	if err := env.Client.Status().Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	return s
}

func endpointSlice(t testing.TB, svc *corev1.Service, node string, ready bool) *discoveryv1.EndpointSlice {
	t.Helper()
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: svc.Namespace, Name: svc.Name + "-x",
			Labels: map[string]string{discoveryv1.LabelServiceName: svc.Name},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{"10.244.0.5"},
			NodeName:   ptr.To(node),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready), Serving: ptr.To(ready), Terminating: ptr.To(false)},
		}},
		Ports: []discoveryv1.EndpointPort{{Port: ptr.To(int32(80)), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	create(t, es)
	return es
}

func setEndpoint(t testing.TB, es *discoveryv1.EndpointSlice, node string, ready bool) {
	t.Helper()
	es.Endpoints[0].NodeName = ptr.To(node)
	es.Endpoints[0].Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(ready), Serving: ptr.To(ready), Terminating: ptr.To(false)}
	if err := env.Client.Update(context.Background(), es); err != nil {
		t.Fatal(err)
	}
}

func waitRoutes(t testing.TB, r *bgptest.Router, want []bgptest.Route) {
	t.Helper()
	opts := []cmp.Option{cmpopts.EquateEmpty(), cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })}
	deadline := time.Now().Add(wait)
	for {
		diff := cmp.Diff(want, r.Routes(), opts...)
		if diff == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("router routes (-want +got):\n%s", diff)
		}
		select {
		case <-r.Changed():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func eventually(t testing.TB, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestSpeakerAgainstAPIServer(t *testing.T) {
	testenv.Skip(t, env)
	ctx := context.Background()
	router := bgptest.Start(t, lo4, 64512, bgptest.Neighbor{Address: lo4, ASN: 65010})

	node := readyNode(t, "node-a", map[string]string{"bgp": "yes"})
	create(t, &v1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "lan"}, Spec: v1.IPPoolSpec{Addresses: []string{"192.168.254.0/24"}}})
	create(t, &v1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "lonely"}, Spec: v1.IPPoolSpec{Addresses: []string{"192.168.253.0/24"}}})
	create(t, &v1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "router"}, Spec: v1.BGPPeerSpec{
		PeerAddress: "127.0.0.1", PeerPort: ptr.To(int32(router.Port)), PeerASN: 64512, MyASN: 65010,
		NodeSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"bgp": "yes"}}},
	}})
	create(t, &v1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "lan"}, Spec: v1.BGPAdvertisementSpec{
		IPPools: []string{"lan"}, Communities: []string{"65010:254", "no-export"},
	}})

	web := lbService(t, "default", "web", "192.168.254.10", corev1.ServiceExternalTrafficPolicyCluster)
	webEP := endpointSlice(t, web, "node-b", true)
	local := lbService(t, "default", "local", "192.168.254.11", corev1.ServiceExternalTrafficPolicyLocal)
	localEP := endpointSlice(t, local, "node-b", true)
	// Not ours: another class.
	other := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "other"}, Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: ptr.To("example.com/other"), Ports: []corev1.ServicePort{{Port: 80}},
	}}
	create(t, other)
	other.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "192.168.254.12"}}
	if err := env.Client.Status().Update(ctx, other); err != nil {
		t.Fatal(err)
	}
	endpointSlice(t, other, "node-a", true)

	f := startSpeaker(t, "node-a")
	comms := []uint32{65010<<16 | 254, 0xFFFFFF01}
	routeTo := func(p string) bgptest.Route {
		return bgptest.Route{Prefix: netip.MustParsePrefix(p), NextHop: lo4, ASPath: []uint32{65010}, Communities: comms}
	}

	// Cluster policy: announced although the endpoint is on another node;
	// Local policy with no local endpoint: not announced; other class: not ours.
	waitRoutes(t, router, []bgptest.Route{routeTo("192.168.254.10/32")})

	// Session state is visible.
	eventually(t, "BGPSessionState established", func() error {
		s := &v1.BGPSessionState{}
		if err := env.Client.Get(ctx, client.ObjectKey{Name: "node-a-router"}, s); err != nil {
			return err
		}
		if s.Status.State != v1.SessionStateEstablished || s.Status.PrefixesSent != 1 || s.Status.EstablishedTime == nil ||
			s.Spec.Node != "node-a" || s.Spec.Peer != "router" || s.Labels[v1.LabelSessionNode] != "node-a" {
			return fmt.Errorf("state %+v %+v", s.Spec, s.Status)
		}
		return nil
	})

	// Local endpoint appears for the Local service: announced from here.
	setEndpoint(t, localEP, "node-a", true)
	// With its weight: one ready local endpoint, 1 Mbit/s of link bandwidth.
	weighted := routeTo("192.168.254.11/32")
	weighted.ExtendedCommunities = []string{"65010:125000"}
	waitRoutes(t, router, []bgptest.Route{routeTo("192.168.254.10/32"), weighted})
	// A count-only change of the session state is written too (at most a
	// second later, see stateWriteInterval).
	eventually(t, "BGPSessionState prefixesSent 2", func() error {
		s := &v1.BGPSessionState{}
		if err := env.Client.Get(ctx, client.ObjectKey{Name: "node-a-router"}, s); err != nil {
			return err
		}
		if s.Status.PrefixesSent != 2 {
			return fmt.Errorf("prefixesSent %d", s.Status.PrefixesSent)
		}
		return nil
	})

	// With a session up and paths announced, every speaker metric the
	// dashboard and the alerts use is served with the type their
	// expressions need, and bgplb_build_info names the program.
	checkMonitoringMetrics(t, f.reg)

	// It stops being ready: withdrawn at once.
	setEndpoint(t, localEP, "node-a", false)
	waitRoutes(t, router, []bgptest.Route{routeTo("192.168.254.10/32")})

	// Cluster service loses its last ready endpoint: withdrawn.
	setEndpoint(t, webEP, "node-b", false)
	waitRoutes(t, router, nil)
	setEndpoint(t, webEP, "node-b", true)
	waitRoutes(t, router, []bgptest.Route{routeTo("192.168.254.10/32")})
	// Those EndpointSlice changes left the configuration alone, so they
	// were incremental passes (only the changed Service decided).
	if n := counterValue(f.metrics.Passes.WithLabelValues("incremental")); n == 0 {
		t.Errorf("no incremental pass after EndpointSlice changes (full passes: %v)", counterValue(f.metrics.Passes.WithLabelValues("full")))
	}

	// The node is excluded from load balancers: everything withdrawn.
	node.Labels[corev1.LabelNodeExcludeBalancers] = "true"
	if err := env.Client.Update(ctx, node); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, router, nil)
	delete(node.Labels, corev1.LabelNodeExcludeBalancers)
	if err := env.Client.Update(ctx, node); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, router, []bgptest.Route{routeTo("192.168.254.10/32")})

	// Events: announced/withdrawn on the Service, and the unadvertised pool.
	seen := map[string]bool{}
	for len(f.events.Events) > 0 {
		seen[<-f.events.Events] = true
	}
	for _, want := range []string{
		"Normal Announced announced 192.168.254.10/32 from node node-a to peer router (127.0.0.1)",
		"Normal Withdrawn withdrew 192.168.254.10/32 from node node-a to peer router (127.0.0.1)",
		"Normal Announced announced 192.168.254.11/32 from node node-a to peer router (127.0.0.1)",
		"Warning NotAdvertised no BGPAdvertisement selects pool lonely: its addresses are not announced by node node-a",
	} {
		if !seen[want] {
			t.Errorf("missing event %q; got %v", want, seen)
		}
	}

	// The node leaves the peer's selector: session closed, state deleted.
	node.Labels["bgp"] = "no"
	if err := env.Client.Update(ctx, node); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, router, nil)
	eventually(t, "BGPSessionState deleted", func() error {
		var l v1.BGPSessionStateList
		if err := env.Client.List(ctx, &l); err != nil {
			return err
		}
		if len(l.Items) != 0 {
			return fmt.Errorf("%d states left", len(l.Items))
		}
		return nil
	})
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

func checkMonitoringMetrics(t *testing.T, reg *prometheus.Registry) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	fams := monitoring.Families(mfs)
	refs, err := monitoring.Load(testenv.RepoRoot())
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range monitoring.Check(refs, monitoring.Speaker, fams) {
		t.Error(err)
	}
	if p := monitoring.BuildInfoProgram(fams); p != monitoring.Speaker {
		t.Errorf("bgplb_build_info program=%q, want %s", p, monitoring.Speaker)
	}
}
