package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/internal/verdict"
	"github.com/bgplb/bgplb/speaker/bgp"
	"github.com/bgplb/bgplb/speaker/model"
)

// The routers' verdicts (docs/verdict.md) become, on each Service this node
// announces, the condition bgplb.io/Routed, and an event on every change of
// a router's verdict on one of its addresses.
//
// Every node that announces a Service writes the condition from what its
// own sessions hear, so it says nothing node-specific: per router, whether
// the router's kernel has the route and through how many nodes (the same
// for every node), or why it rejected it when it has none. A router that
// rejects one node's path but routes through others has the route: the
// node's rejection shows in its events and its BGPSessionState. The nodes
// agree once their routers' verdicts reached them all, so their writes
// converge; a node writes only when its own view changed.

// +kubebuilder:rbac:groups="",resources=services/status,verbs=get;patch

// VerdictSource is what the reconciler reads the routers' verdicts from;
// *bgp.Manager implements it. A Speaker that does not (older fakes) makes
// the reconciler write no condition.
type VerdictSource interface {
	// Verdicts returns the verdicts of peer's router on this node's paths.
	Verdicts(peer string) map[netip.Prefix]verdict.Verdict
	// Announced returns what is announced to peer.
	Announced(peer string) []model.Advertisement
	// VerdictGeneration changes whenever any verdict changed.
	VerdictGeneration() uint64
}

// MaxConditionWritesPerPass bounds the Service status writes of one pass:
// the first pass after a start with 10,000 Services would otherwise queue
// 10,000 writes behind the client's rate limiter. The rest follow in the
// next passes (the condition is level-triggered: only a successful write
// is remembered).
const MaxConditionWritesPerPass = 100

// routerView is one router's verdict on one prefix of a Service.
type routerView struct {
	router netip.Addr
	prefix netip.Prefix
	v      verdict.Verdict
	// reported: the router sent a verdict on the prefix.
	reported bool
}

// routed reports whether the router's kernel has a route for the prefix
// (through this node or others).
func (r routerView) routed() bool {
	return r.v.State == verdict.Installed || (r.v.State == verdict.Rejected && r.v.Width > 0)
}

// describe is the view as the condition says it: nothing node-specific.
func (r routerView) describe() string {
	if !r.reported {
		return fmt.Sprintf("router %s does not report on %s", r.router, r.prefix)
	}
	if r.routed() {
		return verdict.Describe(r.router, r.prefix, verdict.Verdict{State: verdict.Installed, Width: r.v.Width, Via: true})
	}
	return verdict.Describe(r.router, r.prefix, verdict.Verdict{State: r.v.State, Reason: r.v.Reason})
}

// routedCondition decides a Service's bgplb.io/Routed condition from the
// views of the routers its addresses are announced to (without its
// transition time). Pure.
func routedCondition(views []routerView) metav1.Condition {
	views = slices.Clone(views)
	slices.SortFunc(views, func(a, b routerView) int {
		if c := a.router.Compare(b.router); c != 0 {
			return c
		}
		return a.prefix.Addr().Compare(b.prefix.Addr())
	})
	views = slices.CompactFunc(views, func(a, b routerView) bool { return a.router == b.router && a.prefix == b.prefix })
	var reported, rejected, pending, installed, silent []string
	for _, v := range views {
		switch {
		case !v.reported:
			silent = append(silent, v.describe())
			continue
		case v.routed():
			installed = append(installed, v.describe())
		case v.v.State == verdict.Rejected:
			rejected = append(rejected, v.describe())
		default:
			pending = append(pending, v.describe())
		}
		reported = append(reported, v.describe())
	}
	c := metav1.Condition{Type: v1.ServiceConditionRouted}
	switch {
	case len(reported) == 0:
		c.Status, c.Reason = metav1.ConditionUnknown, v1.RoutedReasonNotReported
		c.Message = "no router reports verdicts: " + strings.Join(silent, "; ")
		return c
	case len(rejected) > 0:
		c.Status, c.Reason = metav1.ConditionFalse, v1.RoutedReasonRejected
		c.Message = strings.Join(append(rejected, pending...), "; ")
	case len(pending) > 0:
		c.Status, c.Reason = metav1.ConditionFalse, v1.RoutedReasonPending
		c.Message = strings.Join(pending, "; ") + ": accepted, not in the kernel yet"
	default:
		c.Status, c.Reason = metav1.ConditionTrue, v1.RoutedReasonInstalled
		c.Message = strings.Join(installed, "; ")
	}
	if len(silent) > 0 {
		c.Message += "; " + strings.Join(silent, "; ")
	}
	return c
}

// verdictKey is one router's verdict on one prefix of this node.
type verdictKey struct {
	peer   string
	prefix netip.Prefix
}

// verdictState is what the reconciler last reported.
type verdictState struct {
	gen uint64
	// verdicts: per peer and prefix, the last verdict an event told.
	verdicts map[verdictKey]verdict.Verdict
	// routed: per Service, the condition last written.
	routed map[string]metav1.Condition
	// dirty: a pass changed paths, or a write failed or was deferred.
	dirty bool
}

