package firewall

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bgplb/bgplb/internal/netnstest"
	"github.com/bgplb/bgplb/routeragent/config"
)

// TestKernelNftSeedNetworkV6 is the seed's story over IPv6 on a router
// whose firewall is native nftables (testdata/nftables/router.conf, loaded
// with the real `nft -f`: an inet filter forward chain dropping invalid),
// in auto mode with the ip6tables tools present but empty: the exemption
// and the ICMPv6 Redirect suppression both go to native nftables. The
// connection hangs before the agent and works after, no Redirect leaves
// the router, one leaves again when our rule is deleted by hand (so the
// test can fail), the next pass repairs it, and uninstall leaves `nft list
// ruleset` as it was.
func TestKernelNftSeedNetworkV6(t *testing.T) {
	client, router := seedLabV6(t)
	nftLoad(t, router, "router.conf")
	before := nftList(t, router, true)
	const service, service2 = "[2001:db8:254::1]:3142", "[2001:db8:254::2]:3142"

	// Before: the client's ACK is INVALID on the router and dropped, and the
	// router sends a Redirect (which this client ignores).
	err := exchange(client, "2001:db8:2::109", service)
	var ne net.Error
	if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("before the agent: exchange error %v, want a timeout", err)
	}
	if fwd := stdout(t, router, "nft", "list", "chain", "inet", "filter", "forward"); !strings.Contains(fwd, "ct state invalid counter packets") || strings.Contains(fwd, "ct state invalid counter packets 0 ") {
		t.Errorf("the INVALID drop did not count the client's ACK:\n%s", fwd)
	}
	if n := icmp6OutRedirects(t, router); n == 0 {
		t.Fatalf("router sent no ICMPv6 redirect before the agent; the setup does not reproduce the seed")
	}

	// The agent's pass: exemption and redirect suppression, both native.
	m, err := New(Config{Backend: config.BackendAuto, Interfaces: []string{"lan0"}, Subnets: mustPrefixes("2001:db8:254::/64")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := ensureIn(t, router, m)
	if st.Backend != "nftables" || len(st.Redirects) != 1 || st.Redirects[0].Backend != "nftables" {
		t.Fatalf("status %+v", st)
	}
	if ruleset := nftList(t, router, true); !strings.Contains(ruleset, "table inet "+NftRedirectTable) || !strings.Contains(ruleset, "hook output") {
		t.Errorf("no redirect table in the ruleset:\n%s", ruleset)
	}
	redirects := icmp6OutRedirects(t, router)

	// After: works from the same client address and from a fresh one, and
	// no Redirect leaves the router.
	for _, src := range []string{"2001:db8:2::110", "2001:db8:2::109"} {
		if err := exchange(client, src, service); err != nil {
			t.Errorf("after Ensure from %s: %v", src, err)
		}
	}
	if n := icmp6OutRedirects(t, router); n != redirects {
		t.Errorf("router sent %d ICMPv6 redirects after Ensure", n-redirects)
	}
	st = ensureIn(t, router, m)
	if len(st.Rules) != 1 || st.Rules[0].Packets == 0 {
		t.Errorf("exemption counters: %+v", st.Rules)
	}
	// Our rule saw the Redirects the kernel wanted to send.
	if len(st.Redirects) != 1 || st.Redirects[0].Packets == 0 {
		t.Errorf("redirect suppression counters: %+v", st.Redirects)
	}

	// The rule is what stops them: without it a Redirect leaves again
	// (fresh source and destination, so no rate limit applies); the next
	// pass repairs it and they stop.
	router.Exec("nft", "flush", "chain", "inet", NftRedirectTable, NftRedirectChain)
	was := icmp6OutRedirects(t, router)
	if err := exchange(client, "2001:db8:2::111", service2); err != nil {
		t.Errorf("exemption without the redirect rule: %v", err)
	}
	if n := icmp6OutRedirects(t, router); n == was {
		t.Errorf("no ICMPv6 redirect without our rule: the test could not fail")
	}
	if st := ensureIn(t, router, m); st.Repairs != 1 {
		t.Errorf("repairs = %d after deleting our redirect rule, want 1", st.Repairs)
	}
	was = icmp6OutRedirects(t, router)
	for _, src := range []string{"2001:db8:2::111", "2001:db8:2::110"} {
		if err := exchange(client, src, service2); err != nil {
			t.Errorf("after repair from %s: %v", src, err)
		}
	}
	if n := icmp6OutRedirects(t, router); n != was {
		t.Errorf("router sent %d ICMPv6 redirects after the repair", n-was)
	}

	// No chain of ours in ip6tables: one place is enough.
	for _, tool := range []string{"ip6tables-legacy", "ip6tables-nft"} {
		if got, _ := router.Try(tool, "-S"); strings.Contains(got, RedirectChainName) || strings.Contains(got, ChainName) {
			t.Errorf("%s holds a chain of ours:\n%s", tool, got)
		}
	}

	uninstallIn(t, router, m)
	if got := nftList(t, router, true); got != before {
		t.Errorf("after uninstall:\n%s", cmp.Diff(before, got))
	}
}

// TestKernelNftRedirectRules: the kernel takes the rendered redirect rules
// (odd prefix lengths, a host route), nft prints them as ICMPv6
// nd-redirect rules at the output hook, a second pass changes nothing, and
// uninstall restores `nft list ruleset` byte for byte. Also on Debian's
// default ruleset, where nothing drops INVALID packets.
func TestKernelNftRedirectRules(t *testing.T) {
	for _, conf := range []string{"router.conf", "debian-default.conf"} {
		t.Run(conf, func(t *testing.T) {
			ns := netnstest.New(t, "nftr6")
			nftLoad(t, ns, conf)
			orig := nftList(t, ns, false)
			cfg := Config{Backend: config.BackendNftables, Interfaces: []string{"lan0"},
				Subnets: mustPrefixes("2001:db8:254::/64", "fd00:1::/48", "2001:db8:254:1:8000::/65", "2001:db8:255::7/128")}
			m, err := New(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			ensureIn(t, ns, m)
			if st := ensureIn(t, ns, m); st.Repairs != 0 || len(st.Redirects) != 4 || st.LastError != "" {
				t.Errorf("second pass: %+v", st)
			}
			out := stdout(t, ns, "nft", "list", "table", "inet", NftRedirectTable)
			for _, want := range []string{"hook output", "icmpv6 type nd-redirect", "drop comment \"bgplb: no ICMPv6 redirect about fd00:1::/48"} {
				if !strings.Contains(out, want) {
					t.Errorf("no %q in\n%s", want, out)
				}
			}
			if n := strings.Count(out, "nd-redirect"); n != 4 {
				t.Errorf("%d redirect rules, want 4:\n%s", n, out)
			}
			// NftText is what nft prints (the doctor's manual fix uses it).
			stateless := stdout(t, ns, "nft", "-s", "list", "table", "inet", NftRedirectTable)
			for _, r := range DesiredRedirectBlocks(cfg) {
				if !strings.Contains(stateless, "\t"+r.NftText()+"\n") {
					t.Errorf("no %q in\n%s", r.NftText(), stateless)
				}
			}
			// And nft takes it back: the manual commands rebuild the table.
			uninstallIn(t, ns, m)
			for _, c := range NftRedirectCommands(DesiredRedirectBlocks(cfg)) {
				if out, err := ns.Try("sh", "-c", c); err != nil {
					t.Fatalf("%s: %v\n%s", c, err, out)
				}
			}
			if got := stdout(t, ns, "nft", "-s", "list", "table", "inet", NftRedirectTable); got != stateless {
				t.Errorf("by hand (-agent +hand):\n%s", cmp.Diff(stateless, got))
			}
			if st := ensureIn(t, ns, m); len(st.Redirects) != 4 || st.LastError != "" {
				t.Errorf("pass after the manual commands: %+v", st)
			}
			uninstallIn(t, ns, m)
			if got := nftList(t, ns, false); got != orig {
				t.Errorf("after uninstall:\n%s", cmp.Diff(orig, got))
			}
		})
	}
}
