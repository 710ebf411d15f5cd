package agent

import (
	"context"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bgplb/bgplb/internal/bfd"
	"github.com/bgplb/bgplb/routeragent/bgp"
	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/policy"
)

// BFD (neighbors[].bfd, issue 21). One BFD session runs for each
// established BGP session of a neighbour entry with bfd enabled, between
// the same two addresses. When a BFD session that was Up leaves Up for a
// failure (the detection time passed, or the speaker says its side went
// Down), the speaker's paths count as withdrawn in the same pass, so its
// next hops leave the kernel routes at once, and its BGP session is reset
// instead of lasting until the hold timer. A session the speaker takes
// down administratively (AdminDown: BFD turned off, a clean stop) is no
// failure (RFC 5882 section 3.2) and changes nothing.
//
// Deciding is wantBFD (which sessions), observeBFD (which of them failed)
// and resetsDue (which BGP sessions to reset), all pure; syncBFD does it.

// BFD runs BFD sessions (*bfd.Manager implements it; Deps.NewBFD builds
// another, given the agent's logger).
type BFD interface {
	AddSession(ctx context.Context, cfg bfd.SessionConfig) error
	RemoveSession(peer netip.Addr) error
	Sessions() []bfd.SessionState
	Changed() <-chan struct{}
	Counters() bfd.Counters
	Close() error
}

// bfdRetry is how soon a session that could not be added (its local
// address not there yet) or a reset that failed is tried again.
const bfdRetry = time.Second

// bfdWant is one BFD session the agent should run.
type bfdWant struct {
	cfg bfd.SessionConfig
	// owner is when the BGP session it watches was established: a new
	// BGP session gets a new BFD session (a new discriminator, no
	// memory of the old session's failure).
	owner time.Time
}

// bfdObs is what the agent has seen of one session.
type bfdObs struct {
	downEvents uint64
	// failed: the session left Up for a failure and is not Up again;
	// failedAt is when it left.
	failed   bool
	failedAt time.Time
}

// bfdState is the agent's BFD side. The run loop owns everything but
// the counters under mu, which Snapshot reads.
type bfdState struct {
	m      BFD // nil while no neighbour runs BFD
	stop   chan struct{}
	events chan struct{} // the Manager's changes and retries, coalesced
	retry  *time.Timer

	owned map[netip.Addr]bfdWant
	obs   map[netip.Addr]bfdObs
	// acted: the failure (failedAt) whose BGP reset succeeded, per peer.
	acted map[netip.Addr]time.Time
	// addErr: the last AddSession error logged per peer (logged once).
	addErr map[netip.Addr]string

	mu sync.Mutex
	// snapshotM is m, for Snapshot.
	snapshotM BFD
	// down: peers whose paths count as withdrawn (last sync's verdict).
	down map[netip.Addr]bool
	// resets counts BGP sessions reset because BFD went down, per peer
	// while the peer has a session, and in total.
	resets      map[netip.Addr]int
	resetsTotal uint64
	// downBase holds the DownEvents of Managers closed on reload.
	downBase uint64
}

// wantBFD decides the BFD sessions: one per established BGP session of
// an entry with bfd enabled, from the session's local address to the
// speaker's. A session whose BGP session went down is kept while the
// speaker still holds paths of the peer (GoBGP drops them just after),
// so that a failed peer's paths stay withdrawn until they are gone. So
// there are never more BFD sessions than BGP peers. Pure.
func wantBFD(cfg *config.Config, peers []bgp.PeerState, have map[netip.Addr]bfdWant) map[netip.Addr]bfdWant {
	want := map[netip.Addr]bfdWant{}
	for _, p := range peers {
		n, ok := cfg.NeighborFor(p.Address)
		if !ok || !n.BFDEnabled() {
			continue
		}
		if p.Up && p.Local.IsValid() && p.Local.Is4() == p.Address.Is4() {
			want[p.Address] = bfdWant{owner: p.Since, cfg: bfd.SessionConfig{
				Local: p.Local, Peer: p.Address,
				DesiredMinTx: n.BFD.TransmitInterval, RequiredMinRx: n.BFD.ReceiveInterval,
				DetectMultiplier: uint8(n.BFD.DetectMultiplier),
			}}
			continue
		}
		if h, ok := have[p.Address]; ok && p.Received > 0 {
			want[p.Address] = h
		}
	}
	return want
}

