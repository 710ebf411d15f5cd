package metallb_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	bgplbv1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/internal/metallb"
	"github.com/bgplb/bgplb/internal/testenv"
)

// TestList installs MetalLB's CRDs in envtest, creates MetalLB's samples
// there, reads them back with List as `migrate-metallb --from-cluster`
// does, and checks that the conversion of what the cluster returns (with
// the CRDs' defaults filled in) is what the files convert to.
func TestList(t *testing.T) {
	testenv.Skip(t, env) // only without assets and without BGPLB_REQUIRE_ENVTEST (make test sets it)
	ctx := context.Background()
	c := env.Client

	// Before MetalLB is installed, List says so.
	if _, err := metallb.List(ctx, c, "metallb-system"); err == nil || !strings.Contains(err.Error(), "is MetalLB installed?") {
		t.Fatalf("List without MetalLB CRDs: %v", err)
	}

	if _, err := envtest.InstallCRDs(env.Config, envtest.CRDInstallOptions{Paths: []string{filepath.Join("testdata", "crds")}}); err != nil {
		t.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "metallb-system"}}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	var created []*unstructured.Unstructured
	for _, f := range []string{"ipaddresspool_with_selector.yaml", "bgppeer_withsecret.yaml", "bgpadvertisement_community_alias.yaml", "docs_bgp_configuration.yaml"} {
		for _, u := range convertInput(t, filepath.Join("testdata", "metallb", f)) {
			if err := c.Create(ctx, u); err != nil {
				t.Fatalf("%s: create %s %s: %v", f, u.GetKind(), u.GetName(), err)
			}
			created = append(created, u)
		}
	}

	got, err := metallb.List(ctx, c, "metallb-system")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(created) {
		t.Errorf("List returned %d objects, %d created", len(got), len(created))
	}
	fromCluster := metallb.Convert(got)
	fromFiles := metallb.Convert(created)
	// List returns kind by kind; the files mix kinds.
	if diff := cmp.Diff(names(fromFiles), names(fromCluster), cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
		t.Errorf("converted objects (-files +cluster):\n%s", diff)
	}
	byText := cmpopts.SortSlices(func(a, b metallb.Finding) bool { return a.String() < b.String() })
	if diff := cmp.Diff(fromFiles.Findings, fromCluster.Findings, byText); diff != "" {
		t.Errorf("findings (-files +cluster):\n%s", diff)
	}
	// The cluster fills in MetalLB's defaults; they match bgplb's.
	for _, o := range fromCluster.Objects {
		if err := c.Create(ctx, o.Object.DeepCopyObject().(client.Object), client.DryRunAll); err != nil {
			t.Errorf("%s: the apiserver refuses the converted object: %v", o.From, err)
		}
		if p, ok := o.Object.(*bgplbv1.IPPool); ok && (p.Spec.AutoAssign == nil || !*p.Spec.AutoAssign) {
			t.Errorf("%s: autoAssign %v, want MetalLB's default true", o.From, p.Spec.AutoAssign)
		}
	}

	// The dry run does refuse what bgplb's CRDs forbid: it is a real check.
	bad := &bgplbv1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "bad"}, Spec: bgplbv1.BGPPeerSpec{
		PeerAddress: "192.168.1.1", PeerASN: 1, MyASN: 1, KeepaliveTime: &metav1.Duration{},
	}}
	if err := c.Create(ctx, bad, client.DryRunAll); !apierrors.IsInvalid(err) {
		t.Errorf("dry-run create of a BGPPeer with keepaliveTime 0s: %v, want Invalid", err)
	}
}

func names(r metallb.Result) []string {
	var out []string
	for _, o := range r.Objects {
		out = append(out, o.Object.GetObjectKind().GroupVersionKind().Kind+"/"+o.Object.GetName()+" from "+o.From)
	}
	return out
}
