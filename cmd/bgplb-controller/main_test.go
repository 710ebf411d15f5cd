package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	bgplbv1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/internal/monitoring"
	"github.com/bgplb/bgplb/internal/poll"
	"github.com/bgplb/bgplb/internal/testenv"
)

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func get(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func waitFor(t *testing.T, what string, f func() error) {
	t.Helper()
	poll.Until(t, 90*time.Second, 100*time.Millisecond, what, f)
}

// TestBinary runs the real bgplb-controller binary against envtest with
// leader election, and checks its probes, its metrics and one allocation.
func TestBinary(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	dir := t.TempDir()

	bin := filepath.Join(dir, "bgplb-controller")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	kubeconfig := filepath.Join(dir, "kubeconfig")
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: env.Config.Host, CertificateAuthorityData: env.Config.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: env.Config.CertData, ClientKeyData: env.Config.KeyData}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin"}
	kc.CurrentContext = "envtest"
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		t.Fatal(err)
	}

	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: bgplbv1.Namespace}}); err != nil {
		t.Fatal(err)
	}
	metrics, probes := freePort(t), freePort(t)
	cmd := exec.Command(bin, "--kubeconfig", kubeconfig, "--leader-elect",
		"--metrics-bind-address", metrics, "--metrics-secure=false", "--health-probe-bind-address", probes, "--zap-log-level", "debug")
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("controller output:\n%s", logs.String())
		}
	})

	for _, path := range []string{"/healthz", "/readyz"} {
		waitFor(t, path, func() error {
			code, body, err := get("http://" + probes + path)
			if err != nil {
				return err
			}
			if code != http.StatusOK {
				return fmt.Errorf("%d %s", code, body)
			}
			return nil
		})
	}

	pool := &bgplbv1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "bin"}, Spec: bgplbv1.IPPoolSpec{Addresses: []string{"192.168.254.10-192.168.254.19"}}}
	if err := env.Client.Create(ctx, pool); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: corev1.ServiceSpec{
			Type:                          corev1.ServiceTypeLoadBalancer,
			LoadBalancerClass:             ptr.To(bgplbv1.LoadBalancerClass),
			AllocateLoadBalancerNodePorts: ptr.To(false),
			Ports:                         []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(80)}},
		},
	}
	if err := env.Client.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "address", func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
			return err
		}
		if in := svc.Status.LoadBalancer.Ingress; len(in) != 1 || in[0].IP != "192.168.254.10" {
			return fmt.Errorf("ingress %v", in)
		}
		return nil
	})
	waitFor(t, "lease", func() error {
		var leases = &metav1.PartialObjectMetadata{}
		leases.SetGroupVersionKind(coordinationLeaseGVK)
		return env.Client.Get(ctx, client.ObjectKey{Namespace: bgplbv1.Namespace, Name: "bgplb-controller"}, leases)
	})
	waitFor(t, "metrics", func() error {
		_, body, err := get("http://" + metrics + "/metrics")
		if err != nil {
			return err
		}
		for _, want := range []string{
			`bgplb_ippool_addresses_in_use{family="IPv4",pool="bin"} 1`,
			`bgplb_ippool_addresses_capacity{family="IPv4",pool="bin"} 10`,
			`bgplb_service_allocations_total{result="allocated"} 1`,
		} {
			if !strings.Contains(body, want) {
				return fmt.Errorf("metrics lack %q", want)
			}
		}
		return nil
	})

	// Every controller metric the dashboard and the alerts use is served
	// with the type their expressions need, and bgplb_build_info names the
	// program.
	_, body, err := get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	fams, err := monitoring.ParseText(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	refs, err := monitoring.Load(testenv.RepoRoot())
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range monitoring.Check(refs, monitoring.Controller, fams) {
		t.Error(err)
	}
	if p := monitoring.BuildInfoProgram(fams); p != monitoring.Controller {
		t.Errorf("bgplb_build_info program=%q, want %s", p, monitoring.Controller)
	}
}

var coordinationLeaseGVK = schema.GroupVersionKind{Group: "coordination.k8s.io", Version: "v1", Kind: "Lease"}
