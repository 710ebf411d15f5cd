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
	"k8s.io/apimachinery/pkg/api/meta"
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
	// awaited: it did not, but it sends verdicts on this node's other
	// prefixes: this one's is on its way (the path was just announced).
	awaited bool
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
	// routed: per Service, the condition last written or found there.
	routed map[string]metav1.Condition
	// rvs: per Service, its resourceVersion after that write or read: the
	// next write is conditional on it (see writeRouted).
	rvs map[string]string
	// dirty: a pass changed paths, or a write failed or was deferred.
	dirty bool
}

// forget drops what st holds of Service svc: when it was deleted (a
// Service created again under its name starts afresh), is left to other
// nodes, or its last condition was said for good.
func (st *verdictState) forget(svc string) {
	delete(st.routed, svc)
	delete(st.rvs, svc)
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
		st.routed, st.rvs, st.verdicts = map[string]metav1.Condition{}, map[string]string{}, map[verdictKey]verdict.Verdict{}
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
				views[svc] = append(views[svc], routerView{router: pc.Address, prefix: a.Prefix, v: v, reported: reported,
					awaited: !reported && len(vs) > 0})
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
			if events < MaxServiceEventsPerPass && nodeSpecific(v) {
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
	return r.writeConditions(ctx, views, events, log)
}

// nodeSpecific reports whether a verdict says something about this node's
// path that the Service's condition does not: the router rejected it but
// routes the prefix through other nodes. Only this node's speaker knows
// it, so its event is not repeated by the others.
func nodeSpecific(v verdict.Verdict) bool {
	return v.State == verdict.Rejected && v.Width > 0
}

// verdictEvent emits the event of a changed node-specific verdict on each
// Service of a.
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
// MaxConditionWritesPerPass, and emits one event per condition a write
// changed (events: how many the pass emitted already).
//
// Every node that announces a Service decides the same condition, so each
// write is conditional: on the resourceVersion this node last wrote or
// read, and when another write came between (a conflict), on what the
// Service says now: a node finds the condition another node already wrote
// and neither writes it again nor repeats its event. N nodes that hear the
// same verdict at once thus make one write and one event.
//
// A Service this node wrote a condition on and no longer announces is left
// to the nodes that still do, unless none can: when it has no usable
// endpoint anywhere or bgplb no longer handles it (not a LoadBalancer
// Service of bgplb, or no address), the condition says False,
// NotAnnounced.
func (r *Reconciler) writeConditions(ctx context.Context, views map[string][]routerView, events int, log logr.Logger) (time.Duration, error) {
	st := &r.verdicts
	want := map[string]metav1.Condition{}
	for svc, vs := range views {
		// A router that reports and has not yet told about a new path
		// will: writing NotReported meanwhile would flap the condition
		// (and tell an event) on every new Service.
		if !slices.ContainsFunc(vs, func(v routerView) bool { return v.awaited }) {
			want[svc] = routedCondition(vs)
		}
	}
	for svc := range st.routed {
		if _, ok := views[svc]; ok {
			continue // decided above (or awaiting a verdict)
		}
		if why := r.announcedNowhere(svc); why != "" {
			want[svc] = metav1.Condition{Type: v1.ServiceConditionRouted, Status: metav1.ConditionFalse,
				Reason: v1.RoutedReasonNotAnnounced, Message: why}
			continue
		}
		st.forget(svc) // no longer announced here: left to the nodes that do
	}
	writes := 0
	var errs []error
	for _, svc := range slices.Sorted(maps.Keys(want)) {
		c := want[svc]
		old, ok := st.routed[svc]
		if ok && sameCondition(old, c) {
			if c.Reason == v1.RoutedReasonNotAnnounced {
				st.forget(svc) // said; nothing more to do here
			}
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
		changed, err := r.writeRouted(ctx, svc, c)
		if err != nil {
			st.dirty = true
			errs = append(errs, err)
			continue
		}
		if changed && events < MaxServiceEventsPerPass {
			events += r.conditionEvent(svc, c)
		}
		log.V(1).Info("service routed condition", "service", svc, "status", c.Status, "reason", c.Reason, "message", c.Message, "written", changed)
	}
	if len(errs) > 0 {
		return 0, fmt.Errorf("write %s conditions: %w", v1.ServiceConditionRouted, errs[0])
	}
	return 0, nil
}

// sameCondition compares what a condition says (not when).
func sameCondition(a, b metav1.Condition) bool {
	return a.Status == b.Status && a.Reason == b.Reason && a.Message == b.Message
}

// announcedNowhere says why no node announces Service svc, or "" when some
// node may (this node cannot tell: its endpoints and peers are its own).
func (r *Reconciler) announcedNowhere(svc string) string {
	s, ok := r.store.service(svc)
	switch {
	case !ok:
		return "no node announces it: bgplb does not handle it (not a LoadBalancer Service of bgplb, or no address)"
	case !slices.ContainsFunc(s.Endpoints, model.Endpoint.Usable):
		return "no node announces it: no usable endpoint"
	}
	return ""
}

// maxConditionConflicts bounds the conditional writes of one condition in
// one pass; the next pass retries.
const maxConditionConflicts = 3

// writeRouted sets condition c on Service svc unless the Service already
// says the same, and reports whether it changed the Service. The write is
// conditional on the resourceVersion this node last saw; on a conflict it
// reads the Service (from the apiserver: the speaker has no Service cache)
// and decides again.
func (r *Reconciler) writeRouted(ctx context.Context, svc string, c metav1.Condition) (bool, error) {
	st := &r.verdicts
	rv := st.rvs[svc]
	for range maxConditionConflicts {
		if rv == "" {
			cur, curRV, err := r.readRouted(ctx, svc)
			if apierrors.IsNotFound(err) {
				st.forget(svc) // deleted meanwhile
				return false, nil
			}
			if err != nil {
				return false, err
			}
			if cur != nil && sameCondition(*cur, c) {
				st.routed[svc], st.rvs[svc] = *cur, curRV
				return false, nil
			}
			if cur != nil && cur.Status == c.Status {
				c.LastTransitionTime = cur.LastTransitionTime
			}
			rv = curRV
		}
		newRV, err := r.patchRouted(ctx, svc, c, rv)
		switch {
		case apierrors.IsConflict(err):
			rv = ""
			continue
		case apierrors.IsNotFound(err):
			st.forget(svc) // deleted: nothing to write, now or later
			return false, nil
		case err != nil:
			return false, err
		}
		st.routed[svc], st.rvs[svc] = c, newRV
		return true, nil
	}
	delete(st.rvs, svc)
	return false, fmt.Errorf("patch service %s status: %d conflicts in a row", svc, maxConditionConflicts)
}

// readRouted reads Service svc's Routed condition and resourceVersion.
func (r *Reconciler) readRouted(ctx context.Context, svc string) (*metav1.Condition, string, error) {
	ns, name, _ := strings.Cut(svc, "/")
	reader := r.APIReader
	if reader == nil {
		reader = r.Client
	}
	s := &corev1.Service{}
	if err := reader.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, s); err != nil {
		return nil, "", err
	}
	return meta.FindStatusCondition(s.Status.Conditions, v1.ServiceConditionRouted), s.ResourceVersion, nil
}

// conditionEvent emits the event of a condition this node's write changed.
func (r *Reconciler) conditionEvent(svc string, c metav1.Condition) int {
	if r.Recorder == nil {
		return 0
	}
	obj := r.store.eventObject(svc)
	if obj == nil {
		ns, name, _ := strings.Cut(svc, "/")
		obj = &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	}
	// RouteInstalled, RouteRejected, RoutePending, RouteNotReported,
	// RouteNotAnnounced.
	typ := corev1.EventTypeNormal
	if c.Reason == v1.RoutedReasonRejected {
		typ = corev1.EventTypeWarning
	}
	r.Recorder.Event(obj, typ, "Route"+c.Reason, c.Message)
	return 1
}

// patchRouted sets the condition on the Service with a strategic merge
// patch of status.conditions (merged by type: the Service's other
// conditions are not touched), conditional on resourceVersion rv, and
// returns the new resourceVersion.
func (r *Reconciler) patchRouted(ctx context.Context, key string, c metav1.Condition, rv string) (string, error) {
	ns, name, _ := strings.Cut(key, "/")
	data, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"resourceVersion": rv},
		"status":   map[string]any{"conditions": []metav1.Condition{c}},
	})
	if err != nil {
		return "", err
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if err := r.Client.Status().Patch(ctx, svc, client.RawPatch(types.StrategicMergePatchType, data)); err != nil {
		return "", fmt.Errorf("patch service %s status: %w", key, err)
	}
	return svc.ResourceVersion, nil
}

func ptrInt32(n int) *int32 {
	v := int32(n)
	return &v
}
