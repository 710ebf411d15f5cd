package bgp

import (
	"context"
	"errors"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestListenerMinTTL(t *testing.T) {
	gtsm := Neighbor{Prefix: pfx("192.168.2.0/24"), TTLSecurity: true}
	plain := Neighbor{Prefix: pfx("192.168.2.30/32"), Single: true}
	for _, tc := range []struct {
		name string
		ns   []Neighbor
		want int
	}{
		{"no neighbours", nil, 0},
		{"every neighbour with GTSM", []Neighbor{gtsm, gtsm}, 255},
		{"one without: the shared listener cannot demand 255", []Neighbor{gtsm, plain}, 0},
		{"none with", []Neighbor{plain}, 0},
	} {
		if got := listenerMinTTL(Config{Neighbors: tc.ns}); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}

func minTTLOf(t *testing.T, l net.Listener, level, opt int) int {
	t.Helper()
	rc, err := l.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var serr error
	if err := rc.Control(func(fd uintptr) { v, serr = unix.GetsockoptInt(int(fd), level, opt) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return v
}

// setListenerMinTTL finds this process's listeners on the port (IPv4 and
// IPv6) and no other socket: not a listener on another port, not a
// connected socket on the port.
func TestSetListenerMinTTL(t *testing.T) {
	l4, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l4.Close()
	port := l4.Addr().(*net.TCPAddr).Port
	l6, err := net.Listen("tcp6", net.JoinHostPort("::1", strconv.Itoa(port)))
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer l6.Close()
	other, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	c, err := net.Dial("tcp4", l4.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	n, err := setListenerMinTTL(port, nil, 255)
	if err != nil || n != 2 {
		t.Fatalf("setListenerMinTTL = %d, %v; want 2 listeners", n, err)
	}
	if v := minTTLOf(t, l4, unix.IPPROTO_IP, unix.IP_MINTTL); v != 255 {
		t.Errorf("IPv4 listener IP_MINTTL %d", v)
	}
	if v := minTTLOf(t, l6, unix.IPPROTO_IPV6, unix.IPV6_MINHOPCOUNT); v != 255 {
		t.Errorf("IPv6 listener IPV6_MINHOPCOUNT %d", v)
	}
	if v := minTTLOf(t, other, unix.IPPROTO_IP, unix.IP_MINTTL); v != 0 {
		t.Errorf("listener on another port: IP_MINTTL %d", v)
	}
	if n, err := setListenerMinTTL(port, nil, 0); err != nil || n != 2 {
		t.Fatalf("turning it off: %d, %v", n, err)
	}
	if v := minTTLOf(t, l4, unix.IPPROTO_IP, unix.IP_MINTTL); v != 0 {
		t.Errorf("IPv4 listener IP_MINTTL %d after turning it off", v)
	}
}

// dialTTL connects to addr sending with the given TTL (loopback does not
// decrement it, so the listener sees exactly ttl).
func dialTTL(ctx context.Context, addr string, ttl int) (net.Conn, error) {
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, ttl) }); err != nil {
			return err
		}
		return serr
	}}
	return d.DialContext(ctx, "tcp4", addr)
}

// With every neighbour on GTSM the agent's listener drops a SYN with TTL
// 254 in the kernel: no connection is ever accepted (GoBGP alone would
// accept it and set the minimum TTL afterwards). With TTL 255 the
// connection is accepted.
func TestSpeakerListenerDropsLowTTL(t *testing.T) {
	port := freePort(t)
	s := New(Config{ASN: 64500, RouterID: addr("127.0.0.1"), ListenAddresses: []string{"127.0.0.1"}, ListenPort: port, IPv4: true,
		// The test dials from 127.0.0.1, outside the range: GoBGP closes
		// the accepted connections at once rather than making a dynamic
		// peer that SetNeighbors below would race with.
		Neighbors: []Neighbor{{Prefix: pfx("127.0.0.128/25"), ASN: 64512, HoldTime: 9 * time.Second, Keepalive: 3 * time.Second, TTLSecurity: true}}},
		testLogger())
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	target := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if c, err := dialTTL(ctx, target, 254); err == nil {
		c.Close()
		t.Fatal("a connection with TTL 254 was accepted")
	} else if !errors.Is(err, context.DeadlineExceeded) {
		t.Logf("TTL 254: %v", err)
	}
	c, err := dialTTL(t.Context(), target, 255)
	if err != nil {
		t.Fatalf("TTL 255: %v", err)
	}
	c.Close()

	// A neighbour without GTSM: the listener accepts any TTL again.
	cfg := s.cfg
	cfg.Neighbors = append(cfg.Neighbors, Neighbor{Prefix: pfx("127.0.0.9/32"), Single: true, ASN: 64513, HoldTime: 9 * time.Second, Keepalive: 3 * time.Second})
	if err := s.SetNeighbors(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	c, err = dialTTL(t.Context(), target, 254)
	if err != nil {
		t.Fatalf("TTL 254 with a neighbour without GTSM: %v", err)
	}
	c.Close()
}
