package bfd

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/osrg/gobgp/v4/pkg/packet/bfd"
)

// memNet is an in-memory link between Managers, so that the Manager's
// logic (demultiplexing, timers, Changed, AdminDown on removal) is tested
// without root. The kernel path has its own tests in netns_test.go.
type memNet struct {
	mu      sync.Mutex
	readers map[netip.Addr]*memReader
	cut     atomic.Bool // drop every packet
}

type memPacket struct {
	b   []byte
	src netip.AddrPort
}

func newMemNet() *memNet { return &memNet{readers: map[netip.Addr]*memReader{}} }

// transport returns the Transport of a host owning addrs.
func (n *memNet) transport(addrs ...netip.Addr) Transport {
	return memTransport{n: n, addrs: addrs}
}

func (n *memNet) deliver(b []byte, src, dst netip.AddrPort) {
	if n.cut.Load() {
		return
	}
	n.mu.Lock()
	r := n.readers[dst.Addr()]
	n.mu.Unlock()
	if r == nil || dst.Port() != ControlPort {
		return
	}
	select {
	case r.ch <- memPacket{b: append([]byte(nil), b...), src: src}:
	default: // a full queue drops, as a socket buffer would
	}
}

type memTransport struct {
	n     *memNet
	addrs []netip.Addr
}

func (t memTransport) ListenControl(v6 bool) (PacketReader, error) {
	r := &memReader{ch: make(chan memPacket, 64), done: make(chan struct{})}
	t.n.mu.Lock()
	defer t.n.mu.Unlock()
	for _, a := range t.addrs {
		if a.Is6() == v6 {
			t.n.readers[a] = r
		}
	}
	return r, nil
}

func (t memTransport) OpenSender(local netip.Addr, _ string) (PacketWriter, error) {
	return &memWriter{n: t.n, src: netip.AddrPortFrom(local, srcPortMin+7)}, nil
}

type memReader struct {
	ch   chan memPacket
	done chan struct{}
	once sync.Once
}

func (r *memReader) ReadPacket(b []byte) (int, netip.AddrPort, int, error) {
	select {
	case p := <-r.ch:
		return copy(b, p.b), p.src, requiredTTL, nil
	case <-r.done:
		return 0, netip.AddrPort{}, -1, net.ErrClosed
	}
}

func (r *memReader) Close() error { r.once.Do(func() { close(r.done) }); return nil }

type memWriter struct {
	n   *memNet
	src netip.AddrPort
}

func (w *memWriter) WritePacket(b []byte, dst netip.AddrPort) error {
	w.n.deliver(b, w.src, dst)
	return nil
}

func (w *memWriter) Close() error { return nil }

// Fast timers keep the in-memory tests short, with a detection time (500
// ms) long enough for a loaded machine running -race.
var fastSession = SessionConfig{DesiredMinTx: 100 * time.Millisecond, RequiredMinRx: 100 * time.Millisecond, DetectMultiplier: 5}

