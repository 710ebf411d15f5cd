package agent

import (
	"testing"

	"github.com/bgplb/bgplb/internal/frrtest"
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
	frrtest.Require(t, "zebra", "bgpd")
	l := newLab(t)
	fns := l.host(t, "frrn", "192.168.2.30")
	pw := writeSecret(t, l)
	l.startAgent(t, l.writeConfigFrom(t, gtsmConfig(pw, "", "off"), ""))

	frr := frrtest.New(t, fns, "zebra", "bgpd")
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
	zconf, bconf := frr.Write("zebra.conf", "hostname n\n"), frr.Write("bgpd.conf", conf)
	frr.Start("zebra", zconf)
	frr.Start("bgpd", bconf, "-p", "0")

	waitFor(t, "FRR's route over TCP-MD5 and GTSM", func() bool { return l.hasRoute(t, "192.168.254.7/32", "192.168.2.30") })

	drops := l.kernelCounter(t, "/proc/net/netstat", "TcpExt", "TCPMinTTLDrop")
	if _, err := frr.Vtysh("configure terminal", "router bgp 64512", "no neighbor 192.168.2.1 ttl-security hops 1"); err != nil {
		t.Fatal(err)
	}
	// FRR may keep the established session with the old TTL; reset it.
	if _, err := frr.Vtysh("clear bgp ipv4 unicast 192.168.2.1"); err != nil {
		t.Fatal(err)
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
	t.Log(frr.Vtysh("show bgp summary"))
}
