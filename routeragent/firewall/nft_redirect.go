package firewall

import (
	"fmt"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/bgplb/bgplb/routeragent/config"
)

// The ICMPv6 Redirect suppression in native nftables.
//
// A drop in any base chain at the output hook stops a packet, whatever
// other tables accept (unlike the exemptions, which must sit in the chain
// path holding the forward drop). So the rules live in a table of our
// own, which the host's `nft -f` never names and uninstall deletes whole:
//
//	table inet bgplb {
//		chain noredirect6 {
//			type filter hook output priority filter; policy accept;
//			meta nfproto ipv6 meta l4proto ipv6-icmp icmpv6 type nd-redirect @th,192,64 0x20010db802540000 counter drop comment "bgplb: ..."
//		}
//	}
//
// A `flush ruleset` (nftables.service start or reload) deletes it; the
// monitor (WatchNft) or the next pass puts it back.
const (
	// NftRedirectTable is our inet table holding the redirect chain.
	NftRedirectTable = "bgplb"
	// NftRedirectChain is its base chain at the output hook.
	NftRedirectChain = "noredirect6"
)

// icmpv6Redirect is the ICMPv6 type of a Redirect (nd-redirect), RFC 4861.
const icmpv6Redirect = 137

// Offset of the Redirect's Destination Address from the start of the
// ICMPv6 header (the transport header of nft's payload expression): type,
// code, checksum, reserved (8) and Target Address (16). RFC 4861 4.5.
const redirectDestTransportOffset = 8 + 16

// NftExprs renders the suppression as nft would compile `meta nfproto ipv6
// meta l4proto ipv6-icmp icmpv6 type nd-redirect @th,192,128 & MASK ==
// SUBNET counter drop`: the Destination Address field, masked to the
// prefix length, compared with the subnet.
func (r RedirectBlock) NftExprs() []expr.Any {
	out := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV6}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMPV6}},
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{icmpv6Redirect}},
	}
	if r.Subnet.Bits() > 0 { // a /0 needs no test
		out = append(out, prefixMatch(expr.PayloadBaseTransportHeader, redirectDestTransportOffset, r.Subnet)...)
	}
	return append(out, &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})
}

// isRedirectTable reports whether t is our redirect table.
func isRedirectTable(t NftTable) bool {
	return t.Family == nftables.TableFamilyINet && t.Name == NftRedirectTable
}

func (rs NftRuleset) redirectTable() *NftTable {
	for i := range rs.Tables {
		if isRedirectTable(rs.Tables[i]) {
			return &rs.Tables[i]
		}
	}
	return nil
}

// isRedirectChain reports whether c is our base chain at the output hook.
func isRedirectChain(c *NftChain) bool {
	return c != nil && c.Hook != nil && *c.Hook == *nftables.ChainHookOutput
}

// PlanNftRedirects returns the changes that bring our redirect table to:
// chain noredirect6 at the output hook holding exactly want's rules
// (compared by their comments, which name the subnet), in want's order;
// with want empty, no table of ours at all. It returns nil when all is
// right.
func PlanNftRedirects(rs NftRuleset, want []RedirectBlock) []NftOp {
	t := rs.redirectTable()
	if len(want) == 0 {
		return planNftRedirectRemove(t)
	}
	op := func(kind string) NftOp {
		return NftOp{Kind: kind, Family: nftables.TableFamilyINet, Table: NftRedirectTable, Chain: NftRedirectChain}
	}
	var ops []NftOp
	var c *NftChain
	if t == nil {
		ops = append(ops, NftOp{Kind: "add-table", Family: nftables.TableFamilyINet, Table: NftRedirectTable})
	} else {
		c = t.Chain(NftRedirectChain)
	}
	switch {
	case c != nil && !isRedirectChain(c):
		// Not at the output hook (made by hand): replace it.
		ops = append(ops, op("flush-chain"), op("delete-chain"))
		c = nil
	case c != nil && slices.EqualFunc(c.Rules, want, func(r NftRule, w RedirectBlock) bool { return r.Comment() == w.Comment() }):
		return nil
	case c != nil:
		ops = append(ops, op("flush-chain"))
	}
	if c == nil {
		add := op("add-chain")
		add.Hook = nftables.ChainHookOutput
		ops = append(ops, add)
	}
	for _, w := range want {
		add := op("add-rule")
		add.Exprs, add.Comment = w.NftExprs(), w.Comment()
		ops = append(ops, add)
	}
	return ops
}

