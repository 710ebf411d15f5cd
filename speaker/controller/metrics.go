package controller

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the speaker's Prometheus metrics.
type Metrics struct {
	SessionUp       *prometheus.GaugeVec
	Prefixes        *prometheus.GaugeVec
	UpdatesSent     *prometheus.GaugeVec
	PathChanges     *prometheus.CounterVec
	Reconciles      *prometheus.CounterVec
	ReconcileTime   prometheus.Histogram
	ApplyTime       prometheus.Histogram
	Passes          *prometheus.CounterVec
	UnadvertisedIPs prometheus.Gauge
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		SessionUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bgplb_speaker_session_up",
			Help: "1 when the BGP session to the peer is Established, else 0.",
		}, []string{"peer"}),
		Prefixes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bgplb_speaker_prefixes_announced",
			Help: "Prefixes this node announces to the peer.",
		}, []string{"peer"}),
		UpdatesSent: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bgplb_speaker_updates_sent",
			Help: "BGP UPDATE messages sent to the peer since its session was (re)configured.",
		}, []string{"peer"}),
		PathChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bgplb_speaker_path_changes_total",
			Help: "Paths announced (op=announce) and withdrawn (op=withdraw) per peer.",
		}, []string{"peer", "op"}),
		Reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bgplb_speaker_reconciles_total",
			Help: "Reconciles by result (ok, error).",
		}, []string{"result"}),
		ReconcileTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "bgplb_speaker_reconcile_seconds",
			Help:    "Time of one reconcile: read the cache, decide, apply to GoBGP, write status.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		ApplyTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "bgplb_speaker_apply_seconds",
			Help:    "Time from the start of a reconcile until its paths are handed to GoBGP (read the store, decide, apply); status writes excluded.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}),
		Passes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bgplb_speaker_passes_total",
			Help: "Reconcile passes by kind: full (every Service decided) or incremental (only the changed Services and those sharing their addresses).",
		}, []string{"kind"}),
		UnadvertisedIPs: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bgplb_speaker_unadvertised_pools",
			Help: "IPPools that no BGPAdvertisement selects (their addresses are announced nowhere).",
		}),
	}
	for _, c := range []prometheus.Collector{m.SessionUp, m.Prefixes, m.UpdatesSent, m.PathChanges, m.Reconciles, m.ReconcileTime, m.ApplyTime, m.Passes, m.UnadvertisedIPs} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
