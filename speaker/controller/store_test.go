package controller

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"slices"
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/bgplb/bgplb/internal/kube"
	"github.com/bgplb/bgplb/speaker/model"
)

func testService(name, ip string) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("uid-" + name)},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer},
	}
	if ip != "" {
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip}}
	}
	return s
}

func testSlice(svcName, node string, ready bool) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: svcName + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: svcName}},
		Endpoints:  []discoveryv1.Endpoint{{NodeName: ptr.To(node), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready)}}},
	}
}

// storeRow is what a test reads back from a snapshot: per handled Service,
// its addresses and whether the decision would announce it from node "self"
// under each traffic policy.
type storeRow struct {
	Name    string
	IPs     int
	Cluster bool // some usable endpoint
	Local   bool // a usable endpoint on "self"
}

func storeRows(all []model.Service) []storeRow {
	var out []storeRow
	for _, s := range all {
		r := storeRow{Name: s.Name, IPs: len(s.IPs)}
		for _, e := range s.Endpoints {
			if e.Usable() {
				r.Cluster = true
				r.Local = r.Local || e.NodeName == "self"
			}
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func TestServiceStore(t *testing.T) {
	st := newServiceStore(kube.Serves(true), "self")
	kicks := 0
	svcs, sls := st.serviceWriter(func() { kicks++ }), st.sliceWriter(func() { kicks++ })
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	check := func(step string, want []storeRow, wantChanged ...string) {
		t.Helper()
		all, changed := st.snapshot()
		if diff := cmp.Diff(want, storeRows(all)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", step, diff)
		}
		slices.Sort(changed)
		if diff := cmp.Diff(wantChanged, changed, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s: changed keys (-want +got):\n%s", step, diff)
		}
	}

	if st.synced() {
		t.Fatal("synced before any list")
	}
	must(svcs.Replace([]any{testService("a", "10.0.0.1"), testService("b", "10.0.0.2")}, "1"))
	if st.synced() {
		t.Fatal("synced before the EndpointSlice list")
	}
	must(sls.Replace(nil, "1"))
	if !st.synced() {
		t.Fatal("not synced after both lists")
	}
	must(svcs.Add(testService("c", "10.0.0.3")))
	must(svcs.Add(testService("pending", ""))) // no address yet: not handled
	must(sls.Add(testSlice("b", "n1", true)))
	check("initial", []storeRow{{"a", 1, false, false}, {"b", 1, true, false}, {"c", 1, false, false}}, "ns/a", "ns/b", "ns/c")
	check("nothing changed", []storeRow{{"a", 1, false, false}, {"b", 1, true, false}, {"c", 1, false, false}})

	must(sls.Update(testSlice("b", "self", true)))
	must(svcs.Delete(testService("a", "10.0.0.1")))
	check("slice moved to this node, a deleted", []storeRow{{"b", 1, true, true}, {"c", 1, false, false}}, "ns/a", "ns/b")
	if o := st.eventObject("ns/a"); o != nil {
		t.Errorf("event object of a deleted Service: %v", o)
	}

	must(sls.Delete(toolscache.DeletedFinalStateUnknown{Key: "ns/b-1", Obj: testSlice("b", "self", true)}))
	must(svcs.Update(testService("pending", "10.0.0.9")))
	check("tombstone slice, pending got an address", []storeRow{{"b", 1, false, false}, {"c", 1, false, false}, {"pending", 1, false, false}}, "ns/b", "ns/pending")

	// Several slices for one Service: each is kept, replaced and removed by
	// its own name.
	second := func(svcName, node string, ready bool) *discoveryv1.EndpointSlice {
		s := testSlice(svcName, node, ready)
		s.Name = svcName + "-2"
		return s
	}
	must(sls.Add(testSlice("c", "self", true)))
	must(sls.Add(second("c", "n2", true)))
	check("two slices", []storeRow{{"b", 1, false, false}, {"c", 1, true, true}, {"pending", 1, false, false}}, "ns/c")
	must(sls.Update(testSlice("c", "self", false)))
	check("first slice not ready", []storeRow{{"b", 1, false, false}, {"c", 1, true, false}, {"pending", 1, false, false}}, "ns/c")
	must(sls.Delete(second("c", "n2", true)))
	must(sls.Delete(second("c", "n2", true))) // twice: no-op
	check("second slice deleted", []storeRow{{"b", 1, false, false}, {"c", 1, false, false}, {"pending", 1, false, false}}, "ns/c")
	must(sls.Update(testSlice("c", "n3", true)))
	check("first slice ready again elsewhere", []storeRow{{"b", 1, false, false}, {"c", 1, true, false}, {"pending", 1, false, false}}, "ns/c")

	// A Service that is no longer ours leaves the set but still gets its
	// Withdrawn events; one that was never handled is not kept at all.
	other := testService("c", "10.0.0.3")
	other.Spec.LoadBalancerClass = ptr.To("example.com/other")
	must(svcs.Update(other))
	must(svcs.Update(testService("never", "")))
	check("c taken by another class", []storeRow{{"b", 1, false, false}, {"pending", 1, false, false}}, "ns/c")
	want := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "c", UID: "uid-c"}}
	if diff := cmp.Diff(want, st.eventObject("ns/c")); diff != "" {
		t.Errorf("event object of a dropped Service (-want +got):\n%s", diff)
	}
	want = &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "b", UID: "uid-b"}}
	if diff := cmp.Diff(want, st.eventObject("ns/b")); diff != "" {
		t.Errorf("event object (-want +got):\n%s", diff)
	}
	// A real apiserver's UIDs are kept in 16 bytes and come back the same.
	real := testService("b", "10.0.0.2")
	real.UID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
	must(svcs.Update(real))
	st.snapshot()
	want = &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "b", UID: real.UID}}
	if diff := cmp.Diff(want, st.eventObject("ns/b")); diff != "" {
		t.Errorf("event object with a UUID (-want +got):\n%s", diff)
	}
	for _, odd := range []types.UID{"0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f", ""} {
		real.UID = odd
		must(svcs.Update(real))
		st.snapshot()
		if got := st.eventObject("ns/b"); got == nil || got.UID != odd {
			t.Errorf("event object UID %q: got %v", odd, got)
		}
	}
	if s, ok := st.service("ns/b"); !ok || s.Key() != "ns/b" || s.Namespace != "ns" || s.Name != "b" {
		t.Errorf("service(ns/b) = %+v, %v", s, ok)
	}
	if _, ok := st.service("ns/c"); ok {
		t.Error("service(ns/c) found after it was dropped")
	}

	must(svcs.Delete(testService("pending", "10.0.0.9")))
	must(svcs.Delete(testService("b", "10.0.0.2")))
	must(svcs.Delete(testService("never", "")))
	check("all gone", nil, "ns/b", "ns/pending")
	if kicks != 24 {
		t.Errorf("kicks = %d, want one per write (24)", kicks)
	}
}

