package bfd

import (
	"time"

	"github.com/osrg/gobgp/v4/pkg/packet/bfd"
)

// State is a BFD session state (RFC 5880 section 4.1). The values are the
// wire values.
type State = bfd.StateType

// The session states.
const (
	StateAdminDown = bfd.StateAdminDown
	StateDown      = bfd.StateDown
	StateInit      = bfd.StateInit
	StateUp        = bfd.StateUp
)

// Diag is a BFD diagnostic code (RFC 5880 section 4.1): the reason for the
// last change of state.
type Diag = bfd.DiagnosticType

// The diagnostic codes this implementation sets or callers test for.
const (
	DiagNone                        = bfd.DiagnosticNoDiagnostic
	DiagControlDetectionTimeExpired = bfd.DiagnosticControlDetectionTimeExpired
	DiagNeighborSignaledSessionDown = bfd.DiagnosticNeighborSignaledSessionDown
	DiagAdministrativelyDown        = bfd.DiagnosticAdministrativelyDown
)

// slowTxInterval is the transmit interval while the session is not Up: RFC
// 5880 section 6.8.3 says bfd.DesiredMinTxInterval MUST be at least one
// second then, to keep the packets of idle sessions rare.
const slowTxInterval = time.Second

// Timers are the local timer parameters of one session.
type Timers struct {
	DesiredMinTx     time.Duration
	RequiredMinRx    time.Duration
	DetectMultiplier uint8
}

// fsm is the state of one session's RFC 5880 state machine: the bfd.*
// variables of section 6.8.1, without any I/O. Every method is pure apart
// from mutating the receiver, so the whole protocol logic is table-tested.
type fsm struct {
	timers Timers

	localDiscr, remoteDiscr uint32
	state, remoteState      State
	diag, remoteDiag        Diag

	// remoteMinRx and remoteMinTx are the peer's Required Min RX and
	// Desired Min TX intervals from its last packet; remoteMult its
	// Detect Mult.
	remoteMinRx, remoteMinTx time.Duration
	remoteMult               uint8

	// pollActive: a Poll Sequence is running (we set P until the peer
	// answers with F). sendFinal: the peer polled us and the next packet,
	// sent at once, carries F.
	pollActive bool
	sendFinal  bool
	// appliedTx is the Desired Min TX in force for the transmit interval.
	// RFC 5880 6.8.3: an increase while Up takes effect only when the Poll
	// Sequence ends; a decrease at once.
	appliedTx time.Duration
	// appliedRx is the Required Min RX in force for the detection time.
	// RFC 5880 6.8.3: a decrease while Up takes effect only when the Poll
	// Sequence ends (the peer may still send at the old, slower rate until
	// it saw the new value); an increase at once.
	appliedRx time.Duration
}

func newFSM(discr uint32, t Timers) fsm {
	return fsm{
		timers:      t,
		localDiscr:  discr,
		state:       StateDown,
		remoteState: StateDown,
		// RFC 5880 6.8.1: bfd.RemoteMinRxInterval starts at 1 µs, so that we
		// transmit before we heard from the peer.
		remoteMinRx: time.Microsecond,
		appliedTx:   slowTxInterval,
		appliedRx:   t.RequiredMinRx,
	}
}

// desiredMinTx is the Desired Min TX this side advertises now.
func (f *fsm) desiredMinTx() time.Duration {
	if f.state != StateUp {
		return max(f.timers.DesiredMinTx, slowTxInterval)
	}
	return f.timers.DesiredMinTx
}

// txInterval is the interval between periodic packets before jitter, or 0
// when none are to be sent: RFC 5880 6.8.7, max(bfd.DesiredMinTxInterval,
// bfd.RemoteMinRxInterval), none when the peer's Required Min RX is zero
// or the session is AdminDown with nothing left to say.
func (f *fsm) txInterval() time.Duration {
	if f.remoteMinRx == 0 {
		return 0
	}
	return max(f.appliedTx, f.remoteMinRx)
}

// detectTime is the time without a valid packet after which the session
// goes Down (RFC 5880 6.8.4, asynchronous mode): the peer's Detect Mult
// times max(our Required Min RX, the peer's Desired Min TX). Zero while
// nothing has been received.
func (f *fsm) detectTime() time.Duration {
	if f.remoteDiscr == 0 || f.remoteMult == 0 {
		return 0
	}
	return time.Duration(f.remoteMult) * max(f.appliedRx, f.remoteMinTx)
}

// jitter reduces an interval by a random 0–25 % (RFC 5880 6.8.7), or by
// 10–25 % when the Detect Mult is 1, so that a packet always arrives well
// within a one-packet detection time. r is a uniform random number.
func jitter(interval time.Duration, detectMult uint8, r uint32) time.Duration {
	lo, span := uint64(0), uint64(25) // percent
	if detectMult == 1 {
		lo, span = 10, 15
	}
	// Reduce by lo% + (r mod span+1 scaled into span%), computed in
	// 1/10000ths to keep the distribution fine-grained.
	basis := lo*100 + uint64(r)%(span*100+1)
	return interval - time.Duration(uint64(interval)*basis/10000)
}

// rxResult says what the caller has to do after a received packet.
type rxResult struct {
	// changed: the session state changed.
	changed bool
	// sendNow: send a packet at once (a Final, or a state change the peer
	// should hear without waiting for the timer).
	sendNow bool
}