// observeBFD updates what the agent knows of each session from their
// states now. A session fails when it leaves Up (DownEvents grew) and
// is not Up, unless the speaker said AdminDown; it stays failed until
// it is Up again, or until it watches a new BGP session (renewed: that
// one starts with no failure, as with a new BFD session). The Manager
// signals every change, so the speaker's AdminDown is still its state
// when the agent looks. Pure.
func observeBFD(sessions []bfd.SessionState, prev map[netip.Addr]bfdObs, renewed map[netip.Addr]bool) map[netip.Addr]bfdObs {
	out := make(map[netip.Addr]bfdObs, len(sessions))
	for _, s := range sessions {
		o := prev[s.Peer]
		switch {
		case renewed[s.Peer]:
			o = bfdObs{}
		case s.State == bfd.StateUp:
			o.failed = false
		case s.Counters.DownEvents > o.downEvents:
			admin := s.RemoteState == bfd.StateAdminDown || s.RemoteDiag == bfd.DiagAdministrativelyDown
			o.failed = !admin && s.State != bfd.StateAdminDown
			o.failedAt = s.LastChange
		}
		o.downEvents = s.Counters.DownEvents
		out[s.Peer] = o
	}
	return out
}

// resetsDue lists the established BGP sessions whose BFD session failed
// and that were not reset for that failure yet. Pure.
func resetsDue(peers []bgp.PeerState, owned map[netip.Addr]bfdWant, obs map[netip.Addr]bfdObs, acted map[netip.Addr]time.Time) []netip.Addr {
	var out []netip.Addr
	for _, p := range peers {
		o, w := obs[p.Address], owned[p.Address]
		if p.Up && o.failed && w.owner.Equal(p.Since) && !acted[p.Address].Equal(o.failedAt) {
			out = append(out, p.Address)
		}
	}
	return out
}

// withoutPeers returns paths less those of the given peers (as if they
// had been withdrawn).
func withoutPeers(paths []policy.Path, peers map[netip.Addr]bool) []policy.Path {
	if len(peers) == 0 {
		return paths
	}
	out := make([]policy.Path, 0, len(paths))
	for _, p := range paths {
		if !peers[p.Peer] {
			out = append(out, p)
		}
	}
	return out
}

// syncBFD makes the BFD sessions match the BGP sessions, decides which
// peers failed and resets their BGP sessions. It reports whether the set
// of failed peers changed (the pass must then be full).
func (a *Agent) syncBFD(ctx context.Context, cfg *config.Config) (changed bool) {
	st := &a.bfd
	if !cfg.AnyBFD() {
		if st.m != nil {
			a.closeBFD()
			return true
		}
		return false
	}
	if st.m == nil {
		a.openBFD()
	}
	peers := a.deps.Speaker.Peers()
	renewed := a.applyBFDSessions(ctx, wantBFD(cfg, peers, st.owned))
	st.obs = observeBFD(st.m.Sessions(), st.obs, renewed)
	down := map[netip.Addr]bool{}
	for p, o := range st.obs {
		if o.failed {
			down[p] = true
		}
	}
	for _, p := range resetsDue(peers, st.owned, st.obs, st.acted) {
		a.resetForBFD(ctx, p, st.obs[p])
	}
	live := map[netip.Addr]bool{}
	for _, p := range peers {
		live[p.Address] = true
	}
	st.mu.Lock()
	changed = !maps.Equal(down, st.down)
	st.down = down
	maps.DeleteFunc(st.resets, func(p netip.Addr, _ int) bool { return !live[p] })
	st.mu.Unlock()
	if changed {
		a.log.Info("bfd: peers whose paths are withdrawn", "peers", slices.SortedFunc(maps.Keys(down), netip.Addr.Compare))
	}
	return changed
}

