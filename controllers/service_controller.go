package controllers

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	bgplbv1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/controllers/allocator"
)

// waitingRecheck re-checks a Service that could not get an address.
const waitingRecheck = 2 * time.Minute

// Event reasons on Services.
const (
	EventIPAllocated      = "IPAllocated"
	EventAllocationFailed = "AllocationFailed"
	EventIPReleased       = "IPReleased"
)

// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=services/status,verbs=patch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// ServiceReconciler gives Services of type LoadBalancer their addresses and
// writes them to status.loadBalancer.ingress.
type ServiceReconciler struct {
	Client   client.Client
	IPAM     *IPAM
	Recorder record.EventRecorder
	Metrics  *Metrics
	// Serves reports whether a Service is ours (type and class).
	Serves func(*corev1.Service) bool
	// KickPools is called (it must not block) after assignments change,
	// so that pool status follows: PoolReconciler.Kick.
	KickPools func()

	// freed collapses releases into one re-check of the Services still
	// waiting for an address.
	freed chan event.GenericEvent

	mu sync.Mutex
	// waiting holds the Services whose last allocation failed; pool changes
	// and freed addresses re-enqueue them (and only them).
	waiting map[types.NamespacedName]struct{}
}

func (r *ServiceReconciler) setWaiting(key types.NamespacedName, waiting bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if waiting {
		r.waiting[key] = struct{}{}
	} else {
		delete(r.waiting, key)
	}
}

// Reconcile is level-triggered: it makes the Service's status match what the
// allocator holds for it, allocating or releasing as needed.
func (r *ServiceReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	key := req.Namespace + "/" + req.Name
	logger := log.FromContext(ctx).WithValues("service", key)

	var svc corev1.Service
	// Only a failed allocation puts it back; every other outcome is final
	// until the Service or the pools change.
	r.setWaiting(req.NamespacedName, false)
	if err := r.Client.Get(ctx, req.NamespacedName, &svc); err != nil {
		if !apierrors.IsNotFound(err) {
			return reconcile.Result{}, fmt.Errorf("get service %s: %w", key, err)
		}
		released, err := r.IPAM.Release(ctx, key)
		if err != nil {
			return reconcile.Result{}, err
		}
		if released {
			logger.Info("released addresses of deleted Service")
			r.kickPools()
			r.addressesFreed()
		}
		return reconcile.Result{}, nil
	}

	if !r.Serves(&svc) || svc.DeletionTimestamp != nil {
		return reconcile.Result{}, r.releaseNotOurs(ctx, &svc)
	}

	var nsLabels map[string]string
	var ns corev1.Namespace
	if err := r.Client.Get(ctx, types.NamespacedName{Name: svc.Namespace}, &ns); err == nil {
		nsLabels = ns.Labels
	} else if !apierrors.IsNotFound(err) {
		return reconcile.Result{}, fmt.Errorf("get namespace %s: %w", svc.Namespace, err)
	}

	areq, reqErr := buildRequest(&svc, nsLabels)
	had := r.IPAM.Lookup(key)
	var addrs []netip.Addr
	var changed bool
	var err error
	if reqErr != nil {
		// An unusable annotation is a changed request: give up the old
		// address rather than keep serving something the owner no longer asks for.
		if _, err := r.IPAM.Release(ctx, key); err != nil {
			return reconcile.Result{}, err
		}
		err = &allocator.Error{Reason: allocator.ReasonInvalidRequest, Message: reqErr.Error()}
	} else {
		addrs, changed, err = r.IPAM.Assign(ctx, areq)
	}
	var aerr *allocator.Error
	if errors.As(err, &aerr) {
		// Invalid input or no room: say why and wait for a change (pool or
		// Service events re-trigger us); no retry storm.
		logger.Info("allocation failed", "reason", aerr.Reason, "message", aerr.Message)
		r.Recorder.Event(&svc, corev1.EventTypeWarning, EventAllocationFailed, aerr.Message)
		r.setWaiting(req.NamespacedName, true)
		r.Metrics.allocation(aerr.Reason)
		r.kickPools()
		if len(had) > 0 {
			r.addressesFreed()
		}
		// The slow requeue only covers a pool change or release that raced
		// with this reconcile; those normally re-enqueue us at once.
		if err := r.writeIngress(ctx, &svc, nil); err != nil {
			return reconcile.Result{}, err
		}
		return reconcile.Result{RequeueAfter: waitingRecheck}, nil
	}
	if err != nil {
		return reconcile.Result{}, err
	}
	if changed {
		r.kickPools()
		if len(had) > 0 {
			// A changed request gave an address back.
			r.addressesFreed()
		}
	}
	if sameIPs(ingressAddrs(&svc), addrs) {
		return reconcile.Result{}, nil
	}
	if err := r.writeIngress(ctx, &svc, addrs); err != nil {
		// The allocator keeps the reservation; the retry writes it again.
		return reconcile.Result{}, err
	}
	pools := make([]string, 0, len(addrs))
	for _, a := range addrs {
		pools = append(pools, r.IPAM.PoolOf(a))
	}
	msg := fmt.Sprintf("assigned %s from IPPool %s", joinAddrs(addrs), strings.Join(slices.Compact(pools), ", "))
	logger.Info("allocated", "addresses", addrs, "pools", pools)
	r.Recorder.Event(&svc, corev1.EventTypeNormal, EventIPAllocated, msg)
	r.Metrics.allocation("allocated")
	return reconcile.Result{}, nil
}

