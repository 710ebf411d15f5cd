package controller

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bgplb/bgplb/internal/buildinfo"
)

// Metrics are the speaker's Prometheus metrics.
//
// Label bounds (what limits the number of series): peer is a BGPPeer's name
// (the cluster's configuration; ForgetPeer drops a peer's series when this
// node stops peering with it), op is announce or withdraw, result is ok or
// error, kind is full or incremental. No label carries a Service, an address
// or anything a peer sends.
type Metrics struct {
	SessionUp *prometheus.GaugeVec
	Prefixes  *prometheus.GaugeVec
	// UpdatesSent is GoBGP's count of UPDATE messages sent to the peer,
	// exported as a counter (it restarts at 0 when the session is
	// reconfigured, which rate() and increase() treat as a counter reset).
	UpdatesSent     *SampledCounterVec
	PathChanges     *prometheus.CounterVec
	Reconciles      *prometheus.CounterVec
	ReconcileTime   prometheus.Histogram
	ApplyTime       prometheus.Histogram
	Passes          *prometheus.CounterVec
	UnadvertisedIPs prometheus.Gauge
	// BFDUp and BFDDownEvents are per BGPPeer with BFD enabled.
	BFDUp         *prometheus.GaugeVec
	BFDDownEvents *prometheus.CounterVec
	// RoutedPrefixes and RejectedPrefixes are per peer whose router reports
	// verdicts (docs/verdict.md).
	RoutedPrefixes   *prometheus.GaugeVec
	RejectedPrefixes *prometheus.GaugeVec
}

// NewMetrics creates the metrics and registers them, and bgplb_build_info,
// with reg.
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
		// A count of events, so a counter with _total; it was the gauge
		// bgplb_speaker_updates_sent (CHANGELOG.md).
		UpdatesSent: NewSampledCounterVec(prometheus.NewDesc("bgplb_speaker_updates_sent_total",
			"BGP UPDATE messages sent to the peer since its session was (re)configured.", []string{"peer"}, nil)),
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
		BFDUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bgplb_speaker_bfd_session_up",
			Help: "1 when the BFD session to the peer is Up, else 0 (only peers with bfd.enabled).",
		}, []string{"peer"}),
		BFDDownEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bgplb_speaker_bfd_down_events_total",
			Help: "Times the BFD session to the peer went down from Up because the path failed (detection time expired, here or at the peer); each resets the established BGP session.",
		}, []string{"peer"}),
		RoutedPrefixes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bgplb_speaker_prefixes_routed",
			Help: "Prefixes this node announces to the peer that the peer's router reports installed in its kernel (only routers that report verdicts).",
		}, []string{"peer"}),
		RejectedPrefixes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bgplb_speaker_prefixes_rejected",
			Help: "Prefixes this node announces to the peer that the peer's router reports it rejected (only routers that report verdicts).",
		}, []string{"peer"}),
	}
	for _, c := range []prometheus.Collector{m.RoutedPrefixes, m.RejectedPrefixes, m.BFDUp, m.BFDDownEvents, m.SessionUp, m.Prefixes, m.UpdatesSent, m.PathChanges, m.Reconciles, m.ReconcileTime, m.ApplyTime, m.Passes, m.UnadvertisedIPs} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	if err := buildinfo.Register(reg, "bgplb-speaker"); err != nil {
		return nil, err
	}
	return m, nil
}

// ForgetPeer drops every series of peer: the node no longer peers with it,
// and a series left behind would show a session that does not exist.
func (m *Metrics) ForgetPeer(peer string) {
	m.SessionUp.DeleteLabelValues(peer)
	m.Prefixes.DeleteLabelValues(peer)
	m.UpdatesSent.DeleteLabelValues(peer)
	m.PathChanges.DeletePartialMatch(prometheus.Labels{"peer": peer})
	m.forgetBFD(peer)
	m.forgetVerdicts(peer)
}

// forgetVerdicts drops peer's verdict series (its router reports none).
func (m *Metrics) forgetVerdicts(peer string) {
	m.RoutedPrefixes.DeleteLabelValues(peer)
	m.RejectedPrefixes.DeleteLabelValues(peer)
}

// forgetBFD drops peer's BFD series (its BFD session is gone).
func (m *Metrics) forgetBFD(peer string) {
	m.BFDUp.DeleteLabelValues(peer)
	m.BFDDownEvents.DeleteLabelValues(peer)
}

// SampledCounterVec exports counts kept elsewhere (GoBGP's message counters)
// as counters: the owner of the count Sets it, a scrape reads the last value.
type SampledCounterVec struct {
	desc *prometheus.Desc
	mu   sync.Mutex
	vals map[string]sample
}

type sample struct {
	labels []string
	value  float64
}

// NewSampledCounterVec returns an empty vector for desc.
func NewSampledCounterVec(desc *prometheus.Desc) *SampledCounterVec {
	return &SampledCounterVec{desc: desc, vals: map[string]sample{}}
}

// SampledCounter is one series of a SampledCounterVec.
type SampledCounter struct {
	v   *SampledCounterVec
	key string
	lv  []string
}

// WithLabelValues returns the series for the label values.
func (v *SampledCounterVec) WithLabelValues(lv ...string) SampledCounter {
	return SampledCounter{v: v, key: labelKey(lv), lv: lv}
}

// Set records the count's current value.
func (c SampledCounter) Set(f float64) {
	c.v.mu.Lock()
	c.v.vals[c.key] = sample{labels: c.lv, value: f}
	c.v.mu.Unlock()
}

// DeleteLabelValues drops a series; it reports whether there was one.
func (v *SampledCounterVec) DeleteLabelValues(lv ...string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	k := labelKey(lv)
	_, ok := v.vals[k]
	delete(v.vals, k)
	return ok
}

// Describe implements prometheus.Collector.
func (v *SampledCounterVec) Describe(ch chan<- *prometheus.Desc) { ch <- v.desc }

// Collect implements prometheus.Collector.
func (v *SampledCounterVec) Collect(ch chan<- prometheus.Metric) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, s := range v.vals {
		ch <- prometheus.MustNewConstMetric(v.desc, prometheus.CounterValue, s.value, s.labels...)
	}
}

func labelKey(lv []string) string {
	k := ""
	for _, l := range lv {
		k += l + "\x00"
	}
	return k
}
