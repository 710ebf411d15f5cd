package faults

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	v1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/controllers"
	"github.com/bgplb/bgplb/speaker/bgp/bgptest"
)

// outage is how long the apiserver stays down: a minute, as issue 7 says.
// BGPLB_FAULTS_OUTAGE (a Go duration) shortens it when iterating locally.
func outage(t *testing.T) time.Duration {
	if v := os.Getenv("BGPLB_FAULTS_OUTAGE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("BGPLB_FAULTS_OUTAGE: %v", err)
		}
		return d
	}
	return time.Minute
}

// startLeaderController runs the controller as bgplb-controller does, with
// leader election on (Lease bgplb-system/bgplb-controller, controller-runtime's
// default 15 s lease and 10 s renew deadline).
func startLeaderController(t *testing.T, c *cluster) *manager {
	t.Helper()
	mgr := newManager(t, c, ctrl.Options{
		LeaderElection:                true,
		LeaderElectionID:              "bgplb-controller",
		LeaderElectionNamespace:       v1.Namespace,
		LeaderElectionReleaseOnCancel: true,
	})
	if err := controllers.Setup(mgr, controllers.Options{Registerer: prometheus.NewRegistry()}); err != nil {
		t.Fatal(err)
	}
	m := run(mgr)
	t.Cleanup(func() { _ = m.stop() })
	return m
}

// TestAPIServerOutageKeepsRoutesAndAddresses stops the kube-apiserver for a
// minute while a controller and a speaker run:
//   - the router keeps every route the whole time (no UPDATE changes its
//     table: the speaker works from its informer cache and keeps its session);
//   - afterwards the controller (whose leader lease expired during the
//     outage, so it exits and is started again as the Deployment would) and
//     the speaker serve new Services, and no existing Service's address
//     changed.
func TestAPIServerOutageKeepsRoutesAndAddresses(t *testing.T) {
	down := outage(t)
	c := startCluster(t)
	ctx := context.Background()
	router := bgptest.Start(t, lo4, 64512, bgptest.Neighbor{Address: lo4, ASN: 65010})
	setupObjects(t, c, router, bigPool)
	must(t, c.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: v1.Namespace}}))
	const n = 20
	for i := 0; i < n; i++ {
		must(t, createService(ctx, c.Client, fmt.Sprintf("before-%d", i)))
	}
	ctl := startLeaderController(t, c)
	startSpeaker(t, c, nodeName)

	var before map[string]netip.Addr
	eventually(t, 2*time.Minute, "every Service gets an address", func() error {
		var err error
		before, err = assigned(ctx, c.Client)
		if err == nil && len(before) != n {
			err = fmt.Errorf("%d of %d assigned", len(before), n)
		}
		return err
	})
	want := hostRoutes(before)
	if !router.Wait(2*time.Minute, func(r map[netip.Prefix]bgptest.Route) bool { return sameSet(r, want) }) {
		t.Fatalf("before the outage: %s", describeDiff(router.Routes(), want))
	}
	_, updatesBefore, _ := router.SessionState(lo4)

	t.Logf("stopping kube-apiserver for %v", down)
	stopped := time.Now()
	if err := c.StopAPIServer(); err != nil {
		t.Fatalf("stop apiserver: %v", err)
	}
	// Any change of the router's table during the outage fails the test.
	if router.Wait(down-time.Since(stopped), func(r map[netip.Prefix]bgptest.Route) bool { return !sameSet(r, want) }) {
		t.Errorf("the router's routes changed while the apiserver was down: %s", describeDiff(router.Routes(), want))
	}
	state, updatesDuring, _ := router.SessionState(lo4)
	if state != "ESTABLISHED" {
		t.Errorf("session with the speaker is %s after the outage, want ESTABLISHED", state)
	}
	if updatesDuring != updatesBefore {
		t.Errorf("the speaker sent %d UPDATEs while the apiserver was down, want none", updatesDuring-updatesBefore)
	}
	t.Log("starting kube-apiserver again")
	if err := c.StartAPIServer(); err != nil {
		t.Fatalf("start apiserver: %v", err)
	}

	// With a 15 s lease and a 10 s renew deadline the controller has lost
	// leadership; like the Deployment's restart, start a new one.
	select {
	case err := <-ctl.done:
		ctl.cancel = nil
		t.Logf("controller stopped during the outage (%v); starting it again", err)
		startLeaderController(t, c)
	default:
		t.Log("controller kept running through the outage")
	}

	// Both come back: a new Service gets a new address and is announced.
	must(t, createService(ctx, c.Client, "after"))
	var after map[string]netip.Addr
	eventually(t, 3*time.Minute, "the new Service gets an address", func() error {
		var err error
		after, err = assigned(ctx, c.Client)
		if err == nil && !after["after"].IsValid() {
			err = fmt.Errorf("Service after has no address yet")
		}
		return err
	})
	for name, a := range before {
		if after[name] != a {
			t.Errorf("Service %s: address %v before the outage, %v after", name, a, after[name])
		}
		if a == after["after"] {
			t.Errorf("the new Service got %v, the address of %s", a, name)
		}
	}
	want = hostRoutes(after)
	if !router.Wait(3*time.Minute, func(r map[netip.Prefix]bgptest.Route) bool { return sameSet(r, want) }) {
		t.Fatalf("after the outage: %s", describeDiff(router.Routes(), want))
	}
	// A deletion is also acted on again: withdrawn.
	must(t, deleteService(ctx, c.Client, "before-0"))
	delete(after, "before-0")
	want = hostRoutes(after)
	if !router.Wait(3*time.Minute, func(r map[netip.Prefix]bgptest.Route) bool { return sameSet(r, want) }) {
		t.Fatalf("after deleting a Service: %s", describeDiff(router.Routes(), want))
	}
	final, err := assigned(ctx, c.Client)
	must(t, err)
	for name, a := range after {
		if final[name] != a {
			t.Errorf("Service %s: address %v, then %v", name, a, final[name])
		}
	}
}
