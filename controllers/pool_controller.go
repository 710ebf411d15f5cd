package controllers

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	bgplbv1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/controllers/allocator"
)

// Event reasons on IPPools.
const (
	EventPoolInvalid           = "PoolInvalid"
	EventInUseAddressesRemoved = "InUseAddressesRemoved"
	EventDeletionBlocked       = "DeletionBlocked"
)

// +kubebuilder:rbac:groups=bgplb.io,resources=ippools,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=bgplb.io,resources=ippools/status,verbs=patch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// PoolReconciler keeps every IPPool's status (counts and conditions), its
// finalizer, and the pool metrics up to date. All pools are reconciled
// together under one key: the work is level-driven and cheap.
type PoolReconciler struct {
	Client   client.Client
	IPAM     *IPAM
	Recorder record.EventRecorder
	Metrics  *Metrics
	// MinInterval spaces status writes during bursts of allocations.
	MinInterval time.Duration

	kick      chan event.GenericEvent
	mu        sync.Mutex
	lastWrite time.Time
}

// Kick asks for a pool status refresh without blocking; bursts collapse
// into one reconcile.
func (r *PoolReconciler) Kick() {
	select {
	case r.kick <- event.GenericEvent{Object: &bgplbv1.IPPool{}}:
	default:
	}
}

var allPools = reconcile.Request{NamespacedName: types.NamespacedName{Name: "all-ippools"}}

// Reconcile brings every pool's status and finalizer in line with the
// allocator.
func (r *PoolReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if wait := r.MinInterval - time.Since(r.lastWrite); wait > 0 {
		return reconcile.Result{RequeueAfter: wait}, nil
	}
	logger := log.FromContext(ctx)
	states, gens, err := r.IPAM.States(ctx)
	if err != nil {
		return reconcile.Result{}, err
	}
	r.Metrics.observePools(states)
	byName := make(map[string]allocator.PoolState, len(states))
	for _, s := range states {
		byName[s.Name] = s
	}
	var pools bgplbv1.IPPoolList
	if err := r.Client.List(ctx, &pools); err != nil {
		return reconcile.Result{}, fmt.Errorf("list ippools: %w", err)
	}
	var errs []error
	wrote := false
	for i := range pools.Items {
		p := &pools.Items[i]
		st, ok := byName[p.Name]
		if !ok || gens[p.Name] != p.Generation {
			// The allocator has not seen this version yet; the IPAM sync
			// in States makes that rare. A later event brings us back.
			continue
		}
		w, err := r.reconcilePool(ctx, p, st)
		wrote = wrote || w
		if err != nil {
			errs = append(errs, err)
		}
	}
	if wrote {
		r.lastWrite = time.Now()
	}
	if len(errs) > 0 {
		return reconcile.Result{}, fmt.Errorf("update ippools: %v", errs)
	}
	logger.V(1).Info("pools reconciled", "pools", len(pools.Items))
	return reconcile.Result{}, nil
}

