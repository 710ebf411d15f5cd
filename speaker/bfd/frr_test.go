package bfd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/bgplb/bgplb/internal/frrtest"
	"github.com/bgplb/bgplb/internal/netnstest"
	"github.com/bgplb/bgplb/speaker/bfd"
	"github.com/bgplb/bgplb/speaker/bgp"
	"github.com/bgplb/bgplb/speaker/model"
)

// The speaker's BGP and BFD layers against FRR 8.4 as the router (bgpd with
// "neighbor X bfd", and bfdd). As in speaker/bgp's FRR test, the parent
// builds two namespaces joined by a veth, runs zebra, bfdd and bgpd in R, and
// re-runs this test binary in N (GoBGP dials from its process's namespace)
// with BGPLB_BFD_FRR_CHILD set; the child runs the speaker and asserts on
// FRR through vtysh in R.
const (
	routerAddr = "192.168.3.1"
	nodeAddr   = "192.168.3.10"
)

func TestFRRBGPWithBFD(t *testing.T) {
	if os.Getenv("BGPLB_BFD_FRR_CHILD") == "1" {
		frrChild(t)
		return
	}
	netnstest.RequireRoot(t)
	r := netnstest.New(t, "bfdr")
	n := netnstest.New(t, "bfdn")
	netnstest.Veth(t, r, "eth0", routerAddr+"/24", n, "eth0", nodeAddr+"/24")

	frr := frrtest.New(t, r, "zebra", "bgpd", "bfdd")
	dir := frr.Dir
	zconf := frr.Write("zebra.conf", "hostname r\n")
	bfddConf := frr.Write("bfdd.conf", "hostname r\nlog stdout informational\n")
	bconf := frr.Write("bgpd.conf", fmt.Sprintf(`frr defaults traditional
hostname r
log stdout informational
!
router bgp 64512
 bgp router-id %[1]s
 no bgp default ipv4-unicast
 neighbor %[2]s remote-as 65001
 neighbor %[2]s bfd
 neighbor %[2]s timers connect 1
 address-family ipv4 unicast
  neighbor %[2]s activate
  neighbor %[2]s route-map ACCEPT in
  neighbor %[2]s route-map ACCEPT out
 exit-address-family
!
route-map ACCEPT permit 10
!
`, routerAddr, nodeAddr))
	frr.Start("zebra", zconf)
	frr.Start("bfdd", bfddConf)
	frr.Start("bgpd", bconf)
	// The child restarts bfdd (as a daemon of its own); stop whatever bfdd
	// runs at the end, also when the child failed.
	t.Cleanup(func() { frrtest.KillPidFile(filepath.Join(dir, "bfdd.pid")) })

	cmd := n.Command(os.Args[0], "-test.run=^TestFRRBGPWithBFD$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "BGPLB_BFD_FRR_CHILD=1", "BGPLB_FRR_NS="+r.Name, "BGPLB_FRR_DIR="+dir)
	out, err := cmd.CombinedOutput()
	t.Logf("speaker side (in %s):\n%s", n.Name, out)
	if err != nil {
		t.Fatalf("speaker side failed: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: TestFRRBGPWithBFD") {
		t.Fatal("speaker side did not pass")
	}
}

// recordingResetter resets through the bgp.Manager and records when.
type recordingResetter struct {
	m  *bgp.Manager
	mu sync.Mutex
	at []time.Time
}

func (r *recordingResetter) ResetSession(ctx context.Context, peer, reason string) (bool, error) {
	done, err := r.m.ResetSession(ctx, peer, reason)
	if done {
		r.mu.Lock()
		r.at = append(r.at, time.Now())
		r.mu.Unlock()
	}
	return done, err
}

func (r *recordingResetter) resets() []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Time(nil), r.at...)
}

