package controllers

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/bgplb/bgplb/internal/kube"
)

// Leader election uses a Lease in the controller's namespace.
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;create;update,namespace=bgplb-system
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch,namespace=bgplb-system

// Options configure the reconcilers.
type Options struct {
	// ServeServicesWithoutClass makes Services of type LoadBalancer without
	// spec.loadBalancerClass ours, as well as those of class bgplb.io/bgp.
	ServeServicesWithoutClass bool
	// ServiceWorkers is the number of concurrent Service reconciles
	// (allocation itself is serialised; workers overlap the API calls).
	ServiceWorkers int
	// PoolStatusInterval spaces IPPool status writes during bursts
	// (default 500ms).
	PoolStatusInterval time.Duration
	// Registerer receives the metrics; nil means the manager's registry.
	Registerer prometheus.Registerer
}

// Setup adds the Service and IPPool reconcilers to mgr. They share one IPAM.
func Setup(mgr ctrl.Manager, o Options) error {
	if o.ServiceWorkers <= 0 {
		o.ServiceWorkers = 8
	}
	if o.PoolStatusInterval <= 0 {
		o.PoolStatusInterval = 500 * time.Millisecond
	}
	if o.Registerer == nil {
		o.Registerer = metrics.Registry
	}
	m, err := NewMetrics(o.Registerer)
	if err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	serves := kube.Serves(o.ServeServicesWithoutClass)
	ipam := NewIPAM(mgr.GetClient(), serves, mgr.GetLogger().WithName("ipam"))
	recorder := mgr.GetEventRecorderFor("bgplb-controller")
	pools := &PoolReconciler{
		Client:      mgr.GetClient(),
		IPAM:        ipam,
		Recorder:    recorder,
		Metrics:     m,
		MinInterval: o.PoolStatusInterval,
	}
	if err := pools.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up ippool controller: %w", err)
	}
	svcs := &ServiceReconciler{
		Client:    mgr.GetClient(),
		IPAM:      ipam,
		Recorder:  recorder,
		Metrics:   m,
		Serves:    serves,
		KickPools: pools.Kick,
	}
	if err := svcs.SetupWithManager(mgr, o.ServiceWorkers); err != nil {
		return fmt.Errorf("set up service controller: %w", err)
	}
	return nil
}