// applyBFDSessions adds, changes and removes sessions to match want.
// owned records a session only once the Manager has it. It returns the
// peers whose BFD session now watches a new BGP session.
func (a *Agent) applyBFDSessions(ctx context.Context, want map[netip.Addr]bfdWant) (renewed map[netip.Addr]bool) {
	st := &a.bfd
	renewed = map[netip.Addr]bool{}
	for p, h := range st.owned {
		w, ok := want[p]
		switch {
		case ok && w.cfg.Local == h.cfg.Local && !w.owner.Equal(h.owner):
			// A new BGP session between the same addresses (it came
			// back while the old one's paths were still held): the BFD
			// session carries on, without the old one's failure.
			// Removing it would send AdminDown, which some peers take
			// as a reason to drop the new BGP session.
			h.owner = w.owner
			st.owned[p] = h
			renewed[p] = true
			delete(st.acted, p)
			continue
		case ok && w.cfg.Local == h.cfg.Local:
			continue
		}
		// Gone, or another local address: the old BFD session goes.
		_ = st.m.RemoveSession(p) // never fails (an unknown peer is no error)
		delete(st.owned, p)
		delete(st.obs, p)
		delete(st.acted, p)
	}
	for p, w := range want {
		if h, ok := st.owned[p]; ok && h.cfg == w.cfg {
			continue
		}
		if err := st.m.AddSession(ctx, w.cfg); err != nil {
			if st.addErr[p] != err.Error() {
				a.log.Warn("bfd: cannot start session; retrying", "peer", p.String(), "local", w.cfg.Local.String(), "err", err)
				st.addErr[p] = err.Error()
			}
			st.retry.Reset(bfdRetry)
			continue
		}
		delete(st.addErr, p)
		st.owned[p] = w
	}
	maps.DeleteFunc(st.addErr, func(p netip.Addr, _ string) bool { _, ok := want[p]; return !ok })
	return renewed
}

// resetForBFD resets the BGP session of a peer whose BFD session failed.
func (a *Agent) resetForBFD(ctx context.Context, peer netip.Addr, o bfdObs) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := a.deps.Speaker.Reset(rctx, peer, "BFD session down"); err != nil {
		a.log.Error("bfd: cannot reset the BGP session of a failed peer; retrying", "peer", peer.String(), "err", err)
		a.bfd.retry.Reset(bfdRetry)
		return
	}
	a.bfd.acted[peer] = o.failedAt
	a.bfd.mu.Lock()
	a.bfd.resets[peer]++
	a.bfd.resetsTotal++
	a.bfd.mu.Unlock()
	a.log.Warn("bfd: session down; BGP session reset and the peer's next hops withdrawn", "peer", peer.String(),
		"bfdDownAt", o.failedAt.Format(time.RFC3339Nano))
}

// openBFD creates the Manager (binding UDP 3784 comes with the first
// session) and forwards its changes to the run loop.
func (a *Agent) openBFD() {
	st := &a.bfd
	if a.deps.NewBFD != nil {
		st.m = a.deps.NewBFD(a.log.With("component", "bfd"))
	} else {
		st.m = bfd.New(bfd.Config{Logger: a.log.With("component", "bfd")})
	}
	if st.events == nil {
		st.events = make(chan struct{}, 1)
	}
	st.owned, st.obs, st.acted, st.addErr = map[netip.Addr]bfdWant{}, map[netip.Addr]bfdObs{}, map[netip.Addr]time.Time{}, map[netip.Addr]string{}
	st.mu.Lock()
	st.snapshotM = st.m
	if st.resets == nil {
		st.resets = map[netip.Addr]int{}
	}
	st.mu.Unlock()
	stop, changes, events := make(chan struct{}), st.m.Changed(), st.events
	st.stop = stop
	st.retry = time.AfterFunc(time.Hour, func() { signal(events) })
	st.retry.Stop()
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-changes:
				signal(events)
			}
		}
	}()
}

