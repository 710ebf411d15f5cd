package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	bgplbv1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/controllers"
)

func TestEndToEnd(t *testing.T) {
	setup(t)
	ctx := context.Background()
	ns := namespace(t, "e2e", nil)
	reg := prometheus.NewRegistry()
	startController(t, controllers.Options{ServeServicesWithoutClass: true, Registerer: reg})
	pool(t, "e2e", bgplbv1.IPPoolSpec{Addresses: []string{"192.168.254.0-192.168.254.6"}, AvoidBuggyIPs: true})
	pool(t, "e2e-v6", bgplbv1.IPPoolSpec{Addresses: []string{"fd00:254::10-fd00:254::1f"}})

	// Defaults applied by the CRD.
	if p := getPool(t, "e2e"); p.Spec.AutoAssign == nil || !*p.Spec.AutoAssign {
		t.Errorf("autoAssign default not applied: %v", p.Spec.AutoAssign)
	}

	createService(t, ns, "web", withClass(bgplbv1.LoadBalancerClass))
	waitIngress(t, ns, "web", "192.168.254.1") // .0 avoided
	waitEvent(t, ns, "web", controllers.EventIPAllocated, "assigned 192.168.254.1 from IPPool e2e")

	createService(t, ns, "noclass")
	waitIngress(t, ns, "noclass", "192.168.254.2")

	createService(t, ns, "wanted", withAnnotation(bgplbv1.AnnotationLoadBalancerIPs, "192.168.254.6"))
	waitIngress(t, ns, "wanted", "192.168.254.6")

	createService(t, ns, "legacy", func(s *corev1.Service) { s.Spec.LoadBalancerIP = "192.168.254.5" })
	waitIngress(t, ns, "legacy", "192.168.254.5")

	createService(t, ns, "outside", withAnnotation(bgplbv1.AnnotationLoadBalancerIPs, "10.1.2.3"))
	waitEvent(t, ns, "outside", controllers.EventAllocationFailed, "requested address 10.1.2.3 is in no IPPool")

	createService(t, ns, "taken", withAnnotation(bgplbv1.AnnotationLoadBalancerIPs, "192.168.254.6"))
	waitEvent(t, ns, "taken", controllers.EventAllocationFailed, "address 192.168.254.6 is in use by Service e2e/wanted")

	// Sharing: same key, different ports.
	createService(t, ns, "share-a", withAnnotation(bgplbv1.AnnotationAllowSharedIP, "k"), withPorts(53))
	waitIngress(t, ns, "share-a", "192.168.254.3")
	createService(t, ns, "share-b", withAnnotation(bgplbv1.AnnotationAllowSharedIP, "k"), withPorts(853))
	waitIngress(t, ns, "share-b", "192.168.254.3")

	createService(t, ns, "last")
	waitIngress(t, ns, "last", "192.168.254.4")
	createService(t, ns, "exhausted")
	waitEvent(t, ns, "exhausted", controllers.EventAllocationFailed, "IPPool e2e exhausted")

	// Another class is not ours.
	createService(t, ns, "foreign", withClass("example.com/other"))

	// IPv6 and dual-stack (the envtest apiserver is IPv4-only, so
	// PreferDualStack resolves to IPv4 there); single-stack IPv6 needs an
	// IPv6 service CIDR, which the apiserver lacks, so it is covered by the
	// allocator tests.

	waitPool(t, "e2e", func(p *bgplbv1.IPPool) error {
		st, reason, _ := condition(p, bgplbv1.IPPoolConditionReady)
		if st != metav1.ConditionTrue || reason != bgplbv1.IPPoolReasonValid {
			return fmt.Errorf("Ready %s/%s", st, reason)
		}
		if p.Status.AssignedIPv4 != 6 || p.Status.AvailableIPv4 != 0 {
			return fmt.Errorf("assigned %d available %d, want 6 and 0", p.Status.AssignedIPv4, p.Status.AvailableIPv4)
		}
		return nil
	})
	eventually(t, "pool metrics", func() error {
		want := map[string]float64{
			`bgplb_ippool_addresses_in_use{family="IPv4",pool="e2e"}`:      6,
			`bgplb_ippool_addresses_capacity{family="IPv4",pool="e2e"}`:    6,
			`bgplb_ippool_addresses_capacity{family="IPv6",pool="e2e-v6"}`: 16,
		}
		got, err := gauges(reg)
		if err != nil {
			return err
		}
		for k, v := range want {
			if got[k] != v {
				return fmt.Errorf("%s = %v, want %v", k, got[k], v)
			}
		}
		return nil
	})
	waitPool(t, "e2e-v6", func(p *bgplbv1.IPPool) error {
		if p.Status.AvailableIPv6 != 16 || p.Status.AssignedIPv6 != 0 {
			return fmt.Errorf("v6 assigned %d available %d", p.Status.AssignedIPv6, p.Status.AvailableIPv6)
		}
		return nil
	})

	// Deleting a Service frees its address for the waiting one.
	deleteService(t, ns, "last")
	waitIngress(t, ns, "exhausted", "192.168.254.4")

	// Type change: no longer ours, address released and status cleared.
	s := &corev1.Service{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "noclass"}, s); err != nil {
		t.Fatal(err)
	}
	s.Spec.Type = corev1.ServiceTypeClusterIP
	s.Spec.AllocateLoadBalancerNodePorts = nil
	if err := env.Client.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	waitIngress(t, ns, "noclass")
	createService(t, ns, "after-release")
	waitIngress(t, ns, "after-release", "192.168.254.2")

	if got := ingress(t, ns, "foreign"); len(got) != 0 {
		t.Errorf("Service of another class got %v", got)
	}
	// The first addresses never moved.
	waitIngress(t, ns, "web", "192.168.254.1")
	waitIngress(t, ns, "wanted", "192.168.254.6")

	// Changing the request moves the address.
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, s); err != nil {
		t.Fatal(err)
	}
	s.Annotations = map[string]string{bgplbv1.AnnotationIPPool: "nope"}
	if err := env.Client.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, ns, "web", controllers.EventAllocationFailed, "IPPool nope (annotation bgplb.io/ip-pool) does not exist")
	waitIngress(t, ns, "web")
}

