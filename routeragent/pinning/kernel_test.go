package pinning

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bgplb/bgplb/internal/netnstest"
)

// pinLab: client, router, node1 and node2 on one bridge (bgplb's LAN), the
// service address on both nodes' lo, each node answering every line with
// its name on the same connection. The client reaches the service through
// the router; the nodes answer the client directly (asymmetric: the router
// sees one direction, as on bgplb's usual LAN) or, with sym, through the
// router.
type pinLab struct {
	client, router *netnstest.NS
	fam            pinFamily
}

// pinFamily holds one address family's addresses.
type pinFamily struct {
	name         string
	service      string
	subnet       netip.Prefix
	node1, node2 netip.Addr
	// addr returns host h's address on the LAN (1 router, 9 client, 21
	// and 22 the nodes), with its length.
	addr func(h int) string
}

var (
	pinV4 = pinFamily{name: "ipv4", service: "198.51.100.10", subnet: netip.MustParsePrefix("198.51.100.0/24"),
		node1: netip.MustParseAddr("10.0.0.21"), node2: netip.MustParseAddr("10.0.0.22"),
		addr: func(h int) string { return fmt.Sprintf("10.0.0.%d/24", h) }}
	pinV6 = pinFamily{name: "ipv6", service: "2001:db8:254::10", subnet: netip.MustParsePrefix("2001:db8:254::/64"),
		node1: netip.MustParseAddr("fd00::21"), node2: netip.MustParseAddr("fd00::22"),
		addr: func(h int) string { return fmt.Sprintf("fd00::%d/64", h) }}
)

func bare(cidr string) string { return strings.Split(cidr, "/")[0] }

const pinPort = 8080

