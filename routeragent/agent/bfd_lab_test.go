package agent

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bgplb/bgplb/internal/bfd"
	"github.com/bgplb/bgplb/internal/frrtest"
	"github.com/bgplb/bgplb/internal/netnstest"
)

// bfdLabConfig admits the lab's speakers with BFD at its defaults (300 ms
// x 3) and a 90 s hold time: a next hop that leaves the routes within
// seconds of a link cut left them because of BFD, not the hold timer.
const bfdLabConfig = `asn: 64500
routerID: 192.168.2.1
neighbors:
  - prefix: 192.168.2.0/24
    asn: 64512
    allowUnauthenticated: true
    holdTime: 90s
    bfd: {enabled: true}
serviceSubnets: [192.168.254.0/24]
lanInterfaces: [lan0]
routes: {resyncInterval: 2s, staleTimeout: 60s}
metrics: {address: "off"}
log: {level: debug}
`

// nsBFDTransport opens a BFD Manager's sockets inside a namespace (a
// socket keeps its namespace, so the Manager runs in the test process).
type nsBFDTransport struct{ ns *netnstest.NS }

func (t nsBFDTransport) ListenControl(v6 bool) (r bfd.PacketReader, err error) {
	err = t.ns.Do(func() error {
		var e error
		r, e = bfd.KernelTransport{}.ListenControl(v6)
		return e
	})
	return r, err
}

func (t nsBFDTransport) OpenSender(local netip.Addr, iface string) (w bfd.PacketWriter, err error) {
	err = t.ns.Do(func() error {
		var e error
		w, e = bfd.KernelTransport{}.OpenSender(local, iface)
		return e
	})
	return w, err
}

// try sends a command and returns the speaker's answer.
func (s *speaker) try(line string) string {
	s.t.Helper()
	if _, err := fmt.Fprintln(s.in, line); err != nil {
		s.t.Fatalf("speaker %q: %v", line, err)
	}
	resp, err := s.out.ReadString('\n')
	if err != nil {
		s.t.Fatalf("speaker %q: %v", line, err)
	}
	return strings.TrimSpace(resp)
}

// bfdOf is the agent's view of the BFD session with addr (nil: none).
func (l *lab) bfdOf(t testing.TB, addr string) *PeerBFD {
	t.Helper()
	p, ok := l.peer(t, addr)
	if !ok {
		return nil
	}
	return p.BFD
}