// frrChild runs inside the node namespace.
func frrChild(t *testing.T) {
	ns, dir := os.Getenv("BGPLB_FRR_NS"), os.Getenv("BGPLB_FRR_DIR")
	vtyshJSON := func(c string, v any) error {
		out, err := frrtest.Vtysh(ns, dir, c)
		if err != nil {
			return err
		}
		if err := json.Unmarshal([]byte(out), v); err != nil {
			return fmt.Errorf("parse %q: %w", out, err)
		}
		return nil
	}
	type frrNeighbor struct {
		BGPState               string `json:"bgpState"`
		ConnectionsEstablished int    `json:"connectionsEstablished"`
		ConnectionsDropped     int    `json:"connectionsDropped"`
		LastResetDueTo         string `json:"lastResetDueTo"`
	}
	neighbor := func() (frrNeighbor, error) {
		var m map[string]frrNeighbor
		err := vtyshJSON("show bgp neighbors "+nodeAddr+" json", &m)
		return m[nodeAddr], err
	}
	frrBFD := func() (string, error) {
		var ps []struct {
			Peer   string `json:"peer"`
			Status string `json:"status"`
		}
		if err := vtyshJSON("show bfd peers json", &ps); err != nil {
			return "", err
		}
		for _, p := range ps {
			if p.Peer == nodeAddr {
				return p.Status, nil
			}
		}
		return "", fmt.Errorf("no BFD peer %s at FRR: %+v", nodeAddr, ps)
	}
	waitFor := func(what string, cond func() error) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			err := cond()
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %v", what, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	ctx := context.Background()
	log := testr.New(t)
	m := bgp.NewManager(log.WithName("bgp"))
	defer m.Shutdown(ctx, bgp.ShutdownOptions{})
	res := &recordingResetter{m: m}
	sessions := bfd.New(bfd.Options{Log: log.WithName("bfd"), Reset: res})
	defer sessions.Close()

	// A 90 s hold time: whatever ends the session within seconds is BFD.
	pc := bgp.PeerConfig{Name: "r", Address: netip.MustParseAddr(routerAddr), Port: 179, PeerASN: 64512, MyASN: 65001,
		RouterID: netip.MustParseAddr(nodeAddr), ConnectRetry: time.Second, HoldTime: 90 * time.Second, KeepaliveTime: 30 * time.Second}
	if err := m.SetPeers(ctx, []bgp.PeerConfig{pc}); err != nil {
		t.Fatal(err)
	}
	adv := model.Advertisement{Prefix: netip.MustParsePrefix("192.168.254.10/32"), NextHop: netip.IPv4Unspecified()}
	if _, err := m.Set(ctx, "r", []model.Advertisement{adv}); err != nil {
		t.Fatal(err)
	}
	bfdPeer := bfd.Peer{Name: "r", Address: pc.Address, TransmitInterval: 300 * time.Millisecond,
		ReceiveInterval: 300 * time.Millisecond, DetectMultiplier: 3}
	if err := sessions.Set(ctx, []bfd.Peer{bfdPeer}); err != nil {
		t.Fatal(err)
	}
	ours := func() bfd.Status {
		st := sessions.Status()
		if len(st) != 1 {
			t.Fatalf("status %+v", st)
		}
		return st[0]
	}
	allUp := func(what string) frrNeighbor {
		var nb frrNeighbor
		waitFor(what, func() error {
			if st := ours(); st.State != "Up" {
				return fmt.Errorf("our BFD session %+v", st)
			}
			if s, err := frrBFD(); err != nil || s != "up" {
				return fmt.Errorf("FRR's BFD session %q (%w)", s, err)
			}
			var err error
			if nb, err = neighbor(); err != nil || nb.BGPState != "Established" {
				return fmt.Errorf("FRR's BGP neighbor %+v (%w)", nb, err)
			}
			out, _ := exec.Command("ip", "-n", ns, "route", "show", "192.168.254.10").CombinedOutput()
			if !strings.Contains(string(out), "via "+nodeAddr) {
				return fmt.Errorf("route not in the router's FIB: %q", out)
			}
			return nil
		})
		return nb
	}
	before := allUp("BGP Established and BFD Up on both sides")
	// FRR's session, once Up, stayed Up: our first periodic packet after
	// FRR's Poll to 300 ms comes within the new interval (internal/bfd
	// reschedules on the changed interval; before, it came up to 1 s
	// later and FRR's 900 ms detection time expired at every start).
	var counters []struct {
		Peer        string `json:"peer"`
		SessionDown int    `json:"session-down"`
		SessionUp   int    `json:"session-up"`
	}
	time.Sleep(2 * time.Second) // well past the Poll Sequences
	if err := vtyshJSON("show bfd peers counters json", &counters); err != nil {
		t.Fatal(err)
	}
	for _, c := range counters {
		t.Logf("FRR's BFD counters: %+v", c)
		if c.Peer == nodeAddr && (c.SessionDown != 0 || c.SessionUp != 1) {
			t.Errorf("FRR's BFD session went down after Up during bring-up: %+v", c)
		}
	}
	st := ours()
	t.Logf("up: BFD %+v; FRR neighbor %+v", st, before)
	if st.TransmitInterval != 300*time.Millisecond || st.DetectionTime != 900*time.Millisecond {
		t.Errorf("BFD timers: transmit %v detection %v, want 300ms and 900ms", st.TransmitInterval, st.DetectionTime)
	}
	if len(res.resets()) != 0 {
		t.Fatalf("BGP reset while BFD came up: %v", res.resets())
	}

	// Kill FRR's bfdd: the link and bgpd stay, only BFD falls silent. Our
	// side detects it, resets the BGP session (FRR sees a Cease), and
	// the session comes back (the path is fine).
	downsBefore := st.DownEvents
	killed := time.Now()
	frrtest.KillPidFile(filepath.Join(dir, "bfdd.pid"))
	waitFor("our BFD session Down and the BGP session reset", func() error {
		if st := ours(); st.State != "Down" || st.DownEvents != downsBefore+1 || len(res.resets()) != 1 {
			return fmt.Errorf("BFD %+v, resets %v", st, res.resets())
		}
		return nil
	})
	st = ours()
	t.Logf("bfdd killed: our BFD Down after %v (detection time 900ms, diag %q); BGP reset after %v",
		st.LastChange.Sub(killed).Round(time.Millisecond), st.Diag, res.resets()[0].Sub(killed).Round(time.Millisecond))
	if st.Diag != "control detection time expired" {
		t.Errorf("diag %q, want control detection time expired", st.Diag)
	}
	waitFor("FRR saw the reset", func() error {
		nb, err := neighbor()
		if err != nil || nb.ConnectionsDropped <= before.ConnectionsDropped {
			return fmt.Errorf("FRR's neighbor %+v (%w), dropped before %d", nb, err, before.ConnectionsDropped)
		}
		t.Logf("FRR's neighbor after the reset: %+v", nb)
		return nil
	})

	// A new bfdd: bgpd registers its session again, and everything is Up.
	bfdd := exec.Command("ip", append([]string{"netns", "exec", ns}, frrtest.DaemonArgs(dir, "bfdd", filepath.Join(dir, "bfdd.conf"))...)...)
	if err := bfdd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = bfdd.Process.Kill(); _ = bfdd.Wait() }()
	restarted := time.Now()
	after := allUp("all Up again after bfdd's restart")
	t.Logf("up again %v after bfdd's restart; FRR neighbor %+v", time.Since(restarted).Round(time.Millisecond), after)
	if after.ConnectionsEstablished <= before.ConnectionsEstablished {
		t.Errorf("FRR's neighbor was not re-established: %+v, before %+v", after, before)
	}
	if n := len(res.resets()); n != 1 {
		t.Errorf("%d resets, want 1", n)
	}

	// The node falls silent while its link stays up (everything it sends
	// on eth0 dropped, as with a hung node): FRR's bfdd detects it, bgpd
	// drops the BGP session and zebra the route. FRR's Down (diag "control
	// detection time expired") also takes our side down, which resets
	// our BGP session.
	nft := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("nft", args...).CombinedOutput(); err != nil {
			t.Fatalf("nft %v: %v: %s", args, err, out)
		}
	}
	nft("add", "table", "inet", "bgplbtest")
	nft("add", "chain", "inet", "bgplbtest", "out", "{ type filter hook output priority 0; }")
	resetsBefore, downsSilent := len(res.resets()), ours().DownEvents
	silent := time.Now()
	nft("add", "rule", "inet", "bgplbtest", "out", "oifname", "eth0", "drop")
	waitFor("route gone from the router's FIB", func() error {
		out, _ := exec.Command("ip", "-n", ns, "route", "show", "192.168.254.10").CombinedOutput()
		if strings.TrimSpace(string(out)) != "" {
			return fmt.Errorf("still there: %q", out)
		}
		return nil
	})
	t.Logf("node silent: route gone from the router's kernel after %v (FRR's BFD detection time 900ms, BGP hold 90s)",
		time.Since(silent).Round(time.Millisecond))
	// Our side hears FRR's Down. FRR's bgpd also sends a Cease, which
	// still reaches us: whichever comes first ends our BGP session (a
	// reset of ours only while it is still Established).
	waitFor("our BFD session down after FRR's", func() error {
		if st := ours(); st.DownEvents <= downsSilent {
			return fmt.Errorf("BFD %+v", st)
		}
		return nil
	})
	st = ours()
	t.Logf("our side: BFD down %v after the node fell silent (diag %q, peer %q); BGP reset by us: %v",
		st.LastChange.Sub(silent).Round(time.Millisecond), st.LastDownDiag, st.LastDownRemoteDiag, len(res.resets()) > resetsBefore)
	if st.LastDownRemoteDiag != "control detection time expired" {
		t.Errorf("peer's diagnostic %q, want control detection time expired", st.LastDownRemoteDiag)
	}
	nft("delete", "table", "inet", "bgplbtest")
	allUp("all Up again after the node speaks again")

	// BFD disabled on the BGPPeer: FRR hears AdminDown and goes down at
	// once; our side resets nothing. (FRR 8.4's bgpd then drops the BGP
	// session even so, unlike RFC 5882 3.2: logged, and docs/speaker.md
	// says to take "neighbor X bfd" off the router first.)
	if err := sessions.Set(ctx, nil); err != nil {
		t.Fatal(err)
	}
	waitFor("FRR's BFD session down after ours was removed", func() error {
		if s, err := frrBFD(); err != nil || s != "down" {
			return fmt.Errorf("FRR's BFD session %q (%w)", s, err)
		}
		return nil
	})
	time.Sleep(time.Second)
	nb, err := neighbor()
	t.Logf("FRR's BGP neighbor after BFD was disabled on our side: %+v (%v)", nb, err)
	if n := len(res.resets()); n > 2 {
		t.Errorf("%d resets after BFD was disabled, want at most 2", n)
	}
	if st := sessions.Status(); len(st) != 0 {
		t.Errorf("status after BFD was disabled: %+v", st)
	}
}
