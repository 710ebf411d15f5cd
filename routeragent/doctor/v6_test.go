package doctor

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/bgplb/bgplb/routeragent/firewall"
)

var (
	sub6     = netip.MustParsePrefix("2001:db8:254::/64")
	block6   = firewall.RedirectBlock{Subnet: sub6}
	exempt6  = `-A BGPLB-EXEMPT -d 2001:db8:254::/64 -i lan0 -p tcp -m conntrack --ctstate INVALID -m comment --comment "bgplb: tcp from lan0 to 2001:db8:254::/64, asymmetric return path" -c 4 320 -j ACCEPT`
	redJump6 = "-A OUTPUT " + firewall.Rule{Args: firewall.RedirectJumpArgs()}.String()
	redRule6 = "-A " + firewall.RedirectChainName + " " + firewall.Rule{Args: block6.Args()}.String()
)

// dualStack is healthy() with an IPv6 service subnet whose exemption and
// redirect suppression are in place.
func dualStack() Input {
	in := healthy()
	in.ServiceSubnets = append(in.ServiceSubnets, sub6)
	in.Firewall6 = map[firewall.Backend]Listing{
		firewall.Legacy: listing("-N BGPLB-EXEMPT", "-N "+firewall.RedirectChainName, jump, drop, estab, redJump6, exempt6, redRule6),
	}
	in.IPv6 = &IPv6Input{Forwarding: 1, RPFilter: []RPFilterRule{{Where: "ip6tables-legacy raw PREROUTING", Rule: "-m rpfilter --loose --invert -j DROP", Loose: true}}}
	return in
}

// familyBrief is brief with the family tag.
type familyBrief struct{ Check, Family, Status string }

func TestRunIPv6(t *testing.T) {
	ok := []familyBrief{
		{"ip_forward", "ipv4", OK}, {"ipv6_forwarding", "ipv6", OK},
		{"send_redirects", "ipv4", OK}, {"icmpv6_redirects", "ipv6", OK},
		{"rp_filter", "ipv4", OK}, {"ipv6_rpfilter", "ipv6", OK},
		{"firewall", "ipv4", OK}, {"firewall", "ipv6", OK},
		{"conntrack", "", OK}, {"routes", "", OK},
	}
	with := func(check, status string) []familyBrief {
		out := append([]familyBrief{}, ok...)
		for i := range out {
			if out[i].Check == check {
				out[i].Status = status
			}
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		mutate   func(*Input)
		want     []familyBrief
		msg, fix string
	}{
		{"healthy dual stack", func(*Input) {}, ok, "", ""},
		{"IPv6 forwarding off", func(in *Input) { in.IPv6.Forwarding = 0 }, with("ipv6_forwarding", Fail),
			"IPv6 forwarding is off", "net.ipv6.conf.all.forwarding=1"},
		{"IPv6 forwarding unreadable", func(in *Input) { in.IPv6.Forwarding = -1 }, with("ipv6_forwarding", Warn),
			"could not be read", "sysctl net.ipv6.conf.all.forwarding"},
		{"redirect jump deleted by hand", func(in *Input) {
			in.Firewall6[firewall.Legacy] = listing("-N BGPLB-EXEMPT", "-N "+firewall.RedirectChainName, jump, drop, estab, exempt6, redRule6)
		}, with("icmpv6_redirects", Fail), "nothing stops the router's ICMPv6 Redirects about 2001:db8:254::/64",
			"ip6tables-legacy -I OUTPUT 1 -m comment --comment \"" + firewall.RedirectJumpComment + "\" -j " + firewall.RedirectChainName},
		{"redirect rule of another subnet", func(in *Input) {
			other := firewall.RedirectBlock{Subnet: netip.MustParsePrefix("2001:db8:999::/64")}
			in.Firewall6[firewall.Legacy] = listing("-N BGPLB-EXEMPT", "-N "+firewall.RedirectChainName, jump, drop, estab, redJump6, exempt6,
				"-A "+firewall.RedirectChainName+" "+firewall.Rule{Args: other.Args()}.String())
		}, with("icmpv6_redirects", Fail), "2001:db8:254::/64", "-m u32 --u32 0x40=0x20010db8&&0x44=0x2540000"},
		{"mode off", func(in *Input) {
			in.FirewallMode = "off"
			in.Firewall[firewall.Legacy] = listing(estab)
			in.Firewall6[firewall.Legacy] = listing(estab)
		}, with("icmpv6_redirects", Warn), "nothing stops", "firewall.mode: exempt"},
		{"no ip6tables at all", func(in *Input) { in.Firewall6 = nil }, append(with("icmpv6_redirects", Warn)[:7], familyBrief{"conntrack", "", OK}, familyBrief{"routes", "", OK}),
			"ip6tables could not be listed", "ip6tables-legacy -S OUTPUT"},
		{"strict rpfilter (firewalld's default)", func(in *Input) {
			in.IPv6.RPFilter = append(in.IPv6.RPFilter, RPFilterRule{Where: "ip6tables-nft mangle PREROUTING", Rule: "-m rpfilter --invert -j DROP"})
		}, with("ipv6_rpfilter", Warn), "ip6tables-nft mangle PREROUTING: -m rpfilter --invert -j DROP", "--loose"},
		{"rpfilter unreadable", func(in *Input) { in.IPv6.RPFilterErr = "ip6tables-nft -t raw: exit status 1" }, with("ipv6_rpfilter", Warn),
			"could not look", "ip6tables-legacy -t raw -S"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := dualStack()
			tc.mutate(&in)
			got := Run(context.Background(), in)
			var sum []familyBrief
			for _, f := range got {
				sum = append(sum, familyBrief{f.Check, f.Family, f.Status})
			}
			if d := cmp.Diff(tc.want, sum); d != "" {
				t.Fatalf("(-want +got):\n%s\nfindings: %+v", d, got)
			}
			for _, f := range got {
				if f.Status != OK && f.Fix == "" {
					t.Errorf("finding without a fix: %+v", f)
				}
				if f.Status != OK && (!strings.Contains(f.Message, tc.msg) || !strings.Contains(f.Fix, tc.fix)) {
					t.Errorf("problem %+v; want message containing %q and fix containing %q", f, tc.msg, tc.fix)
				}
			}
		})
	}
}