// closeBFD closes the Manager (AdminDown to every speaker: no failure on
// their side either).
func (a *Agent) closeBFD() {
	st := &a.bfd
	if st.m == nil {
		return
	}
	close(st.stop)
	st.retry.Stop()
	down := st.m.Counters().DownEvents
	if err := st.m.Close(); err != nil {
		a.log.Warn("bfd: close", "err", err)
	}
	st.m = nil
	st.owned, st.obs, st.acted = nil, nil, nil
	st.mu.Lock()
	st.snapshotM = nil
	st.down = nil
	st.downBase += down
	st.mu.Unlock()
}

// bfdEvents receives when a BFD session changed or a retry is due (nil
// before the first session: never ready).
func (a *Agent) bfdEvents() <-chan struct{} { return a.bfd.events }

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// PeerBFD is the BFD session of one peer, in status.
type PeerBFD struct {
	// State is ours: up, down, init or adminDown; RemoteState the
	// speaker's, as its last packet said.
	State       string `json:"state"`
	RemoteState string `json:"remoteState"`
	// Diag is why our side last left Up (RFC 5880 diagnostic), RemoteDiag
	// the speaker's.
	Diag       string     `json:"diag,omitempty"`
	RemoteDiag string     `json:"remoteDiag,omitempty"`
	Local      netip.Addr `json:"local"`
	// ReceiveInterval, TransmitInterval and DetectMultiplier are the
	// configured timers; TxInterval is the interval in use (after the
	// speaker's receive interval, before jitter) and DetectTime the
	// detection time (0 until the speaker was heard).
	ReceiveInterval  string    `json:"receiveInterval"`
	TransmitInterval string    `json:"transmitInterval"`
	DetectMultiplier int       `json:"detectMultiplier"`
	TxInterval       string    `json:"txInterval"`
	DetectTime       string    `json:"detectTime"`
	LocalDiscr       uint32    `json:"localDiscriminator"`
	RemoteDiscr      uint32    `json:"remoteDiscriminator"`
	LastChange       time.Time `json:"lastChange,omitzero"`
	UpTransitions    uint64    `json:"upTransitions"`
	DownEvents       uint64    `json:"downEvents"`
	// Withdrawn: the session failed; the peer's paths count as withdrawn.
	Withdrawn bool `json:"withdrawn"`
	// Resets counts the BGP sessions with this peer reset because BFD
	// went down (while the agent knows the peer).
	Resets int `json:"resets"`
}

// BFDSummary is BFD over all peers.
type BFDSummary struct {
	// Sessions counts the sessions by our state (up, down, init, adminDown).
	Sessions map[string]int `json:"sessions"`
	// DownEvents counts sessions leaving Up, Resets the BGP sessions reset
	// for it, since start.
	DownEvents uint64 `json:"downEvents"`
	Resets     uint64 `json:"resets"`
	// Withdrawn counts the peers whose paths are withdrawn now.
	Withdrawn int          `json:"withdrawn"`
	Counters  bfd.Counters `json:"counters"`
	// Peers with BFD enabled and an established BGP session but no BFD
	// session (its local address could not be bound; see the log).
	Missing []netip.Addr `json:"missing,omitempty"`
}

// stateName is a BFD state as status and metrics name it.
func stateName(s bfd.State) string {
	switch s {
	case bfd.StateUp:
		return "up"
	case bfd.StateInit:
		return "init"
	case bfd.StateDown:
		return "down"
	}
	return "adminDown"
}

// bfdStates are the label values of bgplb_routeragent_bfd_sessions.
var bfdStates = []string{"up", "down", "init", "adminDown"}

