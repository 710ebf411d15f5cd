package firewall

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/bgplb/bgplb/internal/netnstest"
	"github.com/bgplb/bgplb/routeragent/sysctl"
)

// icmpOut returns the router namespace's Icmp OutRedirects from /proc/net/snmp.
func icmpOutRedirects(t *testing.T, ns *netnstest.NS) int {
	t.Helper()
	var hdr, val []string
	for _, l := range strings.Split(stdout(t, ns, "cat", "/proc/net/snmp"), "\n") {
		if !strings.HasPrefix(l, "Icmp:") {
			continue
		}
		if hdr == nil {
			hdr = strings.Fields(l)
		} else {
			val = strings.Fields(l)
		}
	}
	for i, h := range hdr {
		if h == "OutRedirects" && i < len(val) {
			n, err := strconv.Atoi(val[i])
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no Icmp OutRedirects in /proc/net/snmp")
	return 0
}

// exchange connects from the client namespace (source address src) to the
// service and does one request/response. A connection whose client ACKs
// are dropped still "connects" on the client side (the SYN-ACK came
// straight from the node), so only a reply proves the path works.
func exchange(client *netnstest.NS, src, dst string) error { return netnstest.Ping(client, src, dst) }

// seedService is the service address of the seed lab.
const seedService = "192.168.254.1:3142"

// seedLab rebuilds the seed's network: client, router and node on one L2
// (a bridge in a switch namespace), the service address on the node's lo,
// a static route on the router towards the node, and no firewall yet (the
// caller loads one). The client ignores ICMP redirects like the seed's
// Windows and Android clients.
func seedLab(t *testing.T) (client, router *netnstest.NS) {
	t.Helper()
	sw := netnstest.New(t, "sw")
	client = netnstest.New(t, "client")
	router = netnstest.New(t, "router")
	node := netnstest.New(t, "node")
	plug := netnstest.Bridge(t, sw, "br0")
	for _, s := range []string{"net.ipv4.conf.all.accept_redirects=0", "net.ipv4.conf.default.accept_redirects=0"} {
		client.Exec("sysctl", "-qw", s)
	}
	plug(client, "eth0", "192.168.2.109/24")
	client.Exec("ip", "addr", "add", "192.168.2.110/24", "dev", "eth0")
	plug(router, "lan0", "192.168.2.1/24")
	plug(node, "eth0", "192.168.2.20/24")
	node.Exec("ip", "addr", "add", "192.168.254.1/32", "dev", "lo")
	client.Exec("ip", "route", "add", "default", "via", "192.168.2.1")
	router.Exec("sysctl", "-qw", "net.ipv4.ip_forward=1")
	router.Exec("ip", "route", "add", "192.168.254.1/32", "via", "192.168.2.20")

	// The service: a ping/pong responder in the node namespace.
	netnstest.ServePing(t, node, seedService, nil)
	return client, router
}

// TestKernelSeedNetwork: the seed's network (seedLab) with a ferm-like
// stateful firewall (iptables-legacy) on the router.
func TestKernelSeedNetwork(t *testing.T) {
	client, router := seedLab(t)
	restore(t, router, "iptables-legacy", fermRuleset)
	const service = seedService

	// Before: the handshake's last ACK is INVALID on the router and dropped;
	// and the router sends an ICMP redirect (which this client ignores).
	err := exchange(client, "192.168.2.109", service)
	var ne net.Error
	if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("before the agent: exchange error %v, want a timeout", err)
	}
	invalidDrops := stdout(t, router, "iptables-legacy", "-v", "-x", "-n", "-L", "FORWARD", "1")
	if f := strings.Fields(invalidDrops); len(f) < 1 || f[0] == "0" {
		t.Errorf("the INVALID drop did not count the client's ACK: %q", invalidDrops)
	}
	if n := icmpOutRedirects(t, router); n == 0 {
		t.Errorf("router sent no ICMP redirect before Apply; the setup does not reproduce the seed")
	}

	// The agent's two fixes.
	m, err := New(Config{Interfaces: []string{"lan0"}, Subnets: mustPrefixes("192.168.254.0/24")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st := ensureIn(t, router, m); st.Backend != "legacy" {
		t.Fatalf("status %+v", st)
	}
	red := sysctl.Redirects{StateFile: filepath.Join(t.TempDir(), "state.json")}
	if err := router.Do(func() error {
		rep, err := red.Apply([]string{"lan0"})
		if err == nil && !rep.Ok() {
			err = fmt.Errorf("report %+v", rep)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	redirects := icmpOutRedirects(t, router)

	// After: works, from the same client address and from a fresh one (a
	// fresh source has no redirect rate-limit history on the router, so a
	// redirect would certainly be sent if send_redirects were still on).
	for _, src := range []string{"192.168.2.110", "192.168.2.109"} {
		if err := exchange(client, src, service); err != nil {
			t.Errorf("after Ensure+Apply from %s: %v", src, err)
		}
	}
	if n := icmpOutRedirects(t, router); n != redirects {
		t.Errorf("router sent %d ICMP redirects after Apply", n-redirects)
	}
	// The exemption's counters show the packets it let through.
	st := ensureIn(t, router, m)
	if len(st.Rules) != 1 || st.Rules[0].Packets == 0 {
		t.Errorf("exemption counters: %+v", st.Rules)
	}
}
