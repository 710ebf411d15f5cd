package firewall

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// NftOp is one change to the native ruleset. The real NftConn applies a
// plan's ops as one netlink batch: one transaction, all or nothing.
type NftOp struct {
	// Kind is one of add-table, delete-table, add-chain, flush-chain,
	// add-rule, insert-rule, delete-rule, delete-chain.
	Kind   string
	Family nftables.TableFamily
	Table  string
	Chain  string
	// Hook makes add-chain create a base chain (type filter, priority
	// filter, policy accept) at that hook; nil for a regular chain.
	Hook *nftables.ChainHook
	// Priority overrides the base chain's priority (nil: filter).
	Priority *nftables.ChainPriority
	// Handle names the rule of delete-rule.
	Handle uint64
	// Exprs and Comment are the rule of add-rule (appended) and
	// insert-rule (put first in the chain).
	Exprs   []expr.Any
	Comment string
}

func (o NftOp) String() string {
	s := fmt.Sprintf("%s %s %s", o.Kind, FamilyName(o.Family), o.Table)
	if o.Chain != "" {
		s += " " + o.Chain
	}
	if o.Hook != nil && *o.Hook == *nftables.ChainHookOutput {
		s += " hook output"
	}
	if o.Handle != 0 {
		s += fmt.Sprintf(" handle %d", o.Handle)
	}
	if o.Comment != "" {
		s += fmt.Sprintf(" comment %q", o.Comment)
	}
	return s
}

// UserData is the rule userdata carrying the comment.
func (o NftOp) UserData() []byte {
	if o.Comment == "" {
		return nil
	}
	return userdata.AppendString(nil, userdata.TypeComment, o.Comment)
}

var l4protos = map[string]byte{"tcp": unix.IPPROTO_TCP, "udp": unix.IPPROTO_UDP, "sctp": unix.IPPROTO_SCTP}

// ifnameData is an interface name as nft compares it: NUL-padded to
// IFNAMSIZ.
func ifnameData(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

// daddrMatch renders `ip daddr S` / `ip6 daddr S`: load the destination
// address, mask it to the prefix length, compare.
func daddrMatch(p netip.Prefix) []expr.Any {
	nfproto, off := byte(unix.NFPROTO_IPV4), uint32(16)
	if !p.Addr().Is4() {
		nfproto, off = unix.NFPROTO_IPV6, 24
	}
	return append([]expr.Any{
		// In an inet table `ip daddr` only makes sense for IPv4 packets;
		// nft adds the same nfproto test.
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}},
	}, prefixMatch(expr.PayloadBaseNetworkHeader, off, p)...)
}

// prefixMatch loads the address field at off of base, masks it to p's
// length (no mask for a full-length prefix) and compares it with p.
func prefixMatch(base expr.PayloadBase, off uint32, p netip.Prefix) []expr.Any {
	n := uint32(p.Addr().BitLen() / 8)
	out := []expr.Any{&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 1, Base: base, Offset: off, Len: n}}
	if p.Bits() < int(n)*8 {
		mask := make([]byte, n)
		for i := 0; i < p.Bits(); i++ {
			mask[i/8] |= 0x80 >> (i % 8)
		}
		out = append(out, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)})
	}
	return append(out, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()})
}

// NftExprs renders the exemption as nft would compile `iifname X ip daddr
// S ct state invalid meta l4proto P counter accept`.
func (e Exemption) NftExprs() []expr.Any {
	out := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifnameData(e.Interface)},
	}
	out = append(out, daddrMatch(e.Subnet)...)
	return append(out,
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: nativeU32(expr.CtStateBitINVALID), Xor: nativeU32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: nativeU32(0)},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{l4protos[e.Protocol]}},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictAccept},
	)
}

func nativeU32(v uint32) []byte {
	return binary.NativeEndian.AppendUint32(nil, v)
}

// jumpExprs is our jump rule: `counter jump bgplb_exempt`.
func jumpExprs() []expr.Any {
	return []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictJump, Chain: NftChainName}}
}

// forTable keeps the exemptions a table of family fam can hold: an inet
// table all, an ip table the IPv4 ones, an ip6 table the IPv6 ones.
func forTable(fam nftables.TableFamily, want []Exemption) []Exemption {
	var out []Exemption
	for _, e := range want {
		switch {
		case fam == nftables.TableFamilyINet,
			fam == nftables.TableFamilyIPv4 && e.Subnet.Addr().Is4(),
			fam == nftables.TableFamilyIPv6 && !e.Subnet.Addr().Is4():
			out = append(out, e)
		}
	}
	return out
}