// TestServiceStoreRelist: a relist (the reflector's Replace after a watch
// gap) removes what was deleted meanwhile, including changes that were
// staged but not yet snapshotted, and rebuilds the EndpointSlices.
func TestServiceStoreRelist(t *testing.T) {
	st := newServiceStore(kube.Serves(true), "self")
	svcs, sls := st.serviceWriter(func() {}), st.sliceWriter(func() {})
	for _, err := range []error{
		svcs.Replace([]any{testService("a", "10.0.0.1"), testService("b", "10.0.0.2"), testService("c", "10.0.0.3")}, "1"),
		sls.Replace([]any{testSlice("a", "self", true), testSlice("b", "n1", true)}, "1"),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	all, _ := st.snapshot()
	if diff := cmp.Diff([]storeRow{{"a", 1, true, true}, {"b", 1, true, false}, {"c", 1, false, false}}, storeRows(all)); diff != "" {
		t.Fatalf("initial (-want +got):\n%s", diff)
	}
	// Staged, not yet applied: d added, then the watch breaks.
	if err := svcs.Add(testService("d", "10.0.0.4")); err != nil {
		t.Fatal(err)
	}
	// Meanwhile a and d were deleted, b lost its address, c's slice appeared
	// on this node and a's slice went.
	for _, err := range []error{
		svcs.Replace([]any{testService("b", ""), testService("c", "10.0.0.3"), testService("e", "10.0.0.5")}, "2"),
		sls.Replace([]any{testSlice("c", "self", true), testSlice("b", "n1", true)}, "2"),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	all, changed := st.snapshot()
	if diff := cmp.Diff([]storeRow{{"c", 1, true, true}, {"e", 1, false, false}}, storeRows(all)); diff != "" {
		t.Errorf("after relist (-want +got):\n%s", diff)
	}
	slices.Sort(changed)
	if diff := cmp.Diff([]string{"ns/a", "ns/b", "ns/c", "ns/d", "ns/e"}, changed); diff != "" {
		t.Errorf("changed (-want +got):\n%s", diff)
	}
	if st.eventObject("ns/b") == nil || st.eventObject("ns/a") != nil || st.eventObject("ns/d") != nil {
		t.Error("event objects after relist: want b (exists, no address), not a or d (deleted)")
	}
	if wrong := map[string]error{"svc": svcs.Add(testSlice("x", "n", true)), "slice": sls.Replace([]any{testService("x", "")}, "3")}; wrong["svc"] == nil || wrong["slice"] == nil {
		t.Errorf("wrong object types accepted: %v", wrong)
	}
}

// TestServiceStoreSliceLabelChange: a slice that moves to another Service
// (its service-name label changes) or loses the label (which a
// label-selected watch reports as a delete) leaves its old Service.
func TestServiceStoreSliceLabelChange(t *testing.T) {
	st := newServiceStore(kube.Serves(true), "self")
	svcs, sls := st.serviceWriter(func() {}), st.sliceWriter(func() {})
	_ = svcs.Replace([]any{testService("a", "10.0.0.1"), testService("b", "10.0.0.2")}, "1")
	_ = sls.Replace([]any{testSlice("a", "self", true)}, "1")
	st.snapshot()
	moved := testSlice("a", "self", true)
	moved.Labels[discoveryv1.LabelServiceName] = "b"
	if err := sls.Update(moved); err != nil {
		t.Fatal(err)
	}
	all, changed := st.snapshot()
	slices.Sort(changed)
	if diff := cmp.Diff([]storeRow{{"a", 1, false, false}, {"b", 1, true, true}}, storeRows(all)); diff != "" {
		t.Errorf("after move (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"ns/a", "ns/b"}, changed); diff != "" {
		t.Errorf("changed after move (-want +got):\n%s", diff)
	}
	unlabelled := testSlice("a", "self", true)
	unlabelled.Labels = nil
	if err := sls.Delete(unlabelled); err != nil {
		t.Fatal(err)
	}
	all, _ = st.snapshot()
	if diff := cmp.Diff([]storeRow{{"a", 1, false, false}, {"b", 1, false, false}}, storeRows(all)); diff != "" {
		t.Errorf("after the label went (-want +got):\n%s", diff)
	}
}

func TestSummarizeEndpointConditions(t *testing.T) {
	st := newServiceStore(kube.Serves(true), "self")
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", Labels: map[string]string{"app": "web"}},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal},
		Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{
			{IP: "192.168.254.10"}, {IP: "fd00::10"}, {Hostname: "lb.example"},
		}}},
	}
	r := st.record(svc, "ns/web")
	want := model.Service{
		Namespace: "ns", Name: "web", ID: "ns/web", Labels: map[string]string{"app": "web"}, TrafficPolicy: model.TrafficPolicyLocal,
		IPs: []netip.Addr{netip.MustParseAddr("192.168.254.10"), netip.MustParseAddr("fd00::10")},
	}
	if diff := cmp.Diff(want, r.svc, addrCmp); diff != "" || r.unhandled {
		t.Errorf("record (-want +got):\n%s (unhandled %v)", diff, r.unhandled)
	}

	es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "web-1"}, Endpoints: []discoveryv1.Endpoint{
		{NodeName: ptr.To("self")}, // all conditions unset: ready, serving
		{NodeName: ptr.To("self"), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false)}}, // serving defaults to ready
		{NodeName: ptr.To("self"), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(true), Terminating: ptr.To(true)}},
		{NodeName: ptr.To("b"), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false)}},
	}}
	wantSum := sliceSummary{name: "web-1", local: []model.Endpoint{
		{NodeName: "self", Ready: true, Serving: true},
		{NodeName: "self"},
		{NodeName: "self", Serving: true, Terminating: true},
	}}
	if diff := cmp.Diff(wantSum, st.summarize(es), cmp.AllowUnexported(sliceSummary{})); diff != "" {
		t.Errorf("summarize (-want +got):\n%s", diff)
	}
	es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}) // no node
	if !st.summarize(es).remote {
		t.Error("a ready endpoint without a node is not counted as usable elsewhere")
	}
}

