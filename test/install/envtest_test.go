package install

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bgplb/bgplb/internal/testenv"
)

var crdNames = []string{"ippools.bgplb.io", "bgppeers.bgplb.io", "bgpadvertisements.bgplb.io", "bgpsessionstates.bgplb.io"}

// dist/install.yaml applied server-side to a real kube-apiserver with no
// bgplb CRDs: everything is accepted, the CRDs become Established, the
// samples are accepted, and the service accounts can do what the programs do
// and no more.
func TestInstallYAMLOnAPIServer(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	c := withCRDs(t, env)
	removeCRDs(ctx, t, c)

	objs := decode(t, readFile(t, "dist/install.yaml"))
	applyAll(ctx, t, c, objs)
	waitEstablished(ctx, t, c)

	samples := decode(t, kustomize(t, "config/samples"))
	if len(samples) < 3 {
		t.Fatalf("config/samples renders %d objects", len(samples))
	}
	applyAll(ctx, t, c, samples)
	for _, s := range samples {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(s.GroupVersionKind())
		if err := c.Get(ctx, client.ObjectKeyFromObject(s), got); err != nil {
			t.Errorf("sample %s %s not stored: %v", s.GetKind(), s.GetName(), err)
		}
	}
	for _, o := range objs {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(o.GroupVersionKind())
		if err := c.Get(ctx, client.ObjectKeyFromObject(o), got); err != nil {
			t.Errorf("%s %s/%s not stored: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
	}

	sa := func(name string) string { return "system:serviceaccount:bgplb-system:" + name }
	type access struct {
		user, verb, group, resource, sub, ns string
		allowed                              bool
	}
	for _, a := range []access{
		// The controller: Services and their status, pools, events, its Lease.
		{sa("bgplb-controller"), "watch", "", "services", "", "", true},
		{sa("bgplb-controller"), "patch", "", "services", "status", "default", true},
		{sa("bgplb-controller"), "list", "bgplb.io", "ippools", "", "", true},
		{sa("bgplb-controller"), "patch", "bgplb.io", "ippools", "status", "", true},
		{sa("bgplb-controller"), "create", "", "events", "", "default", true},
		{sa("bgplb-controller"), "update", "coordination.k8s.io", "leases", "", "bgplb-system", true},
		{sa("bgplb-controller"), "update", "coordination.k8s.io", "leases", "", "kube-system", false},
		{sa("bgplb-controller"), "get", "", "secrets", "", "bgplb-system", false},
		{sa("bgplb-controller"), "delete", "", "services", "", "default", false},
		{sa("bgplb-controller"), "create", "bgplb.io", "bgpsessionstates", "", "", false},
		// The speaker: reads Services, EndpointSlices, Nodes, our CRs; writes
		// its session state; MD5 Secrets in its own namespace only.
		{sa("bgplb-speaker"), "watch", "discovery.k8s.io", "endpointslices", "", "", true},
		{sa("bgplb-speaker"), "list", "", "nodes", "", "", true},
		{sa("bgplb-speaker"), "watch", "bgplb.io", "bgppeers", "", "", true},
		{sa("bgplb-speaker"), "create", "bgplb.io", "bgpsessionstates", "", "", true},
		{sa("bgplb-speaker"), "get", "", "secrets", "", "bgplb-system", true},
		{sa("bgplb-speaker"), "get", "", "secrets", "", "default", false},
		// The speaker writes the router's verdict (condition bgplb.io/Routed)
		// into the Service's status, and nothing else of the Service.
		{sa("bgplb-speaker"), "patch", "", "services", "status", "default", true},
		{sa("bgplb-speaker"), "patch", "", "services", "", "default", false},
		{sa("bgplb-speaker"), "update", "", "services", "", "default", false},
		{sa("bgplb-speaker"), "update", "", "nodes", "", "", false},
		{sa("bgplb-speaker"), "patch", "bgplb.io", "ippools", "", "", false},
	} {
		sar := &authv1.SubjectAccessReview{Spec: authv1.SubjectAccessReviewSpec{
			User: a.user,
			ResourceAttributes: &authv1.ResourceAttributes{
				Namespace: a.ns, Verb: a.verb, Group: a.group, Resource: a.resource, Subresource: a.sub,
			},
		}}
		if err := c.Create(ctx, sar); err != nil {
			t.Fatal(err)
		}
		if sar.Status.Allowed != a.allowed {
			t.Errorf("%s %s %s/%s %s in %q: allowed=%v, want %v", strings.TrimPrefix(a.user, "system:serviceaccount:"),
				a.verb, a.group, a.resource, a.sub, a.ns, sar.Status.Allowed, a.allowed)
		}
	}
	checkMetricsReader(ctx, t, c, "bgplb-metrics-reader")
}

// checkMetricsReader binds the installed ClusterRole role to a Prometheus
// service account, as docs/install.md says, and asks the apiserver what it
// may do: GET /metrics of the HTTPS endpoints, not pprof, nothing else.
func checkMetricsReader(ctx context.Context, t *testing.T, c client.Client, role string) {
	t.Helper()
	const prom = "system:serviceaccount:monitoring:prometheus"
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "test-prometheus-" + role},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "prometheus", Namespace: "monitoring"}},
	}
	if err := c.Create(ctx, binding); err != nil {
		t.Fatalf("bind %s: %v", role, err)
	}
	t.Cleanup(func() { _ = c.Delete(context.Background(), binding) })
	for _, a := range []struct {
		verb, path string
		allowed    bool
	}{
		{"get", "/metrics", true},
		{"get", "/debug/pprof/", false},
		{"post", "/metrics", false},
	} {
		allowed := false
		// RBAC caches bindings: the new one takes effect within moments.
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
			sar := &authv1.SubjectAccessReview{Spec: authv1.SubjectAccessReviewSpec{
				User: prom, NonResourceAttributes: &authv1.NonResourceAttributes{Verb: a.verb, Path: a.path},
			}}
			if err := c.Create(ctx, sar); err != nil {
				return false, err
			}
			allowed = sar.Status.Allowed
			return allowed == a.allowed, nil
		})
		if err != nil {
			t.Errorf("%s bound to %s: %s %s allowed=%v, want %v (%v)", prom, role, a.verb, a.path, allowed, a.allowed, err)
		}
	}
}

