package bgp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/bgplb/bgplb/internal/frrtest"
	"github.com/bgplb/bgplb/internal/netnstest"
	"github.com/bgplb/bgplb/speaker/bgp"
	"github.com/bgplb/bgplb/speaker/model"
)

// TestFRRWeightedECMP (issue 13): FRR as the router weights its ECMP next
// hops by the speakers' link-bandwidth communities. Two speakers (each in
// its own namespace, a child run of this test binary as in TestFRRInterop)
// announce one /32 with weights 3 and 1; FRR's zebra installs a multipath
// route in R's kernel whose weights are 3:1.
func TestFRRWeightedECMP(t *testing.T) {
	if os.Getenv("BGPLB_FRRW_CHILD") == "1" {
		frrWeightChild(t)
		return
	}
	netnstest.RequireRoot(t)
	r := netnstest.New(t, "frrw")
	n1 := netnstest.New(t, "spk1")
	n2 := netnstest.New(t, "spk2")
	netnstest.Veth(t, r, "eth1", "192.168.2.1/24", n1, "eth0", "192.168.2.10/24")
	netnstest.Veth(t, r, "eth2", "192.168.3.1/24", n2, "eth0", "192.168.3.10/24")

	frr := frrtest.New(t, r, "zebra", "bgpd")
	// FRR's default `bgp bestpath bandwidth` weights multipath next hops by
	// link bandwidth when every path carries it.
	conf := `frr defaults traditional
hostname r
log stdout informational
!
router bgp 64512
 bgp router-id 192.168.2.1
 no bgp default ipv4-unicast
 neighbor 192.168.2.10 remote-as 65001
 neighbor 192.168.3.10 remote-as 65001
 address-family ipv4 unicast
  maximum-paths 8
  neighbor 192.168.2.10 activate
  neighbor 192.168.2.10 route-map ACCEPT in
  neighbor 192.168.3.10 activate
  neighbor 192.168.3.10 route-map ACCEPT in
 exit-address-family
!
route-map ACCEPT permit 10
!
`
	frr.Start("zebra", frr.Write("zebra.conf", "hostname r\n"))
	frr.Start("bgpd", frr.Write("bgpd.conf", conf))

	// The speakers run until their stdin closes.
	type child struct {
		cmd *exec.Cmd
		in  io.WriteCloser
		out *os.File
	}
	var children []child
	for i, n := range []*netnstest.NS{n1, n2} {
		cmd := n.Command(os.Args[0], "-test.run=^TestFRRWeightedECMP$", "-test.v", "-test.count=1")
		addr := fmt.Sprintf("192.168.%d.10", i+2)
		cmd.Env = append(os.Environ(), "BGPLB_FRRW_CHILD=1", "BGPLB_FRRW_ADDR="+addr,
			"BGPLB_FRRW_ROUTER="+fmt.Sprintf("192.168.%d.1", i+2), "BGPLB_FRRW_WEIGHT="+strconv.Itoa(3-2*i))
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.CreateTemp(frr.Dir, "child")
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		children = append(children, child{cmd, in, out})
	}
	stop := func() {
		for _, c := range children {
			c.in.Close()
			err := c.cmd.Wait()
			b, _ := os.ReadFile(c.out.Name())
			if err != nil {
				t.Errorf("speaker child: %v\n%s", err, b)
			}
		}
		children = nil
	}
	t.Cleanup(func() {
		for _, c := range children {
			_ = c.cmd.Process.Kill()
			_ = c.cmd.Wait()
		}
	})

	// R's kernel route: both next hops, weights 3:1 (FRR gives each its
	// share of the total in percent: 75 and 25).
	type nh struct {
		Gateway string `json:"gateway"`
		Weight  int    `json:"weight"`
	}
	var got []nh
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := r.Try("ip", "-j", "route", "show", "192.168.254.10")
		var routes []struct {
			Nexthops []nh `json:"nexthops"`
		}
		if err == nil && json.Unmarshal([]byte(out), &routes) == nil && len(routes) == 1 {
			got = routes[0].Nexthops
			if len(got) == 2 && got[0].Weight > 0 && got[1].Weight > 0 {
				w := map[string]int{got[0].Gateway: got[0].Weight, got[1].Gateway: got[1].Weight}
				if w["192.168.2.10"] == 3*w["192.168.3.10"] {
					t.Logf("FRR installed %s", out)
					break
				}
			}
		}
		if time.Now().After(deadline) {
			s, _ := frr.Vtysh("show bgp ipv4 unicast 192.168.254.10/32")
			t.Fatalf("want a route weighted 3:1 in the router's kernel, got %+v (%s)\n%s", got, out, s)
		}
		time.Sleep(200 * time.Millisecond)
	}
	stop()
}

// frrWeightChild runs one speaker inside its node namespace until stdin
// closes.
func frrWeightChild(t *testing.T) {
	addr, router := netip.MustParseAddr(os.Getenv("BGPLB_FRRW_ADDR")), netip.MustParseAddr(os.Getenv("BGPLB_FRRW_ROUTER"))
	w, err := strconv.Atoi(os.Getenv("BGPLB_FRRW_WEIGHT"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	m := bgp.NewManager(testr.New(t))
	defer m.Shutdown(ctx, bgp.ShutdownOptions{})
	if err := m.SetPeers(ctx, []bgp.PeerConfig{{Name: "r", Address: router, Port: 179, PeerASN: 64512, MyASN: 65001,
		RouterID: addr, ConnectRetry: time.Second, HoldTime: 9 * time.Second, KeepaliveTime: 3 * time.Second}}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Set(ctx, "r", []model.Advertisement{{Prefix: netip.MustParsePrefix("192.168.254.10/32"),
		NextHop: netip.IPv4Unspecified(), Weight: uint32(w)}}); err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
}