// TestStoreDecidesAsFullEndpoints checks that the store's summary of the
// endpoints gives the same decision as the full list of endpoints would,
// over random EndpointSlices and both traffic policies.
func TestStoreDecidesAsFullEndpoints(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	cond := func() *bool {
		switch rng.IntN(3) {
		case 0:
			return nil
		case 1:
			return ptr.To(false)
		}
		return ptr.To(true)
	}
	nodes := []*string{nil, ptr.To("self"), ptr.To("n1"), ptr.To("n2")}
	base := model.Input{
		Node:           "self",
		Nodes:          []model.Node{{Name: "self", Ready: true}},
		Pools:          []model.Pool{{Name: "p", Ranges: []model.AddrRange{{First: netip.MustParseAddr("10.0.0.0"), Last: netip.MustParseAddr("10.0.255.255")}}}},
		Peers:          []model.Peer{{Name: "r", Address: netip.MustParseAddr("192.168.2.1")}},
		Advertisements: []model.BGPAdvertisement{{Name: "a"}},
	}
	st := newServiceStore(kube.Serves(true), "self")
	svcs, sls := st.serviceWriter(func() {}), st.sliceWriter(func() {})
	_ = svcs.Replace(nil, "1")
	_ = sls.Replace(nil, "1")
	full := map[string][]model.Endpoint{}
	for i := range 400 {
		name := fmt.Sprintf("s%d", i)
		svc := testService(name, fmt.Sprintf("10.0.%d.%d", i>>8, i&0xff))
		if i%2 == 0 {
			svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		}
		_ = svcs.Add(svc)
		for j := range rng.IntN(3) {
			es := testSlice(name, "", true)
			es.Name = fmt.Sprintf("%s-%d", name, j)
			es.Endpoints = nil
			for range rng.IntN(4) {
				e := discoveryv1.Endpoint{NodeName: nodes[rng.IntN(len(nodes))], Conditions: discoveryv1.EndpointConditions{Ready: cond(), Serving: cond(), Terminating: cond()}}
				es.Endpoints = append(es.Endpoints, e)
				// The full conversion, as before the store summarized.
				ep := model.Endpoint{Ready: e.Conditions.Ready == nil || *e.Conditions.Ready}
				ep.Serving = ep.Ready
				if e.Conditions.Serving != nil {
					ep.Serving = *e.Conditions.Serving
				}
				ep.Terminating = e.Conditions.Terminating != nil && *e.Conditions.Terminating
				if e.NodeName != nil {
					ep.NodeName = *e.NodeName
				}
				full["ns/"+name] = append(full["ns/"+name], ep)
			}
			_ = sls.Add(es)
		}
	}
	summarized, _ := st.snapshot()
	in := base
	in.Services = summarized
	got := model.Desired(in)
	in.Services = nil
	for _, s := range summarized {
		s.Endpoints = full[s.Key()]
		in.Services = append(in.Services, s)
	}
	want := model.Desired(in)
	if diff := cmp.Diff(want, got, addrCmp, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("decision over summarized endpoints differs from the full list (-full +summarized):\n%s", diff)
	}
	if n := len(want.Peers["r"]); n < 100 || n > 300 {
		t.Errorf("%d of 400 Services announced: the random cases do not cover both outcomes", n)
	}
}