func (r *PoolReconciler) reconcilePool(ctx context.Context, p *bgplbv1.IPPool, st allocator.PoolState) (bool, error) {
	logger := log.FromContext(ctx).WithValues("ippool", p.Name)
	wrote := false
	deleting := p.DeletionTimestamp != nil
	// The finalizer keeps a pool whose addresses are in use.
	has := controllerutil.ContainsFinalizer(p, bgplbv1.IPPoolFinalizer)
	if deleting && has && st.InUse == 0 {
		orig := p.DeepCopy()
		controllerutil.RemoveFinalizer(p, bgplbv1.IPPoolFinalizer)
		if err := r.Client.Patch(ctx, p, client.MergeFrom(orig)); err != nil && !apierrors.IsNotFound(err) {
			return wrote, fmt.Errorf("remove finalizer of ippool %s: %w", p.Name, err)
		}
		logger.Info("no address in use any more: deletion may proceed")
		return true, nil
	}
	if !deleting && !has {
		orig := p.DeepCopy()
		controllerutil.AddFinalizer(p, bgplbv1.IPPoolFinalizer)
		if err := r.Client.Patch(ctx, p, client.MergeFrom(orig)); err != nil {
			return wrote, fmt.Errorf("add finalizer to ippool %s: %w", p.Name, err)
		}
		wrote = true
	}

	status := bgplbv1.IPPoolStatus{
		ObservedGeneration: p.Generation,
		AssignedIPv4:       st.AssignedV4,
		AvailableIPv4:      st.AvailableV4,
		AssignedIPv6:       st.AssignedV6,
		AvailableIPv6:      st.AvailableV6,
		Conditions:         append([]metav1.Condition(nil), p.Status.Conditions...),
	}
	ready := metav1.Condition{Type: bgplbv1.IPPoolConditionReady, ObservedGeneration: p.Generation}
	invalid := metav1.Condition{Type: bgplbv1.IPPoolConditionInvalid, ObservedGeneration: p.Generation}
	var warnReason, warnMsg string
	switch {
	case !st.Valid:
		ready.Status, ready.Reason = metav1.ConditionFalse, st.Reason
		ready.Message = "the pool is not used for allocation: " + st.Problem
		invalid.Status, invalid.Reason, invalid.Message = metav1.ConditionTrue, st.Reason, st.Problem
		warnReason, warnMsg = EventPoolInvalid, st.Problem
	default:
		ready.Status, ready.Reason = metav1.ConditionTrue, bgplbv1.IPPoolReasonValid
		ready.Message = fmt.Sprintf("serving %d IPv4 and %d IPv6 addresses", st.TotalV4, st.TotalV6)
		if len(st.Removed) > 0 {
			invalid.Status, invalid.Reason, invalid.Message = metav1.ConditionTrue, bgplbv1.IPPoolReasonInUseAddressesRemoved, st.Problem
			warnReason, warnMsg = EventInUseAddressesRemoved, st.Problem
		} else {
			invalid.Status, invalid.Reason, invalid.Message = metav1.ConditionFalse, bgplbv1.IPPoolReasonValid, "the spec is accepted"
		}
	}
	if deleting {
		ready.Status, ready.Reason = metav1.ConditionFalse, bgplbv1.IPPoolReasonDeletionBlocked
		ready.Message = fmt.Sprintf("deletion waits until %d address(es) still assigned are released: %s", st.InUse, inUseSummary(st))
		warnReason, warnMsg = EventDeletionBlocked, ready.Message
	}
	prevReady := meta.FindStatusCondition(p.Status.Conditions, bgplbv1.IPPoolConditionReady)
	prevInvalid := meta.FindStatusCondition(p.Status.Conditions, bgplbv1.IPPoolConditionInvalid)
	meta.SetStatusCondition(&status.Conditions, ready)
	meta.SetStatusCondition(&status.Conditions, invalid)
	if warnReason != "" && (prevReady == nil || prevReady.Reason != ready.Reason || prevReady.Message != ready.Message ||
		prevInvalid == nil || prevInvalid.Message != invalid.Message) {
		r.Recorder.Event(p, corev1.EventTypeWarning, warnReason, warnMsg)
		logger.Info("pool problem", "reason", warnReason, "message", warnMsg)
	}
	if equality.Semantic.DeepEqual(status, p.Status) {
		return wrote, nil
	}
	orig := p.DeepCopy()
	p.Status = status
	if err := r.Client.Status().Patch(ctx, p, client.MergeFrom(orig)); err != nil {
		if apierrors.IsNotFound(err) {
			return wrote, nil
		}
		return wrote, fmt.Errorf("patch status of ippool %s: %w", p.Name, err)
	}
	return true, nil
}

func inUseSummary(st allocator.PoolState) string {
	if len(st.Removed) > 0 {
		var parts []string
		for i, r := range st.Removed {
			if i == 5 {
				parts = append(parts, fmt.Sprintf("and %d more", len(st.Removed)-5))
				break
			}
			parts = append(parts, fmt.Sprintf("%s (used by %s)", r.Addr, strings.Join(r.Services, ", ")))
		}
		return strings.Join(parts, ", ")
	}
	s := strings.Join(st.Users, ", ")
	if len(st.Users) == 5 {
		s += " (first 5 by name)"
	}
	return "used by " + s
}

// SetupWithManager registers the reconciler: every IPPool event and every
// Kick map to one request.
func (r *PoolReconciler) SetupWithManager(mgr manager.Manager) error {
	r.kick = make(chan event.GenericEvent, 1)
	one := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{allPools}
	})
	return builder.ControllerManagedBy(mgr).
		Named("ippool").
		Watches(&bgplbv1.IPPool{}, one).
		WatchesRawSource(source.Channel(r.kick, one)).
		Complete(r)
}
