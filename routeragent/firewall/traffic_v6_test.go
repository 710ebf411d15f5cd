package firewall

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bgplb/bgplb/internal/netnstest"
	"github.com/bgplb/bgplb/routeragent/config"
)

// icmp6OutRedirects returns Icmp6OutRedirects from the namespace's
// /proc/net/snmp6: the ICMPv6 Redirects that left it. The kernel counts a
// Redirect only after the OUTPUT hook accepted it (ndisc_send_skb), so a
// dropped one is not counted.
func icmp6OutRedirects(t *testing.T, ns *netnstest.NS) int {
	t.Helper()
	for _, l := range strings.Split(stdout(t, ns, "cat", "/proc/net/snmp6"), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "Icmp6OutRedirects" {
			n, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no Icmp6OutRedirects in /proc/net/snmp6")
	return 0
}

// seedLabV6 is seedLab over IPv6: client, router and node on one L2, the
// service addresses 2001:db8:254::1 and ::2 on the node's lo (each served
// by the ping/pong responder), a client that ignores redirects. The
// router's routes to the service use the node's link-local address as next
// hop, as FRR installs BGP routes learnt on a shared link: Linux sends an
// ICMPv6 Redirect only when the next hop is link-local or the destination
// on-link (a global next hop is never a redirect target, RFC 4861 8.2), and
// IPv6 has no send_redirects to turn that off. The router has no firewall
// yet.
func seedLabV6(t *testing.T) (client, router *netnstest.NS) {
	t.Helper()
	sw := netnstest.New(t, "sw")
	client = netnstest.New(t, "client")
	router = netnstest.New(t, "router")
	node := netnstest.New(t, "node")
	for _, ns := range []*netnstest.NS{client, router, node} {
		netnstest.NoDAD(ns)
	}
	client.Exec("sysctl", "-qw", "net.ipv6.conf.all.accept_redirects=0", "net.ipv6.conf.default.accept_redirects=0")
	plug := netnstest.Bridge(t, sw, "br0")
	plug(client, "eth0", "2001:db8:2::109/64")
	for _, a := range []string{"2001:db8:2::110/64", "2001:db8:2::111/64"} {
		client.Exec("ip", "addr", "add", a, "dev", "eth0")
	}
	plug(router, "lan0", "2001:db8:2::1/64")
	plug(node, "eth0", "2001:db8:2::20/64")
	for _, a := range []string{"2001:db8:254::1/128", "2001:db8:254::2/128"} {
		node.Exec("ip", "addr", "add", a, "dev", "lo")
	}
	client.Exec("ip", "-6", "route", "add", "default", "via", "2001:db8:2::1")
	router.Exec("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	netnstest.LinkLocal(router, "lan0") // a tentative link-local sends no redirect
	nodeLL := netnstest.LinkLocal(node, "eth0")
	for _, s := range []string{"2001:db8:254::1/128", "2001:db8:254::2/128"} {
		router.Exec("ip", "-6", "route", "add", s, "via", nodeLL, "dev", "lan0")
	}
	netnstest.ServePing(t, node, "[2001:db8:254::1]:3142", nil)
	netnstest.ServePing(t, node, "[2001:db8:254::2]:3142", nil)
	return client, router
}

// TestKernelSeedNetworkV6 is TestKernelSeedNetwork over IPv6 (seedLabV6,
// with its link-local next hop) with a ferm-like stateful ip6tables-legacy
// firewall on the router.
func TestKernelSeedNetworkV6(t *testing.T) {
	client, router := seedLabV6(t)
	restore(t, router, "ip6tables-legacy", fermRuleset)
	const service, service2 = "[2001:db8:254::1]:3142", "[2001:db8:254::2]:3142"

	// Before: the client's ACK is INVALID on the router and dropped, and the
	// router sends a Redirect (which this client ignores).
	err := exchange(client, "2001:db8:2::109", service)
	var ne net.Error
	if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("before the agent: exchange error %v, want a timeout", err)
	}
	invalidDrops := stdout(t, router, "ip6tables-legacy", "-v", "-x", "-n", "-L", "FORWARD", "1")
	if f := strings.Fields(invalidDrops); len(f) < 1 || f[0] == "0" {
		t.Errorf("the INVALID drop did not count the client's ACK: %q", invalidDrops)
	}
	if n := icmp6OutRedirects(t, router); n == 0 {
		t.Fatalf("router sent no ICMPv6 redirect before the agent; the setup does not reproduce the seed")
	}

	// The agent's pass: exemption and redirect suppression.
	m, err := New(Config{Interfaces: []string{"lan0"}, Subnets: mustPrefixes("2001:db8:254::/64")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st := ensureIn(t, router, m); st.Backend != "legacy" || len(st.Redirects) != 1 {
		t.Fatalf("status %+v", st)
	}
	redirects := icmp6OutRedirects(t, router)

	// After: works from the same client address and from a fresh one (no
	// redirect rate-limit history on the router for it), and no Redirect
	// leaves the router.
	for _, src := range []string{"2001:db8:2::110", "2001:db8:2::109"} {
		if err := exchange(client, src, service); err != nil {
			t.Errorf("after Ensure from %s: %v", src, err)
		}
	}
	if n := icmp6OutRedirects(t, router); n != redirects {
		t.Errorf("router sent %d ICMPv6 redirects after Ensure", n-redirects)
	}
	st := ensureIn(t, router, m)
	if len(st.Rules) != 1 || st.Rules[0].Packets == 0 {
		t.Errorf("exemption counters: %+v", st.Rules)
	}
	// Our rule saw the Redirects the kernel wanted to send: without it they
	// would have left.
	if len(st.Redirects) != 1 || st.Redirects[0].Packets == 0 {
		t.Errorf("redirect suppression counters: %+v", st.Redirects)
	}

	// The rule is what stops them: without its jump, a Redirect leaves
	// again (fresh source and destination, so no rate limit applies); the
	// next pass repairs the jump and they stop.
	router.Exec("ip6tables-legacy", "-D", "OUTPUT", "-m", "comment", "--comment", RedirectJumpComment, "-j", RedirectChainName)
	before := icmp6OutRedirects(t, router)
	if err := exchange(client, "2001:db8:2::111", service2); err != nil {
		t.Errorf("exemption without the redirect rule: %v", err)
	}
	if n := icmp6OutRedirects(t, router); n == before {
		t.Errorf("no ICMPv6 redirect without our OUTPUT jump: the test could not fail")
	}
	if st := ensureIn(t, router, m); st.Repairs != 1 {
		t.Errorf("repairs = %d after deleting the OUTPUT jump, want 1", st.Repairs)
	}
	before = icmp6OutRedirects(t, router)
	for _, src := range []string{"2001:db8:2::111", "2001:db8:2::110"} {
		if err := exchange(client, src, service2); err != nil {
			t.Errorf("after repair from %s: %v", src, err)
		}
	}
	if n := icmp6OutRedirects(t, router); n != before {
		t.Errorf("router sent %d ICMPv6 redirects after the repair", n-before)
	}

	uninstallIn(t, router, m)
	if got := router.Exec("ip6tables-legacy", "-S"); strings.Contains(got, RedirectChainName) || strings.Contains(got, ChainName) {
		t.Errorf("after uninstall:\n%s", got)
	}
}

// TestKernelRedirectRulesV6 checks, with both ip6tables tools, that the
// rendered redirect rules are what the tools print back (a second pass
// changes nothing, the u32 prefix tests of odd lengths included) and that
// uninstall restores the table byte for byte.
func TestKernelRedirectRulesV6(t *testing.T) {
	for _, b := range []Backend{Legacy, NFT} {
		t.Run(string(b), func(t *testing.T) {
			ns := netnstest.New(t, "fwr6")
			tool := "ip6tables-" + string(b)
			restore(t, ns, tool, fermRuleset)
			orig := save(t, ns, tool)
			cfg := Config{Backend: config.FirewallBackend(b), Interfaces: []string{"lan0"},
				Subnets: mustPrefixes("2001:db8:254::/64", "fd00:1::/48", "2001:db8:254:1:8000::/65", "2001:db8:255::7/128")}
			m, err := New(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			ensureIn(t, ns, m)
			if st := ensureIn(t, ns, m); st.Repairs != 0 || len(st.Redirects) != 4 {
				t.Errorf("second pass changed something (the rendered rules differ from the listing): %+v", st)
			}
			out := stdout(t, ns, tool, "-S", "OUTPUT")
			if !strings.Contains(out, "-A OUTPUT "+quoteArgs(RedirectJumpArgs())) {
				t.Errorf("OUTPUT:\n%s", out)
			}
			uninstallIn(t, ns, m)
			if got := save(t, ns, tool); got != orig {
				t.Errorf("after uninstall:\n%s", cmp.Diff(orig, got))
			}
		})
	}
}