// The chart installed with helm into a real kube-apiserver with no bgplb
// CRDs, in a namespace other than bgplb-system: ONE `helm install` creates
// the CRDs (from crds/), a pool, a peer and an advertisement; the service
// accounts get their Secrets and Leases in the release namespace; upgrades
// update and remove the resources; uninstall removes them and keeps the
// CRDs.
func TestChartOnAPIServer(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	c := withCRDs(t, env)
	removeCRDs(ctx, t, c)

	const ns = "network-lb"
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	writeKubeconfig(t, env, kc)
	helmEnv := []string{
		"KUBECONFIG=" + kc,
		"HELM_CONFIG_HOME=" + filepath.Join(dir, "config"),
		"HELM_CACHE_HOME=" + filepath.Join(dir, "cache"),
		"HELM_DATA_HOME=" + filepath.Join(dir, "data"),
	}
	helm := tool(t, "helm")
	chart := filepath.Join(root, "charts", "bgplb")
	out := run(t, root, helmEnv, helm, "install", "bgplb", chart, "--namespace", ns, "--create-namespace",
		"--set", "controller.replicas=2",
		"--set-json", `ipPools=[{"name":"default","spec":{"addresses":["192.168.254.0/24"],"avoidBuggyIPs":true}}]`,
		"--set-json", `bgpPeers=[{"name":"router","spec":{"peerAddress":"192.168.2.1","peerASN":64500,"myASN":64512}}]`,
		"--set-json", `bgpAdvertisements=[{"name":"default","spec":{"ipPools":["default"],"communities":["64512:100"]}}]`)
	if !strings.Contains(out, "STATUS: deployed") || !strings.Contains(out, "Next steps") || !strings.Contains(out, "IPPools created by this release: default") {
		t.Errorf("helm install output:\n%s", out)
	}
	waitEstablished(ctx, t, c)
	get := func(kind, name string) (*unstructured.Unstructured, error) {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(testenv.GVK(kind))
		return u, c.Get(ctx, client.ObjectKey{Name: name}, u)
	}
	resources := []struct{ kind, name string }{{"IPPool", "default"}, {"BGPPeer", "router"}, {"BGPAdvertisement", "default"}}
	for _, k := range resources {
		u, err := get(k.kind, k.name)
		if err != nil {
			t.Errorf("%s %s after the first install: %v", k.kind, k.name, err)
			continue
		}
		// A release object (upgrades update it, uninstall removes it), not a hook.
		if u.GetAnnotations()["meta.helm.sh/release-name"] != "bgplb" || u.GetAnnotations()["helm.sh/hook"] != "" {
			t.Errorf("%s %s annotations %v, want an ordinary object of release bgplb", k.kind, k.name, u.GetAnnotations())
		}
	}
	pdb := &unstructured.Unstructured{}
	pdb.SetAPIVersion("policy/v1")
	pdb.SetKind("PodDisruptionBudget")
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "bgplb-controller"}, pdb); err != nil {
		t.Errorf("PodDisruptionBudget with 2 replicas: %v", err)
	}
	checkAccess(ctx, t, c, ns)
	checkMetricsReader(ctx, t, c, "bgplb-metrics-reader")

	// Upgrades update the release objects, and remove those whose entry
	// is gone.
	out = run(t, root, helmEnv, helm, "upgrade", "bgplb", chart, "--namespace", ns, "--reuse-values",
		"--set", "loadBalancerClass.serveUnclassed=false",
		"--set-json", `ipPools=[{"name":"default","spec":{"addresses":["192.168.254.0/24","fd00:254::/120"]}}]`,
		"--set-json", `bgpAdvertisements=[]`)
	if !strings.Contains(out, "helm show crds") {
		t.Errorf("helm upgrade output does not say how to upgrade the CRDs:\n%s", out)
	}
	pool, err := get("IPPool", "default")
	if err != nil {
		t.Fatal(err)
	}
	if addrs, _, _ := unstructured.NestedStringSlice(pool.Object, "spec", "addresses"); len(addrs) != 2 {
		t.Errorf("after upgrade the pool's addresses are %v", addrs)
	}
	if _, err := get("BGPAdvertisement", "default"); !apierrors.IsNotFound(err) {
		t.Errorf("BGPAdvertisement removed from the values: %v, want it deleted", err)
	}

	dep := &unstructured.Unstructured{}
	dep.SetAPIVersion("apps/v1")
	dep.SetKind("Deployment")
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "bgplb-controller"}, dep); err != nil {
		t.Fatal(err)
	}
	if args := containerArgs(t, dep); !slices.Contains(args, "--serve-services-without-class=false") {
		t.Errorf("after upgrade the controller args are %v", args)
	}

	run(t, root, helmEnv, helm, "uninstall", "bgplb", "--namespace", ns, "--wait", "--timeout", "60s")
	if err := c.Get(ctx, client.ObjectKeyFromObject(dep), dep); !apierrors.IsNotFound(err) {
		t.Errorf("controller Deployment after uninstall: %v", err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(pool), pool); !apierrors.IsNotFound(err) && pool.GetDeletionTimestamp() == nil {
		t.Errorf("IPPool after uninstall: %v", err)
	}
	for _, n := range crdNames {
		if err := c.Get(ctx, client.ObjectKey{Name: n}, &apiextensionsv1.CustomResourceDefinition{}); err != nil {
			t.Errorf("CRD %s after uninstall (Helm never deletes crds/): %v", n, err)
		}
	}
}

