package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	bgplbv1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/controllers"
	"github.com/bgplb/bgplb/internal/poll"
	"github.com/bgplb/bgplb/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	ctrl.SetLogger(zap.New(zap.WriteTo(discard{}))) // quiet unless a test logs
	testenv.Main(m, &env)
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

var setupOnce atomic.Bool

// setup skips without envtest and, once per process, gives the apiserver a
// large Service CIDR: envtest's default /24 holds only 254 ClusterIPs.
func setup(t testing.TB) {
	t.Helper()
	testenv.Skip(t, env)
	if setupOnce.Swap(true) {
		return
	}
	cidr := &networkingv1.ServiceCIDR{
		ObjectMeta: metav1.ObjectMeta{Name: "bgplb-tests"},
		Spec:       networkingv1.ServiceCIDRSpec{CIDRs: []string{"10.96.0.0/16"}},
	}
	if err := env.Client.Create(context.Background(), cidr); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create ServiceCIDR: %v", err)
	}
}

// controller runs one bgplb-controller manager until stopped.
type controller struct {
	cancel context.CancelFunc
	done   chan error
}

func startController(t testing.TB, o controllers.Options) *controller {
	t.Helper()
	cfg := *env.Config
	mgr, err := ctrl.NewManager(&cfg, ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		// Several managers run in one test process (restart tests).
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
	if err := controllers.Setup(mgr, o); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &controller{cancel: cancel, done: make(chan error, 1)}
	go func() { c.done <- mgr.Start(ctx) }()
	t.Cleanup(c.stop)
	return c
}

func (c *controller) stop() {
	if c.cancel == nil {
		return
	}
	c.cancel()
	<-c.done
	c.cancel = nil
}

// eventually polls f until it returns nil; the bound only keeps a broken
// test from hanging, it asserts no timing.
func eventually(t testing.TB, what string, f func() error) {
	t.Helper()
	poll.Until(t, 60*time.Second, 20*time.Millisecond, what, f)
}

func namespace(t testing.TB, name string, labels map[string]string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if err := env.Client.Create(context.Background(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	// envtest runs no namespace controller: delete what the test left.
	t.Cleanup(func() {
		_ = env.Client.DeleteAllOf(context.Background(), &corev1.Service{}, client.InNamespace(name))
	})
	return name
}

func pool(t testing.TB, name string, spec bgplbv1.IPPoolSpec) *bgplbv1.IPPool {
	t.Helper()
	p := &bgplbv1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
	if err := env.Client.Create(context.Background(), p); err != nil {
		t.Fatalf("create pool %s: %v", name, err)
	}
	t.Cleanup(func() { deletePool(t, name) })
	return p
}

// deletePool deletes a pool and, if the test left Services holding its
// addresses, drops the finalizer so the next test starts clean.
func deletePool(t testing.TB, name string) {
	ctx := context.Background()
	p := &bgplbv1.IPPool{}
	if err := env.Client.Get(ctx, client.ObjectKey{Name: name}, p); err != nil {
		return
	}
	_ = env.Client.Delete(ctx, p)
	if err := env.Client.Get(ctx, client.ObjectKey{Name: name}, p); err == nil && len(p.Finalizers) > 0 {
		p.Finalizers = nil
		_ = env.Client.Update(ctx, p)
	}
}

type svcOpt func(*corev1.Service)

func withAnnotation(k, v string) svcOpt {
	return func(s *corev1.Service) {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[k] = v
	}
}
func withClass(c string) svcOpt { return func(s *corev1.Service) { s.Spec.LoadBalancerClass = &c } }
func withPorts(ports ...int32) svcOpt {
	return func(s *corev1.Service) {
		s.Spec.Ports = nil
		for _, p := range ports {
			s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: fmt.Sprint("p", p), Port: p, TargetPort: intstr.FromInt32(p), Protocol: corev1.ProtocolTCP})
		}
	}
}

func newService(ns, name string, opts ...svcOpt) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{
			Type:                          corev1.ServiceTypeLoadBalancer,
			AllocateLoadBalancerNodePorts: ptr.To(false), // thousands of Services exceed the NodePort range
			Ports:                         []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
			Selector:                      map[string]string{"app": name},
		},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

func createService(t testing.TB, ns, name string, opts ...svcOpt) *corev1.Service {
	t.Helper()
	s := newService(ns, name, opts...)
	if err := env.Client.Create(context.Background(), s); err != nil {
		t.Fatalf("create service %s/%s: %v", ns, name, err)
	}
	return s
}

func ingress(t testing.TB, ns, name string) []string {
	t.Helper()
	s := &corev1.Service{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, s); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, in := range s.Status.LoadBalancer.Ingress {
		out = append(out, in.IP)
	}
	return out
}

func waitIngress(t testing.TB, ns, name string, want ...string) {
	t.Helper()
	eventually(t, fmt.Sprintf("service %s/%s ingress", ns, name), func() error {
		got := ingress(t, ns, name)
		if strings.Join(got, ",") != strings.Join(want, ",") {
			return fmt.Errorf("ingress %v, want %v", got, want)
		}
		return nil
	})
}

// waitEvent waits for an event on an object whose reason matches and whose
// message contains substr.
func waitEvent(t testing.TB, ns, name, reason, substr string) {
	t.Helper()
	eventually(t, fmt.Sprintf("event %s on %s/%s", reason, ns, name), func() error {
		var evs corev1.EventList
		if err := env.Client.List(context.Background(), &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		var seen []string
		for _, e := range evs.Items {
			if e.InvolvedObject.Name != name {
				continue
			}
			if e.Reason == reason && strings.Contains(e.Message, substr) {
				return nil
			}
			seen = append(seen, e.Reason+": "+e.Message)
		}
		return fmt.Errorf("not found; events: %q", seen)
	})
}

func getPool(t testing.TB, name string) *bgplbv1.IPPool {
	t.Helper()
	p := &bgplbv1.IPPool{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Name: name}, p); err != nil {
		t.Fatal(err)
	}
	return p
}

func waitPool(t testing.TB, name string, check func(*bgplbv1.IPPool) error) {
	t.Helper()
	eventually(t, "pool "+name, func() error { return check(getPool(t, name)) })
}

func condition(p *bgplbv1.IPPool, typ string) (metav1.ConditionStatus, string, string) {
	c := meta.FindStatusCondition(p.Status.Conditions, typ)
	if c == nil {
		return "", "", ""
	}
	return c.Status, c.Reason, c.Message
}

func deleteService(t testing.TB, ns, name string) {
	t.Helper()
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if err := env.Client.Delete(context.Background(), s); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
}

func isNotFound(err error) bool { return apierrors.IsNotFound(err) }

var errPending = errors.New("pending")
