package bfd

import (
	"net/netip"
	"testing"
	"time"

	"github.com/osrg/gobgp/v4/pkg/packet/bfd"
)

// nullWriter is a PacketWriter that drops packets, so that the benchmark
// measures our transmit path, not the kernel.
type nullWriter struct{ n int }

func (w *nullWriter) WritePacket(b []byte, _ netip.AddrPort) error { w.n += len(b); return nil }
func (w *nullWriter) Close() error                                 { return nil }

func benchSession(b testing.TB) (*Manager, *session) {
	m := New(Config{})
	peer := netip.MustParseAddr("192.0.2.2")
	s := &session{m: m, cfg: SessionConfig{Local: netip.MustParseAddr("192.0.2.1"), Peer: peer}, peer: peer,
		dst: netip.AddrPortFrom(peer, ControlPort), w: &nullWriter{}}
	s.fsm = newFSM(1, testTimers)
	s.txTimer = time.AfterFunc(time.Hour, func() {})
	s.detect = time.AfterFunc(time.Hour, func() {})
	b.Cleanup(func() { s.txTimer.Stop(); s.detect.Stop() })
	m.byPeer[peer] = s
	m.byDiscr[1] = s
	// Bring the session Up, as in steady state.
	s.receive(ptr(pkt(StateInit)))
	s.receive(ptr(pkt(StateUp, final)))
	if s.fsm.state != StateUp {
		b.Fatalf("session is %v, want Up", s.fsm.state)
	}
	return m, s
}

// BenchmarkTransmit is one periodic packet of an Up session: header from the
// state machine, encoding into the session's buffer, the write, the timer
// re-armed with jitter. 0 allocs/op is the requirement.
func BenchmarkTransmit(b *testing.B) {
	_, s := benchSession(b)
	b.ReportAllocs()
	for b.Loop() {
		s.onTx()
	}
}

// BenchmarkReceive is one received packet of an Up session: TTL check,
// the library's decoder, the checks of RFC 5880 6.8.6, the session lookup,
// the state machine and the detection timer reset. 0 allocs/op.
func BenchmarkReceive(b *testing.B) {
	m, _ := benchSession(b)
	var wire [controlLen]byte
	marshalInto(&wire, ptr(pkt(StateUp)))
	src := netip.AddrPortFrom(netip.MustParseAddr("192.0.2.2"), 49152)
	var h bfd.BFDHeader
	b.ReportAllocs()
	for b.Loop() {
		m.handlePacket(wire[:], src, requiredTTL, &h)
	}
	if got := m.Counters().RxDropped; got != 0 {
		b.Fatalf("%d packets dropped", got)
	}
}

// The same paths as the benchmarks, so that an allocation fails the tests
// too and not only shows in a benchmark run.
func TestHotPathDoesNotAllocate(t *testing.T) {
	m, s := benchSession(t)
	if a := testing.AllocsPerRun(1000, s.onTx); a != 0 {
		t.Errorf("transmit: %v allocs per packet, want 0", a)
	}
	var wire [controlLen]byte
	marshalInto(&wire, ptr(pkt(StateUp)))
	src := netip.AddrPortFrom(netip.MustParseAddr("192.0.2.2"), 49152)
	var h bfd.BFDHeader
	if a := testing.AllocsPerRun(1000, func() { m.handlePacket(wire[:], src, requiredTTL, &h) }); a != 0 {
		t.Errorf("receive: %v allocs per packet, want 0", a)
	}
}
