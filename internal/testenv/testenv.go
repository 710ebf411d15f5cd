// Package testenv starts a real kube-apiserver and etcd (controller-runtime
// envtest) with the bgplb CRDs installed, for integration tests.
//
// The binaries are built from the Go module proxy by hack/envtest-assets.sh
// and found through KUBEBUILDER_ASSETS. When they are missing a test skips
// with a message, unless BGPLB_REQUIRE_ENVTEST=1 (set by `make test`), in
// which case it fails: envtest suites never silently skip in CI.
package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	bgplbv1alpha1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/internal/kube"
)

// Env is a running control plane.
type Env struct {
	// Config reaches the apiserver as an administrator.
	Config *rest.Config
	// Client is a direct (uncached) client with Scheme.
	Client client.Client
	// Scheme knows the core kinds and the bgplb kinds.
	Scheme *runtime.Scheme

	env *envtest.Environment
}

// ErrNoAssets is returned by New when KUBEBUILDER_ASSETS is not set.
var ErrNoAssets = fmt.Errorf("KUBEBUILDER_ASSETS is not set: run `make test`, or export KUBEBUILDER_ASSETS=$(hack/envtest-assets.sh)")

// Required reports whether envtest suites must run (BGPLB_REQUIRE_ENVTEST=1).
func Required() bool { return os.Getenv("BGPLB_REQUIRE_ENVTEST") == "1" }

// RepoRoot is the top of the source tree, found from this file's location.
func RepoRoot() string {
	_, file, _, _ := goruntime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// NewScheme returns a scheme with the core Kubernetes kinds and ours.
func NewScheme() (*runtime.Scheme, error) { return kube.NewScheme() }

// New starts kube-apiserver and etcd with the CRDs from config/crd/bases.
// Callers must Stop it. Use it from TestMain; tests use Start.
func New() (*Env, error) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		return nil, ErrNoAssets
	}
	s, err := NewScheme()
	if err != nil {
		return nil, fmt.Errorf("build scheme: %w", err)
	}
	e := &envtest.Environment{
		CRDDirectoryPaths:        []string{filepath.Join(RepoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing:    true,
		Scheme:                   s,
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  time.Minute,
	}
	Configure(e)
	cfg, err := e.Start()
	if err != nil {
		return nil, fmt.Errorf("start envtest control plane: %w", err)
	}
	// Integration tests and benchmarks create thousands of objects: do not
	// let client-side throttling hide the server's speed.
	cfg.QPS, cfg.Burst = 5000, 10000
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		_ = e.Stop()
		return nil, fmt.Errorf("build client: %w", err)
	}
	return &Env{Config: cfg, Client: c, Scheme: s, env: e}, nil
}

// Configure sets the kube-apiserver and etcd flags every bgplb envtest
// control plane uses. BGPLB_ENVTEST_APISERVER_FLAGS and BGPLB_ENVTEST_ETCD_FLAGS
// ("name=value name=value ...") add or override flags, for experiments.
func Configure(e *envtest.Environment) {
	api := e.ControlPlane.GetAPIServer().Configure()
	// Without a default route (as in a fresh network namespace) the
	// apiserver cannot pick an address to advertise; loopback always works.
	api.Set("advertise-address", "127.0.0.1")
	if e.ControlPlane.Etcd == nil {
		e.ControlPlane.Etcd = &envtest.Etcd{}
	}
	etcd := e.ControlPlane.Etcd.Configure()
	for _, f := range strings.Fields(os.Getenv("BGPLB_ENVTEST_APISERVER_FLAGS")) {
		k, v, _ := strings.Cut(strings.TrimLeft(f, "-"), "=")
		api.Set(k, v)
	}
	for _, f := range strings.Fields(os.Getenv("BGPLB_ENVTEST_ETCD_FLAGS")) {
		k, v, _ := strings.Cut(strings.TrimLeft(f, "-"), "=")
		etcd.Set(k, v)
	}
}

// Stop stops the control plane and removes its data.
func (e *Env) Stop() error { return e.env.Stop() }

// Start starts a control plane for one test and stops it when the test ends.
// Without assets it skips, saying how to get them, or fails when Required.
func Start(t testing.TB) *Env {
	t.Helper()
	e, err := New()
	if errors.Is(err, ErrNoAssets) {
		if Required() {
			t.Fatalf("envtest is required (BGPLB_REQUIRE_ENVTEST=1) but %v", err)
		}
		t.Skipf("skipping envtest suite: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Logf("stop envtest: %v", err)
		}
	})
	return e
}

// Main runs a package's tests against one shared control plane. Use it in
// TestMain: `func TestMain(m *testing.M) { testenv.Main(m, &env) }`. Without
// assets, env stays nil and tests should call Skip(t) first.
func Main(m *testing.M, env **Env) {
	e, err := New()
	switch {
	case errors.Is(err, ErrNoAssets) && !Required():
		fmt.Fprintf(os.Stderr, "testenv: envtest tests will skip: %v\n", err)
	case err != nil:
		fmt.Fprintf(os.Stderr, "testenv: %v\n", err)
		os.Exit(1)
	default:
		*env = e
	}
	code := m.Run()
	if e != nil {
		if err := e.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: stop: %v\n", err)
		}
	}
	os.Exit(code)
}

// Skip skips a test when Main found no assets.
func Skip(t testing.TB, env *Env) {
	t.Helper()
	if env == nil {
		t.Skipf("skipping envtest test: %v", ErrNoAssets)
	}
}

// GVK is a convenience for tests that build unstructured objects.
func GVK(kind string) schema.GroupVersionKind { return bgplbv1alpha1.GroupVersion.WithKind(kind) }
