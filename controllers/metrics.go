package controllers

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bgplb/bgplb/controllers/allocator"
	"github.com/bgplb/bgplb/internal/buildinfo"
)

// Metrics are the Prometheus metrics of the controller.
//
// Label bounds (what limits the number of series): pool is an IPPool's name
// (the cluster's configuration; a deleted pool's series go at the next
// observation, which resets both gauges), family is IPv4 or IPv6, result is
// "allocated" or one of the allocator's failure reasons (a fixed set).
type Metrics struct {
	inUse       *prometheus.GaugeVec
	capacity    *prometheus.GaugeVec
	allocations *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them, and bgplb_build_info,
// with reg (use sigs.k8s.io/controller-runtime/pkg/metrics.Registry to serve
// them on the manager's metrics endpoint).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		inUse: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bgplb_ippool_addresses_in_use",
			Help: "Addresses of an IPPool assigned to at least one Service.",
		}, []string{"pool", "family"}),
		// A gauge, so no _total (Prometheus reserves it for counters);
		// it was bgplb_ippool_addresses_total (CHANGELOG.md).
		capacity: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bgplb_ippool_addresses_capacity",
			Help: "Addresses an IPPool offers (without avoided buggy addresses; very large IPv6 ranges are capped at 2^63-1).",
		}, []string{"pool", "family"}),
		allocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bgplb_service_allocations_total",
			Help: "Allocation attempts that changed a Service's addresses, by result (allocated, or the failure reason).",
		}, []string{"result"}),
	}
	for _, c := range []prometheus.Collector{m.inUse, m.capacity, m.allocations} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	if err := buildinfo.Register(reg, "bgplb-controller"); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Metrics) observePools(states []allocator.PoolState) {
	if m == nil {
		return
	}
	m.inUse.Reset()
	m.capacity.Reset()
	for _, s := range states {
		m.inUse.WithLabelValues(s.Name, "IPv4").Set(float64(s.AssignedV4))
		m.inUse.WithLabelValues(s.Name, "IPv6").Set(float64(s.AssignedV6))
		m.capacity.WithLabelValues(s.Name, "IPv4").Set(float64(s.TotalV4))
		m.capacity.WithLabelValues(s.Name, "IPv6").Set(float64(s.TotalV6))
	}
}

func (m *Metrics) allocation(result string) {
	if m == nil {
		return
	}
	m.allocations.WithLabelValues(result).Inc()
}
