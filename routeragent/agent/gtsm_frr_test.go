package agent

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/bgplb/bgplb/internal/netnstest"
	"github.com/bgplb/bgplb/internal/tcpmd5"
)

// TestFRRNodeGTSM: FRR as a node (Debian's frr 8.4, in a host namespace of
// the lab) peers with the agent's defaults (TCP-MD5 and GTSM) when it is
// configured the same way ("neighbor X password", "neighbor X
// ttl-security hops 1"), and its route is installed. When FRR stops sending
// TTL 255 (the ttl-security line removed: eBGP with TTL 1 again) its session
// never comes back, the route leaves the kernel, and the router's kernel
// counts the dropped segments (TCPMinTTLDrop): the failure an upgrade
// causes for FRR peers without GTSM (docs/install.md).
func TestFRRNodeGTSM(t *testing.T) {
	netnstest.RequirePrecondition(t, tcpmd5.ListenerSupported(), "this kernel has no TCP-MD5")
	for _, bin := range []string{"/usr/lib/frr/zebra", "/usr/lib/frr/bgpd", "vtysh"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("FRR is required for this test (apt-get install frr): %v", err)
		}
	}
	l := newLab(t)
	fns := l.host(t, "frrn", "192.168.2.30")
	pw := writeSecret(t, l)
	l.startAgent(t, l.writeConfigFrom(t, gtsmConfig(pw, "", "off"), ""))

	// The daemons drop to the frr user: their folder must be reachable.
	dir, err := os.MkdirTemp("", "bgplb-frrnode-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	conf := `frr defaults traditional
hostname n
log stdout informational
!
router bgp 64512
 bgp router-id 192.168.2.30
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor 192.168.2.1 remote-as 64500
 neighbor 192.168.2.1 password right-secret
 neighbor 192.168.2.1 ttl-security hops 1
 neighbor 192.168.2.1 timers connect 1
 address-family ipv4 unicast
  network 192.168.254.7/32
 exit-address-family
!
`
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	zconf, bconf := write("zebra.conf", "hostname n\n"), write("bgpd.conf", conf)
	zsock := filepath.Join(dir, "zserv.api")
	fns.Start("/usr/lib/frr/zebra", "-u", "frr", "-g", "frr", "-f", zconf, "-i", filepath.Join(dir, "zebra.pid"),
		"-z", zsock, "--vty_socket", dir, "--log", "stdout")
	waitPath(t, zsock)
	fns.Start("/usr/lib/frr/bgpd", "-u", "frr", "-g", "frr", "-f", bconf, "-i", filepath.Join(dir, "bgpd.pid"),
		"-z", zsock, "--vty_socket", dir, "--log", "stdout", "-p", "0")
	waitPath(t, filepath.Join(dir, "bgpd.vty"))

	waitFor(t, "FRR's route over TCP-MD5 and GTSM", func() bool { return l.hasRoute(t, "192.168.254.7/32", "192.168.2.30") })

	drops := l.kernelCounter(t, "/proc/net/netstat", "TcpExt", "TCPMinTTLDrop")
	out, err := fns.Try("vtysh", "--vty_socket", dir, "-c", "configure terminal", "-c", "router bgp 64512",
		"-c", "no neighbor 192.168.2.1 ttl-security hops 1")
	if err != nil {
		t.Fatalf("vtysh: %v\n%s", err, out)
	}
	// FRR may keep the established session with the old TTL; reset it.
	if out, err := fns.Try("vtysh", "--vty_socket", dir, "-c", "clear bgp ipv4 unicast 192.168.2.1"); err != nil {
		t.Fatalf("vtysh: %v\n%s", err, out)
	}
	waitFor(t, "FRR's route gone", func() bool { return l.hasRoute(t, "192.168.254.7/32") })
	waitFor(t, "FRR's TTL-1 segments dropped", func() bool {
		return l.kernelCounter(t, "/proc/net/netstat", "TcpExt", "TCPMinTTLDrop")-drops >= 3
	})
	if p, ok := l.peer(t, "192.168.2.30"); ok && p.Up {
		t.Errorf("FRR without GTSM has a session: %+v", p)
	}
	if !l.hasRoute(t, "192.168.254.7/32") {
		t.Error("FRR's route is back without GTSM")
	}
	t.Log(fmt.Sprint(fns.Try("vtysh", "--vty_socket", dir, "-c", "show bgp summary")))
}

func waitPath(t *testing.T, p string) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(p); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not appear", p)
}
