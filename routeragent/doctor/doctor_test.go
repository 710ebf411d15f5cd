package doctor

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/bgplb/bgplb/routeragent/firewall"
	"github.com/bgplb/bgplb/routeragent/sysctl"
	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
)

// ourJump and ourChain are what the agent installs (rule comments mark
// them).
func ourJump() firewall.NftRule {
	return firewall.NftRule{Exprs: []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictJump, Chain: firewall.NftChainName}},
		UserData: userdata.AppendString(nil, userdata.TypeComment, firewall.NftJumpComment)}
}

func ourChain() firewall.NftChain {
	e := firewall.Exemption{Interface: "lan0", Subnet: netip.MustParsePrefix("192.168.254.0/24"), Protocol: "tcp"}
	return firewall.NftChain{Name: firewall.NftChainName, Rules: []firewall.NftRule{{Exprs: e.NftExprs(), UserData: userdata.AppendString(nil, userdata.TypeComment, e.Comment())}}}
}

const (
	jump   = `-A FORWARD -m comment --comment "bgplb: conntrack-INVALID exemptions for service subnets" -c 9 360 -j BGPLB-EXEMPT`
	drop   = "-A FORWARD -m state --state INVALID -c 0 0 -j DROP"
	estab  = "-A FORWARD -m state --state RELATED,ESTABLISHED -c 0 0 -j ACCEPT"
	exempt = `-A BGPLB-EXEMPT -d 192.168.254.0/24 -i lan0 -p tcp -m conntrack --ctstate INVALID -m comment --comment "bgplb: tcp from lan0 to 192.168.254.0/24, asymmetric return path" -c 9 360 -j ACCEPT`
)

func listing(lines ...string) Listing {
	return Listing{Available: true, Lines: append([]string{"-P INPUT ACCEPT", "-P FORWARD DROP", "-P OUTPUT ACCEPT"}, lines...)}
}

func healthy() Input {
	return Input{
		LANInterfaces:  []string{"lan0"},
		ServiceSubnets: []netip.Prefix{netip.MustParsePrefix("192.168.254.0/24")},
		FirewallMode:   "exempt",
		IPForward:      1,
		Redirects:      sysctl.Report{Interfaces: map[string]sysctl.InterfaceReport{"lan0": {}}},
		RPFilter:       map[string]int{"all": 0, "lan0": 2},
		Firewall: map[firewall.Backend]Listing{
			firewall.Legacy: listing("-N BGPLB-EXEMPT", jump, drop, estab, exempt),
			firewall.NFT:    listing(),
		},
		ConntrackKnown:   true,
		ConntrackInvalid: 9,
		Routes:           &Routes{Desired: 2, Installed: 2},
	}
}

// brief reduces findings to check/status plus a distinctive message or
// fix fragment, so the table stays readable.
type brief struct{ Check, Status string }

func summarize(fs []Finding) []brief {
	var out []brief
	for _, f := range fs {
		out = append(out, brief{f.Check, f.Status})
	}
	return out
}

