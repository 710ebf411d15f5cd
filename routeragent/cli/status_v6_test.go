package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bgplb/bgplb/routeragent/agent"
	"github.com/bgplb/bgplb/routeragent/firewall"
)

func TestPrintFamilies(t *testing.T) {
	var b bytes.Buffer
	printFamilies(&b, []agent.FamilyStatus{
		{Family: "ipv4", ServiceSubnets: []string{"192.168.254.0/24"}, Peers: 2, PeersUp: 2, RoutesDesired: 3, RoutesInstalled: 3,
			Exemptions: 1, ExemptedPackets: 12, Redirects: "send_redirects=0 (all, default, LAN)", RedirectsOK: true},
		{Family: "ipv6", ServiceSubnets: []string{"2001:db8:254::/64"}, Peers: 2, PeersUp: 1, RoutesDesired: 1, RoutesInstalled: 1,
			Exemptions: 1, Redirects: "suppressed for 0 of 1 subnets"},
	})
	want := []string{
		"FAMILY SERVICE SUBNETS SESSIONS UP ROUTES INSTALLED EXEMPTIONS (PACKETS) REDIRECTS",
		"ipv4 192.168.254.0/24 2/2 3/3 1 (12) send_redirects=0 (all, default, LAN)",
		"ipv6 2001:db8:254::/64 1/2 1/1 1 (0) WARNING suppressed for 0 of 1 subnets",
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		got = append(got, squeeze(l))
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

func TestPrintFirewallRedirects(t *testing.T) {
	var b bytes.Buffer
	printFirewall(&b, agent.StatusConfig{}, &firewall.Status{Mode: "exempt", Backend: "legacy", Table: "filter", Chain: firewall.ChainName,
		Rules:     []firewall.RuleStatus{{Interface: "lan0", Subnet: "2001:db8:254::/64", Protocol: "tcp", Backend: "legacy", Packets: 4, Bytes: 320}},
		Redirects: []firewall.RedirectStatus{{Subnet: "2001:db8:254::/64", Backend: "legacy", Packets: 2, Bytes: 176}}})
	if got := squeeze(b.String()); !strings.Contains(got, "ICMPv6 REDIRECTS DROPPED (BGPLB-NOREDIRECT6) SUBNET BACKEND PACKETS BYTES 2001:db8:254::/64 legacy 2 176") {
		t.Errorf("output:\n%s", b.String())
	}
}

// TestPrintFirewallRedirectsNftables: with the rules in native nftables the
// header names our table and chain there, not the ip6tables chain.
func TestPrintFirewallRedirectsNftables(t *testing.T) {
	var b bytes.Buffer
	printFirewall(&b, agent.StatusConfig{}, &firewall.Status{Mode: "exempt", Backend: "nftables",
		Redirects: []firewall.RedirectStatus{{Subnet: "2001:db8:254::/64", Backend: "nftables", Packets: 3, Bytes: 264}}})
	if got := squeeze(b.String()); !strings.Contains(got, "ICMPv6 REDIRECTS DROPPED (inet bgplb noredirect6) SUBNET BACKEND PACKETS BYTES 2001:db8:254::/64 nftables 3 264") {
		t.Errorf("output:\n%s", b.String())
	}
}
