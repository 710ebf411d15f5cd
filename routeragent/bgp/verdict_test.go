package bgp

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"

	"github.com/bgplb/bgplb/internal/verdict"
	"github.com/bgplb/bgplb/routeragent/bgp/bgptest"
	sbgp "github.com/bgplb/bgplb/speaker/bgp"
	"github.com/bgplb/bgplb/speaker/model"
)

// verdictLab is the router's speaker and two bgplb-speaker Managers (the
// speaker's real BGP side) on loopback addresses of the root namespace.
type verdictLab struct {
	agent    *Speaker
	speakers []*sbgp.Manager
	plain    *bgptest.Speaker
}

func startVerdictLab(t testing.TB, ctx context.Context) *verdictLab {
	t.Helper()
	port := freePortTB(t)
	agent := New(Config{
		ASN: 64500, RouterID: addr("127.0.0.1"), ListenAddresses: []string{"127.0.0.1"}, ListenPort: port, IPv4: true,
		Neighbors: []Neighbor{{Prefix: pfx("127.0.0.0/8"), ASN: 64512, HoldTime: 9 * time.Second, Keepalive: 3 * time.Second}},
	}, testLogger())
	if err := agent.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(agent.Stop)
	l := &verdictLab{agent: agent}
	// Every GoBGP server starts before any path is announced (see the race
	// rule of speaker/bgp/bgptest).
	for _, local := range []string{"127.0.0.2", "127.0.0.3"} {
		m := sbgp.NewManager(logr.Discard())
		if err := m.SetPeers(ctx, []sbgp.PeerConfig{{Name: "router", Address: addr("127.0.0.1"), Port: uint16(port),
			PeerASN: 64500, MyASN: 64512, RouterID: addr(local), SourceAddress: addr(local), ConnectRetry: time.Second}}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = m.Shutdown(sctx, sbgp.ShutdownOptions{})
		})
		l.speakers = append(l.speakers, m)
	}
	// A peer without ADD-PATH receive (FRR, BIRD, an older speaker): a
	// plain GoBGP.
	old, err := bgptest.Start(ctx, bgptest.Config{ASN: 64512, RouterID: "127.0.0.4", Local: addr("127.0.0.4"), Router: addr("127.0.0.1"),
		RouterASN: 64500, RouterPort: uint32(port), NoTTLSecurity: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(old.Stop)
	l.plain = old
	waitForTB(t, "three sessions up", func() bool {
		up := 0
		for _, p := range agent.Peers() {
			if p.Up {
				up++
			}
		}
		return up == 3
	})
	return l
}

func freePortTB(t testing.TB) int32 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return int32(l.Addr().(*net.TCPAddr).Port)
}

