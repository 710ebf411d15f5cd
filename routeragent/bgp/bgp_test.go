// Listeners must not be MPTCP (Go's default since 1.24): MPTCP sockets
// refuse TCP-MD5 keys.
//
//go:debug multipathtcp=0
package bgp

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bgplb/bgplb/internal/tcpmd5"
	"github.com/bgplb/bgplb/routeragent/bgp/bgptest"
	"github.com/bgplb/bgplb/routeragent/policy"
)

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
)

func freePort(t *testing.T) int32 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return int32(l.Addr().(*net.TCPAddr).Port)
}

func testLogger() *slog.Logger {
	if os.Getenv("BGPLB_TEST_VERBOSE") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// waitFor polls cond until it holds; the test's own deadline bounds it.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-time.After(20 * time.Millisecond):
		case <-t.Context().Done():
			t.Fatalf("gave up waiting for %s", what)
		}
	}
}

func sortedPaths(ps []policy.Path) []policy.Path {
	for i := range ps {
		ps[i].Seq = 0
	}
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].Peer != ps[j].Peer {
			return ps[i].Peer.Less(ps[j].Peer)
		}
		return ps[i].Prefix.Addr().Less(ps[j].Prefix.Addr())
	})
	return ps
}

// TestReceive runs the router's speaker and two in-process GoBGP speakers on
// loopback addresses (127.0.0.2, 127.0.0.3) of the root namespace.
func TestReceive(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	port := freePort(t)
	s := New(Config{
		ASN: 64500, RouterID: addr("127.0.0.1"), ListenAddresses: []string{"127.0.0.1"}, ListenPort: port, IPv4: true,
		Neighbors: []Neighbor{{Prefix: pfx("127.0.0.0/8"), ASN: 64512, HoldTime: 9 * time.Second, Keepalive: 3 * time.Second, GracefulRestart: true, TTLSecurity: true}},
	}, testLogger())
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()

	var sp []*bgptest.Speaker
	for _, local := range []string{"127.0.0.2", "127.0.0.3"} {
		x, err := bgptest.Start(ctx, bgptest.Config{ASN: 64512, RouterID: local, Local: addr(local), Router: addr("127.0.0.1"),
			RouterASN: 64500, RouterPort: uint32(port), GracefulRestart: true})
		if err != nil {
			t.Fatal(err)
		}
		defer x.Stop()
		sp = append(sp, x)
	}
	waitFor(t, "both sessions up with End-of-RIB", func() bool {
		return s.EndOfRIB(addr("127.0.0.2")) && s.EndOfRIB(addr("127.0.0.3"))
	})
	svc := pfx("192.168.254.1/32")
	for _, x := range sp {
		if err := x.Announce(ctx, svc, netip.Addr{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := sp[1].Announce(ctx, pfx("10.0.0.0/8"), addr("127.0.0.9")); err != nil {
		t.Fatal(err)
	}
	want := []policy.Path{
		{Peer: addr("127.0.0.2"), Prefix: svc, NextHop: addr("127.0.0.2")},
		{Peer: addr("127.0.0.3"), Prefix: pfx("10.0.0.0/8"), NextHop: addr("127.0.0.9")},
		{Peer: addr("127.0.0.3"), Prefix: svc, NextHop: addr("127.0.0.3")},
	}
	waitFor(t, "three paths", func() bool { return len(s.Paths()) == 3 })
	if d := cmp.Diff(want, sortedPaths(s.Paths()), cmp.Comparer(func(x, y netip.Addr) bool { return x == y }), cmp.Comparer(func(x, y netip.Prefix) bool { return x == y })); d != "" {
		t.Fatalf("paths (-want +got):\n%s", d)
	}

	if err := sp[0].Withdraw(ctx, svc); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "withdrawal", func() bool { return len(s.Paths()) == 2 })

	// A speaker that goes away takes its paths with it (it said goodbye with
	// a notification, so graceful restart does not keep them).
	sp[1].Stop()
	waitFor(t, "paths of the stopped speaker dropped", func() bool { return len(s.Paths()) == 0 })
	// Its session gone and its paths withdrawn, the dynamic peer is
	// forgotten (its entry would otherwise stay for ever).
	waitFor(t, "the stopped dynamic peer forgotten", func() bool {
		for _, p := range s.Peers() {
			if p.Address == addr("127.0.0.3") {
				return false
			}
		}
		return true
	})
	if s.EndOfRIB(addr("127.0.0.3")) {
		t.Error("End-of-RIB still reported for a peer that is down")
	}
}

// TestMD5 checks that a TCP-MD5 password on the neighbor range is applied
// to the listener: a speaker with the password gets a session. On a kernel
// without TCP-MD5 the start must fail rather than run unsigned.
func TestMD5(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	port := freePort(t)
	s := New(Config{
		ASN: 64500, RouterID: addr("127.0.0.1"), ListenAddresses: []string{"127.0.0.1"}, ListenPort: port, IPv4: true,
		Neighbors: []Neighbor{{Prefix: pfx("127.0.0.0/8"), ASN: 64512, Password: "s3cret", HoldTime: 9 * time.Second, Keepalive: 3 * time.Second, TTLSecurity: true}},
	}, testLogger())
	if md5err := tcpmd5.ListenerSupported(); md5err != nil {
		err := s.Start(ctx)
		if err == nil {
			s.Stop()
			t.Fatal("Start succeeded with a password on a kernel without TCP-MD5")
		}
		t.Logf("refused as it must: %v", err)
		t.Skipf("the signed session itself needs a kernel with CONFIG_TCP_MD5SIG: %v", md5err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	good, err := bgptest.Start(ctx, bgptest.Config{ASN: 64512, RouterID: "127.0.0.4", Local: addr("127.0.0.4"), Router: addr("127.0.0.1"),
		RouterASN: 64500, RouterPort: uint32(port), Password: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	defer good.Stop()
	waitFor(t, "the session with the right password", func() bool {
		for _, p := range s.Peers() {
			if p.Address == addr("127.0.0.4") && p.Up {
				return true
			}
		}
		return false
	})
}

func TestSetNeighbors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	port := freePort(t)
	cfg := Config{
		ASN: 64500, RouterID: addr("127.0.0.1"), ListenAddresses: []string{"127.0.0.1"}, ListenPort: port, IPv4: true,
		Neighbors: []Neighbor{{Prefix: pfx("127.0.0.0/8"), ASN: 64512, HoldTime: 9 * time.Second, Keepalive: 3 * time.Second, TTLSecurity: true}},
	}
	s := New(cfg, testLogger())
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	// Replace the range by one address with another ASN.
	cfg.Neighbors = []Neighbor{{Prefix: pfx("127.0.0.5/32"), Single: true, ASN: 64513, HoldTime: 9 * time.Second, Keepalive: 3 * time.Second, TTLSecurity: true}}
	if err := s.SetNeighbors(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	sp, err := bgptest.Start(ctx, bgptest.Config{ASN: 64513, RouterID: "127.0.0.5", Local: addr("127.0.0.5"), Router: addr("127.0.0.1"),
		RouterASN: 64500, RouterPort: uint32(port)})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Stop()
	waitFor(t, "the session of the new neighbor", func() bool {
		for _, p := range s.Peers() {
			if p.Address == addr("127.0.0.5") && p.Up {
				return true
			}
		}
		return false
	})
}

// A peer that sends only undecodable paths is counted in full but logged
// at the 1st, 10th, 100th, ... path: it cannot flood the log.
func TestUndecodableLoggedSparsely(t *testing.T) {
	var buf bytes.Buffer
	s := New(Config{}, slog.New(slog.NewTextHandler(&buf, nil)))
	for range 1000 {
		s.undecodable(netip.MustParseAddr("192.0.2.1"), errors.New("bad NLRI"))
	}
	if s.DecodeErrors() != 1000 {
		t.Errorf("DecodeErrors = %d, want 1000", s.DecodeErrors())
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		_, n, _ := strings.Cut(l, "undecodable=")
		n, _, _ = strings.Cut(n, " ")
		got = append(got, n)
	}
	if d := cmp.Diff([]string{"1", "10", "100", "1000"}, got); d != "" {
		t.Errorf("logged at (-want +got):\n%s", d)
	}
}
