package trace

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"

	"github.com/bgplb/bgplb/routeragent/firewall"
)

func TestLeftoverTables(t *testing.T) {
	rs := firewall.NftRuleset{Tables: []firewall.NftTable{
		{Family: nftables.TableFamilyINet, Name: "filter"},
		{Family: nftables.TableFamilyINet, Name: "bgplb_trace_100"}, // dead
		{Family: nftables.TableFamilyINet, Name: "bgplb_trace_200"}, // alive
		{Family: nftables.TableFamilyIPv4, Name: "bgplb_trace_300"}, // not a family trace uses
		{Family: nftables.TableFamilyINet, Name: "bgplb_trace_x"},   // not ours
	}}
	got := leftoverTables(rs, func(pid int) bool { return pid == 200 })
	if diff := cmp.Diff([]string{"bgplb_trace_100"}, got); diff != "" {
		t.Errorf("leftovers (-want +got):\n%s", diff)
	}
}

// TestNftCounters reads a listing as firewall.NetlinkNft returns it: our
// counting table, a native drop with a counter, one without, and our
// exemption chain.
func TestNftCounters(t *testing.T) {
	ctr := func(n uint64) expr.Any { return &expr.Counter{Packets: n} }
	invalid := []expr.Any{&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{1, 0, 0, 0}, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}}}
	drop := &expr.Verdict{Kind: expr.VerdictDrop}
	rule := func(h uint64, comment string, x ...expr.Any) firewall.NftRule {
		r := firewall.NftRule{Handle: h, Exprs: x}
		if comment != "" {
			r.UserData = userdata.AppendString(nil, userdata.TypeComment, comment)
		}
		return r
	}
	fwd := nftables.ChainHookForward
	rs := firewall.NftRuleset{Tables: []firewall.NftTable{
		{Family: nftables.TableFamilyINet, Name: "bgplb_trace_7", Chains: []firewall.NftChain{{Name: "count", Hook: fwd, Priority: -150, Rules: []firewall.NftRule{
			rule(2, Mark+" pid=7 invalid", append(append([]expr.Any{}, invalid...), ctr(4))...),
			rule(3, Mark+" pid=7 all", ctr(6)),
		}}}},
		{Family: nftables.TableFamilyINet, Name: "filter", Chains: []firewall.NftChain{
			{Name: "forward", Hook: fwd, Rules: []firewall.NftRule{
				rule(9, "", &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictJump, Chain: firewall.NftChainName}),
				rule(4, "", append(append([]expr.Any{}, invalid...), ctr(11), drop)...)}},
			{Name: firewall.NftChainName, Rules: []firewall.NftRule{rule(8, "bgplb: x", ctr(5), &expr.Verdict{Kind: expr.VerdictAccept})}},
		}},
		{Family: nftables.TableFamilyIPv6, Name: "fw", Chains: []firewall.NftChain{
			{Name: "fwd", Hook: fwd, Rules: []firewall.NftRule{rule(6, "", append(append([]expr.Any{}, invalid...), drop)...)}},
		}},
	}}
	want := Counters{Packets: 6, Invalid: 4,
		Drops: []RuleCount{
			{RuleRef: RuleRef{Backend: BackendNftables, Table: "inet filter", Chain: "forward", Number: 2, Handle: 4, Spec: "inet filter chain forward handle 4"}, Packets: 11},
			{RuleRef: RuleRef{Backend: BackendNftables, Table: "ip6 fw", Chain: "fwd", Number: 1, Handle: 6, Spec: "ip6 fw chain fwd handle 6"}, Uncounted: true},
		},
		Exemptions: []RuleCount{{RuleRef: RuleRef{Backend: BackendNftables, Table: "inet filter", Chain: firewall.NftChainName, Number: 1, Handle: 8,
			Spec: `inet filter chain bgplb_exempt handle 8 comment "bgplb: x"`}, Packets: 5}},
	}
	if diff := cmp.Diff(want, nftCounters(rs, "bgplb_trace_7", Mark+" pid=7")); diff != "" {
		t.Errorf("counters (-want +got):\n%s", diff)
	}
}