// reportVerdicts writes the Services' conditions and emits an event per
// changed verdict. It does the work only when a verdict or an announcement
// changed since it last did (or a write is still due) and returns how soon
// to come back for writes left over.
func (r *Reconciler) reportVerdicts(ctx context.Context, configs []bgp.PeerConfig, log logr.Logger) (time.Duration, error) {
	src, ok := r.Speaker.(VerdictSource)
	if !ok {
		return 0, nil
	}
	st := &r.verdicts
	gen := src.VerdictGeneration()
	if st.routed != nil && gen == st.gen && !st.dirty {
		return 0, nil
	}
	st.gen, st.dirty = gen, false
	if st.routed == nil {
		st.routed, st.verdicts = map[string]metav1.Condition{}, map[verdictKey]verdict.Verdict{}
	}
	views := map[string][]routerView{}
	seen := map[verdictKey]bool{}
	events := 0
	for _, pc := range configs {
		vs := src.Verdicts(pc.Name)
		installed, rejected := 0, 0
		for _, a := range src.Announced(pc.Name) {
			v, reported := vs[a.Prefix]
			for _, svc := range a.Services {
				views[svc] = append(views[svc], routerView{router: pc.Address, prefix: a.Prefix, v: v, reported: reported})
			}
			if !reported {
				continue
			}
			switch v.State {
			case verdict.Installed:
				installed++
			case verdict.Rejected:
				rejected++
			}
			k := verdictKey{pc.Name, a.Prefix}
			seen[k] = true
			if old, ok := st.verdicts[k]; ok && old == v {
				continue
			}
			st.verdicts[k] = v
			if events < MaxServiceEventsPerPass {
				events += r.verdictEvent(pc, a, v)
			}
		}
		if r.Metrics != nil && len(vs) > 0 {
			r.Metrics.RoutedPrefixes.WithLabelValues(pc.Name).Set(float64(installed))
			r.Metrics.RejectedPrefixes.WithLabelValues(pc.Name).Set(float64(rejected))
		}
	}
	for k := range st.verdicts {
		if !seen[k] {
			delete(st.verdicts, k)
		}
	}
	if events >= MaxServiceEventsPerPass {
		log.Info("many router verdicts changed at once; no further events this pass", "maxServiceEventsPerPass", MaxServiceEventsPerPass)
	}
	return r.writeConditions(ctx, views, log)
}

// verdictEvent emits the event of a changed verdict on each Service of a.
func (r *Reconciler) verdictEvent(pc bgp.PeerConfig, a model.Advertisement, v verdict.Verdict) int {
	if r.Recorder == nil {
		return 0
	}
	typ, reason := corev1.EventTypeNormal, "RouteInstalled"
	switch v.State {
	case verdict.Rejected:
		typ, reason = corev1.EventTypeWarning, "RouteRejected"
	case verdict.Pending:
		reason = "RoutePending"
	}
	n := 0
	for _, k := range a.Services {
		if s := r.store.eventObject(k); s != nil {
			r.Recorder.Eventf(s, typ, reason, "%s (node %s, peer %s)", verdict.Describe(pc.Address, a.Prefix, v), r.Options.NodeName, pc.Name)
			n++
		}
	}
	return n
}

// writeConditions writes the changed conditions, at most
// MaxConditionWritesPerPass.
func (r *Reconciler) writeConditions(ctx context.Context, views map[string][]routerView, log logr.Logger) (time.Duration, error) {
	st := &r.verdicts
	for svc := range st.routed {
		if _, ok := views[svc]; !ok {
			delete(st.routed, svc) // no longer announced here: left to the nodes that do
		}
	}
	writes := 0
	var errs []error
	for _, svc := range slices.Sorted(maps.Keys(views)) {
		c := routedCondition(views[svc])
		old, ok := st.routed[svc]
		if ok && old.Status == c.Status && old.Reason == c.Reason && old.Message == c.Message {
			continue
		}
		if writes >= MaxConditionWritesPerPass {
			st.dirty = true
			return time.Second, nil
		}
		c.LastTransitionTime = metav1.Now()
		if ok && old.Status == c.Status {
			c.LastTransitionTime = old.LastTransitionTime
		}
		writes++
		if err := r.patchRouted(ctx, svc, c); err != nil {
			st.dirty = true
			errs = append(errs, err)
			continue
		}
		st.routed[svc] = c
		log.V(1).Info("service routed condition", "service", svc, "status", c.Status, "reason", c.Reason, "message", c.Message)
	}
	if len(errs) > 0 {
		return 0, fmt.Errorf("write %s conditions: %w", v1.ServiceConditionRouted, errs[0])
	}
	return 0, nil
}

// patchRouted sets the condition on the Service with a strategic merge
// patch of status.conditions (merged by type): the Service's other
// conditions are not touched, and no read is needed.
func (r *Reconciler) patchRouted(ctx context.Context, key string, c metav1.Condition) error {
	ns, name, _ := strings.Cut(key, "/")
	data, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []metav1.Condition{c}}})
	if err != nil {
		return err
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if err := r.Client.Status().Patch(ctx, svc, client.RawPatch(types.StrategicMergePatchType, data)); err != nil {
		if apierrors.IsNotFound(err) {
			return nil // deleted meanwhile
		}
		return fmt.Errorf("patch service %s status: %w", key, err)
	}
	return nil
}

func ptrInt32(n int) *int32 {
	v := int32(n)
	return &v
}
