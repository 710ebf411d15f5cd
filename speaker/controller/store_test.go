package controller

import (
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/bgplb/bgplb/internal/kube"
)

func TestServiceStore(t *testing.T) {
	st := newServiceStore(kube.Serves(true))
	kicks := 0
	h := st.handler(func() { kicks++ })
	svc := func(name, ip string) *corev1.Service {
		s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer}}
		if ip != "" {
			s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip}}
		}
		return s
	}
	slice := func(svcName, node string, ready bool) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: svcName + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: svcName}},
			Endpoints:  []discoveryv1.Endpoint{{NodeName: ptr.To(node), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready)}}},
		}
	}
	type row struct {
		Name  string
		IPs   int
		Nodes string
	}
	snap := func() []row {
		var out []row
		for _, s := range st.snapshot() {
			r := row{Name: s.Name, IPs: len(s.IPs)}
			for _, e := range s.Endpoints {
				if e.Usable() {
					r.Nodes += e.NodeName
				}
			}
			out = append(out, r)
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
		return out
	}
	check := func(step string, want []row) {
		t.Helper()
		if diff := cmp.Diff(want, snap()); diff != "" {
			t.Errorf("%s (-want +got):\n%s", step, diff)
		}
	}

	h.OnAdd(svc("a", "10.0.0.1"), true)
	h.OnAdd(svc("b", "10.0.0.2"), true)
	h.OnAdd(svc("c", "10.0.0.3"), true)
	h.OnAdd(svc("pending", ""), true) // no address yet: not handled
	h.OnAdd(slice("b", "n1", true), true)
	check("initial", []row{{"a", 1, ""}, {"b", 1, "n1"}, {"c", 1, ""}})

	h.OnUpdate(nil, slice("b", "n2", true))
	h.OnDelete(svc("a", "10.0.0.1"))
	check("slice moved, a deleted", []row{{"b", 1, "n2"}, {"c", 1, ""}})

	h.OnDelete(toolscache.DeletedFinalStateUnknown{Key: "ns/b-1", Obj: slice("b", "n2", true)})
	h.OnUpdate(nil, svc("pending", "10.0.0.9"))
	check("tombstone slice, pending got an address", []row{{"b", 1, ""}, {"c", 1, ""}, {"pending", 1, ""}})

	// Several slices for one Service: each is kept, replaced and removed by
	// its own name.
	second := func(svcName, node string, ready bool) *discoveryv1.EndpointSlice {
		s := slice(svcName, node, ready)
		s.Name = svcName + "-2"
		return s
	}
	h.OnAdd(slice("c", "n1", true), true)
	h.OnAdd(second("c", "n2", true), true)
	check("two slices", []row{{"b", 1, ""}, {"c", 1, "n1n2"}, {"pending", 1, ""}})
	h.OnUpdate(nil, slice("c", "n1", false))
	check("first slice not ready", []row{{"b", 1, ""}, {"c", 1, "n2"}, {"pending", 1, ""}})
	h.OnDelete(second("c", "n2", true))
	h.OnDelete(second("c", "n2", true)) // twice: no-op
	check("second slice deleted", []row{{"b", 1, ""}, {"c", 1, ""}, {"pending", 1, ""}})
	h.OnUpdate(nil, slice("c", "n3", true))
	check("first slice ready again", []row{{"b", 1, ""}, {"c", 1, "n3"}, {"pending", 1, ""}})

	h.OnDelete(svc("c", "10.0.0.3"))
	h.OnDelete(svc("pending", "10.0.0.9"))
	h.OnDelete(svc("b", "10.0.0.2"))
	check("all gone", nil)
	if kicks != 18 {
		t.Errorf("kicks = %d, want one per event (18)", kicks)
	}
}
