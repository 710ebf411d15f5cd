// Package bfd is bgplb's Bidirectional Forwarding Detection: RFC 5880
// asynchronous mode over RFC 5881 single-hop UDP, shared by the speaker and
// the router agent (GoBGP v3 has no BFD).
//
// The protocol decisions (state machine, timers, Poll/Final) are the pure
// fsm type; the Manager does the I/O: one receive socket per address family
// on port 3784, one send socket per session, and two timers per session.
// The wire format is GoBGP v4's pkg/packet/bfd codec (see packet.go).
package bfd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/osrg/gobgp/v4/pkg/packet/bfd"
)

// Config configures a Manager.
type Config struct {
	// Logger receives state changes and socket errors. Nil discards them.
	Logger *slog.Logger
	// Transport opens the sockets; nil means KernelTransport.
	Transport Transport
	// Clock makes the session timers; nil means the real clock. Tests
	// pass a fake to step through detection and transmit times.
	Clock Clock
}

// Clock is the source of time and timers.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine after d, as time.AfterFunc.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is the part of *time.Timer the sessions use.
type Timer interface {
	Reset(d time.Duration) bool
	Stop() bool
}

type realClock struct{}

func (realClock) Now() time.Time                            { return time.Now() }
func (realClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// SessionConfig describes one single-hop session.
type SessionConfig struct {
	// Local is the address packets are sent from; Peer the neighbour's.
	// Both of the same family. A link-local IPv6 peer needs Interface.
	Local, Peer netip.Addr
	// Interface, when set, binds the send socket to that link.
	Interface string
	// DesiredMinTx, RequiredMinRx and DetectMultiplier are RFC 5880's
	// bfd.DesiredMinTxInterval, bfd.RequiredMinRxInterval and
	// bfd.DetectMult. Zero values take the defaults (300 ms, 300 ms, 3:
	// FRR's and MetalLB's).
	DesiredMinTx, RequiredMinRx time.Duration
	DetectMultiplier            uint8
}

// Defaults of SessionConfig, those of FRR's bfdd and MetalLB.
const (
	DefaultInterval   = 300 * time.Millisecond
	DefaultMultiplier = 3
)

func (c SessionConfig) timers() Timers {
	t := Timers{DesiredMinTx: c.DesiredMinTx, RequiredMinRx: c.RequiredMinRx, DetectMultiplier: c.DetectMultiplier}
	if t.DesiredMinTx == 0 {
		t.DesiredMinTx = DefaultInterval
	}
	if t.RequiredMinRx == 0 {
		t.RequiredMinRx = DefaultInterval
	}
	if t.DetectMultiplier == 0 {
		t.DetectMultiplier = DefaultMultiplier
	}
	return t
}

// SessionState is a snapshot of one session, for status and metrics.
type SessionState struct {
	Peer, Local   netip.Addr
	Interface     string
	State         State
	RemoteState   State
	Diag          Diag // our reason for the last change
	RemoteDiag    Diag // the peer's
	LocalDiscr    uint32
	RemoteDiscr   uint32
	DetectTime    time.Duration // 0 until the peer was heard
	TxInterval    time.Duration // before jitter
	LastChange    time.Time
	UpTransitions uint64
	// LastDown is why the session last went down from Up (zero before):
	// the diagnostics at that moment, which the current Diag and
	// RemoteDiag no longer show once the session is back.
	LastDown DownCause
	Counters Counters
}

// DownCause is the state of a session's variables when it left Up.
type DownCause struct {
	Diag, RemoteDiag Diag
	RemoteState      State
}

// Counters count packets; the Manager keeps one set in total and one per
// session.
type Counters struct {
	TxPackets, RxPackets uint64
	// RxDropped counts received packets discarded: malformed, failing
	// the RFC 5880 6.8.6 checks, a TTL other than 255, or for no session.
	RxDropped  uint64
	RxBadTTL   uint64
	TxErrors   uint64
	DownEvents uint64
}

type counters struct {
	tx, rx, dropped, badTTL, txErr, down atomic.Uint64
}

func (c *counters) snapshot() Counters {
	return Counters{TxPackets: c.tx.Load(), RxPackets: c.rx.Load(), RxDropped: c.dropped.Load(),
		RxBadTTL: c.badTTL.Load(), TxErrors: c.txErr.Load(), DownEvents: c.down.Load()}
}

// Manager runs BFD sessions.
type Manager struct {
	log       *slog.Logger
	transport Transport
	clock     Clock
	changed   chan struct{}
	counters  counters

	mu      sync.RWMutex
	byPeer  map[netip.Addr]*session
	byDiscr map[uint32]*session
	readers [2]PacketReader // [0] IPv4, [1] IPv6
	closed  bool
	wg      sync.WaitGroup
}

// New returns a Manager without sessions. Sockets are opened by AddSession.
func New(cfg Config) *Manager {
	m := &Manager{
		log:       cfg.Logger,
		transport: cfg.Transport,
		clock:     cfg.Clock,
		changed:   make(chan struct{}, 1),
		byPeer:    map[netip.Addr]*session{},
		byDiscr:   map[uint32]*session{},
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.transport == nil {
		m.transport = KernelTransport{}
	}
	if m.clock == nil {
		m.clock = realClock{}
	}
	return m
}

// Changed receives a value after one or more sessions changed state. It is
// coalescing (a channel of size one): read State or Sessions for the level.
func (m *Manager) Changed() <-chan struct{} { return m.changed }

func (m *Manager) notify() {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// Counters returns the Manager's packet counters.
func (m *Manager) Counters() Counters { return m.counters.snapshot() }

// AddSession starts a session to cfg.Peer, or changes the timers of the
// existing one (with a Poll Sequence when Up). ctx bounds nothing beyond
// the call; sessions live until RemoveSession or Close.
func (m *Manager) AddSession(_ context.Context, cfg SessionConfig) error {
	if !cfg.Peer.IsValid() || !cfg.Local.IsValid() {
		return fmt.Errorf("bfd session: local %v and peer %v must both be set", cfg.Local, cfg.Peer)
	}
	if cfg.Peer.Unmap().Is4() != cfg.Local.Unmap().Is4() {
		return fmt.Errorf("bfd session %v: local %v is of another address family", cfg.Peer, cfg.Local)
	}
	peer := cfg.Peer.Unmap().WithZone("")
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("bfd: manager closed")
	}
	if s, ok := m.byPeer[peer]; ok {
		if s.cfg.Local != cfg.Local || s.cfg.Interface != cfg.Interface {
			return fmt.Errorf("bfd session %v exists with local %v interface %q", peer, s.cfg.Local, s.cfg.Interface)
		}
		s.setTimers(cfg.timers())
		return nil
	}
	v6 := !peer.Is4()
	if err := m.listen(v6); err != nil {
		return err
	}
	w, err := m.transport.OpenSender(cfg.Local.Unmap(), cfg.Interface)
	if err != nil {
		return fmt.Errorf("bfd session %v: %w", peer, err)
	}
	s := &session{m: m, cfg: cfg, peer: peer, w: w,
		dst: netip.AddrPortFrom(cfg.Peer.Unmap(), ControlPort), lastChange: m.clock.Now()}
	s.fsm = newFSM(m.newDiscr(), cfg.timers())
	m.byPeer[peer] = s
	m.byDiscr[s.fsm.localDiscr] = s
	s.start()
	m.log.Info("bfd session added", "peer", peer, "local", cfg.Local, "interface", cfg.Interface,
		"discriminator", s.fsm.localDiscr)
	return nil
}

// RemoveSession tells the peer the session is AdminDown (a few packets,
// RFC 5880 6.8.16) and removes it. Removing an unknown peer is no error.
func (m *Manager) RemoveSession(peer netip.Addr) error {
	peer = peer.Unmap().WithZone("")
	m.mu.Lock()
	s, ok := m.byPeer[peer]
	if ok {
		delete(m.byPeer, peer)
		delete(m.byDiscr, s.fsm.localDiscr)
	}
	m.mu.Unlock()
	if !ok {
		return nil
	}
	s.stop()
	m.notify()
	m.log.Info("bfd session removed", "peer", peer)
	return nil
}

// State returns the state of the session to peer; false when there is none.
func (m *Manager) State(peer netip.Addr) (SessionState, bool) {
	m.mu.RLock()
	s, ok := m.byPeer[peer.Unmap().WithZone("")]
	m.mu.RUnlock()
	if !ok {
		return SessionState{}, false
	}
	return s.snapshot(), true
}

// Sessions returns the state of every session.
func (m *Manager) Sessions() []SessionState {
	m.mu.RLock()
	ss := make([]*session, 0, len(m.byPeer))
	for _, s := range m.byPeer {
		ss = append(ss, s)
	}
	m.mu.RUnlock()
	out := make([]SessionState, 0, len(ss))
	for _, s := range ss {
		out = append(out, s.snapshot())
	}
	return out
}

// Close removes every session (sending AdminDown) and closes the sockets.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	ss := make([]*session, 0, len(m.byPeer))
	for p, s := range m.byPeer {
		ss = append(ss, s)
		delete(m.byPeer, p)
		delete(m.byDiscr, s.fsm.localDiscr)
	}
	readers := m.readers
	m.mu.Unlock()
	for _, s := range ss {
		s.stop()
	}
	var errs []error
	for _, r := range readers {
		if r != nil {
			errs = append(errs, r.Close())
		}
	}
	m.wg.Wait()
	return errors.Join(errs...)
}

// newDiscr returns a random non-zero discriminator unique in this Manager
// (RFC 5880 6.8.1). Called with m.mu held.
func (m *Manager) newDiscr() uint32 {
	for {
		d := rand.Uint32()
		if _, taken := m.byDiscr[d]; d != 0 && !taken {
			return d
		}
	}
}

// listen opens the receive socket of a family on first use. Called with
// m.mu held.
func (m *Manager) listen(v6 bool) error {
	i := 0
	if v6 {
		i = 1
	}
	if m.readers[i] != nil {
		return nil
	}
	r, err := m.transport.ListenControl(v6)
	if err != nil {
		return fmt.Errorf("bfd: %w", err)
	}
	m.readers[i] = r
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.readLoop(r)
	}()
	return nil
}