func TestServiceSelectorsAndPriority(t *testing.T) {
	setup(t)
	ns := namespace(t, "sel-gold", map[string]string{"tier": "gold"})
	other := namespace(t, "sel-plain", nil)
	startController(t, controllers.Options{ServeServicesWithoutClass: true})
	pool(t, "sel-default", bgplbv1.IPPoolSpec{Addresses: []string{"10.20.0.0/24"}})
	pool(t, "sel-gold", bgplbv1.IPPoolSpec{Addresses: []string{"10.20.1.0/24"}, ServiceAllocation: &bgplbv1.ServiceAllocation{
		Priority:           1,
		NamespaceSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"tier": "gold"}}},
	}})
	pool(t, "sel-manual", bgplbv1.IPPoolSpec{Addresses: []string{"10.20.2.0/24"}, AutoAssign: ptr.To(false)})

	createService(t, ns, "a")
	waitIngress(t, ns, "a", "10.20.1.0")
	createService(t, other, "b")
	waitIngress(t, other, "b", "10.20.0.0")
	createService(t, other, "c", withAnnotation(bgplbv1.AnnotationIPPool, "sel-manual"))
	waitIngress(t, other, "c", "10.20.2.0")
	createService(t, other, "d", withAnnotation(bgplbv1.AnnotationIPPool, "sel-gold"))
	waitEvent(t, other, "d", controllers.EventAllocationFailed, "namespace sel-plain matches none of its namespaceSelectors")
	for _, n := range []string{"a"} {
		deleteService(t, ns, n)
	}
	for _, n := range []string{"b", "c", "d"} {
		deleteService(t, other, n)
	}
}

func TestPendingServiceGetsAddressWhenPoolAppears(t *testing.T) {
	setup(t)
	ns := namespace(t, "pending", nil)
	startController(t, controllers.Options{ServeServicesWithoutClass: true})
	createService(t, ns, "early", withAnnotation(bgplbv1.AnnotationIPPool, "pending"))
	waitEvent(t, ns, "early", controllers.EventAllocationFailed, "does not exist")
	pool(t, "pending", bgplbv1.IPPoolSpec{Addresses: []string{"10.30.0.10-10.30.0.11"}})
	waitIngress(t, ns, "early", "10.30.0.10")
	deleteService(t, ns, "early")
}

