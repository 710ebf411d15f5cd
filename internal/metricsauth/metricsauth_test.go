package metricsauth

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/bgplb/bgplb/internal/testenv"
)

// TestSecureMetrics runs a manager with the default flags against a real
// apiserver: a scrape without a token is refused (401), one with the token
// of a service account that may not GET /metrics is forbidden (403), one
// bound to a reader role (as the chart's bgplb-metrics-reader) succeeds,
// over HTTPS.
func TestSecureMetrics(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr := freePort(t)
	f := Flags{BindAddress: addr, Secure: true}
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{Scheme: env.Scheme, Metrics: f.Options(nil), HealthProbeBindAddress: "0"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	defer func() { cancel(); <-done }()

	cs := kubernetes.NewForConfigOrDie(env.Config)
	const ns = "default"
	reader := token(ctx, t, cs, ns, "metrics-reader")
	stranger := token(ctx, t, cs, ns, "stranger")
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "test-metrics-reader"},
		Rules: []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "test-metrics-reader"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "metrics-reader", Namespace: ns}}}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} // self-signed, as Prometheus' insecureSkipVerify
	get := func(scheme, tok string) (int, string, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+addr+"/metrics", nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	// The RBAC binding reaches the authorizer's cache in a moment: wait
	// for the authorised scrape, then check the others.
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, body, err := get("https", reader)
		if err == nil && code == http.StatusOK && strings.Contains(body, "# HELP") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("authorised scrape: %d %v\n%.300s", code, err, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, c := range []struct {
		name, scheme, tok string
		want              int
	}{
		{"no token", "https", "", http.StatusUnauthorized},
		{"a service account without the reader role", "https", stranger, http.StatusForbidden},
	} {
		code, body, err := get(c.scheme, c.tok)
		if err != nil || code != c.want {
			t.Errorf("%s: %d %v, want %d\n%.300s", c.name, code, err, c.want, body)
		}
	}
	// A token the apiserver does not know: refused (controller-runtime's
	// filter answers 500 "Authentication failed" when the TokenReview
	// errors), and nothing of the metrics shown.
	if code, body, err := get("https", "not-a-token"); err != nil || code < 400 || strings.Contains(body, "# HELP") {
		t.Errorf("unknown token: %d %v\n%.300s", code, err, body)
	}
	// Plain HTTP is not served at all.
	if code, _, err := get("http", reader); err == nil && code == http.StatusOK {
		t.Error("metrics served over plain HTTP")
	}
}

// TestInsecureOptions: --metrics-secure=false is plain HTTP without the
// filter, on the chosen address.
func TestInsecureOptions(t *testing.T) {
	o := Flags{BindAddress: "127.0.0.1:7472", Secure: false}.Options(nil)
	if o.SecureServing || o.FilterProvider != nil || o.BindAddress != "127.0.0.1:7472" {
		t.Errorf("insecure options: %+v", o)
	}
	s := Flags{BindAddress: ":7472", Secure: true, CertDir: "/certs"}.Options(map[string]http.Handler{"/debug/pprof/": http.NotFoundHandler()})
	if !s.SecureServing || s.FilterProvider == nil || s.CertDir != "/certs" || s.ExtraHandlers["/debug/pprof/"] == nil {
		t.Errorf("secure options: %+v", s)
	}
}

func token(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, name string) string {
	t.Helper()
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for %s: %v", name, err)
	}
	return tr.Status.Token
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprintf("127.0.0.1:%d", l.Addr().(*net.TCPAddr).Port)
}
