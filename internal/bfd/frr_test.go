package bfd

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/bgplb/bgplb/internal/frrtest"
	"github.com/bgplb/bgplb/internal/netnstest"
)

// frrPeer is one entry of FRR's `show bfd peers json`.
type frrPeer struct {
	Peer             string `json:"peer"`
	Status           string `json:"status"`
	Diagnostic       string `json:"diagnostic"`
	RemoteDiagnostic string `json:"remote-diagnostic"`
	ID               uint32 `json:"id"`
	RemoteID         uint32 `json:"remote-id"`
	TransmitInterval int    `json:"transmit-interval"`
	RemoteTransmit   int    `json:"remote-transmit-interval"`
}

// Interop with FRR's bfdd (Debian's frr package): a Manager in one
// namespace and bfdd in the other come Up as seen from both sides, over
// IPv4 and IPv6, with either side started first; removing our session
// takes FRR's side Down (AdminDown), and killing bfdd takes ours Down
// within the detection time.
func TestFRRBFDInterop(t *testing.T) {
	netnstest.RequireRoot(t)
	frrtest.Require(t, "zebra", "bfdd")
	r := netnstest.New(t, "bfdfrr")
	n := netnstest.New(t, "bfdnode")
	netnstest.Veth(t, r, "eth0", "10.79.0.1/24", n, "eth0", "10.79.0.10/24")
	r.Exec("ip", "-6", "addr", "add", "fd00:79::1/64", "dev", "eth0", "nodad")
	n.Exec("ip", "-6", "addr", "add", "fd00:79::10/64", "dev", "eth0", "nodad")
	r4, n4 := netip.MustParseAddr("10.79.0.1"), netip.MustParseAddr("10.79.0.10")
	r6, n6 := netip.MustParseAddr("fd00:79::1"), netip.MustParseAddr("fd00:79::10")

	frr := frrtest.New(t, r, "zebra", "bfdd")
	frr.Start("zebra", frr.Write("zebra.conf", "hostname r\n"))
	bconf := frr.Write("bfdd.conf", fmt.Sprintf(`hostname r
log stdout informational
!
bfd
 peer %[1]s local-address %[2]s interface eth0
  receive-interval 300
  transmit-interval 300
  detect-multiplier 3
 !
 peer %[3]s local-address %[4]s interface eth0
  receive-interval 300
  transmit-interval 300
  detect-multiplier 3
 !
!
`, n4, r4, n6, r6))
	startBFDD := func() *exec.Cmd { return frr.Start("bfdd", bconf) }
	bfdd := startBFDD()

	frrPeers := func() (map[string]frrPeer, error) {
		out, err := frr.Vtysh("show bfd peers json")
		if err != nil {
			return nil, err
		}
		var ps []frrPeer
		if err := json.Unmarshal([]byte(out), &ps); err != nil {
			return nil, fmt.Errorf("parse %q: %w", out, err)
		}
		m := map[string]frrPeer{}
		for _, p := range ps {
			m[p.Peer] = p
		}
		return m, nil
	}
	waitFRR := func(peer netip.Addr, status string) frrPeer {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			ps, err := frrPeers()
			p, ok := ps[peer.String()]
			if err == nil && ok && p.Status == status {
				return p
			}
			if time.Now().After(deadline) {
				t.Fatalf("FRR's session to %v: %+v (error %v), want status %q", peer, p, err, status)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	m := newTestManager(t, n)
	ctx := context.Background()
	for _, c := range [][2]netip.Addr{{n4, r4}, {n6, r6}} {
		if err := m.AddSession(ctx, SessionConfig{Local: c[0], Peer: c[1], Interface: "eth0"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range [][2]netip.Addr{{n4, r4}, {n6, r6}} {
		d := waitState(t, m, c[1], StateUp, 20*time.Second)
		p := waitFRR(c[0], "up")
		st, _ := m.State(c[1])
		t.Logf("Up both ways to %v after %v; FRR: %+v", c[1], d, p)
		if p.ID != st.RemoteDiscr || p.RemoteID != st.LocalDiscr {
			t.Errorf("discriminators: FRR has id %d remote-id %d, we have local %d remote %d",
				p.ID, p.RemoteID, st.LocalDiscr, st.RemoteDiscr)
		}
	}
	// After both Poll Sequences, both sides run at 300 ms.
	time.Sleep(2 * time.Second)
	if p := waitFRR(n4, "up"); p.TransmitInterval != 300 || p.RemoteTransmit != 300 {
		t.Errorf("FRR's intervals: transmit %d remote-transmit %d, want 300 and 300", p.TransmitInterval, p.RemoteTransmit)
	}
	if st, _ := m.State(r4); st.DetectTime != 900*time.Millisecond || st.TxInterval != 300*time.Millisecond {
		t.Errorf("our timers: detect %v tx %v, want 900ms and 300ms", st.DetectTime, st.TxInterval)
	}

	// Our side stops: FRR hears AdminDown and goes down at once.
	if err := m.RemoveSession(r4); err != nil {
		t.Fatal(err)
	}
	p := waitFRR(n4, "down")
	t.Logf("FRR after our session was removed: %+v", p)
	if p.RemoteDiagnostic != "administratively down" {
		t.Errorf("FRR's remote-diagnostic %q, want \"administratively down\"", p.RemoteDiagnostic)
	}
	// And comes back.
	if err := m.AddSession(ctx, SessionConfig{Local: n4, Peer: r4, Interface: "eth0"}); err != nil {
		t.Fatal(err)
	}
	waitState(t, m, r4, StateUp, 20*time.Second)
	waitFRR(n4, "up")

	// FRR's side stops (killed, so it sends nothing): ours detects it.
	killed := time.Now()
	if err := bfdd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	for _, peer := range []netip.Addr{r4, r6} {
		waitState(t, m, peer, StateDown, 10*time.Second)
		st, _ := m.State(peer)
		t.Logf("session to %v Down %v after bfdd was killed (detection time 900 ms), diag %q",
			peer, st.LastChange.Sub(killed).Round(time.Millisecond), st.Diag)
		if st.Diag != DiagControlDetectionTimeExpired {
			t.Errorf("diag %v, want %v", st.Diag, DiagControlDetectionTimeExpired)
		}
	}
	_ = bfdd.Wait()

	// The other order: our sessions were there first, bfdd starts anew
	// (new discriminators) and both sides come Up again.
	startBFDD()
	for _, c := range [][2]netip.Addr{{n4, r4}, {n6, r6}} {
		p := waitFRR(c[0], "up")
		waitState(t, m, c[1], StateUp, 20*time.Second)
		if st, _ := m.State(c[1]); p.ID != st.RemoteDiscr {
			t.Errorf("after bfdd's restart: its id %d, our remote discriminator %d", p.ID, st.RemoteDiscr)
		}
	}
}
