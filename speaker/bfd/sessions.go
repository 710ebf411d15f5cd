// Package bfd runs the speaker's BFD sessions (issue 21): one per BGPPeer
// that enables BFD, on the one internal/bfd Manager of the process, which is
// created when the first such peer appears (it binds UDP 3784 on the node,
// so a node without BFD peers keeps the port free).
//
// Set is level-triggered: it takes the whole list of wanted sessions and
// adds, retimes and removes sessions to match. A watcher resets the BGP
// session of a peer whose BFD session went down after having been up, at
// once (not at the next reconcile: that is the point of BFD), unless the
// peer took BFD down administratively (RFC 5882 section 3.2: AdminDown is
// no failure of the path). What happened is reported through Status for
// the controller's BGPSessionState, events and metrics.
package bfd

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"

	ibfd "github.com/bgplb/bgplb/internal/bfd"
)

// Peer is one wanted BFD session.
type Peer struct {
	// Name is the BGPPeer's name, the key of the session.
	Name string
	// Address is the router's address (the BGP session's).
	Address netip.Addr
	// Local is the node's address for the session; when not valid, the
	// address the kernel picks towards Address (the BGP session's own,
	// since the speaker does not bind it either).
	Local netip.Addr
	// TransmitInterval, ReceiveInterval and DetectMultiplier are the
	// BGPPeer's bfd values (defaults applied).
	TransmitInterval, ReceiveInterval time.Duration
	DetectMultiplier                  uint8
}

// Status is the reported state of one wanted session.
type Status struct {
	Name string
	// Running is false while the session could not be started (LastError).
	Running bool
	// State is "Up", "Down", "Init" or "AdminDown" while Running.
	State            string
	Diag, RemoteDiag string
	// LastDownDiag and LastDownRemoteDiag are the diagnostics when the
	// session last went down from Up.
	LastDownDiag, LastDownRemoteDiag string
	// TransmitInterval is the interval in force now (before jitter);
	// DetectionTime 0 until the peer was heard.
	TransmitInterval, DetectionTime time.Duration
	ReceiveInterval                 time.Duration
	DetectMultiplier                uint8
	LastChange                      time.Time
	// DownEvents counts the failures of the path: the times the session
	// went down from Up because our detection time expired or the peer saw
	// a failure, since the peer was first wanted (kept across a re-created
	// session). A peer's AdminDown or re-created session is not counted.
	DownEvents uint64
	LastError  string
}

// Engine is what Sessions needs of a BFD implementation; *internal/bfd.Manager
// implements it, and tests pass a fake.
type Engine interface {
	AddSession(ctx context.Context, cfg ibfd.SessionConfig) error
	RemoveSession(peer netip.Addr) error
	State(peer netip.Addr) (ibfd.SessionState, bool)
	Sessions() []ibfd.SessionState
	Changed() <-chan struct{}
	Close() error
}

// Resetter resets a BGP session; *speaker/bgp.Manager implements it. It
// reports whether there was an established session to reset.
type Resetter interface {
	ResetSession(ctx context.Context, peer, reason string) (bool, error)
}

// Options configure Sessions.
type Options struct {
	Log logr.Logger
	// Reset resets the BGP session of a peer whose BFD session went down.
	Reset Resetter
	// NewEngine makes the Engine at the first session; nil makes an
	// internal/bfd Manager on the kernel's sockets logging to Log.
	NewEngine func() Engine
	// LocalAddr returns the node's address towards peer; nil asks the
	// kernel (see KernelSource).
	LocalAddr func(peer netip.Addr) (netip.Addr, error)
}

// Sessions owns the speaker's BFD sessions. It is safe for concurrent use.
type Sessions struct {
	log       logr.Logger
	reset     Resetter
	newEngine func() Engine
	localAddr func(netip.Addr) (netip.Addr, error)
	changed   chan struct{}

	mu       sync.Mutex
	eng      Engine // nil until the first session
	done     chan struct{}
	watching sync.WaitGroup
	peers    map[string]*entry
	closed   bool
}

// entry is one wanted session. cfg and running follow the Engine's answers:
// they change only after AddSession or RemoveSession succeeded.
type entry struct {
	want    Peer
	cfg     ibfd.SessionConfig
	running bool
	lastErr string
	obs     observed
	downs   uint64
}

