package doctor

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bgplb/bgplb/internal/netnstest"
	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/firewall"
)

// TestKernelGatherRunV6: a dual-stack router namespace with ferm-like
// iptables-legacy and ip6tables-legacy firewalls is healthy in both
// families after the agent's Ensure (IPv4 send_redirects left as the
// kernel default would fail; it is set to 0 here); the doctor then names
// the three IPv6 problems made by hand: forwarding off, the redirect
// suppression's jump deleted, a strict rpfilter rule in ip6tables-nft.
func TestKernelGatherRunV6(t *testing.T) {
	ns := netnstest.New(t, "doctor6")
	ns.Exec("ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan0p")
	ns.Exec("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
		"net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.default.send_redirects=0", "net.ipv4.conf.lan0.send_redirects=0")
	const ferm = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -m state --state INVALID -j DROP
-A FORWARD -m state --state RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -i lan0 -m state --state NEW -j ACCEPT
COMMIT
`
	for _, tool := range []string{"iptables-legacy-restore", "ip6tables-legacy-restore"} {
		cmd := ns.Command(tool)
		cmd.Stdin = strings.NewReader(ferm)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", tool, err, out)
		}
	}
	// A loose reverse-path filter is fine.
	ns.Exec("ip6tables-legacy", "-t", "raw", "-A", "PREROUTING", "-m", "rpfilter", "--loose", "--invert", "-j", "DROP")
	subnets := []netip.Prefix{netip.MustParsePrefix("192.168.254.0/24"), netip.MustParsePrefix("2001:db8:254::/64")}
	ifaces := []string{"lan0"}
	m, err := firewall.New(firewall.Config{Interfaces: ifaces, Subnets: subnets}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.Do(func() error { _, err := m.Ensure(context.Background()); return err }); err != nil {
		t.Fatal(err)
	}
	gc := GatherConfig{LANInterfaces: ifaces, ServiceSubnets: subnets, Routes: &Routes{Desired: 2, Installed: 2}, NoNft: true}
	doctor := func() []Finding {
		t.Helper()
		var fs []Finding
		if err := ns.Do(func() error {
			in, err := Gather(context.Background(), gc)
			if err != nil {
				return err
			}
			fs = Run(context.Background(), in)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return fs
	}
	fs := doctor()
	if !Healthy(fs) {
		t.Fatalf("not healthy after Ensure: %+v", fs)
	}
	fams := map[string]bool{}
	for _, f := range fs {
		fams[f.Check+"/"+f.Family] = true
	}
	for _, want := range []string{"ip_forward/ipv4", "ipv6_forwarding/ipv6", "send_redirects/ipv4", "icmpv6_redirects/ipv6",
		"rp_filter/ipv4", "ipv6_rpfilter/ipv6", "firewall/ipv4", "firewall/ipv6"} {
		if !fams[want] {
			t.Errorf("no %s finding in %+v", want, fs)
		}
	}

	// Break the IPv6 side by hand.
	ns.Exec("sysctl", "-qw", "net.ipv6.conf.all.forwarding=0")
	ns.Exec("ip6tables-legacy", "-D", "OUTPUT", "-m", "comment", "--comment", firewall.RedirectJumpComment, "-j", firewall.RedirectChainName)
	ns.Exec("ip6tables-nft", "-t", "raw", "-A", "PREROUTING", "-m", "rpfilter", "--invert", "-j", "DROP")
	got := map[string]Finding{}
	for _, f := range doctor() {
		if f.Status != OK {
			got[f.Check] = f
		}
	}
	if f := got["ipv6_forwarding"]; f.Status != Fail {
		t.Errorf("ipv6_forwarding finding: %+v", f)
	}
	if f := got["icmpv6_redirects"]; f.Status != Fail || !strings.Contains(f.Fix, "ip6tables-legacy -I OUTPUT 1") {
		t.Errorf("icmpv6_redirects finding: %+v", f)
	}
	if f := got["ipv6_rpfilter"]; f.Status != Warn || !strings.Contains(f.Message, "ip6tables-nft raw PREROUTING: -m rpfilter --invert -j DROP") {
		t.Errorf("ipv6_rpfilter finding: %+v", f)
	}
	if len(got) != 3 {
		t.Errorf("problems: %+v", got)
	}
}

// TestKernelNftRPFilterV6: a strict IPv6 reverse-path filter in a native
// nftables prerouting chain (a table without a forward chain, which the
// firewall's reader skips) is read through netlink and reported.
func TestKernelNftRPFilterV6(t *testing.T) {
	ns := netnstest.New(t, "doctornft6")
	ns.Exec("ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan0p")
	ns.Exec("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	cmd := ns.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(`table inet raw {
	chain prerouting {
		type filter hook prerouting priority raw; policy accept;
		meta nfproto ipv4 fib saddr oif missing drop
		fib saddr . iif oif missing counter drop
	}
}
`)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft -f: %v\n%s", err, out)
	}
	subnets := []netip.Prefix{netip.MustParsePrefix("2001:db8:254::/64")}
	gc := GatherConfig{LANInterfaces: []string{"lan0"}, ServiceSubnets: subnets, Routes: &Routes{}}
	var in Input
	if err := ns.Do(func() error {
		var err error
		in, err = Gather(context.Background(), gc)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	want := []RPFilterRule{{Where: "nft inet raw prerouting", Rule: "fib saddr . iif oif missing counter drop"}}
	if in.IPv6 == nil {
		t.Fatal("no IPv6 input gathered for an IPv6 service subnet")
	}
	if d := cmp.Diff(want, in.IPv6.RPFilter); d != "" {
		t.Errorf("RPFilter (-want +got):\n%s", d)
	}
	var found bool
	for _, f := range Run(context.Background(), in) {
		if f.Check == "ipv6_rpfilter" {
			found = true
			if f.Status != Warn || !strings.Contains(f.Message, "nft inet raw prerouting: fib saddr . iif oif missing counter drop") {
				t.Errorf("ipv6_rpfilter finding: %+v", f)
			}
		}
	}
	if !found {
		t.Error("no ipv6_rpfilter finding")
	}
}

// TestKernelNftRedirectsV6: on a native nftables router (no ip6tables rules
// at all) the doctor recognises the agent's redirect suppression in table
// inet bgplb, read through netlink; when the rule is flushed by hand it
// fails with nft commands, and those commands, run as given, make it pass
// again.
func TestKernelNftRedirectsV6(t *testing.T) {
	ns := netnstest.New(t, "doctornftr6")
	ns.Exec("ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan0p")
	cmd := ns.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(`flush ruleset
table inet filter {
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		ct state invalid drop
		iifname "lan0" ct state new accept
	}
}
`)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft -f: %v\n%s", err, out)
	}
	subnets := []netip.Prefix{netip.MustParsePrefix("2001:db8:254::/64")}
	m, err := firewall.New(firewall.Config{Backend: config.BackendNftables, Interfaces: []string{"lan0"}, Subnets: subnets}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.Do(func() error { _, err := m.Ensure(context.Background()); return err }); err != nil {
		t.Fatal(err)
	}
	gc := GatherConfig{LANInterfaces: []string{"lan0"}, ServiceSubnets: subnets, FirewallBackend: config.BackendNftables, Routes: &Routes{}}
	finding := func() Finding {
		t.Helper()
		var f Finding
		if err := ns.Do(func() error {
			in, err := Gather(context.Background(), gc)
			if err != nil {
				return err
			}
			f = checkRedirects6(in)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return f
	}
	if f := finding(); f.Status != OK || !strings.Contains(f.Message, "native nftables table inet bgplb chain noredirect6") {
		t.Fatalf("after Ensure: %+v", f)
	}

	ns.Exec("nft", "flush", "chain", "inet", firewall.NftRedirectTable, firewall.NftRedirectChain)
	f := finding()
	if f.Status != Fail || !strings.Contains(f.Fix, "nft add rule inet bgplb noredirect6") {
		t.Fatalf("after flushing our rule: %+v", f)
	}
	// The manual fix as printed (after "by hand: "), run as given.
	_, manual, ok := strings.Cut(f.Fix, "by hand: ")
	if !ok {
		t.Fatalf("no manual commands in %q", f.Fix)
	}
	ns.Exec("nft", "delete", "table", "inet", firewall.NftRedirectTable)
	if out, err := ns.Try("sh", "-c", manual); err != nil {
		t.Fatalf("%s: %v\n%s", manual, err, out)
	}
	if f := finding(); f.Status != OK {
		t.Errorf("after the manual commands: %+v", f)
	}
}
