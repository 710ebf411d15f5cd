// Package faults holds cluster-side fault and load tests (issue 7): the
// real bgplb-controller reconcilers and a real bgplb-speaker reconciler run in
// this process against a real kube-apiserver and etcd (envtest), and the
// speaker announces to an in-process GoBGP router (speaker/bgp/bgptest).
//
// Each test starts its own control plane, because the apiserver-outage test
// stops and restarts the kube-apiserver process (etcd keeps running).
package faults

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	v1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/controllers"
	"github.com/bgplb/bgplb/internal/poll"
	"github.com/bgplb/bgplb/internal/testenv"
	"github.com/bgplb/bgplb/speaker/bgp"
	"github.com/bgplb/bgplb/speaker/bgp/bgptest"
	speakerctl "github.com/bgplb/bgplb/speaker/controller"
)

func init() {
	// Quiet: controller-runtime complains once when no logger is set.
	logf.SetLogger(logr.Discard())
	// client-go's reflectors and leader election log every refused
	// connection of an outage through klog.
	klog.SetLogger(logr.Discard())
}

var lo4 = netip.MustParseAddr("127.0.0.1")

const (
	nodeName = "node-a"
	ns       = "default"
	// bigPool holds more Services than any test keeps at once.
	bigPool = "10.128.0.0/16"
)

// cluster is a control plane whose kube-apiserver can be stopped and
// started again: its certificates live in a folder of ours (envtest would
// make new ones, with a new CA, on every start) and it keeps its port.
type cluster struct {
	env    *envtest.Environment
	Config *rest.Config
	Client client.Client
	Scheme *runtime.Scheme
}

func startCluster(t testing.TB) *cluster {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		if testenv.Required() {
			t.Fatalf("envtest is required (BGPLB_REQUIRE_ENVTEST=1) but %v", testenv.ErrNoAssets)
		}
		t.Skipf("skipping envtest test: %v", testenv.ErrNoAssets)
	}
	s, err := testenv.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	e := &envtest.Environment{
		CRDDirectoryPaths:        []string{filepath.Join(testenv.RepoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing:    true,
		Scheme:                   s,
		ControlPlaneStartTimeout: 2 * time.Minute,
		// kube-apiserver drains its watches for up to a minute on SIGTERM;
		// after this it is killed, which is what an outage test wants.
		ControlPlaneStopTimeout: 10 * time.Second,
	}
	testenv.Configure(e)
	api := e.ControlPlane.GetAPIServer()
	api.CertDir = t.TempDir()
	cfg, err := e.Start()
	if err != nil {
		t.Fatalf("start envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Logf("stop envtest: %v", err)
		}
	})
	cfg.QPS, cfg.Burst = 5000, 10000
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		t.Fatal(err)
	}
	cl := &cluster{env: e, Config: cfg, Client: c, Scheme: s}
	// envtest's default Service CIDR (a /24) holds only 254 ClusterIPs.
	if err := c.Create(context.Background(), &networkingv1.ServiceCIDR{
		ObjectMeta: metav1.ObjectMeta{Name: "bgplb-faults"},
		Spec:       networkingv1.ServiceCIDRSpec{CIDRs: []string{"10.96.0.0/16"}},
	}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create ServiceCIDR: %v", err)
	}
	return cl
}

// StopAPIServer stops the kube-apiserver process (etcd keeps running): it
// stops serving at SIGTERM, and is killed if it has not exited 10 s later.
func (c *cluster) StopAPIServer() error {
	err := c.env.ControlPlane.APIServer.Stop()
	if err != nil && strings.Contains(err.Error(), "timeout waiting for process") {
		return nil // SIGKILLed
	}
	return err
}

// StartAPIServer starts it again on the same port with the same certificates.
func (c *cluster) StartAPIServer() error { return c.env.ControlPlane.APIServer.Start() }

// manager runs a controller-runtime manager until stopped.
type manager struct {
	cancel context.CancelFunc
	done   chan error
}

func (m *manager) stop() error {
	if m.cancel == nil {
		return nil
	}
	m.cancel()
	err := <-m.done
	m.cancel = nil
	return err
}