// planNftRedirectRemove deletes our redirect table; should someone have
// added chains of their own to it, only our chain goes.
func planNftRedirectRemove(t *NftTable) []NftOp {
	if t == nil {
		return nil
	}
	if !slices.ContainsFunc(t.Chains, func(c NftChain) bool { return c.Name != NftRedirectChain }) {
		return []NftOp{{Kind: "delete-table", Family: t.Family, Table: t.Name}}
	}
	if t.Chain(NftRedirectChain) == nil {
		return nil
	}
	return []NftOp{
		{Kind: "flush-chain", Family: t.Family, Table: t.Name, Chain: NftRedirectChain},
		{Kind: "delete-chain", Family: t.Family, Table: t.Name, Chain: NftRedirectChain},
	}
}

// NftRedirectCounters returns the packets and bytes of the rule of our
// redirect chain that suppresses Redirects about r.Subnet, and whether it
// is there.
func NftRedirectCounters(rs NftRuleset, r RedirectBlock) (packets, bytes uint64, ok bool) {
	t := rs.redirectTable()
	if t == nil {
		return 0, 0, false
	}
	c := t.Chain(NftRedirectChain)
	if !isRedirectChain(c) {
		return 0, 0, false
	}
	for _, rule := range c.Rules {
		if rule.Comment() != r.Comment() {
			continue
		}
		for _, x := range rule.Exprs {
			if ctr, ok := x.(*expr.Counter); ok {
				return ctr.Packets, ctr.Bytes, true
			}
		}
		return 0, 0, true
	}
	return 0, 0, false
}

// RedirectsInNative decides whether native nftables holds the ICMPv6
// Redirect suppression (one place is enough: a drop at the output hook of
// any backend stops the packet). It prefers the backend in force:
// configured nftables, always; in auto mode native nftables when the IPv6
// pass chose no ip6tables backend (the forward path is native nftables'),
// ip6tables otherwise (an INVALID drop there, or no native forward
// chain). decided is false when the IPv6 pass failed before choosing:
// leave things as they are until it succeeds.
func RedirectsInNative(backend config.FirewallBackend, want []RedirectBlock, v6Targets []Backend, v6Chose bool) (native, decided bool) {
	switch {
	case backend == config.BackendNftables:
		return true, true
	case backend != config.BackendAuto:
		return false, true
	case len(want) == 0:
		return false, true
	case !v6Chose:
		return false, false
	}
	return len(v6Targets) == 0, true
}

// redirectStatus reports the native suppressions with their counters (zero
// when the pass rewrote them).
func nftRedirectStatus(rs NftRuleset, want []RedirectBlock, rewritten bool) []RedirectStatus {
	out := make([]RedirectStatus, 0, len(want))
	for _, w := range want {
		st := RedirectStatus{Subnet: w.Subnet.String(), Backend: string(Nftables)}
		if !rewritten {
			st.Packets, st.Bytes, _ = NftRedirectCounters(rs, w)
		}
		out = append(out, st)
	}
	return out
}

// NftText is the rule as `nft -s list ruleset` prints it, and as `nft add
// rule inet bgplb noredirect6 ...` takes it (doctor's manual fix):
// the Destination Address as a raw transport-header field of 128 bits at
// bit 192, masked unless the prefix is a host address.
func (r RedirectBlock) NftText() string {
	s := "icmpv6 type nd-redirect "
	if bits := r.Subnet.Bits(); bits > 0 {
		addr := r.Subnet.Masked().Addr().As16()
		s += fmt.Sprintf("@th,%d,128 ", redirectDestTransportOffset*8)
		if bits < 128 {
			var mask [16]byte
			for i := 0; i < bits; i++ {
				mask[i/8] |= 0x80 >> (i % 8)
			}
			s += fmt.Sprintf("& 0x%x == ", mask)
		}
		s += fmt.Sprintf("0x%x ", addr)
	}
	return s + fmt.Sprintf("counter drop comment %q", r.Comment())
}

// NftRedirectCommands are the nft commands that install the suppression by hand.
func NftRedirectCommands(want []RedirectBlock) []string {
	cmds := []string{
		"nft add table inet " + NftRedirectTable,
		"nft add chain inet " + NftRedirectTable + " " + NftRedirectChain + " '{ type filter hook output priority filter; policy accept; }'",
	}
	for _, r := range want {
		cmds = append(cmds, "nft add rule inet "+NftRedirectTable+" "+NftRedirectChain+" '"+r.NftText()+"'")
	}
	return cmds
}
