package bfd

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/osrg/gobgp/v4/pkg/packet/bfd"
)

var testTimers = Timers{DesiredMinTx: 300 * time.Millisecond, RequiredMinRx: 300 * time.Millisecond, DetectMultiplier: 3}

// view is the part of fsm the tests compare.
type view struct {
	State, RemoteState State
	Diag               Diag
	RemoteDiscr        uint32
	Poll, Final        bool
	TxInterval         time.Duration
	DetectTime         time.Duration
	AdvertisedTx       time.Duration
}

func viewOf(f *fsm) view {
	return view{State: f.state, RemoteState: f.remoteState, Diag: f.diag, RemoteDiscr: f.remoteDiscr,
		Poll: f.pollActive, Final: f.sendFinal, TxInterval: f.txInterval(), DetectTime: f.detectTime(),
		AdvertisedTx: f.desiredMinTx()}
}

// pkt is a packet from the peer (discriminator 7) with 300 ms timers.
func pkt(st State, mods ...func(*bfd.BFDHeader)) bfd.BFDHeader {
	h := bfd.BFDHeader{Version: 1, State: st, DetectTimeMultiplier: 3, MyDiscriminator: 7, YourDiscriminator: 1,
		DesiredMinTxInterval: 300000, RequiredMinRxInterval: 300000}
	if st == StateDown {
		h.YourDiscriminator = 0
	}
	for _, m := range mods {
		m(&h)
	}
	return h
}

func poll(h *bfd.BFDHeader)  { h.Poll = true }
func final(h *bfd.BFDHeader) { h.Final = true }
func slowTx(h *bfd.BFDHeader) {
	h.DesiredMinTxInterval = 1000000
}

