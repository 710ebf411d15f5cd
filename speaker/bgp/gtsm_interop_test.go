package bgp_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/bgplb/bgplb/internal/frrtest"
	"github.com/bgplb/bgplb/internal/netnstest"
	"github.com/bgplb/bgplb/speaker/bgp"
	"github.com/bgplb/bgplb/speaker/model"
)

// GTSM (RFC 5082) interop, the speaker's side of BGPPeer ttlSecurity: a
// speaker in namespace N peers with FRR (namespace R, "neighbor X
// ttl-security hops 1") and BIRD (namespace B, "ttl security on"), each
// over its own veth, with TTLSecurity on; both sessions come up and carry
// the route. A third session, to FRR's IPv6 address, where FRR is not
// configured for GTSM (so it sends eBGP with TTL 1), never comes up: the
// speaker's kernel drops FRR's segments (TcpExt TCPMinTTLDrop in N grows).
// As in TestFRRInterop the speaker runs in a child test process in N.
const (
	gtsmBIRDAddr = "192.168.3.1"
	gtsmBIRDNode = "192.168.3.10"
)

func TestGTSMInterop(t *testing.T) {
	if os.Getenv("BGPLB_GTSM_CHILD") == "1" {
		gtsmChild(t)
		return
	}
	netnstest.RequireRoot(t)
	for _, bin := range []string{"bird", "birdc"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("BIRD is required for this test (apt-get install bird2): %v", err)
		}
	}
	r := netnstest.New(t, "gfrr")
	b := netnstest.New(t, "gbird")
	n := netnstest.New(t, "gspk")
	netnstest.Veth(t, r, "eth0", frrRouterAddr+"/24", n, "eth0", frrNodeAddr+"/24")
	netnstest.Veth(t, b, "eth0", gtsmBIRDAddr+"/24", n, "eth1", gtsmBIRDNode+"/24")
	r.Exec("ip", "-6", "addr", "add", frrRouter6+"/64", "dev", "eth0", "nodad")
	n.Exec("ip", "-6", "addr", "add", frrNode6+"/64", "dev", "eth0", "nodad")

	frr := frrtest.New(t, r, "zebra", "bgpd")
	dir := frr.Dir
	// IPv4 neighbour with GTSM, IPv6 neighbour without.
	zconf := frr.Write("zebra.conf", "hostname r\n")
	bconf := frr.Write("bgpd.conf", fmt.Sprintf(`frr defaults traditional
hostname r
log stdout informational
!
router bgp 64512
 bgp router-id %[1]s
 no bgp default ipv4-unicast
 neighbor %[2]s remote-as 65001
 neighbor %[2]s ttl-security hops 1
 neighbor %[2]s timers connect 1
 neighbor %[3]s remote-as 65001
 neighbor %[3]s timers connect 1
 address-family ipv4 unicast
  neighbor %[2]s activate
  neighbor %[2]s route-map ACCEPT in
 exit-address-family
 address-family ipv6 unicast
  neighbor %[3]s activate
  neighbor %[3]s route-map ACCEPT in
 exit-address-family
!
route-map ACCEPT permit 10
!
`, frrRouterAddr, frrNodeAddr, frrNode6))
	frr.Start("zebra", zconf)
	frr.Start("bgpd", bconf)

	birdConf := frr.Write("bird.conf", fmt.Sprintf(`router id %[1]s;
protocol device {}
protocol bgp spk {
  local %[1]s as 64512;
  neighbor %[2]s as 65001;
  ttl security on;
  connect retry time 1;
  ipv4 { import all; export none; };
}
`, gtsmBIRDAddr, gtsmBIRDNode))
	birdSock := filepath.Join(dir, "bird.ctl")
	b.Start("bird", "-f", "-c", birdConf, "-s", birdSock, "-P", filepath.Join(dir, "bird.pid"))
	frrtest.WaitFile(t, birdSock)

	cmd := n.Command(os.Args[0], "-test.run=^TestGTSMInterop$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "BGPLB_GTSM_CHILD=1", "BGPLB_FRR_NS="+r.Name, "BGPLB_FRR_VTY="+dir, "BGPLB_BIRD_SOCK="+birdSock)
	out, err := cmd.CombinedOutput()
	t.Logf("speaker side (in %s):\n%s", n.Name, out)
	if err != nil {
		t.Fatalf("speaker side failed: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: TestGTSMInterop") {
		t.Fatal("speaker side did not pass")
	}
}

// minTTLDrops reads TcpExt TCPMinTTLDrop of this process's namespace.
func minTTLDrops(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		t.Fatal(err)
	}
	var hdr []string
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "TcpExt:") {
			continue
		}
		if hdr == nil {
			hdr = strings.Fields(line)
			continue
		}
		for i, v := range strings.Fields(line) {
			if i < len(hdr) && hdr[i] == "TCPMinTTLDrop" {
				n, _ := strconv.Atoi(v)
				return n
			}
		}
	}
	t.Fatal("no TcpExt TCPMinTTLDrop")
	return 0
}