func waitForTB(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func announce(t testing.TB, ctx context.Context, m *sbgp.Manager, prefixes ...string) {
	t.Helper()
	var advs []model.Advertisement
	for _, p := range prefixes {
		advs = append(advs, model.Advertisement{Prefix: pfx(p)})
	}
	if _, err := m.Set(ctx, "router", advs); err != nil {
		t.Fatal(err)
	}
}

// TestVerdictsReachTheirSpeakerOnly: the router's verdicts travel back over
// each speaker's own session, each speaker gets the verdicts on its own
// paths and no other's, changes (the ECMP width) and withdrawals follow, and
// the verdict paths never become received paths of the router itself.
func TestVerdictsReachTheirSpeakerOnly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l := startVerdictLab(t, ctx)
	a, b := l.speakers[0], l.speakers[1]
	svc, bad := "192.168.254.1/32", "10.1.1.1/32"
	announce(t, ctx, a, svc, bad)
	announce(t, ctx, b, svc)
	if err := l.plain.Announce(ctx, pfx(svc), netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "four paths at the router", func() bool { return len(l.agent.Paths()) == 4 })
	// Verdicts are kept for the peers known to receive ADD-PATH only.
	waitFor(t, "ADD-PATH receive learnt", func() bool {
		r := l.agent.VerdictReports()
		return r[addr("127.0.0.2")].AddPathReceive && r[addr("127.0.0.3")].AddPathReceive
	})

	installed2 := verdict.Verdict{State: verdict.Installed, Width: 2, Via: true}
	rejected := verdict.Verdict{State: verdict.Rejected, Reason: "outside-service-subnets"}
	l.agent.SetVerdicts(true, nil, []VerdictPath{
		{Peer: addr("127.0.0.2"), Prefix: pfx(svc), Verdict: installed2},
		{Peer: addr("127.0.0.2"), Prefix: pfx(bad), Verdict: rejected},
		{Peer: addr("127.0.0.3"), Prefix: pfx(svc), Verdict: installed2},
		{Peer: addr("127.0.0.4"), Prefix: pfx(svc), Verdict: installed2},
	})
	wantA := map[netip.Prefix]verdict.Verdict{pfx(svc): installed2, pfx(bad): rejected}
	wantB := map[netip.Prefix]verdict.Verdict{pfx(svc): installed2}
	waitForVerdicts(t, a, wantA)
	waitForVerdicts(t, b, wantB)
	for _, st := range a.Status(ctx) {
		if st.RoutesInstalled != 1 || st.RoutesRejected != 1 {
			t.Errorf("speaker A counts installed %d rejected %d, want 1 and 1", st.RoutesInstalled, st.RoutesRejected)
		}
	}
	// The verdict paths are local paths of the router: its received paths
	// are still the speakers' four. The peer without ADD-PATH gets none.
	if n := len(l.agent.Paths()); n != 4 {
		t.Errorf("router has %d received paths, want 4: %v", n, l.agent.Paths())
	}
	if _, ok := l.agent.VerdictsSent()[addr("127.0.0.4")]; ok {
		t.Errorf("verdicts sent to a peer without ADD-PATH receive: %v", l.agent.VerdictsSent())
	}
	// What status shows per peer: the count sent, and who cannot receive.
	wantReports := map[netip.Addr]VerdictReport{
		addr("127.0.0.2"): {Sent: 2, AddPathReceive: true},
		addr("127.0.0.3"): {Sent: 1, AddPathReceive: true},
		addr("127.0.0.4"): {Sent: 0, AddPathReceive: false},
	}
	waitFor(t, "verdict reports", func() bool {
		return cmp.Equal(wantReports, l.agent.VerdictReports(), cmp.Comparer(func(x, y netip.Addr) bool { return x == y }))
	})

	// B's path goes: the width drops for A (an incremental update of one
	// prefix), B's verdict is withdrawn.
	installed1 := verdict.Verdict{State: verdict.Installed, Width: 1, Via: true}
	l.agent.SetVerdicts(false, []netip.Prefix{pfx(svc)}, []VerdictPath{{Peer: addr("127.0.0.2"), Prefix: pfx(svc), Verdict: installed1}})
	waitForVerdicts(t, a, map[netip.Prefix]verdict.Verdict{pfx(svc): installed1, pfx(bad): rejected})
	waitForVerdicts(t, b, nil)

	// A full set without the rejected prefix withdraws its verdict.
	l.agent.SetVerdicts(true, nil, []VerdictPath{{Peer: addr("127.0.0.2"), Prefix: pfx(svc), Verdict: installed1}})
	waitForVerdicts(t, a, map[netip.Prefix]verdict.Verdict{pfx(svc): installed1})
	if d := cmp.Diff(map[netip.Addr]map[netip.Prefix]verdict.Verdict{addr("127.0.0.2"): {pfx(svc): installed1}}, l.agent.VerdictsSent(),
		cmp.Comparer(func(x, y netip.Addr) bool { return x == y }), cmp.Comparer(func(x, y netip.Prefix) bool { return x == y })); d != "" {
		t.Errorf("verdicts sent (-want +got):\n%s", d)
	}
}

func waitForVerdicts(t testing.TB, m *sbgp.Manager, want map[netip.Prefix]verdict.Verdict) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := m.Verdicts("router")
		d := cmp.Diff(want, got, cmp.Comparer(func(x, y netip.Prefix) bool { return x == y }))
		if d == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("verdicts at the speaker (-want +got):\n%s", d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
