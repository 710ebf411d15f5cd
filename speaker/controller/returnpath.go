package controller

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/internal/iprange"
	"github.com/bgplb/bgplb/speaker/bgp"
	"github.com/bgplb/bgplb/speaker/model"
	"github.com/bgplb/bgplb/speaker/returnpath"
)

// ReturnPath is what the reconciler needs of the node's return path side
// (BGPPeer.spec.returnPath: symmetric); *speaker/returnpath.Manager
// implements it. It applies a spec at once and re-asserts it on its own
// timer, reporting status changes through Changed.
type ReturnPath interface {
	Set(spec returnpath.Spec)
	Status() map[string]returnpath.PeerStatus
	Changed() <-chan struct{}
}

// returnPathReport is what the last pass learned for the session states.
type returnPathReport struct {
	// mode is each configured session's BGPPeer returnPath.
	mode map[string]v1.ReturnPath
	// status is the return path side's status of the symmetric ones.
	status map[string]returnpath.PeerStatus
}

func (r *Reconciler) returnPathChanged() <-chan struct{} {
	if r.ReturnPath == nil {
		return nil // never ready
	}
	return r.ReturnPath.Changed()
}

// returnPathMode reads a BGPPeer's mode; unset (objects stored before the
// field existed) is direct.
func returnPathMode(p *v1.BGPPeer) v1.ReturnPath {
	if p == nil || p.Spec.ReturnPath == "" {
		return v1.ReturnPathDirect
	}
	return p.Spec.ReturnPath
}

// returnPathSpec is the return path side's input: the configured sessions
// whose BGPPeer asks for a symmetric return path, and every pool's
// addresses (a connection keeps its mark while its Service's routes come
// and go).
func returnPathSpec(configs []bgp.PeerConfig, objs objects, pools []model.Pool) (returnpath.Spec, map[string]v1.ReturnPath) {
	var spec returnpath.Spec
	modes := map[string]v1.ReturnPath{}
	for _, cfg := range configs {
		mode := returnPathMode(objs.peers[cfg.Name])
		modes[cfg.Name] = mode
		if mode == v1.ReturnPathSymmetric {
			spec.Peers = append(spec.Peers, returnpath.Peer{Name: cfg.Name, Address: cfg.Address})
		}
	}
	if len(spec.Peers) == 0 {
		return spec, modes
	}
	var ranges []iprange.Range
	for _, p := range pools {
		ranges = append(ranges, p.Ranges...)
	}
	spec.Services = ranges
	return spec, modes
}

// applyReturnPath hands the return path side its spec (it skips work when
// nothing changed) and reads its status for the session states.
func (r *Reconciler) applyReturnPath(configs []bgp.PeerConfig, objs objects, pools []model.Pool) {
	spec, modes := returnPathSpec(configs, objs, pools)
	r.returnPath.mode = modes
	if r.ReturnPath == nil {
		r.returnPath.status = nil
		return
	}
	r.ReturnPath.Set(spec)
	r.returnPath.status = r.ReturnPath.Status()
}

// returnPathStatus fills peer's status.returnPath and its condition.
func (r *Reconciler) returnPathStatus(peer string, st *v1.BGPSessionStateStatus) {
	mode, ok := r.returnPath.mode[peer]
	if !ok {
		return
	}
	st.ReturnPath = mode
	if mode != v1.ReturnPathSymmetric {
		return
	}
	c := metav1.Condition{Type: v1.ConditionReturnPathSymmetric, Status: metav1.ConditionFalse}
	if r.ReturnPath == nil {
		c.Reason = v1.ReasonReturnPathNotEnabled
		c.Message = "returnPath is symmetric but this speaker runs without --symmetric-return-path (chart: speaker.symmetricReturnPath.enabled): replies still go directly to the clients"
	} else if ps, ok := r.returnPath.status[peer]; !ok {
		c.Reason = v1.ReasonReturnPathRouterUnresolved
		c.Message = "not applied yet"
	} else {
		c.Reason, c.Message = ps.Reason, ps.Message
		if ps.Ready {
			c.Status = metav1.ConditionTrue
		}
	}
	st.Conditions = append(st.Conditions, c)
}

// returnPathSignature sums up the return path part of the session states
// (see stateSignature): a change is written at once.
func (r *Reconciler) returnPathSignature() string {
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(r.returnPath.mode)) {
		ps := r.returnPath.status[name]
		fmt.Fprintf(&b, "%s|%s|%t|%s|%s;", name, r.returnPath.mode[name], ps.Ready, ps.Reason, ps.Message)
	}
	return b.String()
}

// keepTransitionTimes gives each wanted condition the transition time it
// had when its status did not change (now otherwise), so an unchanged
// condition compares equal to the stored one and is not rewritten.
func keepTransitionTimes(have []metav1.Condition, want []metav1.Condition, now metav1.Time) {
	for i := range want {
		if old := meta.FindStatusCondition(have, want[i].Type); old != nil && old.Status == want[i].Status {
			want[i].LastTransitionTime = old.LastTransitionTime
		} else {
			want[i].LastTransitionTime = now
		}
	}
}