// New returns Sessions without any session; no socket is opened yet.
func New(o Options) *Sessions {
	s := &Sessions{log: o.Log, reset: o.Reset, newEngine: o.NewEngine, localAddr: o.LocalAddr,
		changed: make(chan struct{}, 1), peers: map[string]*entry{}}
	if s.newEngine == nil {
		s.newEngine = func() Engine {
			return ibfd.New(ibfd.Config{Logger: slogFrom(o.Log)})
		}
	}
	if s.localAddr == nil {
		s.localAddr = KernelSource
	}
	return s
}

// KernelSource returns the source address the kernel picks for packets to
// peer: it connects a UDP socket (which sends nothing) and reads its local
// address.
func KernelSource(peer netip.Addr) (netip.Addr, error) {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(peer, ibfd.ControlPort)))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("no route to %v: %w", peer, err)
	}
	defer func() { _ = c.Close() }()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
}

// Changed receives (coalesced) when a session changed state or was reset.
func (s *Sessions) Changed() <-chan struct{} { return s.changed }

func (s *Sessions) signal() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// Set makes the running sessions those of peers: new ones are added,
// changed timers applied (a Poll Sequence while Up), a changed local address
// re-creates the session, and sessions no longer wanted are removed (the
// router hears AdminDown). A session that cannot start keeps the reason in
// its Status and is retried by the next Set; the errors are joined.
func (s *Sessions) Set(ctx context.Context, peers []Peer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("bfd sessions closed")
	}
	want := map[string]Peer{}
	for _, p := range peers {
		want[p.Name] = p
	}
	var errs []error
	for name, e := range s.peers {
		if p, ok := want[name]; ok && p.Address.Unmap() == e.want.Address.Unmap() {
			continue
		}
		if err := s.stopLocked(e); err != nil {
			errs = append(errs, err)
			continue // retried by the next Set
		}
		if _, ok := want[name]; !ok {
			delete(s.peers, name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		p := want[name]
		e := s.peers[name]
		if e == nil {
			e = &entry{}
			s.peers[name] = e
		}
		e.want = p
		if err := s.applyLocked(ctx, e); err != nil {
			if e.lastErr != err.Error() {
				s.log.Error(err, "BFD session not running", "peer", name, "address", p.Address)
			}
			e.lastErr = err.Error()
			errs = append(errs, err)
			continue
		}
		e.lastErr = ""
	}
	return errors.Join(errs...)
}

// applyLocked starts or updates e's session to match e.want.
func (s *Sessions) applyLocked(ctx context.Context, e *entry) error {
	p := e.want
	addr := p.Address.Unmap()
	if !addr.IsValid() {
		return fmt.Errorf("BGPPeer %s: no peer address", p.Name)
	}
	for name, o := range s.peers {
		if name != p.Name && o.running && o.cfg.Peer == addr {
			return fmt.Errorf("BGPPeer %s: address %v already has a BFD session for BGPPeer %s", p.Name, addr, name)
		}
	}
	local := p.Local.Unmap()
	if !local.IsValid() {
		var err error
		if local, err = s.localAddr(addr); err != nil {
			return fmt.Errorf("BGPPeer %s: local address for BFD: %w", p.Name, err)
		}
	}
	cfg := ibfd.SessionConfig{Local: local, Peer: addr, DesiredMinTx: p.TransmitInterval,
		RequiredMinRx: p.ReceiveInterval, DetectMultiplier: p.DetectMultiplier}
	if e.running && e.cfg == cfg {
		// AddSession again would start a Poll Sequence for nothing.
		return nil
	}
	if e.running && e.cfg.Local != cfg.Local {
		s.log.Info("BFD local address changed, re-creating the session", "peer", p.Name, "old", e.cfg.Local, "new", cfg.Local)
		if err := s.stopLocked(e); err != nil {
			return err
		}
	}
	if s.eng == nil {
		s.startLocked()
	}
	if err := s.eng.AddSession(ctx, cfg); err != nil {
		return fmt.Errorf("BGPPeer %s: BFD session to %v from %v: %w", p.Name, addr, local, err)
	}
	if !e.running {
		s.log.Info("BFD session started", "peer", p.Name, "address", addr, "local", local,
			"transmitInterval", cfg.DesiredMinTx, "receiveInterval", cfg.RequiredMinRx, "detectMultiplier", cfg.DetectMultiplier)
	}
	e.cfg, e.running = cfg, true
	return nil
}

// stopLocked removes e's running session, if any.
func (s *Sessions) stopLocked(e *entry) error {
	if !e.running {
		return nil
	}
	if err := s.eng.RemoveSession(e.cfg.Peer); err != nil {
		return fmt.Errorf("BGPPeer %s: remove BFD session: %w", e.want.Name, err)
	}
	s.log.Info("BFD session stopped", "peer", e.want.Name, "address", e.cfg.Peer)
	e.running = false
	e.obs = observed{}
	return nil
}

// startLocked makes the Engine and its watcher.
func (s *Sessions) startLocked() {
	s.eng = s.newEngine()
	s.done = make(chan struct{})
	s.watching.Add(1)
	go func() {
		defer s.watching.Done()
		for {
			select {
			case <-s.done:
				return
			case <-s.eng.Changed():
				s.check(context.Background())
			}
		}
	}()
}

// resetTimeout bounds one ResetSession call of the watcher.
const resetTimeout = 5 * time.Second

// check reads the level of every session, decides, and resets the BGP
// sessions whose BFD session went down.
func (s *Sessions) check(ctx context.Context) {
	type reset struct {
		name, reason string
	}
	var resets []reset
	s.mu.Lock()
	for _, name := range slices.Sorted(maps.Keys(s.peers)) {
		e := s.peers[name]
		if !e.running {
			continue
		}
		st, ok := s.eng.State(e.cfg.Peer)
		if !ok {
			continue
		}
		var act action
		e.obs, act = decide(e.obs, st)
		switch act {
		case actionReset:
			e.downs++
			reason := fmt.Sprintf("BFD session down (%s)", st.LastDown.Diag)
			s.log.Info("BFD session went down, resetting the BGP session", "peer", name, "address", e.cfg.Peer,
				"diag", st.LastDown.Diag.String(), "remoteDiag", st.LastDown.RemoteDiag.String(), "state", stateName(st.State))
			resets = append(resets, reset{name, reason})
		case actionPeerAdminDown:
			s.log.Info("BFD session taken down by the peer (AdminDown); BGP session kept", "peer", name, "address", e.cfg.Peer)
		case actionPeerRestarted:
			s.log.Info("BFD session down because the peer re-created its session, not a path failure; BGP session kept",
				"peer", name, "address", e.cfg.Peer, "remoteDiag", st.LastDown.RemoteDiag.String())
		}
	}
	s.mu.Unlock()
	for _, r := range resets {
		if s.reset == nil {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, resetTimeout)
		done, err := s.reset.ResetSession(rctx, r.name, r.reason)
		switch {
		case err != nil:
			s.log.Error(err, "resetting the BGP session after BFD went down", "peer", r.name)
		case !done:
			s.log.Info("BGP session not established; nothing to reset", "peer", r.name)
		}
		cancel()
	}
	s.signal()
}

// Status reports every wanted session, sorted by name.
func (s *Sessions) Status() []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Status, 0, len(s.peers))
	for _, name := range slices.Sorted(maps.Keys(s.peers)) {
		e := s.peers[name]
		st := Status{Name: name, DownEvents: e.downs, LastError: e.lastErr,
			ReceiveInterval: e.want.ReceiveInterval, DetectMultiplier: e.want.DetectMultiplier}
		if e.running {
			if ss, ok := s.eng.State(e.cfg.Peer); ok {
				st.Running = true
				st.State = stateName(ss.State)
				st.Diag, st.RemoteDiag = ss.Diag.String(), ss.RemoteDiag.String()
				if ss.Counters.DownEvents > 0 {
					st.LastDownDiag, st.LastDownRemoteDiag = ss.LastDown.Diag.String(), ss.LastDown.RemoteDiag.String()
				}
				st.TransmitInterval, st.DetectionTime = ss.TxInterval, ss.DetectTime
				st.LastChange = ss.LastChange
			}
		}
		out = append(out, st)
	}
	return out
}

// Close removes every session (the routers hear AdminDown, so they do not
// count it as a failure) and closes the sockets.
func (s *Sessions) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	eng, done := s.eng, s.done
	s.mu.Unlock()
	if eng == nil {
		return nil
	}
	close(done)
	s.watching.Wait()
	if err := eng.Close(); err != nil {
		return fmt.Errorf("close BFD: %w", err)
	}
	return nil
}

// stateName is the BGPSessionState spelling of a BFD state.
func stateName(st ibfd.State) string {
	switch st {
	case ibfd.StateUp:
		return "Up"
	case ibfd.StateInit:
		return "Init"
	case ibfd.StateDown:
		return "Down"
	case ibfd.StateAdminDown:
		return "AdminDown"
	}
	return st.String()
}