// maxPacket is larger than any control packet (24 bytes, plus at most 28
// of authentication), so a longer datagram is detected as malformed.
const maxPacket = 128

func (m *Manager) readLoop(r PacketReader) {
	buf := make([]byte, maxPacket)
	var h bfd.BFDHeader
	for {
		n, src, ttl, err := r.ReadPacket(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			m.log.Warn("bfd receive", "error", err)
			time.Sleep(10 * time.Millisecond) // no busy loop on a persistent error
			continue
		}
		m.handlePacket(buf[:n], src, ttl, &h)
	}
}

// handlePacket is the receive hot path: check, match to a session, run the
// state machine. It does not allocate (BenchmarkReceive).
func (m *Manager) handlePacket(b []byte, src netip.AddrPort, ttl int, h *bfd.BFDHeader) {
	m.counters.rx.Add(1)
	// RFC 5881 section 5: a single-hop packet MUST arrive with TTL/hop
	// limit 255, or it may come from off the link.
	if ttl != requiredTTL {
		m.counters.badTTL.Add(1)
		m.counters.dropped.Add(1)
		return
	}
	if err := decode(b, h); err != nil {
		m.counters.dropped.Add(1)
		return
	}
	peer := src.Addr().Unmap().WithZone("")
	m.mu.RLock()
	var s *session
	if h.YourDiscriminator != 0 {
		s = m.byDiscr[h.YourDiscriminator]
	} else {
		s = m.byPeer[peer]
	}
	m.mu.RUnlock()
	// The discriminator must also belong to the packet's sender, so that
	// another host cannot drive our session.
	if s == nil || s.peer != peer {
		m.counters.dropped.Add(1)
		return
	}
	s.receive(h)
}