// checkAccess asks the apiserver what the chart's service accounts, in
// release namespace ns, may do: namespaced rights in ns only.
func checkAccess(ctx context.Context, t *testing.T, c client.Client, ns string) {
	t.Helper()
	sa := func(name string) string { return "system:serviceaccount:" + ns + ":" + name }
	for _, a := range []struct {
		user, verb, group, resource, ns string
		allowed                         bool
	}{
		{sa("bgplb-speaker"), "get", "", "secrets", ns, true},
		{sa("bgplb-speaker"), "get", "", "secrets", "bgplb-system", false},
		{sa("bgplb-controller"), "update", "coordination.k8s.io", "leases", ns, true},
		{sa("bgplb-controller"), "update", "coordination.k8s.io", "leases", "bgplb-system", false},
		{sa("bgplb-controller"), "get", "", "secrets", ns, false},
		{sa("bgplb-controller"), "list", "bgplb.io", "ippools", "", true},
		{sa("bgplb-speaker"), "watch", "bgplb.io", "bgppeers", "", true},
	} {
		sar := &authv1.SubjectAccessReview{Spec: authv1.SubjectAccessReviewSpec{
			User:               a.user,
			ResourceAttributes: &authv1.ResourceAttributes{Namespace: a.ns, Verb: a.verb, Group: a.group, Resource: a.resource},
		}}
		if err := c.Create(ctx, sar); err != nil {
			t.Fatal(err)
		}
		if sar.Status.Allowed != a.allowed {
			t.Errorf("%s %s %s/%s in %q: allowed=%v, want %v", a.user, a.verb, a.group, a.resource, a.ns, sar.Status.Allowed, a.allowed)
		}
	}
}

