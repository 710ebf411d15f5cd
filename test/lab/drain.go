package lab

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Pod is one endpoint of a lab Service with its EndpointSlice conditions,
// as the endpointslice controller writes them from the pod: a new pod is
// neither ready nor serving until its readiness probe passes; a deleted or
// evicted one is terminating, not ready, and serving until it exits.
type Pod struct {
	Name        string
	Node        string
	Ready       bool
	Serving     bool
	Terminating bool
}

// SetPods replaces the Service's EndpointSlice with these endpoints.
func (l *Lab) SetPods(ctx context.Context, service string, pods []Pod) error {
	es := &discoveryv1.EndpointSlice{}
	key := client.ObjectKey{Namespace: Namespace, Name: service + "-lab"}
	if err := l.Kube.Get(ctx, key, es); err != nil {
		return fmt.Errorf("get EndpointSlice %s: %w", key.Name, err)
	}
	es.Endpoints = nil
	for i, p := range pods {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses: []string{fmt.Sprintf("10.244.%d.%d", nodeIndex(p.Node), 100+i)},
			NodeName:  ptr.To(p.Node),
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: Namespace, Name: p.Name},
			Conditions: discoveryv1.EndpointConditions{
				Ready: ptr.To(p.Ready), Serving: ptr.To(p.Serving), Terminating: ptr.To(p.Terminating),
			},
		})
	}
	if err := l.Kube.Update(ctx, es); err != nil {
		return fmt.Errorf("update EndpointSlice %s: %w", key.Name, err)
	}
	return nil
}

// Cordon does what `kubectl cordon` and the node lifecycle controller do
// (on false, `kubectl uncordon`): spec.unschedulable and the
// node.kubernetes.io/unschedulable:NoSchedule taint.
func (l *Lab) Cordon(ctx context.Context, node string, on bool) error {
	n := &corev1.Node{}
	if err := l.Kube.Get(ctx, client.ObjectKey{Name: node}, n); err != nil {
		return fmt.Errorf("get node %s: %w", node, err)
	}
	patch := client.MergeFrom(n.DeepCopy())
	n.Spec.Unschedulable = on
	var taints []corev1.Taint
	for _, t := range n.Spec.Taints {
		if t.Key != "node.kubernetes.io/unschedulable" {
			taints = append(taints, t)
		}
	}
	if on {
		taints = append(taints, corev1.Taint{Key: "node.kubernetes.io/unschedulable", Effect: corev1.TaintEffectNoSchedule, TimeAdded: ptr.To(metav1.Now())})
	}
	n.Spec.Taints = taints
	if err := l.Kube.Patch(ctx, n, patch); err != nil {
		return fmt.Errorf("cordon node %s: %w", node, err)
	}
	return nil
}

// SetLocalRefuse stands in for kube-proxy with externalTrafficPolicy Local
// on a node without a serving local endpoint: connections to the Service
// address are refused (a TCP reset, so that a failed request shows at once
// rather than after a timeout). on=false removes the rule.
func (l *Lab) SetLocalRefuse(node string, ip netip.Addr, on bool) error {
	rule := []string{"INPUT", "-d", ip.String(), "-p", "tcp", "--dport", fmt.Sprint(ServicePort),
		"-m", "comment", "--comment", "bgplb-lab kube-proxy stand-in", "-j", "REJECT", "--reject-with", "tcp-reset"}
	_, err := nsExec(l.NS(node), append([]string{"iptables", "-C"}, rule...)...)
	exists := err == nil
	switch {
	case on && !exists:
		_, err = nsExec(l.NS(node), append([]string{"iptables", "-I"}, rule...)...)
	case !on && exists:
		_, err = nsExec(l.NS(node), append([]string{"iptables", "-D"}, rule...)...)
	default:
		err = nil
	}
	if err != nil {
		return fmt.Errorf("node %s: kube-proxy stand-in for %s: %w", node, ip, err)
	}
	return nil
}

// StartSpeakerWith starts bgplb-speaker on a node, as StartSpeaker does,
// with extra flags (e.g. a baseline without --graceful-shutdown-on-drain).
func (l *Lab) StartSpeakerWith(node string, extra ...string) error {
	args := append([]string{"--node-name", node,
		"--metrics-bind-address=127.0.0.1:7472", "--metrics-secure=false", "--health-probe-bind-address=127.0.0.1:7473"}, extra...)
	return l.start("speaker-"+node, l.NS(node), []string{"KUBECONFIG=" + l.kubeconfig(), "NODE_NAME=" + node},
		filepath.Join(l.opts.BinDir, "bgplb-speaker"), args...)
}

// SetRouterL4Hash makes the router spread connections over an ECMP route's
// next hops by ports as well as addresses (fib_multipath_hash_policy 1), so
// that one client's connections reach every node; false restores the
// kernel's default (addresses only: one client, one next hop).
func (l *Lab) SetRouterL4Hash(on bool) error {
	v := "0"
	if on {
		v = "1"
	}
	_, err := nsExec(l.NS(Router), "sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy="+v)
	return err
}