// bfdStatus reads the BFD sessions for Snapshot (nil, nil when BFD is
// off). The run loop may replace the Manager meanwhile; a.bfd.mu is not
// held across Manager calls.
func (a *Agent) bfdStatus(cfg *config.Config, peers []bgp.PeerState, m BFD) (map[netip.Addr]*PeerBFD, *BFDSummary) {
	if m == nil || cfg == nil {
		return nil, nil
	}
	sessions, counters := m.Sessions(), m.Counters()
	st := &a.bfd
	st.mu.Lock()
	defer st.mu.Unlock()
	sum := &BFDSummary{Sessions: map[string]int{}, DownEvents: st.downBase + counters.DownEvents, Resets: st.resetsTotal,
		Withdrawn: len(st.down), Counters: counters}
	for _, s := range bfdStates {
		sum.Sessions[s] = 0
	}
	per := map[netip.Addr]*PeerBFD{}
	for _, s := range sessions {
		sum.Sessions[stateName(s.State)]++
		pb := &PeerBFD{State: stateName(s.State), RemoteState: stateName(s.RemoteState), Local: s.Local,
			TxInterval: s.TxInterval.String(), DetectTime: s.DetectTime.String(), LocalDiscr: s.LocalDiscr,
			RemoteDiscr: s.RemoteDiscr, LastChange: s.LastChange, UpTransitions: s.UpTransitions,
			DownEvents: s.Counters.DownEvents, Withdrawn: st.down[s.Peer], Resets: st.resets[s.Peer]}
		if s.Diag != bfd.DiagNone {
			pb.Diag = s.Diag.String()
		}
		if s.RemoteDiag != bfd.DiagNone {
			pb.RemoteDiag = s.RemoteDiag.String()
		}
		if n, ok := cfg.NeighborFor(s.Peer); ok && n.BFD != nil {
			pb.ReceiveInterval, pb.TransmitInterval = n.BFD.ReceiveInterval.String(), n.BFD.TransmitInterval.String()
			pb.DetectMultiplier = n.BFD.DetectMultiplier
		}
		per[s.Peer] = pb
	}
	for _, p := range peers {
		if n, ok := cfg.NeighborFor(p.Address); ok && n.BFDEnabled() && p.Up && per[p.Address] == nil {
			sum.Missing = append(sum.Missing, p.Address)
		}
	}
	return per, sum
}

// bfdManager is the Manager for Snapshot (nil when BFD is off).
func (a *Agent) bfdManager() BFD {
	a.bfd.mu.Lock()
	defer a.bfd.mu.Unlock()
	return a.bfd.snapshotM
}

// fillBFD adds the BFD sessions to the status.
func (s *Status) fillBFD(per map[netip.Addr]*PeerBFD, sum *BFDSummary) {
	s.BFD = sum
	for i := range s.Peers {
		s.Peers[i].BFD = per[s.Peers[i].Address]
	}
}

// collectBFD exports the BFD summary. No per-peer series: dynamic peers
// would make them unbounded (the status has the per-peer detail).
func collectBFD(ch chan<- prometheus.Metric, sum *BFDSummary) {
	if sum == nil {
		return
	}
	for _, st := range bfdStates {
		ch <- prometheus.MustNewConstMetric(mBFDSessions, prometheus.GaugeValue, float64(sum.Sessions[st]), st)
	}
	ch <- prometheus.MustNewConstMetric(mBFDDown, prometheus.CounterValue, float64(sum.DownEvents))
	ch <- prometheus.MustNewConstMetric(mBFDResets, prometheus.CounterValue, float64(sum.Resets))
	ch <- prometheus.MustNewConstMetric(mBFDWithdrawn, prometheus.GaugeValue, float64(sum.Withdrawn))
}

var (
	mBFDSessions  = prometheus.NewDesc("bgplb_routeragent_bfd_sessions", "BFD sessions by state (up, down, init, adminDown).", []string{"state"}, nil)
	mBFDDown      = prometheus.NewDesc("bgplb_routeragent_bfd_down_events_total", "BFD sessions that left Up, since start.", nil, nil)
	mBFDResets    = prometheus.NewDesc("bgplb_routeragent_bfd_bgp_resets_total", "BGP sessions reset because their BFD session failed, since start.", nil, nil)
	mBFDWithdrawn = prometheus.NewDesc("bgplb_routeragent_bfd_withdrawn_peers", "Peers whose paths are withdrawn because their BFD session failed.", nil, nil)
)