// TestBFDNodeLinkCut: a node (GoBGP and an internal/bfd Manager, as
// bgplb-speaker with BFD) peers with the agent, BFD 300 ms x 3, BGP hold
// time 90 s. When the node's link is cut, the agent's BFD session fails,
// the node's next hop leaves the kernel route and the agent resets the BGP
// session, while the node's own BGP session still counts as established
// (its 90 s hold timer is far from expiring). When the link returns (and
// the node reset its side, as bgplb-speaker does when its BFD goes down),
// the session, BFD and the route come back.
func TestBFDNodeLinkCut(t *testing.T) {
	l := newLab(t)
	node := l.host(t, "bfdn", "192.168.2.40")
	l.startAgent(t, l.writeConfigFrom(t, bfdLabConfig, ""))
	sp := startSpeakerTo(t, node, "192.168.2.40", "192.168.2.1", "SPK_HOLD=90")
	m := bfd.New(bfd.Config{Transport: nsBFDTransport{node}})
	t.Cleanup(func() { _ = m.Close() })
	router := netip.MustParseAddr("192.168.2.1")
	if err := m.AddSession(t.Context(), bfd.SessionConfig{Local: netip.MustParseAddr("192.168.2.40"), Peer: router}); err != nil {
		t.Fatal(err)
	}
	nodeState := func() bfd.State { s, _ := m.State(router); return s.State }

	sp.do("up")
	sp.do("announce 192.168.254.40/32")
	waitFor(t, "the node's route", func() bool { return l.hasRoute(t, "192.168.254.40/32", "192.168.2.40") })
	waitFor(t, "BFD Up on both sides", func() bool {
		b := l.bfdOf(t, "192.168.2.40")
		return b != nil && b.State == "up" && nodeState() == bfd.StateUp
	})
	b := l.bfdOf(t, "192.168.2.40")
	if b.Local != router || b.TxInterval != "300ms" || b.DetectTime != "900ms" || b.Resets != 0 {
		t.Errorf("agent's BFD session: %+v", b)
	}

	cut := time.Now()
	node.Exec("ip", "link", "set", "eth0", "down")
	waitFor(t, "the node's next hop gone", func() bool { return l.hasRoute(t, "192.168.254.40/32") })
	took := time.Since(cut)
	st := l.status(t)
	b = l.bfdOf(t, "192.168.2.40")
	if st.BFD == nil || st.BFD.Resets != 1 || st.BFD.DownEvents != 1 {
		t.Errorf("BFD summary after the cut: %+v", st.BFD)
	}
	if b != nil && (b.Diag != "control detection time expired" || b.Resets != 1) {
		t.Errorf("agent's BFD session after the cut: %+v", b)
	}
	// The node's side of BGP has not noticed: the route went because of
	// BFD, not because a hold timer expired.
	if got := sp.try("established"); got != "ok" {
		t.Errorf("node's BGP session after the cut: %q, want still established (hold time 90 s)", got)
	}
	t.Logf("link cut -> next hop out of the kernel route: %v (BFD 300ms x 3, BGP hold 90s)", took.Round(time.Millisecond))

	waitFor(t, "the node's BFD session down", func() bool { return nodeState() == bfd.StateDown })
	sp.do("reset") // what bgplb-speaker does when its BFD session goes down
	node.Exec("ip", "link", "set", "eth0", "up")
	waitFor(t, "the node's route back", func() bool { return l.hasRoute(t, "192.168.254.40/32", "192.168.2.40") })
	waitFor(t, "BFD Up again", func() bool {
		b := l.bfdOf(t, "192.168.2.40")
		return b != nil && b.State == "up" && !b.Withdrawn && nodeState() == bfd.StateUp
	})
	if st := l.status(t); st.BFD.Sessions["up"] != 1 || st.BFD.Withdrawn != 0 {
		t.Errorf("BFD summary after the return: %+v", st.BFD)
	}
}

// frrBFDPeer is one entry of FRR's `show bfd peers json`.
type frrBFDPeer struct {
	Peer   string `json:"peer"`
	Status string `json:"status"`
}

