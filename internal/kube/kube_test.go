package kube

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	v1 "github.com/bgplb/bgplb/api/v1alpha1"
)

func TestServes(t *testing.T) {
	lb := func(class *string) *corev1.Service {
		return &corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: class}}
	}
	tests := []struct {
		name         string
		svc          *corev1.Service
		withoutClass bool
		want         bool
	}{
		{"our class", lb(ptr.To(v1.LoadBalancerClass)), false, true},
		{"no class, allowed", lb(nil), true, true},
		{"no class, not allowed", lb(nil), false, false},
		{"other class", lb(ptr.To("example.com/lb")), true, false},
		{"ClusterIP", &corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP}}, true, false},
	}
	for _, tt := range tests {
		if got := Serves(tt.withoutClass)(tt.svc); got != tt.want {
			t.Errorf("%s: Serves = %v, want %v", tt.name, got, tt.want)
		}
	}
}