func TestFSMReceive(t *testing.T) {
	const ms = time.Millisecond
	tests := []struct {
		name  string
		setup func(f *fsm)
		in    []bfd.BFDHeader
		want  view
		res   rxResult // of the last packet
	}{
		{
			name: "Down hears Down: Init, at the slow rate",
			in:   []bfd.BFDHeader{pkt(StateDown, slowTx)},
			want: view{State: StateInit, RemoteState: StateDown, RemoteDiscr: 7, TxInterval: time.Second,
				DetectTime: 3 * time.Second, AdvertisedTx: time.Second},
			res: rxResult{changed: true, sendNow: true},
		},
		{
			name: "Down hears Init: Up, polls for the fast rate which applies at once (a decrease)",
			in:   []bfd.BFDHeader{pkt(StateInit, slowTx)},
			want: view{State: StateUp, RemoteState: StateInit, RemoteDiscr: 7, Poll: true, TxInterval: 300 * ms,
				DetectTime: 3 * time.Second, AdvertisedTx: 300 * ms},
			res: rxResult{changed: true, sendNow: true},
		},
		{
			name: "Down hears Up: stays Down (RFC 5880 6.8.6 has no such transition)",
			in:   []bfd.BFDHeader{pkt(StateUp)},
			want: view{State: StateDown, RemoteState: StateUp, RemoteDiscr: 7, TxInterval: time.Second,
				DetectTime: 900 * ms, AdvertisedTx: time.Second},
		},
		{
			name: "three-way handshake: Down, Init, Up",
			in:   []bfd.BFDHeader{pkt(StateDown, slowTx), pkt(StateUp, slowTx)},
			want: view{State: StateUp, RemoteState: StateUp, RemoteDiscr: 7, Poll: true, TxInterval: 300 * ms,
				DetectTime: 3 * time.Second, AdvertisedTx: 300 * ms},
			res: rxResult{changed: true, sendNow: true},
		},
		{
			name: "Final ends our Poll Sequence",
			in:   []bfd.BFDHeader{pkt(StateInit, slowTx), pkt(StateUp, final)},
			want: view{State: StateUp, RemoteState: StateUp, RemoteDiscr: 7, TxInterval: 300 * ms,
				DetectTime: 900 * ms, AdvertisedTx: 300 * ms},
		},
		{
			name: "the peer's Poll is answered with a Final at once",
			in:   []bfd.BFDHeader{pkt(StateInit), pkt(StateUp, final), pkt(StateUp, poll)},
			want: view{State: StateUp, RemoteState: StateUp, RemoteDiscr: 7, Final: true, TxInterval: 300 * ms,
				DetectTime: 900 * ms, AdvertisedTx: 300 * ms},
			res: rxResult{sendNow: true},
		},
		{
			name: "Up hears Down: Down with diag neighbor signaled session down, back to 1 s",
			in:   []bfd.BFDHeader{pkt(StateInit), pkt(StateDown)},
			want: view{State: StateDown, RemoteState: StateDown, Diag: bfd.DiagnosticNeighborSignaledSessionDown,
				RemoteDiscr: 7, TxInterval: time.Second, DetectTime: 900 * ms, AdvertisedTx: time.Second},
			res: rxResult{changed: true, sendNow: true},
		},
		{
			name: "Up hears AdminDown: Down, diag 3",
			in:   []bfd.BFDHeader{pkt(StateInit), pkt(StateAdminDown)},
			want: view{State: StateDown, RemoteState: StateAdminDown, Diag: bfd.DiagnosticNeighborSignaledSessionDown,
				RemoteDiscr: 7, TxInterval: time.Second, DetectTime: 900 * ms, AdvertisedTx: time.Second},
			res: rxResult{changed: true, sendNow: true},
		},
		{
			name: "Init hears AdminDown: Down",
			in:   []bfd.BFDHeader{pkt(StateDown), pkt(StateAdminDown)},
			want: view{State: StateDown, RemoteState: StateAdminDown, Diag: bfd.DiagnosticNeighborSignaledSessionDown,
				RemoteDiscr: 7, TxInterval: time.Second, DetectTime: 900 * ms, AdvertisedTx: time.Second},
			res: rxResult{changed: true, sendNow: true},
		},
		{
			name: "Down hears AdminDown: stays Down, diag unchanged",
			in:   []bfd.BFDHeader{pkt(StateAdminDown)},
			want: view{State: StateDown, RemoteState: StateAdminDown, RemoteDiscr: 7, TxInterval: time.Second,
				DetectTime: 900 * ms, AdvertisedTx: time.Second},
		},
		{
			name:  "AdminDown ignores the peer's state",
			setup: func(f *fsm) { f.adminDown() },
			in:    []bfd.BFDHeader{pkt(StateInit)},
			want: view{State: StateAdminDown, RemoteState: StateInit, Diag: bfd.DiagnosticAdministrativelyDown,
				RemoteDiscr: 7, TxInterval: time.Second, DetectTime: 900 * ms, AdvertisedTx: time.Second},
		},
		{
			name: "detection time uses the larger of our RequiredMinRx and the peer's DesiredMinTx, times its multiplier",
			in: []bfd.BFDHeader{pkt(StateDown, func(h *bfd.BFDHeader) {
				h.DetectTimeMultiplier = 5
				h.DesiredMinTxInterval = 100000
			})},
			want: view{State: StateInit, RemoteState: StateDown, RemoteDiscr: 7, TxInterval: time.Second,
				DetectTime: 1500 * ms, AdvertisedTx: time.Second},
			res: rxResult{changed: true, sendNow: true},
		},
		{
			name: "the peer's larger RequiredMinRx slows our transmission",
			in: []bfd.BFDHeader{pkt(StateInit), pkt(StateUp, final, func(h *bfd.BFDHeader) {
				h.RequiredMinRxInterval = 500000
			})},
			want: view{State: StateUp, RemoteState: StateUp, RemoteDiscr: 7, TxInterval: 500 * ms,
				DetectTime: 900 * ms, AdvertisedTx: 300 * ms},
		},
		{
			name: "the peer's RequiredMinRx of zero stops periodic transmission",
			in: []bfd.BFDHeader{pkt(StateDown, func(h *bfd.BFDHeader) {
				h.RequiredMinRxInterval = 0
			})},
			want: view{State: StateInit, RemoteState: StateDown, RemoteDiscr: 7, TxInterval: 0,
				DetectTime: 900 * ms, AdvertisedTx: time.Second},
			res: rxResult{changed: true, sendNow: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFSM(1, testTimers)
			if tt.setup != nil {
				tt.setup(&f)
			}
			var res rxResult
			for i := range tt.in {
				res = f.receive(&tt.in[i])
			}
			if diff := cmp.Diff(tt.want, viewOf(&f)); diff != "" {
				t.Errorf("state (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.res, res, cmp.AllowUnexported(rxResult{})); diff != "" {
				t.Errorf("result (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFSMDetectExpired(t *testing.T) {
	tests := []struct {
		name    string
		in      []bfd.BFDHeader
		changed bool
		want    view
	}{
		{
			name:    "Up goes Down with diag 1 and forgets the peer",
			in:      []bfd.BFDHeader{pkt(StateInit)},
			changed: true,
			want: view{State: StateDown, RemoteState: StateDown, Diag: bfd.DiagnosticControlDetectionTimeExpired,
				TxInterval: time.Second, AdvertisedTx: time.Second},
		},
		{
			name:    "Init goes Down",
			in:      []bfd.BFDHeader{pkt(StateDown)},
			changed: true,
			want: view{State: StateDown, RemoteState: StateDown, Diag: bfd.DiagnosticControlDetectionTimeExpired,
				TxInterval: time.Second, AdvertisedTx: time.Second},
		},
		{
			name: "Down stays Down",
			want: view{State: StateDown, RemoteState: StateDown, TxInterval: time.Second, AdvertisedTx: time.Second},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFSM(1, testTimers)
			for i := range tt.in {
				f.receive(&tt.in[i])
			}
			if got := f.detectExpired(); got != tt.changed {
				t.Errorf("changed = %v, want %v", got, tt.changed)
			}
			if diff := cmp.Diff(tt.want, viewOf(&f)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// An increase of our transmit interval while Up waits for the Final of the
// Poll Sequence (RFC 5880 6.8.3); a decrease applies at once.
func TestFSMSetTimers(t *testing.T) {
	f := newFSM(1, testTimers)
	f.receive(ptr(pkt(StateInit)))
	f.receive(ptr(pkt(StateUp, final)))

	slower := testTimers
	slower.DesiredMinTx = 600 * time.Millisecond
	f.setTimers(slower)
	got := []view{viewOf(&f)}
	var h bfd.BFDHeader
	f.header(&h)
	f.receive(ptr(pkt(StateUp, final)))
	got = append(got, viewOf(&f))
	faster := testTimers
	faster.DesiredMinTx = 100 * time.Millisecond
	f.setTimers(faster)
	got = append(got, viewOf(&f))

	ms := time.Millisecond
	want := []view{
		{State: StateUp, RemoteState: StateUp, RemoteDiscr: 7, Poll: true, TxInterval: 300 * ms, DetectTime: 900 * ms, AdvertisedTx: 600 * ms},
		{State: StateUp, RemoteState: StateUp, RemoteDiscr: 7, TxInterval: 600 * ms, DetectTime: 900 * ms, AdvertisedTx: 600 * ms},
		{State: StateUp, RemoteState: StateUp, RemoteDiscr: 7, Poll: true, TxInterval: 300 * ms, DetectTime: 900 * ms, AdvertisedTx: 100 * ms},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if !h.Poll || h.DesiredMinTxInterval != 600000 {
		t.Errorf("packet during the Poll Sequence = %+v, want P and Desired Min TX 600000", h)
	}
}

func ptr[T any](v T) *T { return &v }

func TestFSMHeader(t *testing.T) {
	f := newFSM(0x01020304, testTimers)
	var got []bfd.BFDHeader
	var h bfd.BFDHeader
	f.header(&h)
	got = append(got, h)
	f.receive(ptr(pkt(StateInit, poll))) // Up, our Poll running, and a Final owed
	f.header(&h)
	got = append(got, h)
	f.header(&h)
	got = append(got, h)
	want := []bfd.BFDHeader{
		{Version: 1, State: StateDown, DetectTimeMultiplier: 3, MyDiscriminator: 0x01020304,
			DesiredMinTxInterval: 1000000, RequiredMinRxInterval: 300000},
		// P and F never together: the Final first.
		{Version: 1, State: StateUp, Final: true, DetectTimeMultiplier: 3, MyDiscriminator: 0x01020304,
			YourDiscriminator: 7, DesiredMinTxInterval: 300000, RequiredMinRxInterval: 300000},
		{Version: 1, State: StateUp, Poll: true, DetectTimeMultiplier: 3, MyDiscriminator: 0x01020304,
			YourDiscriminator: 7, DesiredMinTxInterval: 300000, RequiredMinRxInterval: 300000},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestJitter(t *testing.T) {
	const iv = 1000 * time.Millisecond
	tests := []struct {
		mult    uint8
		r       uint32
		want    time.Duration
		comment string
	}{
		{3, 0, iv, "no reduction"},
		{3, 2500, 750 * time.Millisecond, "the largest reduction, 25 %"},
		{3, 2501, iv, "wraps around"},
		{3, 1000, 900 * time.Millisecond, "10 %"},
		{1, 0, 900 * time.Millisecond, "multiplier 1: at least 10 %"},
		{1, 1500, 750 * time.Millisecond, "multiplier 1: at most 25 %"},
	}
	for _, tt := range tests {
		if got := jitter(iv, tt.mult, tt.r); got != tt.want {
			t.Errorf("jitter(%v, %d, %d) = %v, want %v (%s)", iv, tt.mult, tt.r, got, tt.want, tt.comment)
		}
	}
	// The bounds hold for any random number.
	for r := uint32(0); r < 100000; r += 7 {
		for _, m := range []uint8{1, 3} {
			got := jitter(iv, m, r*2654435761)
			lo := 750 * time.Millisecond
			hi := iv
			if m == 1 {
				hi = 900 * time.Millisecond
			}
			if got < lo || got > hi {
				t.Fatalf("jitter(%v, %d, %d) = %v, outside [%v, %v]", iv, m, r, got, lo, hi)
			}
		}
	}
}

// A decrease of our Required Min RX while Up shortens the detection time
// only when the Poll Sequence ends: until the peer saw the new value it may
// still send at the old, slower rate (RFC 5880 6.8.3). An increase applies
// at once.
func TestFSMSetTimersRx(t *testing.T) {
	slow := testTimers
	slow.RequiredMinRx = time.Second
	f := newFSM(1, slow)
	f.receive(ptr(pkt(StateInit)))
	f.receive(ptr(pkt(StateUp, final)))
	got := []time.Duration{f.detectTime()}

	f.setTimers(testTimers) // 1 s -> 300 ms
	got = append(got, f.detectTime())
	f.receive(ptr(pkt(StateUp)))
	got = append(got, f.detectTime())
	f.receive(ptr(pkt(StateUp, final)))
	got = append(got, f.detectTime())

	slower := testTimers
	slower.RequiredMinRx = 2 * time.Second
	f.setTimers(slower)
	got = append(got, f.detectTime())

	want := []time.Duration{3 * time.Second, 3 * time.Second, 3 * time.Second, 900 * time.Millisecond, 6 * time.Second}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("detection times (-want +got):\n%s", diff)
	}
}