// BenchmarkStoreMemory10k reports the live heap the store keeps for
// 10,000 handled Services with one EndpointSlice each (one ready endpoint
// on another node), as in the Speaker10k benchmark, after one snapshot.
func BenchmarkStoreMemory10k(b *testing.B) {
	const n = 10000
	svcs := make([]any, n)
	sls := make([]any, n)
	for i := range n {
		name := fmt.Sprintf("svc-%d", i)
		s := testService(name, fmt.Sprintf("10.128.%d.%d", i>>8, i&0xff))
		s.UID = types.UID(fmt.Sprintf("0f1e2d3c-4b5a-6978-8796-%012x", i))
		svcs[i] = s
		es := testSlice(name, "other-node", true)
		es.Name = name
		sls[i] = es
	}
	var st *serviceStore
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	var perService float64
	for range b.N {
		before := heap()
		st = newServiceStore(kube.Serves(true), "self")
		w, sw := st.serviceWriter(func() {}), st.sliceWriter(func() {})
		_ = w.Replace(nil, "1")
		_ = sw.Replace(nil, "1")
		for i := range n {
			_ = w.Add(svcs[i])
			_ = sw.Add(sls[i])
		}
		st.snapshot()
		perService = float64(heap()-before) / n
	}
	runtime.KeepAlive(st)
	b.ReportMetric(perService, "B/Service")
}