// TestFRRNodeBFD: FRR as a node (Debian's frr: bgpd with "neighbor X bfd"
// and bfdd) against the agent: BFD comes Up on both sides. Cutting the
// node's link takes its next hop out of the kernel route and resets the
// BGP session (hold time 90 s); with the link back, session, BFD and route
// return. Killing FRR's bfdd takes the next hop out at once too.
func TestFRRNodeBFD(t *testing.T) {
	frrtest.Require(t, "zebra", "bgpd", "bfdd")
	l := newLab(t)
	fns := l.host(t, "frrb", "192.168.2.30")
	// FRR 8.4 makes the BFD session of a neighbour with ttl-security a
	// multihop one (RFC 5883, UDP 4784), which the agent does not run:
	// this node peers without GTSM (docs/routeragent.md, BFD).
	l.startAgent(t, l.writeConfigFrom(t, strings.Replace(bfdLabConfig, "serviceSubnets:", `  - address: 192.168.2.30
    asn: 64512
    ttlSecurity: false
    holdTime: 90s
    bfd: {enabled: true}
serviceSubnets:`, 1), ""))

	frr := frrtest.New(t, fns, "zebra", "bgpd", "bfdd")
	zconf := frr.Write("zebra.conf", "hostname n\n")
	bfdconf := frr.Write("bfdd.conf", "hostname n\nlog stdout informational\ndebug bfd peer\n")
	bconf := frr.Write("bgpd.conf", `frr defaults traditional
hostname n
log stdout informational
!
router bgp 64512
 bgp router-id 192.168.2.30
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor 192.168.2.1 remote-as 64500
 neighbor 192.168.2.1 timers 30 90
 neighbor 192.168.2.1 timers connect 1
 neighbor 192.168.2.1 bfd
 address-family ipv4 unicast
  network 192.168.254.7/32
 exit-address-family
!
`)
	frr.Start("zebra", zconf)
	startBFDD := func() *exec.Cmd { return frr.Start("bfdd", bfdconf) }
	bfdd := startBFDD()
	frr.Start("bgpd", bconf, "-p", "0")
	frrBFD := func() string {
		out, err := frr.Vtysh("show bfd peers json")
		if err != nil {
			return ""
		}
		var ps []frrBFDPeer
		if json.Unmarshal([]byte(out), &ps) != nil {
			return ""
		}
		for _, p := range ps {
			if p.Peer == "192.168.2.1" {
				return p.Status
			}
		}
		return ""
	}
	bothUp := func() bool {
		b := l.bfdOf(t, "192.168.2.30")
		return b != nil && b.State == "up" && !b.Withdrawn && frrBFD() == "up"
	}
	const svc = "192.168.254.7/32"

	waitFor(t, "FRR's route", func() bool { return l.hasRoute(t, svc, "192.168.2.30") })
	waitFor(t, "BFD Up on both sides", bothUp)

	// FRR's bfdd may take its session down and up once while it starts
	// (seen once: two down events before the cut), so the counts are
	// compared with what they were before each fault.
	base := l.status(t).BFD
	if base == nil {
		t.Fatal("no BFD summary in the status with BFD Up")
	}

	// The node's link is cut.
	cut := time.Now()
	fns.Exec("ip", "link", "set", "eth0", "down")
	waitFor(t, "FRR's next hop gone after the link cut", func() bool { return l.hasRoute(t, svc) })
	took := time.Since(cut)
	if st := l.status(t); st.BFD == nil || st.BFD.Resets != base.Resets+1 || st.BFD.DownEvents != base.DownEvents+1 {
		t.Errorf("BFD summary after the link cut: %+v (before it: %+v)", st.BFD, base)
	}
	t.Logf("FRR node, link cut -> next hop out of the kernel route: %v (BFD 300ms x 3, BGP hold 90s)", took.Round(time.Millisecond))
	fns.Exec("ip", "link", "set", "eth0", "up")
	waitFor(t, "FRR's route back", func() bool { return l.hasRoute(t, svc, "192.168.2.30") })
	waitFor(t, "BFD Up again on both sides", bothUp)

	// FRR's bfdd dies; bgpd and the link stay.
	waitFor(t, "FRR's route and BFD Up", func() bool { return l.hasRoute(t, svc, "192.168.2.30") && bothUp() })
	base = l.status(t).BFD
	kill := time.Now()
	if err := bfdd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "FRR's next hop gone after bfdd died", func() bool { return l.hasRoute(t, svc) })
	took = time.Since(kill)
	if st := l.status(t); st.BFD == nil || st.BFD.Resets != base.Resets+1 || st.BFD.DownEvents != base.DownEvents+1 {
		t.Errorf("BFD summary after bfdd died: %+v (before it: %+v)", st.BFD, base)
	}
	t.Logf("FRR node, bfdd killed -> next hop out of the kernel route: %v", took.Round(time.Millisecond))
	// FRR's bgpd connects again; without BFD Up the new session's routes
	// are accepted (as FRR does without "bfd strict"); a new bfdd brings
	// BFD back.
	_ = bfdd.Wait()
	startBFDD()
	waitFor(t, "FRR's route back with a new bfdd", func() bool { return l.hasRoute(t, svc, "192.168.2.30") })
	waitFor(t, "BFD Up with the new bfdd", bothUp)
	t.Log(frr.Vtysh("show bfd peers"))
}