func newPinLab(t *testing.T, f pinFamily, sym bool) *pinLab {
	t.Helper()
	sw := netnstest.New(t, "pinsw")
	plug := netnstest.Bridge(t, sw, "br0")
	client := netnstest.New(t, "pinc")
	router := netnstest.New(t, "pinr")
	ip := "-4"
	if f.node1.Is6() {
		ip = "-6"
		netnstest.NoDAD(client)
		netnstest.NoDAD(router)
	}
	plug(router, "lan0", f.addr(1))
	plug(client, "lan0", f.addr(9))
	// The router forwards out of the interface the packets came in on: the
	// client must not take its redirects (nor the router send them).
	client.Exec("sysctl", "-qw", "net.ipv4.conf.all.accept_redirects=0", "net.ipv6.conf.all.accept_redirects=0",
		"net.ipv6.conf.lan0.accept_redirects=0", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.lan0.rp_filter=0")
	client.Exec("ip", ip, "route", "add", f.service, "via", bare(f.addr(1)))
	router.Exec("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=1",
		"net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.lan0.send_redirects=0",
		"net.ipv6.conf.all.forwarding=1", "net.ipv6.fib_multipath_hash_policy=1")
	for i, nh := range []netip.Addr{f.node1, f.node2} {
		name := fmt.Sprintf("node%d", i+1)
		node := netnstest.New(t, fmt.Sprintf("pinn%d", i+1))
		if ip == "-6" {
			netnstest.NoDAD(node)
		}
		plug(node, "lan0", f.addr(21+i))
		if sym {
			node.Exec("ip", ip, "route", "add", bare(f.addr(9)), "via", bare(f.addr(1)))
		}
		node.Exec("ip", "addr", "add", f.service+"/"+fmt.Sprint(nh.BitLen()), "dev", "lo")
		netnstest.ServeName(t, node, net.JoinHostPort(f.service, fmt.Sprint(pinPort)), name)
	}
	router.Exec("ip", ip, "route", "add", f.service, "nexthop", "via", f.node1.String(), "nexthop", "via", f.node2.String())
	return &pinLab{client: client, router: router, fam: f}
}

// conn is one client connection kept open.
type conn struct {
	c net.Conn
	r *bufio.Reader
}

// dial connects from the client, from local port port (0: any).
func (l *pinLab) dial(t *testing.T, port int) *conn {
	t.Helper()
	var c net.Conn
	if err := l.client.Do(func() (err error) {
		d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{Port: port}}
		c, err = d.Dial("tcp", net.JoinHostPort(l.fam.service, fmt.Sprint(pinPort)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &conn{c: c, r: bufio.NewReader(c)}
}

// ask sends a line and returns the answering node's name.
func (c *conn) ask() (string, error) {
	if err := c.c.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
		return "", err
	}
	if _, err := c.c.Write([]byte("who\n")); err != nil {
		return "", err
	}
	s, err := c.r.ReadString('\n')
	return strings.TrimSpace(s), err
}

// reset closes with a RST (SO_LINGER 0): no TIME_WAIT, the port is free at once.
func (c *conn) reset() error {
	if err := c.c.(*net.TCPConn).SetLinger(0); err != nil {
		return err
	}
	return c.c.Close()
}

func (l *pinLab) kernel(t *testing.T, f func(k *Netlink) error) {
	t.Helper()
	if err := l.router.Do(func() error {
		k, err := NewNetlink(220)
		if err != nil {
			return err
		}
		defer k.Close()
		return f(k)
	}); err != nil {
		t.Fatal(err)
	}
}

func (l *pinLab) apply(t *testing.T, pins ...Pin) {
	t.Helper()
	l.kernel(t, func(k *Netlink) error { return k.Apply([]netip.Prefix{pinV4.subnet, pinV6.subnet}, pins, true) })
}

// TestKernelPinKeepsConnections: connections opened while the route has
// both next hops keep answering from their first node after node1 left the
// route (still reachable, as under GRACEFUL_SHUTDOWN), new ones go to
// node2, a new connection reusing an old one's ports is not held by its
// pin; the pins survive a restart (Load) and a `flush ruleset`; removing
// node1's pin re-hashes its connections (node2 resets them); Remove leaves
// nothing behind. For both families, with the nodes answering the client
// directly (the router sees one direction) and through the router.
func TestKernelPinKeepsConnections(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, f := range []pinFamily{pinV4, pinV6} {
		for _, sym := range []bool{false, true} {
			name := f.name + "/asymmetric"
			if sym {
				name = f.name + "/symmetric"
			}
			t.Run(name, func(t *testing.T) { testKernelPin(t, f, sym) })
		}
	}
}

func testKernelPin(t *testing.T, f pinFamily, sym bool) {
	l := newPinLab(t, f, sym)
	node1, node2, ip := f.node1, f.node2, "-4"
	if f.node1.Is6() {
		ip = "-6"
	}
	l.apply(t, Pin{NextHop: node1, Slot: 1}, Pin{NextHop: node2, Slot: 2})
	t.Log(l.router.Exec("nft", "list", "table", "inet", NftTable))

	// Enough connections (ports hashed) to have some on each node.
	var conns []*conn
	first := map[*conn]string{}
	count := map[string]int{}
	for i := 0; i < 64 && (i < 16 || count["node1"] == 0 || count["node2"] == 0); i++ {
		c := l.dial(t, 0)
		who, err := c.ask()
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns, first[c] = append(conns, c), who
		count[who]++
	}
	if count["node1"] == 0 || count["node2"] == 0 {
		t.Fatalf("connections did not reach both nodes: %v", count)
	}
	t.Logf("connections by node: %v", count)
	var reused *conn // a node1 connection whose port is reused below
	for _, c := range conns {
		if first[c] == "node1" {
			reused = c
		}
	}

	// node1 leaves the ECMP set but stays reachable: hash-threshold moves
	// every node1 connection to node2.
	l.router.Exec("ip", ip, "route", "replace", f.service, "via", node2.String())
	for i, c := range conns {
		who, err := c.ask()
		if err != nil || who != first[c] {
			t.Fatalf("connection %d (first on %s) after node1 left the route: %q, %v", i, first[c], who, err)
		}
	}
	for i := 0; i < 8; i++ {
		if who, err := l.dial(t, 0).ask(); err != nil || who != "node2" {
			t.Fatalf("new connection %d after node1 left the route: %q, %v", i, who, err)
		}
	}
	// A new connection from a node1 connection's port (its flow entry still
	// there) is a new flow: it follows the route.
	port := reused.c.LocalAddr().(*net.TCPAddr).Port
	if err := reused.reset(); err != nil {
		t.Fatal(err)
	}
	for i, c := range conns {
		if c == reused {
			conns = append(conns[:i], conns[i+1:]...)
			break
		}
	}
	if who, err := l.dial(t, port).ask(); err != nil || who != "node2" {
		t.Fatalf("new connection from port %d of a node1 connection: %q, %v", port, who, err)
	}

	// A restarted agent finds the slots; a `flush ruleset` (nftables.service
	// reload) loses the table, which the next full Apply puts back: the
	// flows are lost with it, and re-recorded where the route sends them.
	var loaded map[netip.Addr]int
	l.kernel(t, func(k *Netlink) (err error) {
		loaded, err = k.Load()
		return err
	})
	if len(loaded) != 2 || loaded[node1] != 1 || loaded[node2] != 2 {
		t.Fatalf("loaded %v, want slots 1 and 2", loaded)
	}
	// Changes of the pins keep the flows (the table is not made anew).
	pC := netip.MustParseAddr("10.0.0.99")
	if f.node1.Is6() {
		pC = netip.MustParseAddr("fd00::99")
	}
	l.apply(t, Pin{NextHop: node1, Slot: 1}, Pin{NextHop: node2, Slot: 2}, Pin{NextHop: pC, Slot: 3})
	for i, c := range conns {
		if who, err := c.ask(); err != nil || who != first[c] {
			t.Fatalf("connection %d (first on %s) after a pin was added: %q, %v", i, first[c], who, err)
		}
	}

	// node1 is gone for good: without its pin its connections follow the
	// route to node2, which has no socket for them.
	l.apply(t, Pin{NextHop: node2, Slot: 2})
	for i, c := range conns {
		who, err := c.ask()
		switch {
		case first[c] == "node2" && (err != nil || who != "node2"):
			t.Fatalf("connection %d on node2 after node1's pin went: %q, %v", i, who, err)
		case first[c] == "node1" && err == nil:
			t.Fatalf("connection %d of node1 still answered by %s after its pin went", i, who)
		case first[c] == "node1" && !errors.Is(err, syscall.ECONNRESET):
			t.Logf("connection %d of node1: %v", i, err)
		}
	}

	l.router.Exec("nft", "flush", "ruleset")
	l.apply(t, Pin{NextHop: node2, Slot: 2})
	if out := l.router.Exec("nft", "list", "table", "inet", NftTable); !strings.Contains(out, "elements = { 0x02000000 }") {
		t.Fatalf("table not back after flush ruleset:\n%s", out)
	}

	l.kernel(t, func(k *Netlink) error { return k.Remove() })
	if out, _ := l.router.Try("nft", "list", "table", "inet", NftTable); !strings.Contains(out, "No such file") {
		t.Fatalf("table inet %s left after Remove: %s", NftTable, out)
	}
	if out := l.router.Exec("ip", ip, "rule", "list"); strings.Contains(out, "900:") {
		t.Fatalf("rules left after Remove:\n%s", out)
	}
	if out := l.router.Exec("ip", ip, "route", "list", "table", "all"); strings.Contains(out, "table 16515072") {
		t.Fatalf("routes left after Remove:\n%s", out)
	}
}