func TestRestartKeepsEveryAddress(t *testing.T) {
	setup(t)
	ns := namespace(t, "restart", nil)
	pool(t, "restart", bgplbv1.IPPoolSpec{Addresses: []string{"10.40.0.0/24"}})
	c := startController(t, controllers.Options{ServeServicesWithoutClass: true})
	const n = 30
	before := map[string]string{}
	for i := range n {
		createService(t, ns, fmt.Sprint("s", i))
	}
	for i := range n {
		name := fmt.Sprint("s", i)
		eventually(t, "assigned "+name, func() error {
			if got := ingress(t, ns, name); len(got) == 1 {
				before[name] = got[0]
				return nil
			}
			return errPending
		})
	}
	// Free one address in the middle so that a fresh allocator scanning
	// from the start would hand it out, and stop the controller.
	freed := before["s0"]
	deleteService(t, ns, "s0")
	delete(before, "s0")
	eventually(t, "pool sees release", func() error {
		if getPool(t, "restart").Status.AssignedIPv4 != n-1 {
			return errPending
		}
		return nil
	})
	c.stop()

	// While it is down: a new Service appears.
	createService(t, ns, "while-down")
	startController(t, controllers.Options{ServeServicesWithoutClass: true})
	// A fresh allocator that had not read the assignments back would
	// hand out 10.40.0.0 again; the lowest free address is the freed one.
	waitIngress(t, ns, "while-down", freed)
	createService(t, ns, "after")
	eventually(t, "after assigned", func() error {
		if len(ingress(t, ns, "after")) != 1 {
			return errPending
		}
		return nil
	})
	seen := map[string]string{}
	for name, addr := range before {
		if got := ingress(t, ns, name); len(got) != 1 || got[0] != addr {
			t.Errorf("%s: address %v after restart, was %s", name, got, addr)
		}
		seen[addr] = name
	}
	for _, name := range []string{"while-down", "after"} {
		a := ingress(t, ns, name)[0]
		if o, dup := seen[a]; dup {
			t.Errorf("%s got %s, which %s holds", name, a, o)
		}
		seen[a] = name
	}
	for name := range before {
		deleteService(t, ns, name)
	}
	deleteService(t, ns, "while-down")
	deleteService(t, ns, "after")
}

func TestConcurrentCreationGetsUniqueAddresses(t *testing.T) {
	setup(t)
	ns := namespace(t, "concurrent", nil)
	pool(t, "concurrent", bgplbv1.IPPoolSpec{Addresses: []string{"10.50.0.0/24"}})
	startController(t, controllers.Options{ServeServicesWithoutClass: true, ServiceWorkers: 16})
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := env.Client.Create(context.Background(), newService(ns, fmt.Sprint("c", i))); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	eventually(t, "all assigned", func() error {
		var list corev1.ServiceList
		if err := env.Client.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			return err
		}
		done := 0
		for _, s := range list.Items {
			if len(s.Status.LoadBalancer.Ingress) > 0 {
				done++
			}
		}
		if done != n {
			return fmt.Errorf("%d of %d assigned", done, n)
		}
		return nil
	})
	var list corev1.ServiceList
	if err := env.Client.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	owner := map[string]string{}
	for _, s := range list.Items {
		if len(s.Status.LoadBalancer.Ingress) != 1 {
			t.Fatalf("%s: ingress %v", s.Name, s.Status.LoadBalancer.Ingress)
		}
		ip := s.Status.LoadBalancer.Ingress[0].IP
		if o, dup := owner[ip]; dup {
			t.Errorf("%s and %s share %s", o, s.Name, ip)
		}
		owner[ip] = s.Name
	}
	waitPool(t, "concurrent", func(p *bgplbv1.IPPool) error {
		if p.Status.AssignedIPv4 != n || p.Status.AvailableIPv4 != 256-n {
			return fmt.Errorf("assigned %d available %d", p.Status.AssignedIPv4, p.Status.AvailableIPv4)
		}
		return nil
	})
	if err := env.Client.DeleteAllOf(context.Background(), &corev1.Service{}, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
}

func TestPoolValidation(t *testing.T) {
	setup(t)
	ctx := context.Background()
	startController(t, controllers.Options{ServeServicesWithoutClass: true})

	// What the CRD refuses on write.
	for _, bad := range []string{"192.168.1.1/24", "10.0.0.5-10.0.0", "10.0.0.1-fd00::1", "banana", ""} {
		p := &bgplbv1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "bad"}, Spec: bgplbv1.IPPoolSpec{Addresses: []string{bad}}}
		err := env.Client.Create(ctx, p)
		if err == nil {
			deletePool(t, "bad")
			t.Errorf("address %q was accepted", bad)
			continue
		}
		if !strings.Contains(err.Error(), "CIDR without host bits") && !strings.Contains(err.Error(), "spec.addresses") {
			t.Errorf("address %q: unexpected error %v", bad, err)
		}
	}
	p := &bgplbv1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "bad"}, Spec: bgplbv1.IPPoolSpec{Addresses: []string{"10.0.0.0/24"}, ServiceAllocation: &bgplbv1.ServiceAllocation{
		Namespaces:         []string{"a"},
		NamespaceSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"a": "b"}}},
	}}}
	if err := env.Client.Create(ctx, p); err == nil || !strings.Contains(err.Error(), "either namespaces or namespaceSelectors") {
		t.Errorf("namespaces with namespaceSelectors: %v", err)
		deletePool(t, "bad")
	}

	// What only the controller can see: overlaps with other pools, and a
	// range written backwards (CEL cannot compare addresses).
	pool(t, "val-first", bgplbv1.IPPoolSpec{Addresses: []string{"10.60.0.0/24"}})
	waitPool(t, "val-first", func(p *bgplbv1.IPPool) error {
		if st, _, _ := condition(p, bgplbv1.IPPoolConditionReady); st != metav1.ConditionTrue {
			return fmt.Errorf("Ready %q", st)
		}
		return nil
	})
	pool(t, "val-overlap", bgplbv1.IPPoolSpec{Addresses: []string{"10.60.0.128-10.60.1.10"}})
	waitPool(t, "val-overlap", func(p *bgplbv1.IPPool) error {
		st, reason, msg := condition(p, bgplbv1.IPPoolConditionInvalid)
		if st != metav1.ConditionTrue || reason != bgplbv1.IPPoolReasonOverlap || !strings.Contains(msg, "of pool val-first") {
			return fmt.Errorf("Invalid %s %s %q", st, reason, msg)
		}
		if st, _, _ := condition(p, bgplbv1.IPPoolConditionReady); st != metav1.ConditionFalse {
			return fmt.Errorf("Ready %s", st)
		}
		return nil
	})
	waitEvent(t, "default", "val-overlap", controllers.EventPoolInvalid, "overlaps")
	pool(t, "val-backwards", bgplbv1.IPPoolSpec{Addresses: []string{"10.61.0.20-10.61.0.10"}})
	waitPool(t, "val-backwards", func(p *bgplbv1.IPPool) error {
		st, reason, msg := condition(p, bgplbv1.IPPoolConditionInvalid)
		if st != metav1.ConditionTrue || reason != bgplbv1.IPPoolReasonBadAddresses || !strings.Contains(msg, "first address is after the last") {
			return fmt.Errorf("Invalid %s %s %q", st, reason, msg)
		}
		return nil
	})
}