// The chart's rendered output (`helm template`, as GitOps tools apply it)
// applied server-side to a real kube-apiserver with no bgplb CRDs.
func TestChartTemplateServerSide(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	c := withCRDs(t, env)
	removeCRDs(ctx, t, c)
	objs := decode(t, helmTemplate(t, "--include-crds",
		"--set", "metrics.serviceMonitor.enabled=false",
		"--set-json", `ipPools=[{"name":"default","spec":{"addresses":["192.168.254.0/24"]}}]`,
		"--set-json", `bgpPeers=[{"name":"router","spec":{"peerAddress":"192.168.2.1","peerASN":64500,"myASN":64512,"holdTime":"9s"}}]`,
		"--set-json", `bgpAdvertisements=[{"name":"default","spec":{"ipPools":["default"],"peers":["router"]}}]`))
	ns := &unstructured.Unstructured{}
	ns.SetAPIVersion("v1")
	ns.SetKind("Namespace")
	ns.SetName("bgplb-system")
	applyAll(ctx, t, c, append([]*unstructured.Unstructured{ns}, objs...))
	waitEstablished(ctx, t, c)
	for _, o := range objs {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(o.GroupVersionKind())
		if err := c.Get(ctx, client.ObjectKeyFromObject(o), got); err != nil {
			t.Errorf("%s %s/%s not stored: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
	}
}

func withCRDs(t *testing.T, env *testenv.Env) client.Client {
	t.Helper()
	if err := apiextensionsv1.AddToScheme(env.Scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// removeCRDs deletes the CRDs the harness installed, so that the install
// under test has to create them itself.
//
// A CRD deleted while the apiserver's watch cache for its objects is still
// initializing (right after the harness created it) gets stuck
// ("InstanceDeletionFailed: storage is (re)initializing") until the CRD
// finalizer retries much later. So first wait until each kind is served
// from the watch cache (a list at resourceVersion 0), and nudge the
// finalizer by touching a CRD that is still there.
func removeCRDs(ctx context.Context, t *testing.T, c client.Client) {
	t.Helper()
	for _, kind := range []string{"IPPool", "BGPPeer", "BGPAdvertisement", "BGPSessionState"} {
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			l := &unstructured.UnstructuredList{}
			l.SetGroupVersionKind(testenv.GVK(kind + "List"))
			return c.List(ctx, l, &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: "0"}}) == nil, nil
		})
		if err != nil {
			t.Fatalf("%s not served from the watch cache: %v", kind, err)
		}
	}
	for _, n := range crdNames {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		crd.Name = n
		if err := c.Delete(ctx, crd); err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
	}
	polls := 0
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		polls++
		gone := true
		for _, n := range crdNames {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			err := c.Get(ctx, client.ObjectKey{Name: n}, crd)
			if apierrors.IsNotFound(err) {
				continue
			}
			gone = false
			if err == nil && polls%30 == 0 {
				// Any update requeues the CRD in the finalizer controller.
				patch := client.MergeFrom(crd.DeepCopy())
				metav1.SetMetaDataAnnotation(&crd.ObjectMeta, "bgplb.io/test-nudge", fmt.Sprint(polls))
				_ = c.Patch(ctx, crd, patch)
			}
		}
		return gone, nil
	})
	if err != nil {
		for _, n := range crdNames {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			if c.Get(ctx, client.ObjectKey{Name: n}, crd) == nil {
				t.Logf("CRD %s: finalizers %v, conditions %+v", n, crd.Finalizers, crd.Status.Conditions)
			}
		}
		t.Fatalf("CRDs not deleted: %v", err)
	}
}

// applyAll applies objects server-side, cluster-wide and namespace objects
// first, as kubectl apply --server-side would succeed with.
func applyAll(ctx context.Context, t *testing.T, c client.Client, objs []*unstructured.Unstructured) {
	t.Helper()
	first := func(o *unstructured.Unstructured) int {
		switch o.GetKind() {
		case "Namespace", "CustomResourceDefinition":
			return 0
		}
		return 1
	}
	sorted := slices.Clone(objs)
	slices.SortStableFunc(sorted, func(a, b *unstructured.Unstructured) int { return first(a) - first(b) })
	for _, o := range sorted {
		o = o.DeepCopy()
		var err error
		// A CRD applied a moment ago may not be served yet: retry briefly.
		for range 50 {
			if err = c.Patch(ctx, o, client.Apply, client.FieldOwner("bgplb-install-test"), client.ForceOwnership); err == nil {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("server-side apply %s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
	}
}

func waitEstablished(ctx context.Context, t *testing.T, c client.Client) {
	t.Helper()
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, n := range crdNames {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			if err := c.Get(ctx, client.ObjectKey{Name: n}, crd); err != nil {
				return false, nil //nolint:nilerr // not there yet: poll again
			}
			ok := false
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					ok = true
				}
			}
			if !ok {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("CRDs %v not Established: %v", crdNames, err)
	}
}

func writeKubeconfig(t *testing.T, env *testenv.Env, path string) {
	t.Helper()
	cfg := env.Config
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{
		ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken,
	}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin"}
	kc.CurrentContext = "envtest"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(fmt.Errorf("write kubeconfig: %w", err))
	}
}