func newManager(t testing.TB, c *cluster, o ctrl.Options) ctrl.Manager {
	t.Helper()
	cfg := rest.CopyConfig(c.Config)
	cfg.QPS, cfg.Burst = 300, 600 // bgplb-controller's defaults
	o.Scheme = c.Scheme
	o.Metrics = metricsserver.Options{BindAddress: "0"}
	o.HealthProbeBindAddress = "0"
	o.Controller = config.Controller{SkipNameValidation: ptr.To(true)}
	mgr, err := ctrl.NewManager(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	return mgr
}

func run(mgr ctrl.Manager) *manager {
	ctx, cancel := context.WithCancel(context.Background())
	m := &manager{cancel: cancel, done: make(chan error, 1)}
	go func() { m.done <- mgr.Start(ctx) }()
	return m
}

// startController runs the bgplb-controller reconcilers. Its events go to
// the apiserver through a broadcaster whose correlator caches (client-go's
// LRUs, 4096 entries each by default, bounded) hold 64 entries, so that their
// filling up is not mistaken for growth by the churn test.
func startController(t testing.TB, c *cluster) *manager {
	t.Helper()
	b := record.NewBroadcasterWithCorrelatorOptions(record.CorrelatorOptions{LRUCacheSize: 64})
	mgr := newManager(t, c, ctrl.Options{EventBroadcaster: b}) //nolint:staticcheck // see above
	t.Cleanup(b.Shutdown)
	if err := controllers.Setup(mgr, controllers.Options{Registerer: prometheus.NewRegistry()}); err != nil {
		t.Fatal(err)
	}
	m := run(mgr)
	t.Cleanup(func() { _ = m.stop() })
	return m
}

// speaker is the bgplb-speaker reconciler for one node and its BGP sessions.
type speaker struct {
	*manager
	bgp *bgp.Manager
}

func startSpeaker(t testing.TB, c *cluster, node string) *speaker {
	t.Helper()
	mgr := newManager(t, c, ctrl.Options{Cache: speakerctl.CacheOptions(node, "")})
	met, err := speakerctl.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	b := bgp.NewManager(logr.Discard())
	// A FakeRecorder without a channel drops events: nothing accumulates.
	rec := speakerctl.New(mgr.GetClient(), b, &record.FakeRecorder{}, met, logr.Discard(), speakerctl.Options{NodeName: node})
	if err := rec.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	s := &speaker{manager: run(mgr), bgp: b}
	t.Cleanup(func() {
		_ = s.stop()
		_ = b.Shutdown(context.Background(), bgp.ShutdownOptions{})
	})
	return s
}

// setupObjects creates a Ready node, a pool, a peer pointing at router and
// an advertisement of the pool.
func setupObjects(t testing.TB, c *cluster, router *bgptest.Router, pool string) {
	t.Helper()
	ctx := context.Background()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}}
	must(t, c.Client.Create(ctx, n))
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.2.10"}}
	must(t, c.Client.Status().Update(ctx, n))
	for _, o := range []client.Object{
		&v1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "faults"}, Spec: v1.IPPoolSpec{Addresses: []string{pool}}},
		&v1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "router"}, Spec: v1.BGPPeerSpec{
			PeerAddress: "127.0.0.1", PeerPort: ptr.To(int32(router.Port)), PeerASN: router.ASN, MyASN: 65010,
		}},
		&v1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "faults"}, Spec: v1.BGPAdvertisementSpec{IPPools: []string{"faults"}}},
	} {
		must(t, c.Client.Create(ctx, o))
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// service is a LoadBalancer Service of our class (no node ports) with a
// ready endpoint on nodeName, so that the speaker announces it.
func service(name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{
			Type:                          corev1.ServiceTypeLoadBalancer,
			LoadBalancerClass:             ptr.To(v1.LoadBalancerClass),
			AllocateLoadBalancerNodePorts: ptr.To(false),
			ExternalTrafficPolicy:         corev1.ServiceExternalTrafficPolicyCluster,
			Ports:                         []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}},
		},
	}
}

func endpoints(name string) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name + "-x",
			Labels: map[string]string{discoveryv1.LabelServiceName: name},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{"10.244.0.5"},
			NodeName:   ptr.To(nodeName),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
		}},
		Ports: []discoveryv1.EndpointPort{{Port: ptr.To(int32(80)), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
}

// createService creates the Service and its EndpointSlice.
func createService(ctx context.Context, c client.Client, name string) error {
	if err := c.Create(ctx, service(name)); err != nil {
		return fmt.Errorf("create service %s: %w", name, err)
	}
	if err := c.Create(ctx, endpoints(name)); err != nil {
		return fmt.Errorf("create endpointslice of %s: %w", name, err)
	}
	return nil
}

// deleteService deletes both (envtest runs no garbage collector).
func deleteService(ctx context.Context, c client.Client, name string) error {
	if err := c.Delete(ctx, endpoints(name)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete endpointslice of %s: %w", name, err)
	}
	if err := c.Delete(ctx, service(name)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete service %s: %w", name, err)
	}
	return nil
}

// assigned returns the address of every Service of ours in ns that has one.
func assigned(ctx context.Context, c client.Client) (map[string]netip.Addr, error) {
	var l corev1.ServiceList
	if err := c.List(ctx, &l, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	out := map[string]netip.Addr{}
	for _, s := range l.Items {
		if s.Spec.Type != corev1.ServiceTypeLoadBalancer {
			continue
		}
		for _, in := range s.Status.LoadBalancer.Ingress {
			if a, err := netip.ParseAddr(in.IP); err == nil {
				out[s.Name] = a
			}
		}
	}
	return out, nil
}

// hostRoutes is the set of /32s for the given addresses.
func hostRoutes(addrs map[string]netip.Addr) map[netip.Prefix]bool {
	out := map[netip.Prefix]bool{}
	for _, a := range addrs {
		out[netip.PrefixFrom(a, a.BitLen())] = true
	}
	return out
}

func sameSet(routes map[netip.Prefix]bgptest.Route, want map[netip.Prefix]bool) bool {
	if len(routes) != len(want) {
		return false
	}
	for p := range routes {
		if !want[p] {
			return false
		}
	}
	return true
}

func describeDiff(routes []bgptest.Route, want map[netip.Prefix]bool) string {
	var extra, missing []string
	got := map[netip.Prefix]bool{}
	for _, r := range routes {
		got[r.Prefix] = true
		if !want[r.Prefix] {
			extra = append(extra, r.Prefix.String())
		}
	}
	for p := range want {
		if !got[p] {
			missing = append(missing, p.String())
		}
	}
	sort.Strings(extra)
	sort.Strings(missing)
	if len(extra) > 5 {
		extra = append(extra[:5], "...")
	}
	if len(missing) > 5 {
		missing = append(missing[:5], "...")
	}
	return fmt.Sprintf("router has %d routes, want %d; extra %v; missing %v", len(routes), len(want), extra, missing)
}

// eventually polls f until it returns nil; the bound only keeps a broken
// test from hanging, it asserts no timing.
func eventually(t testing.TB, bound time.Duration, what string, f func() error) {
	t.Helper()
	poll.Until(t, bound, 200*time.Millisecond, what, f)
}
