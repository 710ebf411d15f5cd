package controller

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bgplb/bgplb/speaker/model"
)

// TestToNodeDrainSignals: each Kubernetes drain signal reaches the model.
func TestToNodeDrainSignals(t *testing.T) {
	ready := corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady"}
	node := func(mutate func(n *corev1.Node)) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{ready}}}
		mutate(n)
		return n
	}
	tests := []struct {
		name string
		node *corev1.Node
		want model.Node
	}{
		{"ready", node(func(*corev1.Node) {}), model.Node{Name: "n1", Ready: true}},
		{"cordoned", node(func(n *corev1.Node) { n.Spec.Unschedulable = true }), model.Node{Name: "n1", Ready: true, Unschedulable: true}},
		{"unschedulable taint alone", node(func(n *corev1.Node) {
			n.Spec.Taints = []corev1.Taint{{Key: TaintUnschedulable, Effect: corev1.TaintEffectNoSchedule}}
		}), model.Node{Name: "n1", Ready: true, Unschedulable: true}},
		{"out of service", node(func(n *corev1.Node) {
			n.Spec.Taints = []corev1.Taint{{Key: TaintOutOfService, Value: "nodeshutdown", Effect: corev1.TaintEffectNoExecute}}
		}), model.Node{Name: "n1", Ready: true, OutOfService: true}},
		{"kubelet graceful shutdown (message, as the kubelet writes it)", node(func(n *corev1.Node) {
			n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionFalse,
				Reason: "KubeletNotReady", Message: "node is shutting down"}}
			n.Spec.Taints = []corev1.Taint{{Key: "node.kubernetes.io/not-ready", Effect: corev1.TaintEffectNoSchedule}}
		}), model.Node{Name: "n1", ShuttingDown: true}},
		{"kubelet graceful shutdown (reason, as the documentation says)", node(func(n *corev1.Node) {
			n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionFalse, Reason: "node is shutting down"}}
		}), model.Node{Name: "n1", ShuttingDown: true}},
		{"NotReady for another reason", node(func(n *corev1.Node) {
			n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionFalse,
				Reason: "KubeletNotReady", Message: "container runtime network not ready"}}
		}), model.Node{Name: "n1"}},
		{"Unknown (kubelet silent) is not a shutdown", node(func(n *corev1.Node) {
			n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionUnknown,
				Reason: "NodeStatusUnknown", Message: "node is shutting down"}}
		}), model.Node{Name: "n1"}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, toNode(tt.node)); diff != "" {
			t.Errorf("%s: toNode (-want +got):\n%s", tt.name, diff)
		}
	}
}