// gtsmChild runs inside the node namespace.
func gtsmChild(t *testing.T) {
	ns, vty, birdSock := os.Getenv("BGPLB_FRR_NS"), os.Getenv("BGPLB_FRR_VTY"), os.Getenv("BGPLB_BIRD_SOCK")
	ctx := context.Background()
	m := bgp.NewManager(testr.New(t))
	defer m.Shutdown(ctx, bgp.ShutdownOptions{})
	peer := func(name, addr string) bgp.PeerConfig {
		return bgp.PeerConfig{Name: name, Address: netip.MustParseAddr(addr), Port: 179, PeerASN: 64512, MyASN: 65001,
			RouterID: netip.MustParseAddr(frrNodeAddr), ConnectRetry: time.Second, HoldTime: 9 * time.Second, KeepaliveTime: 3 * time.Second,
			TTLSecurity: true}
	}
	drops := minTTLDrops(t)
	if err := m.SetPeers(ctx, []bgp.PeerConfig{peer("frr", frrRouterAddr), peer("frr-no-gtsm", frrRouter6), peer("bird", gtsmBIRDAddr)}); err != nil {
		t.Fatal(err)
	}
	adv := model.Advertisement{Prefix: netip.MustParsePrefix("192.168.254.10/32"), NextHop: netip.IPv4Unspecified()}
	for _, p := range []string{"frr", "bird"} {
		if _, err := m.Set(ctx, p, []model.Advertisement{adv}); err != nil {
			t.Fatal(err)
		}
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
				t.Fatalf("%s: %v\nstatus: %+v", what, err, m.Status(ctx))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitFor("the route at FRR, over GTSM", func() error {
		out, err := frrtest.Vtysh(ns, vty, "show bgp ipv4 unicast 192.168.254.10/32")
		if err != nil {
			return err
		}
		if !strings.Contains(out, frrNodeAddr) {
			return fmt.Errorf("no path via %s: %s", frrNodeAddr, out)
		}
		return nil
	})
	waitFor("the route at BIRD, over GTSM", func() error {
		out, err := exec.Command("birdc", "-s", birdSock, "show", "route", "192.168.254.10/32").CombinedOutput()
		if err != nil || !strings.Contains(string(out), gtsmBIRDNode) {
			return fmt.Errorf("birdc: %w %s", err, out)
		}
		return nil
	})
	waitFor("FRR's TTL-1 segments to the GTSM speaker dropped", func() error {
		if d := minTTLDrops(t) - drops; d < 3 {
			return fmt.Errorf("%d dropped", d)
		}
		return nil
	})
	for _, st := range m.Status(ctx) {
		if st.Name == "frr-no-gtsm" && st.State == "Established" {
			t.Errorf("session with FRR's neighbour without GTSM: %+v", st)
		}
		if (st.Name == "frr" || st.Name == "bird") && st.State != "Established" {
			t.Errorf("GTSM session: %+v", st)
		}
	}
}