func (r *ServiceReconciler) addressesFreed() {
	select {
	case r.freed <- event.GenericEvent{Object: &corev1.Service{}}:
	default:
	}
}

func (r *ServiceReconciler) kickPools() {
	if r.KickPools != nil {
		r.KickPools()
	}
}

// releaseNotOurs frees the addresses of a Service that is no longer ours
// (type or class changed, or it is being deleted) and removes them from its
// status, leaving anything another implementation wrote alone.
func (r *ServiceReconciler) releaseNotOurs(ctx context.Context, svc *corev1.Service) error {
	key := svc.Namespace + "/" + svc.Name
	held := r.IPAM.Lookup(key)
	released, err := r.IPAM.Release(ctx, key)
	if err != nil || !released {
		return err
	}
	r.kickPools()
	r.addressesFreed()
	log.FromContext(ctx).Info("released addresses of a Service that is no longer ours", "service", key, "addresses", held)
	if svc.DeletionTimestamp == nil {
		r.Recorder.Eventf(svc, corev1.EventTypeNormal, EventIPReleased, "released %s: the Service is no longer of type LoadBalancer with class %s", joinAddrs(held), bgplbv1.LoadBalancerClass)
	}
	var keep []netip.Addr
	for _, a := range ingressAddrs(svc) {
		if !slices.Contains(held, a) {
			keep = append(keep, a)
		}
	}
	if len(keep) == len(svc.Status.LoadBalancer.Ingress) || svc.DeletionTimestamp != nil {
		return nil
	}
	return r.writeIngress(ctx, svc, keep)
}

// writeIngress sets status.loadBalancer.ingress to addrs (a no-op when it
// already holds exactly them).
func (r *ServiceReconciler) writeIngress(ctx context.Context, svc *corev1.Service, addrs []netip.Addr) error {
	if sameIPs(ingressAddrs(svc), addrs) && len(addrs) == len(svc.Status.LoadBalancer.Ingress) {
		return nil
	}
	patched := svc.DeepCopy()
	patched.Status.LoadBalancer.Ingress = nil
	for _, a := range addrs {
		patched.Status.LoadBalancer.Ingress = append(patched.Status.LoadBalancer.Ingress,
			corev1.LoadBalancerIngress{IP: a.String(), IPMode: ptr.To(corev1.LoadBalancerIPModeVIP)})
	}
	if err := r.Client.Status().Patch(ctx, patched, client.MergeFrom(svc)); err != nil {
		if apierrors.IsNotFound(err) {
			return nil // deleted meanwhile; the delete event releases
		}
		return fmt.Errorf("patch status of service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	return nil
}

func sameIPs(a, b []netip.Addr) bool { return slices.Equal(a, b) }

func joinAddrs(addrs []netip.Addr) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

// SetupWithManager registers the reconciler. IPPool spec changes and freed
// addresses re-enqueue the Services waiting for an address, so that they get
// one as soon as a pool can serve them.
func (r *ServiceReconciler) SetupWithManager(mgr ctrl.Manager, workers int) error {
	r.freed = make(chan event.GenericEvent, 1)
	r.waiting = map[types.NamespacedName]struct{}{}
	return ctrl.NewControllerManagedBy(mgr).
		Named("service").
		For(&corev1.Service{}).
		Watches(&bgplbv1.IPPool{}, handler.EnqueueRequestsFromMapFunc(r.pendingServices),
			builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, deletionChanged{}))).
		WatchesRawSource(source.Channel(r.freed, handler.EnqueueRequestsFromMapFunc(r.pendingServices))).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Complete(r)
}

// deletionChanged passes updates that set a deletion timestamp.
type deletionChanged struct{ predicate.Funcs }

func (deletionChanged) Update(e event.UpdateEvent) bool {
	return (e.ObjectOld.GetDeletionTimestamp() == nil) != (e.ObjectNew.GetDeletionTimestamp() == nil)
}

func (r *ServiceReconciler) pendingServices(context.Context, client.Object) []reconcile.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]reconcile.Request, 0, len(r.waiting))
	for k := range r.waiting {
		out = append(out, reconcile.Request{NamespacedName: k})
	}
	return out
}
