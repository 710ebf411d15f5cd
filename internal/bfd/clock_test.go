package bfd

import (
	"context"
	"net/netip"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/osrg/gobgp/v4/pkg/packet/bfd"
)

// fakeClock runs timers only when Advance moves time past them, calling
// their functions synchronously in deadline order.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c      *fakeClock
	f      func()
	when   time.Time
	active bool
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_800_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, f: f, when: c.now.Add(d), active: true}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.active
	t.when, t.active = t.c.now.Add(d), true
	return was
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.active
	t.active = false
	return was
}

// Advance moves time forward by d, firing every timer that falls due on
// the way at its own time.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		sort.SliceStable(c.timers, func(i, j int) bool { return c.timers[i].when.Before(c.timers[j].when) })
		var next *fakeTimer
		for _, t := range c.timers {
			if t.active && !t.when.After(end) {
				next = t
				break
			}
		}
		if next == nil {
			c.now = end
			c.mu.Unlock()
			return
		}
		c.now = next.when
		next.active = false
		c.mu.Unlock()
		next.f()
	}
}

// countingWriter counts the packets of a session.
type countingWriter struct {
	mu sync.Mutex
	n  int
}

func (w *countingWriter) WritePacket([]byte, netip.AddrPort) error {
	w.mu.Lock()
	w.n++
	w.mu.Unlock()
	return nil
}
func (w *countingWriter) Close() error { return nil }
func (w *countingWriter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

type fakeTransport struct{ w *countingWriter }

func (fakeTransport) ListenControl(bool) (PacketReader, error) {
	return &memReader{ch: make(chan memPacket), done: make(chan struct{})}, nil
}
func (t fakeTransport) OpenSender(netip.Addr, string) (PacketWriter, error) { return t.w, nil }

// The Manager's timers on a fake clock: the detection time is exact, and
// the transmit rate is the configured one less 0–25 % jitter while Up and
// one packet a second while Down.
func TestSessionTimersFakeClock(t *testing.T) {
	clock, w := newFakeClock(), &countingWriter{}
	m := New(Config{Transport: fakeTransport{w}, Clock: clock, Logger: testLogger(t, "m")})
	defer m.Close()
	local, peer := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	if err := m.AddSession(context.Background(), SessionConfig{Local: local, Peer: peer}); err != nil {
		t.Fatal(err)
	}
	m.mu.RLock()
	s := m.byPeer[peer]
	m.mu.RUnlock()
	state := func() State { st, _ := m.State(peer); return st.State }

	// While Down and unheard: one packet a second (the first at once).
	n0 := w.count()
	clock.Advance(10 * time.Second)
	if got := w.count() - n0; got < 10 || got > 14 {
		t.Errorf("Down: %d packets in 10 s, want 10-14 (1 s less 0-25 %% jitter)", got)
	}

	// Up through the handshake, the Poll answered.
	s.receive(ptr(pkt(StateInit)))
	s.receive(ptr(pkt(StateUp, final)))
	if st := state(); st != StateUp {
		t.Fatalf("state %v, want Up", st)
	}
	n0 = w.count()
	// Keep the peer alive every 300 ms for 30 s, and count our packets.
	for range 100 {
		clock.Advance(300 * time.Millisecond)
		s.receive(ptr(pkt(StateUp)))
	}
	if st := state(); st != StateUp {
		t.Fatalf("state %v while the peer kept sending, want Up", st)
	}
	if got := w.count() - n0; got < 100 || got > 134 {
		t.Errorf("Up: %d packets in 30 s, want 100-134 (300 ms less 0-25 %% jitter)", got)
	}

	// Silence: Up for 899 ms, Down at 900 ms (3 × 300 ms).
	clock.Advance(899 * time.Millisecond)
	if st := state(); st != StateUp {
		t.Fatalf("state %v 899 ms after the last packet, want Up", st)
	}
	clock.Advance(time.Millisecond)
	st, _ := m.State(peer)
	if st.State != StateDown || st.Diag != DiagControlDetectionTimeExpired {
		t.Fatalf("900 ms after the last packet: %v diag %v, want Down with %v", st.State, st.Diag, DiagControlDetectionTimeExpired)
	}
	if want := clock.Now(); !st.LastChange.Equal(want) {
		t.Errorf("LastChange %v, want %v", st.LastChange, want)
	}
}

// A peer that lowers its Required Min RX (as FRR's bfdd does when it goes
// Up, from its slow rate) gets our next packet at the new, shorter
// interval, not when the timer armed with the old one fires: its
// detection time shrinks with it (FRR declared us down 0.9 s after Up).
func TestShorterRemoteMinRxAppliesAtOnce(t *testing.T) {
	clock, w := newFakeClock(), &countingWriter{}
	m := New(Config{Transport: fakeTransport{w}, Clock: clock, Logger: testLogger(t, "m")})
	defer m.Close()
	local, peer := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	if err := m.AddSession(context.Background(), SessionConfig{Local: local, Peer: peer}); err != nil {
		t.Fatal(err)
	}
	m.mu.RLock()
	s := m.byPeer[peer]
	m.mu.RUnlock()
	slowRx := func(h *bfd.BFDHeader) { h.RequiredMinRxInterval = 2000000 }
	s.receive(ptr(pkt(StateInit, slowRx))) // we go Up; the peer wants 2 s
	if st, _ := m.State(peer); st.State != StateUp {
		t.Fatalf("state %v, want Up", st.State)
	}
	clock.Advance(100 * time.Millisecond)
	s.receive(ptr(pkt(StateUp))) // the peer now wants 300 ms
	n0 := w.count()
	clock.Advance(300 * time.Millisecond)
	if got := w.count() - n0; got < 1 {
		t.Errorf("%d packets in the 300 ms after the peer asked for 300 ms, want at least 1", got)
	}
}