// PlanNft returns the changes that bring the native ruleset to: in every
// table holding an INVALID drop (a.Drops), our chain with exactly want's
// rules (those of the table's family) and, in each forward base chain
// whose path drops, exactly one jump to it as the chain's first rule; and
// nothing of ours anywhere else. It returns nil when all is right.
func PlanNft(rs NftRuleset, a NftAnalysis, want []Exemption) []NftOp {
	var ops []NftOp
	for _, t := range rs.Tables {
		if t.OwnedByIptables() || t.Name == FirewalldTable || isRedirectTable(t) {
			continue
		}
		var dropChains []string
		for _, d := range a.Drops {
			if d.Table == t.String() {
				dropChains = append(dropChains, d.BaseChain)
			}
		}
		if len(dropChains) == 0 {
			ops = append(ops, planNftRemoveTable(t)...)
			continue
		}
		ops = append(ops, planNftChain(t, forTable(t.Family, want))...)
		ops = append(ops, planNftJumps(t, dropChains)...)
	}
	return ops
}

// planNftChain creates or rewrites our chain as a whole when its rules
// differ from want (compared by their comments, which name interface,
// subnet and protocol).
func planNftChain(t NftTable, want []Exemption) []NftOp {
	var ops []NftOp
	ours := t.Chain(NftChainName)
	switch {
	case ours == nil:
		ops = append(ops, NftOp{Kind: "add-chain", Family: t.Family, Table: t.Name, Chain: NftChainName})
	case nftChainEquals(ours.Rules, want):
		return nil
	default:
		ops = append(ops, NftOp{Kind: "flush-chain", Family: t.Family, Table: t.Name, Chain: NftChainName})
	}
	for _, e := range want {
		ops = append(ops, NftOp{Kind: "add-rule", Family: t.Family, Table: t.Name, Chain: NftChainName, Exprs: e.NftExprs(), Comment: e.Comment()})
	}
	return ops
}

func nftChainEquals(have []NftRule, want []Exemption) bool {
	return slices.EqualFunc(have, want, func(r NftRule, e Exemption) bool { return r.Comment() == e.Comment() })
}

// planNftJumps keeps exactly one jump, first, in each base chain of
// dropChains, and none in the table's other chains.
func planNftJumps(t NftTable, dropChains []string) []NftOp {
	var ops []NftOp
	for _, c := range t.Chains {
		var jumps []uint64
		first := false
		for i, r := range c.Rules {
			if isOurJump(r) {
				jumps = append(jumps, r.Handle)
				first = first || i == 0
			}
		}
		want := slices.Contains(dropChains, c.Name)
		if want && len(jumps) == 1 && first {
			continue
		}
		for _, h := range jumps {
			ops = append(ops, NftOp{Kind: "delete-rule", Family: t.Family, Table: t.Name, Chain: c.Name, Handle: h})
		}
		if want {
			ops = append(ops, NftOp{Kind: "insert-rule", Family: t.Family, Table: t.Name, Chain: c.Name, Exprs: jumpExprs(), Comment: NftJumpComment})
		}
	}
	return ops
}

// planNftRemoveTable deletes our jumps and our chain from one table.
func planNftRemoveTable(t NftTable) []NftOp {
	var ops []NftOp
	for _, c := range t.Chains {
		for _, r := range c.Rules {
			if isOurJump(r) && c.Name != NftChainName {
				ops = append(ops, NftOp{Kind: "delete-rule", Family: t.Family, Table: t.Name, Chain: c.Name, Handle: r.Handle})
			}
		}
	}
	if t.Chain(NftChainName) != nil {
		ops = append(ops,
			NftOp{Kind: "flush-chain", Family: t.Family, Table: t.Name, Chain: NftChainName},
			NftOp{Kind: "delete-chain", Family: t.Family, Table: t.Name, Chain: NftChainName})
	}
	return ops
}

// PlanNftRemove returns the changes that take our jumps and chains out of
// every table, our counting table (verify mode) and our redirect table
// (PlanNftRedirects), and nothing
// else.
func PlanNftRemove(rs NftRuleset) []NftOp {
	var ops []NftOp
	for _, t := range rs.Tables {
		if isRedirectTable(t) || isVerifyTable(t) {
			continue
		}
		ops = append(ops, planNftRemoveTable(t)...)
	}
	ops = append(ops, planVerifyRemove(rs)...)
	return append(ops, PlanNftRedirects(rs, nil)...)
}

// nftCounters returns the counters of the rule of our chain in t whose
// comment is that of e.
func nftCounters(t NftTable, e Exemption) (packets, bytes uint64) {
	c := t.Chain(NftChainName)
	if c == nil {
		return 0, 0
	}
	for _, r := range c.Rules {
		if r.Comment() != e.Comment() {
			continue
		}
		for _, x := range r.Exprs {
			if ctr, ok := x.(*expr.Counter); ok {
				return ctr.Packets, ctr.Bytes
			}
		}
	}
	return 0, 0
}
