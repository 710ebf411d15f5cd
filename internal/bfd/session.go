package bfd

import (
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"github.com/osrg/gobgp/v4/pkg/packet/bfd"
)

// session is one running BFD session: the fsm under a mutex, its send
// socket, a transmit timer and a detection timer.
type session struct {
	m    *Manager
	cfg  SessionConfig
	peer netip.Addr // unmapped, without zone: the key in Manager.byPeer
	dst  netip.AddrPort
	w    PacketWriter

	mu         sync.Mutex
	fsm        fsm
	stopped    bool
	txTimer    Timer
	detect     Timer
	lastChange time.Time
	ups        uint64
	counters   counters
	// hdr and buf are reused for every packet sent: no allocation per
	// packet (BenchmarkTransmit).
	hdr bfd.BFDHeader
	buf [controlLen]byte
}

// start sends the first packet and arms the timers.
func (s *session) start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.txTimer = s.m.clock.AfterFunc(time.Hour, s.onTx)
	s.detect = s.m.clock.AfterFunc(time.Hour, s.onDetect)
	s.detect.Stop()
	s.sendLocked()
	s.scheduleTxLocked()
}

// stop sends AdminDown a few times (RFC 5880 6.8.16: so that the peer
// goes Down with diag 7 instead of waiting for its detection time) and
// releases the session's timers and socket.
func (s *session) stop() {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	s.txTimer.Stop()
	s.detect.Stop()
	if s.fsm.adminDown() {
		s.lastChange = s.m.clock.Now()
	}
	for range 3 {
		s.sendLocked()
	}
	s.mu.Unlock()
	_ = s.w.Close()
}

func (s *session) setTimers(t Timers) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fsm.setTimers(t)
	s.sendLocked()
	s.scheduleTxLocked()
}

// receive runs a validated packet through the state machine.
func (s *session) receive(h *bfd.BFDHeader) {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.counters.rx.Add(1)
	old := s.fsm.state
	oldTx := s.fsm.txInterval()
	res := s.fsm.receive(h)
	// RFC 5880 6.8.4/6.8.6: every accepted packet restarts the detection
	// timer, with the detection time the packet may just have changed.
	if d := s.fsm.detectTime(); d > 0 {
		s.detect.Reset(d)
	}
	if res.changed {
		s.changedLocked(old)
	}
	if res.sendNow {
		s.sendLocked()
	}
	if res.changed || s.fsm.txInterval() != oldTx && (res.sendNow || s.fsm.txInterval() < oldTx) {
		// The interval changes with the state (1 s outside Up) and with
		// the peer's Required Min RX. A shorter one applies now, not
		// after the timer armed with the old one: a peer going Up lowers
		// its Required Min RX from its slow rate and, with it, its
		// detection time (FRR's bfdd declared us down 0.9 s after Up
		// while our next packet was still 1 s away).
		s.scheduleTxLocked()
	}
	changed := res.changed
	s.mu.Unlock()
	if changed {
		s.m.notify()
	}
}

func (s *session) onDetect() {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	old := s.fsm.state
	changed := s.fsm.detectExpired()
	if changed {
		s.changedLocked(old)
		s.sendLocked()
		s.scheduleTxLocked()
	}
	s.mu.Unlock()
	if changed {
		s.m.notify()
	}
}

func (s *session) onTx() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	s.sendLocked()
	s.scheduleTxLocked()
}

// scheduleTxLocked arms the transmit timer with the jittered interval.
func (s *session) scheduleTxLocked() {
	iv := s.fsm.txInterval()
	if iv == 0 {
		// The peer asked for no packets (Required Min RX 0): check back
		// at the slow rate in case that changes.
		iv = slowTxInterval
	}
	s.txTimer.Reset(jitter(iv, s.fsm.timers.DetectMultiplier, rand.Uint32()))
}

// sendLocked sends one control packet now.
func (s *session) sendLocked() {
	if s.fsm.txInterval() == 0 && !s.fsm.sendFinal {
		return
	}
	s.fsm.header(&s.hdr)
	marshalInto(&s.buf, &s.hdr)
	if err := s.w.WritePacket(s.buf[:], s.dst); err != nil {
		s.counters.txErr.Add(1)
		s.m.counters.txErr.Add(1)
		return
	}
	s.counters.tx.Add(1)
	s.m.counters.tx.Add(1)
}

func (s *session) changedLocked(old State) {
	s.lastChange = s.m.clock.Now()
	st := s.fsm.state
	if st == StateUp {
		s.ups++
	}
	if old == StateUp {
		s.counters.down.Add(1)
		s.m.counters.down.Add(1)
	}
	s.m.log.Info("bfd session state changed", "peer", s.peer, "from", old.String(), "to", st.String(),
		"diag", s.fsm.diag.String(), "remoteDiag", s.fsm.remoteDiag.String())
}

func (s *session) snapshot() SessionState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return SessionState{
		Peer: s.peer, Local: s.cfg.Local, Interface: s.cfg.Interface,
		State: s.fsm.state, RemoteState: s.fsm.remoteState,
		Diag: s.fsm.diag, RemoteDiag: s.fsm.remoteDiag,
		LocalDiscr: s.fsm.localDiscr, RemoteDiscr: s.fsm.remoteDiscr,
		DetectTime: s.fsm.detectTime(), TxInterval: s.fsm.txInterval(),
		LastChange: s.lastChange, UpTransitions: s.ups,
		Counters: s.counters.snapshot(),
	}
}
