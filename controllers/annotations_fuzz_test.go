package controllers

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	bgplbv1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/controllers/allocator"
	"github.com/bgplb/bgplb/internal/iprange"
)

// FuzzServiceAnnotations feeds arbitrary values of bgplb.io/loadBalancerIPs,
// bgplb.io/ip-pool and bgplb.io/allow-shared-ip (and spec.loadBalancerIP)
// through buildRequest and the allocator: nothing panics; an unusable
// address list yields an error that names the annotation; an accepted list
// holds exactly the listed addresses; and whatever the allocator assigns
// lies in a pool and honours the requested addresses. Seeds:
// testdata/fuzz/FuzzServiceAnnotations.
func FuzzServiceAnnotations(f *testing.F) {
	for _, s := range [][4]string{
		{"192.168.254.10", "", "", ""},
		{"192.168.254.10, 2001:db8:254::10", "pool-a", "", ""},
		{" 192.168.254.11 ", " pool-a ", "key1", ""},
		{"192.168.254.12,", "", "", ""},
		{"192.168.254.1,192.168.254.2", "", "", ""},
		{"::ffff:192.168.254.13", "", "k", ""},
		{"fe80::1%eth0", "", "", ""},
		{"not-an-ip", "nope", "", ""},
		{"", "", "", "192.168.254.14"},
		{"", "pool-b", "", "junk"},
		{",,,", "", "", ""},
		{"10.0.0.1", "pool-a", "", ""},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	pools := []allocator.PoolSpec{
		{Name: "pool-a", Addresses: []string{"192.168.254.0/28", "2001:db8:254::/124"}, AutoAssign: true},
		{Name: "pool-b", Addresses: []string{"192.168.254.16-192.168.254.20"}, AutoAssign: true, AvoidBuggyIPs: true},
	}
	inPool := func(a netip.Addr) bool {
		for _, p := range pools {
			rs, _ := iprange.ParsePool(p.Addresses)
			for _, r := range rs {
				if r.Contains(a) {
					return true
				}
			}
		}
		return false
	}
	f.Fuzz(func(t *testing.T, ips, pool, share, specIP string) {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "svc", Annotations: map[string]string{}},
			Spec: corev1.ServiceSpec{
				Type: corev1.ServiceTypeLoadBalancer, LoadBalancerIP: specIP,
				IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol},
				Ports:      []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}},
			},
		}
		for k, v := range map[string]string{bgplbv1.AnnotationLoadBalancerIPs: ips, bgplbv1.AnnotationIPPool: pool, bgplbv1.AnnotationAllowSharedIP: share} {
			if v != "" {
				svc.Annotations[k] = v
			}
		}
		req, err := buildRequest(svc, nil)
		if req.Pool != strings.TrimSpace(pool) || req.SharingKey != strings.TrimSpace(share) {
			t.Fatalf("pool %q / key %q became %q / %q", pool, share, req.Pool, req.SharingKey)
		}
		if strings.TrimSpace(ips) != "" {
			if err != nil {
				if !strings.Contains(err.Error(), bgplbv1.AnnotationLoadBalancerIPs) {
					t.Fatalf("error does not name the annotation: %v", err)
				}
				return
			}
			parts := strings.Split(ips, ",")
			if len(req.Requested) != len(parts) {
				t.Fatalf("%q: %d addresses from %d entries", ips, len(req.Requested), len(parts))
			}
			for i, a := range req.Requested {
				if a.Is4In6() {
					t.Fatalf("%q: mapped address %s kept", ips, a)
				}
				// Formatting the parsed list and parsing it again gives the same list.
				want, _ := netip.ParseAddr(strings.TrimSpace(parts[i]))
				if a != want.Unmap() {
					t.Fatalf("%q: entry %d parsed as %s", ips, i, a)
				}
			}
		} else if err != nil {
			if specIP == "" || !strings.Contains(err.Error(), "spec.loadBalancerIP") {
				t.Fatalf("error without a named field: %v", err)
			}
			return
		}
		alloc := allocator.New()
		alloc.SetPools(pools)
		got, _, aerr := alloc.Assign(req)
		if aerr != nil {
			return
		}
		for _, a := range got {
			if !inPool(a) {
				t.Fatalf("assigned %s outside every pool", a)
			}
			if len(req.Requested) > 0 && !slices.Contains(req.Requested, a) {
				t.Fatalf("assigned %s, requested %v", a, req.Requested)
			}
		}
	})
}
