package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/internal/testenv"
	"github.com/bgplb/bgplb/speaker/bgp/bgptest"
	"github.com/bgplb/bgplb/speaker/model"
)

// TestSpeakerSIGTERM runs the real bgplb-speaker binary against a real
// kube-apiserver (envtest) and a GoBGP router on loopback, and checks its
// two ways out of service as a router sees them:
//   - the node is cordoned: its route is re-announced with GRACEFUL_SHUTDOWN
//     (the default), and without it again after the uncordon;
//   - SIGTERM: the route is re-announced with GRACEFUL_SHUTDOWN, then
//     withdrawn by an UPDATE, then the session is closed with a Cease
//     NOTIFICATION, and the process exits with status 0.
//
// It needs no root (everything is on 127.0.0.1) but the envtest binaries.
func TestSpeakerSIGTERM(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	lo := netip.MustParseAddr("127.0.0.1")
	const node = "sigterm-node"
	const svcIP = "10.129.0.7"
	prefix := netip.MustParsePrefix(svcIP + "/32")

	bin := filepath.Join(t.TempDir(), "bgplb-speaker")
	build := exec.Command("go", "build", "-o", bin, "./cmd/bgplb-speaker")
	build.Dir = testenv.RepoRoot()
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build bgplb-speaker: %v\n%s", err, out)
	}
	router := bgptest.Start(t, lo, 64500, bgptest.Neighbor{Address: lo, ASN: 64512})

	c := env.Client
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}
	mustCreate(t, c, n)
	n.Status = corev1.NodeStatus{
		Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}},
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}},
	}
	if err := c.Status().Update(ctx, n); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, c, &v1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "sigterm"}, Spec: v1.IPPoolSpec{Addresses: []string{"10.129.0.0/24"}}})
	mustCreate(t, c, &v1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "sigterm-router"}, Spec: v1.BGPPeerSpec{
		PeerAddress: "127.0.0.1", PeerPort: ptr.To(int32(router.Port)), PeerASN: 64500, MyASN: 64512,
		// The router stand-in listens with the default TTL: no GTSM.
		TTLSecurity: ptr.To(false),
	}})
	mustCreate(t, c, &v1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "sigterm"}, Spec: v1.BGPAdvertisementSpec{IPPools: []string{"sigterm"}}})
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "sigterm-web"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: ptr.To(v1.LoadBalancerClass),
			AllocateLoadBalancerNodePorts: ptr.To(false), Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}},
	}
	mustCreate(t, c, svc)
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: svcIP}}
	if err := c.Status().Update(ctx, svc); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, c, &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "sigterm-web-1",
			Labels: map[string]string{discoveryv1.LabelServiceName: "sigterm-web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.0.5"}, NodeName: ptr.To(node),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)}}},
	})

	kubeconfig := writeEnvKubeconfig(t, env)
	probe := bgptest.FreePort(t, lo)
	var logs strings.Builder
	cmd := exec.Command(bin, "--node-name", node, "--kubeconfig", kubeconfig, "--metrics-bind-address", "0",
		"--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", probe), "--graceful-shutdown-delay", "2s", "--service-events=false")
	out := &syncWriter{w: &logs}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("speaker log:\n%s", out.String())
		}
	})

	gshut := func(r bgptest.Route) bool { return slices.Contains(r.Communities, model.CommunityGracefulShutdown) }
	route := func(want func(bgptest.Route, bool) bool, what string) {
		t.Helper()
		if !router.Wait(time.Minute, func(m map[netip.Prefix]bgptest.Route) bool { r, ok := m[prefix]; return want(r, ok) }) {
			t.Fatalf("router never saw %s %v; it holds %v", what, prefix, router.Routes())
		}
	}
	route(func(r bgptest.Route, ok bool) bool { return ok && !gshut(r) }, "a plain route for")

	// Cordon: GRACEFUL_SHUTDOWN by default. Uncordon: plain again.
	setUnschedulable := func(v bool) {
		t.Helper()
		cur := &corev1.Node{}
		if err := c.Get(ctx, client.ObjectKey{Name: node}, cur); err != nil {
			t.Fatal(err)
		}
		patch := client.MergeFrom(cur.DeepCopy())
		cur.Spec.Unschedulable = v
		if err := c.Patch(ctx, cur, patch); err != nil {
			t.Fatal(err)
		}
	}
	setUnschedulable(true)
	route(func(r bgptest.Route, ok bool) bool { return ok && gshut(r) }, "GRACEFUL_SHUTDOWN on")
	setUnschedulable(false)
	route(func(r bgptest.Route, ok bool) bool { return ok && !gshut(r) }, "a plain route again for")

	// SIGTERM.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	route(func(r bgptest.Route, ok bool) bool { return ok && gshut(r) }, "GRACEFUL_SHUTDOWN after SIGTERM on")
	state, updatesBefore, notesBefore := router.SessionState(lo)
	if state != "ESTABLISHED" || notesBefore != 0 {
		t.Fatalf("after the GRACEFUL_SHUTDOWN re-announcement the session is %s with %d NOTIFICATIONs; want ESTABLISHED, none yet", state, notesBefore)
	}
	route(func(_ bgptest.Route, ok bool) bool { return !ok }, "the withdrawal of")
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("speaker exited with %v after SIGTERM, want status 0", waitErr)
		}
	case <-time.After(time.Minute):
		t.Fatal("speaker still running a minute after SIGTERM")
	}
	_, updatesAfter, notesAfter := router.SessionState(lo)
	// The withdrawal came as an UPDATE before the session closed (a
	// session dropped without one would also empty the router's table),
	// and the session closed with a NOTIFICATION (the Cease).
	if updatesAfter <= updatesBefore {
		t.Errorf("UPDATEs received: %d at GRACEFUL_SHUTDOWN, %d at exit: the route was not withdrawn by an UPDATE", updatesBefore, updatesAfter)
	}
	if notesAfter == 0 {
		t.Errorf("the router received no NOTIFICATION: the session was not closed with a Cease")
	}
	for _, want := range []string{"announced GRACEFUL_SHUTDOWN, waiting before withdrawing", "stopped"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("speaker log lacks %q", want)
		}
	}
}

func mustCreate(t *testing.T, c client.Client, o client.Object) {
	t.Helper()
	if err := c.Create(context.Background(), o); err != nil {
		t.Fatalf("create %T %s: %v", o, o.GetName(), err)
	}
}

func writeEnvKubeconfig(t *testing.T, env *testenv.Env) string {
	t.Helper()
	c := env.Config
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["envtest"] = &clientcmdapi.Cluster{Server: c.Host, CertificateAuthorityData: c.CAData}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: c.CertData, ClientKeyData: c.KeyData, Token: c.BearerToken}
	cfg.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin"}
	cfg.CurrentContext = "envtest"
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, p); err != nil {
		t.Fatal(err)
	}
	return p
}

// syncWriter serialises the speaker's stdout and stderr into one builder.
type syncWriter struct {
	mu sync.Mutex
	w  *strings.Builder
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