func TestManagerInMemory(t *testing.T) {
	a, z := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	n := newMemNet()
	ma := New(Config{Transport: n.transport(a), Logger: testLogger(t, "a")})
	mz := New(Config{Transport: n.transport(z), Logger: testLogger(t, "z")})
	t.Cleanup(func() { ma.Close(); mz.Close() })
	ctx := context.Background()
	ca, cz := fastSession, fastSession
	ca.Local, ca.Peer = a, z
	cz.Local, cz.Peer = z, a
	if err := ma.AddSession(ctx, ca); err != nil {
		t.Fatal(err)
	}
	if err := mz.AddSession(ctx, cz); err != nil {
		t.Fatal(err)
	}
	// The handshake runs at the 1 s slow rate, answered at once.
	waitState(t, ma, z, StateUp, 10*time.Second)
	waitState(t, mz, a, StateUp, 10*time.Second)
	sa, _ := ma.State(z)
	sz, _ := mz.State(a)
	if sa.RemoteDiscr != sz.LocalDiscr || sz.RemoteDiscr != sa.LocalDiscr || sa.LocalDiscr == 0 || sz.LocalDiscr == 0 {
		t.Errorf("discriminators: a %d/%d, z %d/%d", sa.LocalDiscr, sa.RemoteDiscr, sz.LocalDiscr, sz.RemoteDiscr)
	}

	// A packet naming a's session but sent from another address is dropped.
	dropped := ma.Counters().RxDropped
	var wire [controlLen]byte
	marshalInto(&wire, &bfd.BFDHeader{Version: 1, State: StateAdminDown, DetectTimeMultiplier: 3,
		MyDiscriminator: sz.LocalDiscr, YourDiscriminator: sa.LocalDiscr})
	n.deliver(wire[:], netip.MustParseAddrPort("192.0.2.99:49152"), netip.AddrPortFrom(a, ControlPort))
	deadline := time.Now().Add(5 * time.Second)
	for ma.Counters().RxDropped == dropped {
		if time.Now().After(deadline) {
			t.Fatal("spoofed packet not counted as dropped")
		}
		time.Sleep(time.Millisecond)
	}
	if st, _ := ma.State(z); st.State != StateUp {
		t.Fatalf("a spoofed AdminDown took the session %v", st.State)
	}

	// Drain Changed, then cut: both sides go Down with diag 1 and Changed
	// fires.
	select {
	case <-ma.Changed():
	default:
	}
	n.cut.Store(true)
	select {
	case <-ma.Changed():
		if st, _ := ma.State(z); st.State != StateDown {
			t.Errorf("Changed fired with the session %v, want Down", st.State)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Changed did not fire for the Down")
	}
	waitState(t, mz, a, StateDown, 5*time.Second)
	for _, st := range append(ma.Sessions(), mz.Sessions()...) {
		if st.Diag != DiagControlDetectionTimeExpired || st.RemoteDiscr != 0 {
			t.Errorf("after the cut: %+v, want diag %v and no remote discriminator", st, DiagControlDetectionTimeExpired)
		}
	}
	n.cut.Store(false)
	waitState(t, ma, z, StateUp, 10*time.Second)
	waitState(t, mz, a, StateUp, 10*time.Second)

	// Changing the timers of an Up session keeps it Up (Poll Sequence).
	cz.DesiredMinTx, cz.RequiredMinRx = 200*time.Millisecond, 200*time.Millisecond
	if err := mz.AddSession(ctx, cz); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		st, _ := ma.State(z)
		if st.State != StateUp {
			t.Fatalf("session went %v during the timer change", st.State)
		}
		if st.DetectTime == time.Second && st.TxInterval == 200*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a's view after z changed its timers: detect %v tx %v, want 1s and 200ms", st.DetectTime, st.TxInterval)
		}
		time.Sleep(5 * time.Millisecond)
	}

	// Close sends AdminDown: z goes Down with diag 3 at once.
	if err := ma.Close(); err != nil {
		t.Fatal(err)
	}
	waitState(t, mz, a, StateDown, 5*time.Second)
	if st, _ := mz.State(a); st.Diag != DiagNeighborSignaledSessionDown {
		t.Errorf("diag %v, want %v", st.Diag, DiagNeighborSignaledSessionDown)
	}
	if err := ma.AddSession(ctx, ca); err == nil {
		t.Error("AddSession on a closed Manager succeeded")
	}
}

func TestAddSessionErrors(t *testing.T) {
	m := New(Config{Transport: newMemNet().transport()})
	defer m.Close()
	ctx := context.Background()
	v4, v6 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	for _, c := range []SessionConfig{
		{Peer: v4},
		{Local: v4},
		{Local: v4, Peer: v6},
	} {
		if err := m.AddSession(ctx, c); err == nil {
			t.Errorf("AddSession(%+v) succeeded", c)
		}
	}
	if err := m.AddSession(ctx, SessionConfig{Local: v4, Peer: netip.MustParseAddr("192.0.2.2")}); err != nil {
		t.Fatal(err)
	}
	if err := m.AddSession(ctx, SessionConfig{Local: netip.MustParseAddr("192.0.2.3"), Peer: netip.MustParseAddr("192.0.2.2")}); err == nil {
		t.Error("a second session to the same peer from another local address succeeded")
	}
	if err := m.RemoveSession(netip.MustParseAddr("192.0.2.9")); err != nil {
		t.Errorf("removing an unknown session: %v", err)
	}
}
