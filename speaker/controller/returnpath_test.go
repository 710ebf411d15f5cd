package controller

import (
	"net/netip"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/speaker/bgp"
	"github.com/bgplb/bgplb/speaker/model"
	"github.com/bgplb/bgplb/speaker/returnpath"
)

// Without --symmetric-return-path a symmetric BGPPeer is reported
// NotEnabled (its replies still go directly to the clients); a direct one
// has no condition; a BGPPeer stored before the field existed is direct.
func TestReturnPathStatusNotEnabled(t *testing.T) {
	objs := objects{peers: map[string]*v1.BGPPeer{
		"sym":    {Spec: v1.BGPPeerSpec{ReturnPath: v1.ReturnPathSymmetric}},
		"direct": {Spec: v1.BGPPeerSpec{ReturnPath: v1.ReturnPathDirect}},
		"old":    {},
	}}
	configs := []bgp.PeerConfig{{Name: "sym", Address: netip.MustParseAddr("192.168.2.1")}, {Name: "direct"}, {Name: "old"}}
	spec, _ := returnPathSpec(configs, objs, []model.Pool{{Name: "p"}})
	if len(spec.Peers) != 1 || spec.Peers[0] != (returnpath.Peer{Name: "sym", Address: netip.MustParseAddr("192.168.2.1")}) {
		t.Fatalf("spec peers %+v", spec.Peers)
	}
	r := &Reconciler{}
	r.applyReturnPath(configs, objs, nil)
	var sym, direct, old v1.BGPSessionStateStatus
	r.returnPathStatus("sym", &sym)
	r.returnPathStatus("direct", &direct)
	r.returnPathStatus("old", &old)
	if sym.ReturnPath != v1.ReturnPathSymmetric || len(sym.Conditions) != 1 || sym.Conditions[0].Status != metav1.ConditionFalse ||
		sym.Conditions[0].Reason != v1.ReasonReturnPathNotEnabled {
		t.Errorf("symmetric without the flag: %+v", sym)
	}
	if direct.ReturnPath != v1.ReturnPathDirect || len(direct.Conditions) != 0 || old.ReturnPath != v1.ReturnPathDirect {
		t.Errorf("direct %+v, unset %+v", direct, old)
	}
}

// An unchanged condition keeps its transition time, so the status is not
// rewritten; a changed one takes now.
func TestKeepTransitionTimes(t *testing.T) {
	then := metav1.NewTime(time.Unix(1000, 0))
	now := metav1.NewTime(time.Unix(2000, 0))
	have := []metav1.Condition{{Type: "A", Status: metav1.ConditionTrue, LastTransitionTime: then}}
	want := []metav1.Condition{{Type: "A", Status: metav1.ConditionTrue}}
	keepTransitionTimes(have, want, now)
	if !want[0].LastTransitionTime.Equal(&then) {
		t.Errorf("unchanged: %v", want[0].LastTransitionTime)
	}
	want = []metav1.Condition{{Type: "A", Status: metav1.ConditionFalse}}
	keepTransitionTimes(have, want, now)
	if !want[0].LastTransitionTime.Equal(&now) {
		t.Errorf("changed: %v", want[0].LastTransitionTime)
	}
}
