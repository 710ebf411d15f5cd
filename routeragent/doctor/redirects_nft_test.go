package doctor

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"

	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/firewall"
)

// nftRedirectTable is the agent's native redirect table holding the
// suppressions of subnets, each having counted packets.
func nftRedirectTable(packets uint64, subnets ...string) firewall.NftTable {
	c := firewall.NftChain{Name: firewall.NftRedirectChain, Hook: nftables.ChainHookOutput}
	for _, s := range subnets {
		r := firewall.RedirectBlock{Subnet: netip.MustParsePrefix(s)}
		exprs := r.NftExprs()
		for i, x := range exprs {
			if _, ok := x.(*expr.Counter); ok {
				exprs[i] = &expr.Counter{Packets: packets, Bytes: packets * 100}
			}
		}
		c.Rules = append(c.Rules, firewall.NftRule{Exprs: exprs, UserData: userdata.AppendString(nil, userdata.TypeComment, r.Comment())})
	}
	return firewall.NftTable{Family: nftables.TableFamilyINet, Name: firewall.NftRedirectTable, Chains: []firewall.NftChain{c}}
}

// nftForward is an inet filter table whose forward chain drops INVALID
// packets (withDrop) or accepts everything (Debian's default).
func nftForward(withDrop bool) firewall.NftTable {
	fwd := firewall.NftChain{Name: "forward", Hook: nftables.ChainHookForward}
	if withDrop {
		fwd.Rules = []firewall.NftRule{{Exprs: []expr.Any{
			&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{1, 0, 0, 0}, Xor: []byte{0, 0, 0, 0}},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
			&expr.Verdict{Kind: expr.VerdictDrop},
		}}}
	}
	return firewall.NftTable{Family: nftables.TableFamilyINet, Name: "filter", Chains: []firewall.NftChain{fwd}}
}

func TestCheckRedirects6Nft(t *testing.T) {
	ruleset := func(ts ...firewall.NftTable) *firewall.NftRuleset { return &firewall.NftRuleset{Tables: ts} }
	nftFix := "nft add rule inet bgplb noredirect6 'icmpv6 type nd-redirect @th,192,128 & 0xffffffffffffffff0000000000000000 == 0x20010db8025400000000000000000000 counter drop"
	ip6Fix := "ip6tables-legacy -I OUTPUT 1"
	for _, tc := range []struct {
		name      string
		backend   config.FirewallBackend
		mode      config.FirewallMode
		firewall6 map[firewall.Backend]Listing
		nft       *firewall.NftRuleset
		status    string
		msg, fix  string
	}{
		{"native holds it, no ip6tables tools", config.BackendNftables, "", nil, ruleset(nftForward(true), nftRedirectTable(3, "2001:db8:254::/64")), OK,
			"dropped in native nftables table inet bgplb chain noredirect6 (hook output); 3 suppressed", ""},
		{"native holds it in auto mode next to empty ip6tables", config.BackendAuto, "", map[firewall.Backend]Listing{firewall.Legacy: listing(estab)},
			ruleset(nftForward(true), nftRedirectTable(0, "2001:db8:254::/64")), OK, "inet bgplb", ""},
		{"native rule flushed by hand", config.BackendNftables, "", nil, ruleset(nftForward(true), nftRedirectTable(0)), Fail,
			"nothing stops the router's ICMPv6 Redirects about 2001:db8:254::/64", nftFix},
		{"native rule of another subnet only", config.BackendAuto, "", nil, ruleset(nftForward(false), nftRedirectTable(0, "2001:db8:999::/64")), Fail,
			"nothing stops", "nft add table inet bgplb ; nft add chain inet bgplb noredirect6 '{ type filter hook output priority filter; policy accept; }' ; " + nftFix},
		{"auto: forward path native, ip6tables without a drop", config.BackendAuto, "", map[firewall.Backend]Listing{firewall.Legacy: listing(estab)},
			ruleset(nftForward(true)), Fail, "nothing stops", nftFix},
		{"auto: ip6tables-legacy drops invalid: ip6tables fix", config.BackendAuto, "", map[firewall.Backend]Listing{firewall.Legacy: listing(drop, estab)},
			ruleset(nftForward(true)), Fail, "nothing stops", ip6Fix},
		{"configured legacy: ip6tables fix", config.BackendLegacy, "", map[firewall.Backend]Listing{firewall.Legacy: listing(estab)},
			ruleset(nftForward(true)), Fail, "nothing stops", ip6Fix},
		{"mode off", config.BackendNftables, config.FirewallOff, nil, ruleset(nftForward(true)), Warn, "nothing stops", "firewall.mode: exempt"},
		{"nothing readable", config.BackendAuto, "", nil, nil, Warn, "could not be listed nor native nftables read", "nft list table inet bgplb"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := Input{ServiceSubnets: []netip.Prefix{sub6}, FirewallBackend: tc.backend, FirewallMode: tc.mode, Firewall6: tc.firewall6, Nft: tc.nft}
			if in.FirewallMode == "" {
				in.FirewallMode = config.FirewallExempt
			}
			f := checkRedirects6(in)
			if f.Status != tc.status || !strings.Contains(f.Message, tc.msg) || !strings.Contains(f.Fix, tc.fix) {
				t.Errorf("finding %+v\nwant status %s, message containing %q, fix containing %q", f, tc.status, tc.msg, tc.fix)
			}
			if tc.fix == ip6Fix && strings.Contains(f.Fix, "nft add") || tc.fix == nftFix && strings.Contains(f.Fix, "ip6tables") {
				t.Errorf("fix names both backends: %s", f.Fix)
			}
		})
	}
}
