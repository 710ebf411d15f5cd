package bfd

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/bgplb/bgplb/internal/netnstest"
	"github.com/osrg/gobgp/v4/pkg/packet/bfd"
	"golang.org/x/sys/unix"
)

// nsTransport opens the kernel's sockets inside a test's network namespace;
// a socket keeps its namespace afterwards, so the Manager's goroutines use
// it from any thread.
type nsTransport struct{ ns *netnstest.NS }

func (t nsTransport) ListenControl(v6 bool) (r PacketReader, err error) {
	err = t.ns.Do(func() error {
		var e error
		r, e = KernelTransport{}.ListenControl(v6)
		return e
	})
	return r, err
}

func (t nsTransport) OpenSender(local netip.Addr, iface string) (w PacketWriter, err error) {
	err = t.ns.Do(func() error {
		var e error
		w, e = KernelTransport{}.OpenSender(local, iface)
		return e
	})
	return w, err
}

func newTestManager(t *testing.T, ns *netnstest.NS) *Manager {
	t.Helper()
	m := New(Config{Transport: nsTransport{ns}, Logger: testLogger(t, ns.Name)})
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// waitState waits until the session to peer is in want, or fails after
// timeout. It returns how long that took.
func waitState(t *testing.T, m *Manager, peer netip.Addr, want State, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		st, ok := m.State(peer)
		if ok && st.State == want {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("session to %v: %v (diag %v) after %v, want %v", peer, st.State, st.Diag, timeout, want)
		}
		select {
		case <-m.Changed():
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Two Managers in two namespaces joined by a veth come Up over IPv4 and
// IPv6; when the link goes down both detect it within the detection time
// (900 ms at 300 ms × 3), and they come Up again when it returns.
func TestTwoManagersUpDownUp(t *testing.T) {
	a := netnstest.New(t, "bfda")
	b := netnstest.New(t, "bfdb")
	netnstest.NoDAD(a)
	netnstest.NoDAD(b)
	netnstest.Veth(t, a, "eth0", "10.77.0.1/24", b, "eth0", "10.77.0.2/24")
	a.Exec("ip", "-6", "addr", "add", "fd00:77::1/64", "dev", "eth0", "nodad")
	b.Exec("ip", "-6", "addr", "add", "fd00:77::2/64", "dev", "eth0", "nodad")
	// Linux flushes an interface's IPv6 addresses when it goes down unless
	// keep_addr_on_down is set; keep them, as a router's configuration would.
	b.Exec("sysctl", "-qw", "net.ipv6.conf.eth0.keep_addr_on_down=1")

	a4, b4 := netip.MustParseAddr("10.77.0.1"), netip.MustParseAddr("10.77.0.2")
	a6, b6 := netip.MustParseAddr("fd00:77::1"), netip.MustParseAddr("fd00:77::2")
	ma, mb := newTestManager(t, a), newTestManager(t, b)
	ctx := context.Background()
	for _, c := range []struct {
		m           *Manager
		local, peer netip.Addr
	}{{ma, a4, b4}, {mb, b4, a4}, {ma, a6, b6}, {mb, b6, a6}} {
		if err := c.m.AddSession(ctx, SessionConfig{Local: c.local, Peer: c.peer, Interface: "eth0",
			DesiredMinTx: 300 * time.Millisecond, RequiredMinRx: 300 * time.Millisecond, DetectMultiplier: 3}); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		m    *Manager
		peer netip.Addr
	}{{ma, b4}, {mb, a4}, {ma, b6}, {mb, a6}} {
		d := waitState(t, c.m, c.peer, StateUp, 10*time.Second)
		t.Logf("session to %v Up after %v", c.peer, d)
	}
	// After the Poll Sequence both run at the configured 300 ms.
	time.Sleep(time.Second)
	st, _ := ma.State(b4)
	if st.DetectTime != 900*time.Millisecond || st.TxInterval != 300*time.Millisecond {
		t.Errorf("Up session timers: detect %v tx %v, want 900ms and 300ms", st.DetectTime, st.TxInterval)
	}

	cut := time.Now()
	b.Exec("ip", "link", "set", "eth0", "down")
	for _, c := range []struct {
		m    *Manager
		peer netip.Addr
	}{{ma, b4}, {mb, a4}, {ma, b6}, {mb, a6}} {
		// No timed assertion: the generous bound only catches "never".
		waitState(t, c.m, c.peer, StateDown, 10*time.Second)
		st, _ := c.m.State(c.peer)
		t.Logf("session to %v Down %v after the link went down (detection time 900 ms), diag %q",
			c.peer, st.LastChange.Sub(cut).Round(time.Millisecond), st.Diag)
		if st.Diag != bfd.DiagnosticControlDetectionTimeExpired {
			t.Errorf("session to %v: diag %v, want %v", c.peer, st.Diag, bfd.DiagnosticControlDetectionTimeExpired)
		}
	}

	b.Exec("ip", "link", "set", "eth0", "up")
	for _, c := range []struct {
		m    *Manager
		peer netip.Addr
	}{{ma, b4}, {mb, a4}, {ma, b6}, {mb, a6}} {
		waitState(t, c.m, c.peer, StateUp, 15*time.Second)
	}

	// RemoveSession sends AdminDown: the peer goes Down at once with diag
	// 3 (neighbor signaled session down), not after its detection time.
	if err := ma.RemoveSession(b4); err != nil {
		t.Fatal(err)
	}
	waitState(t, mb, a4, StateDown, 10*time.Second)
	if st, _ := mb.State(a4); st.Diag != bfd.DiagnosticNeighborSignaledSessionDown || st.RemoteState != StateAdminDown {
		t.Errorf("after the peer removed its session: diag %v remote state %v, want %v and AdminDown",
			st.Diag, st.RemoteState, bfd.DiagnosticNeighborSignaledSessionDown)
	}
	if _, ok := ma.State(b4); ok {
		t.Error("removed session still reported")
	}
	if c := mb.Counters(); c.RxPackets == 0 || c.TxPackets == 0 || c.DownEvents == 0 {
		t.Errorf("counters %+v: want packets both ways and down events", c)
	}
}

// RFC 5881 section 5: a packet that arrives with a TTL below 255 may come
// from off the link and is dropped. The same packet with TTL 255 is
// accepted, which shows the test can see the difference.
func TestTTLCheck(t *testing.T) {
	a := netnstest.New(t, "bfdttla")
	b := netnstest.New(t, "bfdttlb")
	netnstest.Veth(t, a, "eth0", "10.78.0.1/24", b, "eth0", "10.78.0.2/24")
	aAddr, bAddr := netip.MustParseAddr("10.78.0.1"), netip.MustParseAddr("10.78.0.2")
	mb := newTestManager(t, b)
	if err := mb.AddSession(context.Background(), SessionConfig{Local: bAddr, Peer: aAddr}); err != nil {
		t.Fatal(err)
	}
	send := func(ttl int) {
		t.Helper()
		var wire [controlLen]byte
		marshalInto(&wire, &bfd.BFDHeader{Version: 1, State: StateDown, DetectTimeMultiplier: 3,
			MyDiscriminator: 99, DesiredMinTxInterval: 1000000, RequiredMinRxInterval: 300000})
		err := a.Do(func() error {
			lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
				return setsockopt(c, func(fd int) error {
					return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TTL, ttl)
				})
			}}
			pc, err := lc.ListenPacket(context.Background(), "udp4", "10.78.0.1:49999")
			if err != nil {
				return err
			}
			defer pc.Close()
			_, err = pc.WriteTo(wire[:], &net.UDPAddr{IP: net.ParseIP(bAddr.String()), Port: ControlPort})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	send(254)
	deadline := time.Now().Add(5 * time.Second)
	for mb.Counters().RxBadTTL == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the packet with TTL 254 never arrived")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st, _ := mb.State(aAddr); st.State != StateDown || st.RemoteDiscr != 0 {
		t.Fatalf("after a TTL 254 packet the session is %v with remote discriminator %d, want Down and none", st.State, st.RemoteDiscr)
	}

	send(255)
	waitState(t, mb, aAddr, StateInit, 5*time.Second)
	if st, _ := mb.State(aAddr); st.RemoteDiscr != 99 {
		t.Errorf("remote discriminator %d, want 99", st.RemoteDiscr)
	}
	if c := mb.Counters(); c.RxBadTTL != 1 {
		t.Errorf("RxBadTTL = %d, want 1", c.RxBadTTL)
	}
}

// The kernel sockets keep the hot path allocation-free too: one packet
// written through a session's sender and read by the receive socket.
func BenchmarkKernelRoundTrip(b *testing.B) {
	ns := netnstest.New(b, "bfdbench")
	tr := nsTransport{ns}
	r, err := tr.ListenControl(false)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	w, err := tr.OpenSender(netip.MustParseAddr("127.0.0.1"), "")
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	dst := netip.MustParseAddrPort(fmt.Sprintf("127.0.0.1:%d", ControlPort))
	out := make([]byte, controlLen)
	in := make([]byte, maxPacket)
	b.ReportAllocs()
	for b.Loop() {
		if err := w.WritePacket(out, dst); err != nil {
			b.Fatal(err)
		}
		n, _, ttl, err := r.ReadPacket(in)
		if err != nil || n != controlLen || ttl != requiredTTL {
			b.Fatalf("read %d bytes with TTL %d: %v", n, ttl, err)
		}
	}
}

// BenchmarkCPUPerSession300ms runs 100 sessions at 300 ms × 3 between two
// Managers in two namespaces (both ends in this process) and reports the
// process's CPU time (user+system, getrusage) per session end per second
// of steady state. Run it with -benchtime=1x: each iteration measures a
// 5 s window.
func BenchmarkCPUPerSession300ms(b *testing.B) {
	const sessions = 100
	const window = 5 * time.Second
	a := netnstest.New(b, "bfdcpua")
	z := netnstest.New(b, "bfdcpub")
	netnstest.Veth(b, a, "eth0", "", z, "eth0", "")
	type pair struct{ a, z netip.Addr }
	pairs := make([]pair, sessions)
	for i := range pairs {
		pairs[i] = pair{netip.AddrFrom4([4]byte{10, 80, 0, byte(i + 1)}), netip.AddrFrom4([4]byte{10, 80, 1, byte(i + 1)})}
		a.Exec("ip", "addr", "add", pairs[i].a.String()+"/16", "dev", "eth0")
		z.Exec("ip", "addr", "add", pairs[i].z.String()+"/16", "dev", "eth0")
	}
	ma, mz := New(Config{Transport: nsTransport{a}}), New(Config{Transport: nsTransport{z}})
	b.Cleanup(func() { ma.Close(); mz.Close() })
	ctx := context.Background()
	for _, p := range pairs {
		if err := ma.AddSession(ctx, SessionConfig{Local: p.a, Peer: p.z}); err != nil {
			b.Fatal(err)
		}
		if err := mz.AddSession(ctx, SessionConfig{Local: p.z, Peer: p.a}); err != nil {
			b.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		up := 0
		for _, s := range ma.Sessions() {
			if s.State == StateUp && s.TxInterval == 300*time.Millisecond {
				up++
			}
		}
		if up == sessions {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d sessions Up at 300 ms after 30 s", up, sessions)
		}
		time.Sleep(100 * time.Millisecond)
	}
	downBefore := ma.Counters().DownEvents + mz.Counters().DownEvents
	b.ResetTimer()
	var total time.Duration
	for range b.N {
		before := cpuTime(b)
		time.Sleep(window)
		total += cpuTime(b) - before
	}
	b.StopTimer()
	if d := ma.Counters().DownEvents + mz.Counters().DownEvents - downBefore; d != 0 {
		b.Fatalf("%d sessions went Down during the measurement", d)
	}
	perEnd := float64(total.Microseconds()) / float64(b.N) / (2 * sessions) / window.Seconds()
	b.ReportMetric(perEnd, "cpu-µs/session/s")
	b.ReportMetric(perEnd/1e4, "%cpu/session")
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