func TestRPFilterRules(t *testing.T) {
	tb, err := firewall.ParseTable([]string{
		"-P PREROUTING ACCEPT", "-P OUTPUT ACCEPT", "-N PRE_public",
		"-A PREROUTING -m rpfilter --invert -c 0 0 -j DROP",
		"-A PREROUTING -j PRE_public",
		"-A PRE_public -p ipv6-icmp -m rpfilter --loose --invert -j DROP",
		"-A OUTPUT -j ACCEPT",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []RPFilterRule{
		{Where: "ip6tables-nft raw PREROUTING", Rule: "-m rpfilter --invert -j DROP"},
		{Where: "ip6tables-nft raw PRE_public", Rule: "-p ipv6-icmp -m rpfilter --loose --invert -j DROP", Loose: true},
	}
	if d := cmp.Diff(want, rpfilterRules("ip6tables-nft raw", tb)); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

func TestNftRPFilter6(t *testing.T) {
	// The expressions as the kernel returns them for (nft 1.0):
	//   table inet firewalld { chain filter_PREROUTING { ...
	//     icmpv6 type { nd-router-advert, nd-neighbor-solicit } accept
	//     meta nfproto ipv6 fib saddr . mark . iif oif missing drop } }
	//   table ip6 mangle { chain PREROUTING {   (iptables-nft's: skipped)
	//     fib saddr . iif oif missing counter drop } }
	//   table ip raw { chain prerouting { fib saddr . iif oif missing drop } }
	//   table inet raw { chain prerouting { ...
	//     fib saddr oif missing drop
	//     meta nfproto ipv4 fib saddr . iif oif 0 drop } }
	//   table ip6 strict { chain pre { fib saddr . iif oif 0 drop } }
	nfproto := func(p byte) []expr.Any {
		return []expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}}}
	}
	fib := func(f expr.Fib, tail ...expr.Any) []expr.Any {
		f.Register, f.FlagSADDR, f.ResultOIF = 1, true, true
		return append([]expr.Any{&f, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 0, 0, 0}}}, tail...)
	}
	drop := &expr.Verdict{Kind: expr.VerdictDrop}
	rule := func(e ...[]expr.Any) firewall.NftRule { return firewall.NftRule{Exprs: slices.Concat(e...)} }
	hook := nftables.ChainHookPrerouting
	rs := firewall.NftRuleset{Tables: []firewall.NftTable{
		{Family: nftables.TableFamilyINet, Name: "firewalld", Chains: []firewall.NftChain{{Name: "filter_PREROUTING", Hook: hook, Rules: []firewall.NftRule{
			rule([]expr.Any{&expr.Payload{Base: expr.PayloadBaseTransportHeader, Len: 1, DestRegister: 1}, &expr.Lookup{SourceRegister: 1, SetName: "__set0"}, &expr.Verdict{Kind: expr.VerdictAccept}}),
			rule(nfproto(unix.NFPROTO_IPV6), fib(expr.Fib{FlagMARK: true, FlagIIF: true, FlagPRESENT: true}, drop)),
		}}}},
		{Family: nftables.TableFamilyIPv6, Name: "mangle", Chains: []firewall.NftChain{{Name: "PREROUTING", Hook: hook, Rules: []firewall.NftRule{
			rule(fib(expr.Fib{FlagIIF: true, FlagPRESENT: true}, &expr.Counter{}, drop)),
		}}}},
		{Family: nftables.TableFamilyIPv4, Name: "raw", Chains: []firewall.NftChain{{Name: "prerouting", Hook: hook, Rules: []firewall.NftRule{
			rule(fib(expr.Fib{FlagIIF: true, FlagPRESENT: true}, drop)),
		}}}},
		{Family: nftables.TableFamilyINet, Name: "raw", Chains: []firewall.NftChain{{Name: "prerouting", Hook: hook, Rules: []firewall.NftRule{
			rule(fib(expr.Fib{FlagPRESENT: true}, drop)),
			rule(nfproto(unix.NFPROTO_IPV4), fib(expr.Fib{FlagIIF: true}, drop)),
		}}}},
		{Family: nftables.TableFamilyIPv6, Name: "strict", Chains: []firewall.NftChain{{Name: "pre", Rules: []firewall.NftRule{
			rule(fib(expr.Fib{FlagIIF: true}, drop)),
		}}}},
	}}
	want := []RPFilterRule{
		{Where: "nft inet firewalld filter_PREROUTING", Rule: "meta nfproto ipv6 fib saddr . mark . iif oif missing drop"},
		{Where: "nft inet raw prerouting", Rule: "fib saddr oif missing drop", Loose: true},
		{Where: "nft ip6 strict pre", Rule: "fib saddr . iif oif 0 drop"},
	}
	if d := cmp.Diff(want, nftRPFilter6(rs)); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}