func TestRun(t *testing.T) {
	ok := []brief{{"ip_forward", OK}, {"send_redirects", OK}, {"rp_filter", OK}, {"firewall", OK}, {"conntrack", OK}, {"routes", OK}}
	replace := func(base []brief, check string, with ...brief) []brief {
		var out []brief
		for _, b := range base {
			if b.Check == check {
				out = append(out, with...)
				continue
			}
			out = append(out, b)
		}
		return out
	}
	tests := []struct {
		name   string
		mutate func(*Input)
		want   []brief
		// substrings expected in the first non-ok finding's message and fix
		msg, fix string
	}{
		{"healthy", func(*Input) {}, ok, "", ""},
		{"forwarding off", func(in *Input) { in.IPForward = 0 }, replace(ok, "ip_forward", brief{"ip_forward", Fail}),
			"forwarding is off", "sysctl -w net.ipv4.ip_forward=1"},
		{"redirects via all", func(in *Input) {
			in.Redirects.All = 1
			in.Redirects.Interfaces["lan0"] = sysctl.InterfaceReport{Value: 0, Effective: 1}
		}, replace(ok, "send_redirects", brief{"send_redirects", Fail}), "sends ICMP redirects on lan0", "net.ipv4.conf.all.send_redirects=0"},
		{"redirects on a VLAN interface", func(in *Input) {
			in.LANInterfaces = []string{"enp1s0.2"}
			in.Redirects.Interfaces = map[string]sysctl.InterfaceReport{"enp1s0.2": {Value: 1, Effective: 1}}
			in.RPFilter = map[string]int{"all": 0, "enp1s0.2": 0}
			in.Firewall[firewall.Legacy] = listing("-N BGPLB-EXEMPT", jump, drop, strings.ReplaceAll(exempt, "lan0", "enp1s0.2"))
		}, replace(ok, "send_redirects", brief{"send_redirects", Fail}), "enp1s0.2", "net.ipv4.conf.enp1s0/2.send_redirects=0"},
		{"default still 1 and an interface missing", func(in *Input) {
			in.Redirects.Default = 1
			in.Redirects.Interfaces["lan0"] = sysctl.InterfaceReport{Value: -1, Effective: -1, Missing: true}
		}, replace(ok, "send_redirects", brief{"send_redirects", Warn}, brief{"send_redirects", Warn}), "created later", "default.send_redirects=0"},
		{"strict rp_filter via all", func(in *Input) { in.RPFilter["all"], in.RPFilter["lan0"] = 1, 0 }, replace(ok, "rp_filter", brief{"rp_filter", Warn}),
			"strict reverse-path", "net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.lan0.rp_filter=2"},
		{"jump removed by hand", func(in *Input) {
			in.Firewall[firewall.Legacy] = listing("-N BGPLB-EXEMPT", drop, estab, exempt)
		}, replace(replace(ok, "firewall", brief{"firewall", Fail}), "conntrack", brief{"conntrack", Fail}),
			"iptables-legacy FORWARD rule 1", "iptables-legacy -I FORWARD 1 -m comment"},
		{"jump after the drop", func(in *Input) {
			in.Firewall[firewall.Legacy] = listing("-N BGPLB-EXEMPT", drop, jump, exempt)
		}, replace(replace(ok, "firewall", brief{"firewall", Fail}), "conntrack", brief{"conntrack", Fail}),
			"is FORWARD rule 2, after the INVALID drop", "moves the jump to the top"},
		{"ours in nft, drop in legacy (ferm)", func(in *Input) {
			in.Firewall[firewall.Legacy] = listing(drop, estab)
			in.Firewall[firewall.NFT] = listing("-N BGPLB-EXEMPT", jump, exempt)
		}, replace(replace(ok, "firewall", brief{"firewall", Fail}), "conntrack", brief{"conntrack", Fail}),
			"does not undo a DROP in the other", "iptables-legacy -I FORWARD 1"},
		{"exemption missing", func(in *Input) {
			in.Firewall[firewall.Legacy] = listing("-N BGPLB-EXEMPT", jump, drop)
		}, replace(replace(ok, "firewall", brief{"firewall", Fail}), "conntrack", brief{"conntrack", Fail}),
			"lacks 1 of 1", `iptables-legacy -A BGPLB-EXEMPT -d 192.168.254.0/24 -i lan0 -p tcp`},
		{"two jumps", func(in *Input) {
			in.Firewall[firewall.Legacy] = listing("-N BGPLB-EXEMPT", jump, drop, jump, exempt)
		}, replace(ok, "firewall", brief{"firewall", Warn}, brief{"firewall", OK}), "2 jumps", "reload"},
		{"no INVALID drop anywhere", func(in *Input) {
			in.Firewall[firewall.Legacy] = listing(estab)
		}, ok, "", ""},
		{"mode off with a drop", func(in *Input) {
			in.FirewallMode = "off"
			in.Firewall[firewall.Legacy] = listing(drop, estab)
		}, replace(ok, "firewall", brief{"firewall", Warn}), "firewall mode is off", "firewall.mode: exempt"},
		{"no conntrack stats", func(in *Input) { in.ConntrackKnown = false }, replace(ok, "conntrack", brief{"conntrack", Warn}),
			"not available", "conntrack -S"},
		{"routes missing", func(in *Input) {
			in.Routes = &Routes{Desired: 2, Installed: 1, Missing: []netip.Prefix{netip.MustParsePrefix("192.168.254.7/32")}}
		}, replace(ok, "routes", brief{"routes", Fail}), "missing: 192.168.254.7/32", "ip route show 192.168.254.7/32"},
		{"routes unknown", func(in *Input) { in.Routes = nil }, ok[:5], "", ""},
		{"IPv6 subnet: drop in ip6tables-legacy without our jump", func(in *Input) {
			in.ServiceSubnets = append(in.ServiceSubnets, netip.MustParsePrefix("2001:db8:254::/64"))
			in.Firewall6 = map[firewall.Backend]Listing{firewall.Legacy: listing(drop, estab)}
		}, append(append([]brief{}, ok[:4]...), brief{"firewall", Fail}, brief{"conntrack", Fail}, brief{"routes", OK}),
			"ip6tables-legacy FORWARD rule 1", "ip6tables-legacy -I FORWARD 1"},
		{"native nftables drop, firewall.backend legacy", func(in *Input) {
			in.FirewallBackend = "legacy"
			in.Nft = &firewall.NftRuleset{Tables: []firewall.NftTable{
				{Family: nftables.TableFamilyINet, Name: "filter", Chains: []firewall.NftChain{{Name: "forward", Hook: nftables.ChainHookForward, Rules: []firewall.NftRule{invalidDrop}}}},
				// iptables-nft's own table: the firewall check covers it.
				{Family: nftables.TableFamilyIPv4, Name: "filter", Chains: []firewall.NftChain{{Name: "FORWARD", Hook: nftables.ChainHookForward, Rules: []firewall.NftRule{invalidDrop}}}},
			}}
		}, append(append([]brief{}, ok[:5]...), brief{"nftables", Warn}, brief{"routes", OK}),
			`table "inet filter" chain "forward"`, `nft insert rule inet filter forward iifname "lan0" ip daddr 192.168.254.0/24 meta l4proto tcp ct state invalid accept`},
		{"native nftables drop without our jump", func(in *Input) {
			in.Nft = &firewall.NftRuleset{Tables: []firewall.NftTable{{Family: nftables.TableFamilyINet, Name: "filter",
				Chains: []firewall.NftChain{{Name: "forward", Hook: nftables.ChainHookForward, Rules: []firewall.NftRule{establishedOK, invalidDrop}}}}}}
		}, append(append([]brief{}, ok[:5]...), brief{"nftables", Fail}, brief{"routes", OK}),
			`table "inet filter" chain "forward" drops INVALID packets (inet filter chain forward rule 2`, "bgplb-routeragent poke"},
		{"native nftables ct state invalid jump, our jump after it", func(in *Input) {
			in.Nft = &firewall.NftRuleset{Tables: []firewall.NftTable{{Family: nftables.TableFamilyIPv4, Name: "router",
				Chains: []firewall.NftChain{
					{Name: "forward", Hook: nftables.ChainHookForward, Rules: []firewall.NftRule{invalidJump, ourJump()}},
					{Name: "sub", Rules: []firewall.NftRule{plainDrop}},
					ourChain(),
				}}}}
		}, append(append([]brief{}, ok[:5]...), brief{"nftables", Fail}, brief{"routes", OK}),
			"our jump to bgplb_exempt is rule 2, after it", "poke"},
		{"native nftables drop behind a jump and a vmap, ours first", func(in *Input) {
			in.Nft = &firewall.NftRuleset{Tables: []firewall.NftTable{{Family: nftables.TableFamilyINet, Name: "fw", VerdictMaps: stateVmap,
				Chains: []firewall.NftChain{
					{Name: "forward", Hook: nftables.ChainHookForward, Rules: []firewall.NftRule{ourJump(), jumpSub}},
					{Name: "sub", Rules: []firewall.NftRule{vmapRule}},
					ourChain(),
				}}}}
		}, append(append([]brief{}, ok[:5]...), brief{"nftables", OK}, brief{"routes", OK}), "", ""},
		{"native nftables, our chain lacks a rule", func(in *Input) {
			c := ourChain()
			c.Rules = nil
			in.Nft = &firewall.NftRuleset{Tables: []firewall.NftTable{{Family: nftables.TableFamilyINet, Name: "filter",
				Chains: []firewall.NftChain{{Name: "forward", Hook: nftables.ChainHookForward, Rules: []firewall.NftRule{ourJump(), invalidReject}}, c}}}}
		}, append(append([]brief{}, ok[:5]...), brief{"nftables", Fail}, brief{"routes", OK}),
			"lacks the exemptions for lan0 192.168.254.0/24 tcp", "poke"},
		{"Debian's default nftables.conf", func(in *Input) {
			in.Nft = &firewall.NftRuleset{Tables: []firewall.NftTable{{Family: nftables.TableFamilyINet, Name: "filter",
				Chains: []firewall.NftChain{{Name: "forward", Hook: nftables.ChainHookForward}}}}}
		}, append(append([]brief{}, ok[:5]...), brief{"nftables", OK}, brief{"routes", OK}), "", ""},
		{"firewalld", func(in *Input) {
			in.Nft = &firewall.NftRuleset{Tables: []firewall.NftTable{{Family: nftables.TableFamilyINet, Name: "firewalld",
				Chains: []firewall.NftChain{{Name: "filter_FORWARD", Hook: nftables.ChainHookForward, Rules: []firewall.NftRule{invalidDrop}}}}}}
		}, append(append([]brief{}, ok[:5]...), brief{"nftables", Warn}, brief{"routes", OK}),
			"firewalld manages", "systemctl disable --now firewalld"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := healthy()
			in.Redirects.Interfaces = map[string]sysctl.InterfaceReport{"lan0": {}}
			in.Firewall = map[firewall.Backend]Listing{firewall.Legacy: in.Firewall[firewall.Legacy], firewall.NFT: in.Firewall[firewall.NFT]}
			tc.mutate(&in)
			got := Run(context.Background(), in)
			if d := cmp.Diff(tc.want, summarize(got)); d != "" {
				t.Fatalf("(-want +got):\n%s\nfindings: %+v", d, got)
			}
			for _, f := range got {
				if f.Status != OK && f.Fix == "" {
					t.Errorf("finding without a fix: %+v", f)
				}
			}
			if tc.msg == "" {
				if !Healthy(got) {
					t.Errorf("not healthy: %+v", got)
				}
				return
			}
			for _, f := range got {
				if f.Status == OK {
					continue
				}
				if !strings.Contains(f.Message, tc.msg) || !strings.Contains(f.Fix, tc.fix) {
					t.Errorf("first problem %+v; want message containing %q and fix containing %q", f, tc.msg, tc.fix)
				}
				break
			}
		})
	}
}

func TestParseConntrackStat(t *testing.T) {
	s := `entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
0000000a  00000000 00000000 00000000 0000001f 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000  00000000 00000000 00000000 00000000
0000000a  00000000 00000000 00000000 00000002 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000  00000000 00000000 00000000 00000000
`
	n, ok, err := parseConntrackStat(s)
	if err != nil || !ok || n != 33 {
		t.Errorf("got %d %v %v, want 33", n, ok, err)
	}
}