// receive runs the reception procedure of RFC 5880 6.8.6 for a packet
// that passed the checks of validate and was matched to this session.
func (f *fsm) receive(h *bfd.BFDHeader) rxResult {
	f.remoteDiscr = h.MyDiscriminator
	f.remoteState = h.State
	f.remoteDiag = h.Diagnostic
	f.remoteMinRx = usToDuration(h.RequiredMinRxInterval)
	f.remoteMinTx = usToDuration(h.DesiredMinTxInterval)
	f.remoteMult = h.DetectTimeMultiplier

	var res rxResult
	if h.Final && f.pollActive {
		// The peer acknowledged our new parameters: the Poll Sequence
		// ends, and a delayed increase of our TX interval or decrease of
		// our RX interval applies now.
		f.pollActive = false
		f.appliedTx = f.desiredMinTx()
		f.appliedRx = f.timers.RequiredMinRx
	}
	if h.Poll {
		f.sendFinal = true
		res.sendNow = true
	}
	if f.state == StateAdminDown {
		return res
	}
	old := f.state
	if h.State == StateAdminDown {
		if f.state != StateDown {
			f.goDown(bfd.DiagnosticNeighborSignaledSessionDown)
		}
	} else {
		switch f.state {
		case StateDown:
			switch h.State {
			case StateDown:
				f.setState(StateInit)
			case StateInit:
				f.setState(StateUp)
			}
		case StateInit:
			if h.State == StateInit || h.State == StateUp {
				f.setState(StateUp)
			}
		case StateUp:
			if h.State == StateDown {
				f.goDown(bfd.DiagnosticNeighborSignaledSessionDown)
			}
		}
	}
	if f.state != old {
		res.changed = true
		res.sendNow = true
	}
	return res
}

// detectExpired handles the expiry of the detection timer (RFC 5880 6.8.4).
// It reports whether the state changed.
func (f *fsm) detectExpired() bool {
	// RFC 5880 6.8.1: bfd.RemoteDiscr is zeroed when the detection time
	// passes, and we stop assuming anything about the silent peer.
	f.remoteDiscr = 0
	f.remoteState = StateDown
	f.remoteMinRx = time.Microsecond
	f.remoteMinTx = 0
	f.remoteMult = 0
	if f.state == StateInit || f.state == StateUp {
		f.goDown(bfd.DiagnosticControlDetectionTimeExpired)
		return true
	}
	return false
}

// adminDown puts the session into AdminDown (before it is removed): the
// peer hears it in the next packets and takes its side Down with diag 3
// rather than waiting for the detection time.
func (f *fsm) adminDown() bool {
	if f.state == StateAdminDown {
		return false
	}
	f.diag = bfd.DiagnosticAdministrativelyDown
	f.setState(StateAdminDown)
	return true
}

func (f *fsm) goDown(d Diag) {
	f.diag = d
	f.setState(StateDown)
}

// setState changes the state and the timer parameters that depend on it:
// Up switches from the 1 s slow rate to the configured one, which is a
// change of bfd.DesiredMinTxInterval and so starts a Poll Sequence (RFC
// 5880 6.8.3). Leaving Up goes back to the slow rate at once (no Poll is
// needed outside Up) and ends any Poll Sequence.
func (f *fsm) setState(s State) {
	f.state = s
	if s == StateUp {
		f.diag = bfd.DiagnosticNoDiagnostic
		f.pollActive = true
		// A decrease of our TX interval applies at once; an increase
		// waits for the Final.
		if d := f.desiredMinTx(); d < f.appliedTx {
			f.appliedTx = d
		}
		return
	}
	f.pollActive = false
	f.appliedTx = f.desiredMinTx()
}

// setTimers changes the configured timers of a running session. While Up it
// starts a Poll Sequence; an increase of our TX interval and a decrease of
// our RX interval wait for its end.
func (f *fsm) setTimers(t Timers) {
	f.timers = t
	if f.state != StateUp {
		f.appliedTx = f.desiredMinTx()
		f.appliedRx = t.RequiredMinRx
		return
	}
	f.pollActive = true
	if d := f.desiredMinTx(); d < f.appliedTx {
		f.appliedTx = d
	}
	if t.RequiredMinRx > f.appliedRx {
		f.appliedRx = t.RequiredMinRx
	}
}

// header fills h with the packet to send now (RFC 5880 6.8.7) and clears a
// pending Final, which goes out in this packet. P and F are never both set:
// a Final takes precedence and the Poll goes in the next packet.
func (f *fsm) header(h *bfd.BFDHeader) {
	*h = bfd.BFDHeader{
		Version:               1,
		Diagnostic:            f.diag,
		State:                 f.state,
		DetectTimeMultiplier:  f.timers.DetectMultiplier,
		MyDiscriminator:       f.localDiscr,
		YourDiscriminator:     f.remoteDiscr,
		DesiredMinTxInterval:  durationToUs(f.desiredMinTx()),
		RequiredMinRxInterval: durationToUs(f.timers.RequiredMinRx),
	}
	if f.sendFinal {
		h.Final = true
		f.sendFinal = false
	} else if f.pollActive {
		h.Poll = true
	}
}

func usToDuration(us uint32) time.Duration { return time.Duration(us) * time.Microsecond }

func durationToUs(d time.Duration) uint32 {
	us := d / time.Microsecond
	if us > 0xffffffff {
		return 0xffffffff
	}
	return uint32(us)
}
