package controllers

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	bgplbv1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/controllers/allocator"
)

func TestBuildRequest(t *testing.T) {
	base := func(mod func(*corev1.Service)) *corev1.Service {
		s := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", Labels: map[string]string{"tier": "gold"}, Annotations: map[string]string{}},
			Spec: corev1.ServiceSpec{
				Type:       corev1.ServiceTypeLoadBalancer,
				IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol},
				Ports:      []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}, {Port: 53}},
			},
		}
		mod(s)
		return s
	}
	want := func(mod func(*allocator.Request)) allocator.Request {
		r := allocator.Request{
			Service: "shop/web", Namespace: "shop", Labels: map[string]string{"tier": "gold"},
			Families: []allocator.Family{allocator.IPv4}, OptionalSecond: true,
			Ports: []allocator.Port{{Protocol: "TCP", Port: 80}, {Protocol: "TCP", Port: 53}},
		}
		mod(&r)
		return r
	}
	cases := []struct {
		name    string
		svc     *corev1.Service
		want    allocator.Request
		wantErr string
	}{
		{name: "plain", svc: base(func(*corev1.Service) {}), want: want(func(*allocator.Request) {})},
		{
			name: "annotations",
			svc: base(func(s *corev1.Service) {
				s.Annotations[bgplbv1.AnnotationLoadBalancerIPs] = " 192.168.254.7 , fd00::7"
				s.Annotations[bgplbv1.AnnotationIPPool] = " web "
				s.Annotations[bgplbv1.AnnotationAllowSharedIP] = "k"
				s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol}
				s.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicyRequireDualStack)
			}),
			want: want(func(r *allocator.Request) {
				r.Requested = []netip.Addr{netip.MustParseAddr("192.168.254.7"), netip.MustParseAddr("fd00::7")}
				r.Pool, r.SharingKey = "web", "k"
				r.Families = []allocator.Family{allocator.IPv6, allocator.IPv4}
				r.OptionalSecond = false
			}),
		},
		{
			name: "legacy loadBalancerIP, mapped address unmapped",
			svc:  base(func(s *corev1.Service) { s.Spec.LoadBalancerIP = "::ffff:10.0.0.1" }),
			want: want(func(r *allocator.Request) { r.Requested = []netip.Addr{netip.MustParseAddr("10.0.0.1")} }),
		},
		{
			name: "annotation wins over legacy field",
			svc: base(func(s *corev1.Service) {
				s.Spec.LoadBalancerIP = "10.0.0.1"
				s.Annotations[bgplbv1.AnnotationLoadBalancerIPs] = "10.0.0.2"
			}),
			want: want(func(r *allocator.Request) { r.Requested = []netip.Addr{netip.MustParseAddr("10.0.0.2")} }),
		},
		{
			name:    "bad annotation",
			svc:     base(func(s *corev1.Service) { s.Annotations[bgplbv1.AnnotationLoadBalancerIPs] = "10.0.0.1,banana" }),
			wantErr: `annotation bgplb.io/loadBalancerIPs: "banana" is not an IP address without zone`,
		},
		{
			name:    "zone refused",
			svc:     base(func(s *corev1.Service) { s.Spec.LoadBalancerIP = "fe80::1%eth0" }),
			wantErr: `spec.loadBalancerIP "fe80::1%eth0" is not an IP address`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := buildRequest(tc.svc, nil)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got, cmpopts.EquateComparable(netip.Addr{})); d != "" {
				t.Errorf("request (-want +got):\n%s", d)
			}
		})
	}
}

func TestPoolSpecBadSelector(t *testing.T) {
	p := &bgplbv1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec: bgplbv1.IPPoolSpec{Addresses: []string{"10.0.0.0/24"}, ServiceAllocation: &bgplbv1.ServiceAllocation{
			ServiceSelectors: []metav1.LabelSelector{{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Near"}}}},
		}},
	}
	a := allocator.New()
	a.SetPools([]allocator.PoolSpec{poolSpec(p)})
	st := a.States()
	if len(st) != 1 || st[0].Valid || st[0].Reason != "BadSelector" {
		t.Fatalf("states %+v, want one invalid pool with reason BadSelector", st)
	}
}
