package agent

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bgplb/bgplb/routeragent/bgp"
	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/firewall"
	"github.com/bgplb/bgplb/routeragent/sysctl"
)

func TestFamilySummary(t *testing.T) {
	a, p := netip.MustParseAddr, netip.MustParsePrefix
	base := func() Status {
		return Status{
			Config: StatusConfig{ServiceSubnets: []string{"192.168.254.0/24", "2001:db8:254::/64"}, LANInterfaces: []string{"lan0"}},
			Peers: []PeerStatus{
				{PeerState: bgp.PeerState{Address: a("192.168.2.20"), Up: true}},
				{PeerState: bgp.PeerState{Address: a("2001:db8:2::20"), Up: true}},
				{PeerState: bgp.PeerState{Address: a("2001:db8:2::21")}},
			},
			Routes: RouteSummary{List: []RouteStatus{
				{Prefix: p("192.168.254.1/32"), Desired: []netip.Addr{a("192.168.2.20")}, Installed: []netip.Addr{a("192.168.2.20")}},
				{Prefix: p("2001:db8:254::1/128"), Desired: []netip.Addr{a("2001:db8:2::20"), a("2001:db8:2::21")}, Installed: []netip.Addr{a("2001:db8:2::20"), a("2001:db8:2::21")}},
				{Prefix: p("2001:db8:254::2/128"), Desired: []netip.Addr{a("2001:db8:2::20")}},
			}},
			Firewall: &firewall.Status{Mode: config.FirewallExempt,
				Rules: []firewall.RuleStatus{
					{Subnet: "192.168.254.0/24", Packets: 7}, {Subnet: "2001:db8:254::/64", Packets: 3},
				},
				Redirects: []firewall.RedirectStatus{{Subnet: "2001:db8:254::/64", Backend: "legacy", Packets: 2}},
			},
			Sysctl: &sysctl.Report{Interfaces: map[string]sysctl.InterfaceReport{"lan0": {}}},
		}
	}
	v4 := FamilyStatus{Family: "ipv4", ServiceSubnets: []string{"192.168.254.0/24"}, Peers: 1, PeersUp: 1, RoutesDesired: 1, RoutesInstalled: 1,
		Exemptions: 1, ExemptedPackets: 7, Redirects: "send_redirects=0 (all, default, LAN)", RedirectsOK: true}
	v6 := FamilyStatus{Family: "ipv6", ServiceSubnets: []string{"2001:db8:254::/64"}, Peers: 2, PeersUp: 1, RoutesDesired: 2, RoutesInstalled: 1,
		Exemptions: 1, ExemptedPackets: 3, Redirects: "dropped in ip6tables OUTPUT (BGPLB-NOREDIRECT6): 2", RedirectsOK: true}
	with := func(f FamilyStatus, redirects string) FamilyStatus {
		f.Redirects, f.RedirectsOK = redirects, false
		return f
	}
	for _, tc := range []struct {
		name   string
		mutate func(*Status)
		want   []FamilyStatus
	}{
		{"dual stack", func(*Status) {}, []FamilyStatus{v4, v6}},
		{"IPv4 only", func(s *Status) { s.Config.ServiceSubnets = s.Config.ServiceSubnets[:1] }, []FamilyStatus{v4}},
		{"redirects on", func(s *Status) {
			s.Sysctl.All = 1
			s.Sysctl.Interfaces["lan0"] = sysctl.InterfaceReport{Effective: 1}
		}, []FamilyStatus{with(v4, "send_redirects on: all, lan0"), v6}},
		{"no redirect rule yet", func(s *Status) { s.Firewall.Redirects = nil }, []FamilyStatus{v4, with(v6, "suppressed for 0 of 1 subnets")}},
		{"firewall off", func(s *Status) {
			s.Firewall = nil
		}, []FamilyStatus{
			func() FamilyStatus { f := v4; f.Exemptions, f.ExemptedPackets = 0, 0; return f }(),
			func() FamilyStatus {
				f := with(v6, "not suppressed (firewall mode off)")
				f.Exemptions, f.ExemptedPackets = 0, 0
				return f
			}(),
		}},
		{"sysctl not applied yet", func(s *Status) { s.Sysctl = nil }, []FamilyStatus{with(v4, "send_redirects not set yet"), v6}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := base()
			tc.mutate(&s)
			if d := cmp.Diff(tc.want, familySummary(s)); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}
