// Package kube holds what bgplb's cluster programs share about Kubernetes:
// the scheme they speak and the rule that says which Services are ours.
package kube

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	bgplbv1 "github.com/bgplb/bgplb/api/v1alpha1"
)

// NewScheme returns a scheme with the core Kubernetes kinds and bgplb's.
func NewScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("add core kinds to scheme: %w", err)
	}
	if err := bgplbv1.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("add bgplb kinds to scheme: %w", err)
	}
	return s, nil
}

// Serves returns the predicate for the Services bgplb handles: type
// LoadBalancer with spec.loadBalancerClass bgplb.io/bgp, or with no class
// when withoutClass is true. The controller and the speaker must agree on
// it, so both use this one.
func Serves(withoutClass bool) func(*corev1.Service) bool {
	return func(s *corev1.Service) bool {
		if s.Spec.Type != corev1.ServiceTypeLoadBalancer {
			return false
		}
		if s.Spec.LoadBalancerClass == nil {
			return withoutClass
		}
		return *s.Spec.LoadBalancerClass == bgplbv1.LoadBalancerClass
	}
}