func TestPoolDeletedOrShrunkWhileInUse(t *testing.T) {
	setup(t)
	ctx := context.Background()
	ns := namespace(t, "inuse", nil)
	startController(t, controllers.Options{ServeServicesWithoutClass: true})
	pool(t, "inuse", bgplbv1.IPPoolSpec{Addresses: []string{"10.70.0.0/30"}})
	createService(t, ns, "a")
	waitIngress(t, ns, "a", "10.70.0.0")
	createService(t, ns, "b")
	waitIngress(t, ns, "b", "10.70.0.1")

	// Shrink: 10.70.0.0 falls out but stays with a.
	p := getPool(t, "inuse")
	p.Spec.Addresses = []string{"10.70.0.1-10.70.0.3"}
	if err := env.Client.Update(ctx, p); err != nil {
		t.Fatal(err)
	}
	waitPool(t, "inuse", func(p *bgplbv1.IPPool) error {
		st, reason, msg := condition(p, bgplbv1.IPPoolConditionInvalid)
		if st != metav1.ConditionTrue || reason != bgplbv1.IPPoolReasonInUseAddressesRemoved || !strings.Contains(msg, "10.70.0.0 (used by inuse/a)") {
			return fmt.Errorf("Invalid %s %s %q", st, reason, msg)
		}
		return nil
	})
	waitEvent(t, "default", "inuse", controllers.EventInUseAddressesRemoved, "10.70.0.0 (used by inuse/a)")
	waitIngress(t, ns, "a", "10.70.0.0")

	// Delete: blocked by the finalizer while addresses are in use.
	if err := env.Client.Delete(ctx, getPool(t, "inuse")); err != nil {
		t.Fatal(err)
	}
	waitPool(t, "inuse", func(p *bgplbv1.IPPool) error {
		st, reason, msg := condition(p, bgplbv1.IPPoolConditionReady)
		if p.DeletionTimestamp == nil || st != metav1.ConditionFalse || reason != bgplbv1.IPPoolReasonDeletionBlocked || !strings.Contains(msg, "2 address(es)") {
			return fmt.Errorf("Ready %s %s %q", st, reason, msg)
		}
		return nil
	})
	waitEvent(t, "default", "inuse", controllers.EventDeletionBlocked, "inuse/a")
	// No new address from a pool being deleted.
	createService(t, ns, "c")
	waitEvent(t, ns, "c", controllers.EventAllocationFailed, "no IPPool")
	waitIngress(t, ns, "a", "10.70.0.0")
	waitIngress(t, ns, "b", "10.70.0.1")

	deleteService(t, ns, "a")
	deleteService(t, ns, "b")
	deleteService(t, ns, "c")
	eventually(t, "pool gone", func() error {
		err := env.Client.Get(ctx, client.ObjectKey{Name: "inuse"}, &bgplbv1.IPPool{})
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there: %w", err)
	})
}

// gauges flattens a registry's gauges to "name{label="v",...}" -> value.
func gauges(reg *prometheus.Registry) (map[string]float64, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if m.GetGauge() == nil {
				continue
			}
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			out[mf.GetName()+"{"+strings.Join(ls, ",")+"}"] = m.GetGauge().GetValue()
		}
	}
	return out, nil
}