// TestBFDNodeLinkCutIPv6: TestBFDNodeLinkCut over an IPv6 BGP session and
// an IPv6 BFD session (RFC 5881 over UDP/IPv6, hop limit 255): the node's
// link is cut, its next hop leaves the /128's kernel route because of BFD
// (hold time 90 s), the BGP session is reset; the link returns and
// everything comes back.
func TestBFDNodeLinkCutIPv6(t *testing.T) {
	const (
		routerV6 = "2001:db8:2::1"
		nodeV6   = "2001:db8:2::40"
		prefix   = "2001:db8:254::40/128"
	)
	l := newLab(t)
	l.router.Exec("ip", "addr", "add", routerV6+"/64", "dev", "lan0", "nodad")
	node := l.host(t, "bfd6", "192.168.2.41")
	node.Exec("ip", "addr", "add", nodeV6+"/64", "dev", "eth0", "nodad")
	// IPv6 flushes a link's global addresses when it goes down unless told.
	node.Exec("sysctl", "-qw", "net.ipv6.conf.eth0.keep_addr_on_down=1")
	cfg := strings.Replace(bfdLabConfig, "serviceSubnets: [192.168.254.0/24]",
		"  - prefix: 2001:db8:2::/64\n    asn: 64512\n    allowUnauthenticated: true\n    holdTime: 90s\n    bfd: {enabled: true}\nserviceSubnets: [192.168.254.0/24, \"2001:db8:254::/64\"]", 1)
	l.startAgent(t, l.writeConfigFrom(t, cfg, ""))
	sp := startSpeakerTo(t, node, nodeV6, routerV6, "SPK_HOLD=90")
	m := bfd.New(bfd.Config{Transport: nsBFDTransport{node}})
	t.Cleanup(func() { _ = m.Close() })
	router := netip.MustParseAddr(routerV6)
	if err := m.AddSession(t.Context(), bfd.SessionConfig{Local: netip.MustParseAddr(nodeV6), Peer: router}); err != nil {
		t.Fatal(err)
	}
	nodeState := func() bfd.State { s, _ := m.State(router); return s.State }
	route := func() string { return l.router.Exec("ip", "-6", "route", "show", prefix) }
	installed := func() bool {
		r := route()
		return strings.Contains(r, "via "+nodeV6) && strings.Contains(r, "proto 220")
	}

	sp.do("up")
	sp.do("announce " + prefix)
	waitFor(t, "the node's IPv6 route", installed)
	waitFor(t, "IPv6 BFD Up on both sides", func() bool {
		b := l.bfdOf(t, nodeV6)
		return b != nil && b.State == "up" && nodeState() == bfd.StateUp
	})
	if b := l.bfdOf(t, nodeV6); b.Local != router || b.DetectTime != "900ms" || b.Resets != 0 {
		t.Errorf("agent's IPv6 BFD session: %+v", b)
	}

	cut := time.Now()
	node.Exec("ip", "link", "set", "eth0", "down")
	waitFor(t, "the node's IPv6 next hop gone", func() bool { return strings.TrimSpace(route()) == "" })
	took := time.Since(cut)
	if b := l.bfdOf(t, nodeV6); b != nil && (b.Diag != "control detection time expired" || b.Resets != 1) {
		t.Errorf("agent's IPv6 BFD session after the cut: %+v", b)
	}
	if got := sp.try("established"); got != "ok" {
		t.Errorf("node's BGP session after the cut: %q, want still established (hold time 90 s)", got)
	}
	t.Logf("IPv6: link cut -> next hop out of the kernel route: %v (BFD 300ms x 3, BGP hold 90s)", took.Round(time.Millisecond))

	waitFor(t, "the node's BFD session down", func() bool { return nodeState() == bfd.StateDown })
	sp.do("reset")
	node.Exec("ip", "link", "set", "eth0", "up")
	waitFor(t, "the node's IPv6 route back", installed)
	waitFor(t, "IPv6 BFD Up again", func() bool {
		b := l.bfdOf(t, nodeV6)
		return b != nil && b.State == "up" && !b.Withdrawn && nodeState() == bfd.StateUp
	})
}
