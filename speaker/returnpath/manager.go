package returnpath

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bgplb/bgplb/internal/iprange"
)

// Peer is a BGPPeer with returnPath: symmetric that this node peers with.
type Peer struct {
	Name    string
	Address netip.Addr
}

// Spec is what the speaker wants: the routers and the service addresses
// (every IPPool's, so a connection keeps its mark while its Service is
// re-announced or withdrawn).
type Spec struct {
	Peers    []Peer
	Services []iprange.Range
}

// Reasons of PeerStatus (the BGPSessionState condition's).
const (
	ReasonApplied          = "Applied"
	ReasonRouterUnresolved = "RouterUnresolved"
	ReasonApplyFailed      = "ApplyFailed"
)

// PeerStatus is one symmetric peer's state on this node.
type PeerStatus struct {
	Ready   bool
	Reason  string
	Message string
	Slot    Slot
}

// DefaultResync is how often the manager re-reads the neighbour table and
// re-asserts the kernel state (a router's MAC can change, `nft flush
// ruleset` removes our table); with a problem it retries every
// DefaultRetry.
const (
	DefaultResync = 30 * time.Second
	DefaultRetry  = 5 * time.Second
)

// Manager keeps the kernel's return path state equal to the last Spec.
type Manager struct {
	cfg  Config
	host Host
	log  logr.Logger

	mu      sync.Mutex
	spec    Spec
	status  map[string]PeerStatus
	applied bool
	// passes and failures count the passes and the failed applies since
	// start.
	passes, failures uint64
	changed          chan struct{}
	metrics          *Metrics
	// known is the last neighbour resolved for each router address.
	known map[netip.Addr]Neighbour
}

// NewManager returns a manager applying through host; metrics may be nil.
func NewManager(cfg Config, host Host, log logr.Logger, metrics *Metrics) *Manager {
	return &Manager{cfg: cfg.WithDefaults(), host: host, log: log, status: map[string]PeerStatus{},
		changed: make(chan struct{}, 1), metrics: metrics}
}

// Set applies spec at once and keeps it (Run re-asserts it). An unchanged
// spec costs nothing: the speaker calls Set on every reconcile (each
// EndpointSlice change), and the timer of Run retries problems.
func (m *Manager) Set(spec Spec) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.passes > 0 && slices.Equal(spec.Peers, m.spec.Peers) && slices.Equal(spec.Services, m.spec.Services) {
		return
	}
	m.spec = spec
	m.syncLocked()
}

// Resync re-reads the neighbour table and re-asserts the last spec now
// (Run does on its timer).
func (m *Manager) Resync() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.syncLocked()
}

// Status returns each symmetric peer's status of the last pass.
func (m *Manager) Status() map[string]PeerStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.status)
}

// Failures is the number of failed applies since start.
func (m *Manager) Failures() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.failures
}

// Changed receives (coalesced) when a background pass changed a status.
func (m *Manager) Changed() <-chan struct{} { return m.changed }

// Run re-asserts the last spec every DefaultResync (DefaultRetry while a
// peer has a problem) until ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	t := time.NewTimer(DefaultResync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		m.mu.Lock()
		before := maps.Clone(m.status)
		m.syncLocked()
		changed := !maps.EqualFunc(before, m.status, func(a, b PeerStatus) bool { return a.Ready == b.Ready && a.Message == b.Message })
		next := DefaultResync
		for _, st := range m.status {
			if !st.Ready {
				next = DefaultRetry
			}
		}
		m.mu.Unlock()
		if changed {
			select {
			case m.changed <- struct{}{}:
			default:
			}
		}
		t.Reset(next)
	}
}

