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

// pinLab: client -- router -- node1 / node2, the service address on both
// nodes' lo, each node answering every line with its name on the same
// connection.
type pinLab struct {
	client, router *netnstest.NS
}

const (
	pinService = "198.51.100.10"
	pinPort    = 8080
)

var (
	pinSubnet = netip.MustParsePrefix("198.51.100.0/24")
	pinNode1  = netip.MustParseAddr("10.1.0.2")
	pinNode2  = netip.MustParseAddr("10.2.0.2")
)

func newPinLab(t *testing.T) *pinLab {
	t.Helper()
	client := netnstest.New(t, "pinc")
	router := netnstest.New(t, "pinr")
	netnstest.Veth(t, router, "r-c", "10.9.0.1/24", client, "c-r", "10.9.0.2/24")
	client.Exec("ip", "route", "add", "default", "via", "10.9.0.1")
	router.Exec("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=1")
	for i, nh := range []netip.Addr{pinNode1, pinNode2} {
		name := fmt.Sprintf("node%d", i+1)
		node := netnstest.New(t, fmt.Sprintf("pinn%d", i+1))
		netnstest.Veth(t, router, fmt.Sprintf("r-n%d", i+1), fmt.Sprintf("10.%d.0.1/24", i+1), node, "n-r", nh.String()+"/24")
		node.Exec("ip", "route", "add", "default", "via", fmt.Sprintf("10.%d.0.1", i+1))
		node.Exec("ip", "addr", "add", pinService+"/32", "dev", "lo")
		serve(t, node, name)
	}
	router.Exec("ip", "route", "add", pinService+"/32", "nexthop", "via", pinNode1.String(), "nexthop", "via", pinNode2.String())
	return &pinLab{client: client, router: router}
}

// serve answers each line with name, on every connection, until the test ends.
func serve(t *testing.T, ns *netnstest.NS, name string) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", fmt.Sprintf("%s:%d", pinService, pinPort))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					if _, err := r.ReadString('\n'); err != nil {
						return
					}
					if _, err := c.Write([]byte(name + "\n")); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// conn is one client connection kept open.
type conn struct {
	c net.Conn
	r *bufio.Reader
}

func (l *pinLab) dial(t *testing.T) *conn {
	t.Helper()
	var c net.Conn
	if err := l.client.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", fmt.Sprintf("%s:%d", pinService, pinPort), 2*time.Second)
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

func (l *pinLab) apply(t *testing.T, pins ...Pin) {
	t.Helper()
	if err := l.router.Do(func() error {
		k, err := NewNetlink(220)
		if err != nil {
			return err
		}
		defer k.Close()
		return k.Apply([]netip.Prefix{pinSubnet}, pins, true)
	}); err != nil {
		t.Fatal(err)
	}
}

// TestKernelPinKeepsConnections: connections opened while the route has
// both next hops keep answering from their first node after node1 left the
// route (still reachable, as under GRACEFUL_SHUTDOWN), new ones go to
// node2; removing node1's pin re-hashes its connections (node2 resets
// them); Remove leaves nothing behind.
func TestKernelPinKeepsConnections(t *testing.T) {
	netnstest.RequireRoot(t)
	l := newPinLab(t)
	l.apply(t, Pin{NextHop: pinNode1, Slot: 1}, Pin{NextHop: pinNode2, Slot: 2})
	t.Log(l.router.Exec("nft", "list", "table", "inet", NftTable))

	// Enough connections (ports hashed) to have some on each node.
	var conns []*conn
	first := map[*conn]string{}
	count := map[string]int{}
	for i := 0; i < 64 && (i < 16 || count["node1"] == 0 || count["node2"] == 0); i++ {
		c := l.dial(t)
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

	// node1 leaves the ECMP set but stays reachable: hash-threshold would
	// move about half of node1's connections to node2.
	l.router.Exec("ip", "route", "replace", pinService+"/32", "via", pinNode2.String())
	for i, c := range conns {
		who, err := c.ask()
		if err != nil || who != first[c] {
			t.Fatalf("connection %d (first on %s) after node1 left the route: %q, %v", i, first[c], who, err)
		}
	}
	for i := 0; i < 8; i++ {
		if who, err := l.dial(t).ask(); err != nil || who != "node2" {
			t.Fatalf("new connection %d after node1 left the route: %q, %v", i, who, err)
		}
	}
	ct := l.router.Exec("conntrack", "-L", "-d", pinService)
	if !strings.Contains(ct, "mark=16777216") || !strings.Contains(ct, "mark=33554432") {
		t.Fatalf("conntrack marks of slots 1 and 2 missing:\n%s", ct)
	}

	// node1 is gone for good: without its pin its connections follow the
	// route to node2, which has no socket for them.
	l.apply(t, Pin{NextHop: pinNode2, Slot: 2})
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

	if err := l.router.Do(func() error {
		k, err := NewNetlink(220)
		if err != nil {
			return err
		}
		defer k.Close()
		return k.Remove()
	}); err != nil {
		t.Fatal(err)
	}
	if out, _ := l.router.Try("nft", "list", "table", "inet", NftTable); !strings.Contains(out, "No such file") {
		t.Fatalf("table inet %s left after Remove: %s", NftTable, out)
	}
	if out := l.router.Exec("ip", "rule", "list"); strings.Contains(out, "900:") {
		t.Fatalf("rules left after Remove:\n%s", out)
	}
	if out := l.router.Exec("ip", "route", "list", "table", "all"); strings.Contains(out, "table 16515072") {
		t.Fatalf("routes left after Remove:\n%s", out)
	}
}