// syncLocked resolves the routers, decides and applies. With no symmetric
// peer and nothing applied since start it still applies once, removing
// what an earlier run left.
func (m *Manager) syncLocked() {
	m.passes++
	defer m.report()
	routers := make([]Router, 0, len(m.spec.Peers))
	known := map[netip.Addr]Neighbour{}
	for _, p := range m.spec.Peers {
		n, err := m.host.Neighbour(p.Address)
		if err != nil {
			// A neighbour entry goes FAILED while the router reboots and
			// is garbage-collected when idle: keep the last MAC seen
			// rather than tear down the return path of its connections.
			if last, ok := m.known[p.Address]; ok {
				n, err = last, nil
			}
		}
		if err == nil {
			known[p.Address] = n
		}
		routers = append(routers, Router{Peer: p.Name, Address: p.Address, Neighbour: n, Err: err})
	}
	m.known = known
	status := map[string]PeerStatus{}
	installed, err := m.host.Installed(m.cfg)
	if err != nil {
		m.failLocked(err)
		return
	}
	plan, problems := Decide(m.cfg, routers, m.spec.Services, installed)
	if plan.Empty() && len(m.spec.Peers) == 0 && m.applied && len(installed) == 0 {
		m.status = status
		return
	}
	if err := m.host.Apply(m.cfg, plan); err != nil {
		m.failLocked(err)
		return
	}
	m.applied = true
	for _, p := range m.spec.Peers {
		if e, ok := problems[p.Name]; ok {
			status[p.Name] = PeerStatus{Reason: ReasonRouterUnresolved, Message: e.Error()}
			continue
		}
		s, ok := plan.SlotOf(p.Name, p.Address)
		if !ok {
			continue
		}
		status[p.Name] = PeerStatus{Ready: true, Reason: ReasonApplied, Slot: s, Message: fmt.Sprintf(
			"replies of connections from %s (%s on %s) to service addresses leave through it: ct mark %#x/%#x, ip rule priority %d lookup table %d",
			s.Router, s.Neighbor.MAC, s.Neighbor.Link, s.Mark, m.cfg.MarkMask, m.cfg.RulePriority, s.Table)}
	}
	for name, st := range status {
		if old, ok := m.status[name]; !ok || old.Message != st.Message {
			if st.Ready {
				m.log.Info("symmetric return path in place", "peer", name, "router", st.Slot.Router, "mac", st.Slot.Neighbor.MAC.String(),
					"interface", st.Slot.Neighbor.Link, "mark", fmt.Sprintf("%#x", st.Slot.Mark), "table", st.Slot.Table)
			} else {
				m.log.Info("symmetric return path not in place", "peer", name, "reason", st.Reason, "message", st.Message)
			}
		}
	}
	m.status = status
}

func (m *Manager) failLocked(err error) {
	m.failures++
	if m.metrics != nil {
		m.metrics.Failures.Inc()
	}
	status := map[string]PeerStatus{}
	for _, p := range m.spec.Peers {
		status[p.Name] = PeerStatus{Reason: ReasonApplyFailed, Message: err.Error()}
	}
	if len(m.status) == 0 || fmt.Sprint(m.status) != fmt.Sprint(status) {
		m.log.Error(err, "applying the symmetric return path")
	}
	m.status = status
}

// report sets the per-peer gauge from the status (and drops the series
// of peers that are gone).
func (m *Manager) report() {
	if m.metrics == nil {
		return
	}
	m.metrics.Ready.Reset()
	for name, st := range m.status {
		v := 0.0
		if st.Ready {
			v = 1
		}
		m.metrics.Ready.WithLabelValues(name).Set(v)
	}
}

// Metrics are the return path's Prometheus metrics. peer is a BGPPeer's
// name with returnPath: symmetric that this node peers with.
type Metrics struct {
	Ready    *prometheus.GaugeVec
	Failures prometheus.Counter
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Ready: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bgplb_speaker_return_path_symmetric",
			Help: "1 when this node sends the replies of the connections the peer (a BGPPeer with returnPath: symmetric) forwarded back through it (mark rule, policy rule and route in place), else 0.",
		}, []string{"peer"}),
		Failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bgplb_speaker_return_path_apply_failures_total",
			Help: "Passes in which the kernel refused the return path's nftables table, policy rules or routes.",
		}),
	}
	for _, c := range []prometheus.Collector{m.Ready, m.Failures} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// RemoveLeftovers is for a speaker running without
// --symmetric-return-path: it removes the policy rules and routes (and
// our nftables table) that an earlier run with it left. Reading needs no
// privilege; without CAP_NET_ADMIN the removal fails and the log says
// what to do.
func RemoveLeftovers(cfg Config, host Host, log logr.Logger) {
	installed, err := host.Installed(cfg)
	if err != nil || len(installed) == 0 {
		return
	}
	if err := host.Apply(cfg, Plan{}); err != nil {
		log.Error(err, "an earlier run with --symmetric-return-path left policy rules and routes that this run cannot remove: set returnPath: direct on the BGPPeers before turning the flag off, or remove them by hand",
			"rulePriority", cfg.WithDefaults().RulePriority, "nftablesTable", "inet "+TableName)
		return
	}
	log.Info("removed the symmetric return path of an earlier run", "slots", len(installed))
}
