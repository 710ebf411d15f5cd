package pinning

import (
	"encoding/binary"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The table, as nft lists it (slot 1 pins 10.0.0.1, slot 2 pins 10.0.0.2):
//
//	table inet bgplb_pin {
//		chain pre {
//			type filter hook prerouting priority mangle; policy accept;
//			ct mark & 0xff000000 == 0x0 return
//			ct direction reply return
//			ct mark & 0xff000000 == 0x01000000 meta mark set meta mark & 0x00ffffff | 0x01000000 counter
//			ct mark & 0xff000000 == 0x02000000 meta mark set meta mark & 0x00ffffff | 0x02000000 counter
//		}
//		chain post {
//			type filter hook postrouting priority mangle; policy accept;
//			meta mark & 0xff000000 != 0x0 return
//			ct direction reply return
//			meta nfproto ipv4 ip daddr 198.51.100.0/24 jump pin4
//		}
//		chain pin4 {
//			rt ip nexthop 10.0.0.1 ct mark set ct mark & 0x00ffffff | 0x01000000 return
//			rt ip nexthop 10.0.0.2 ct mark set ct mark & 0x00ffffff | 0x02000000 return
//			ct mark set ct mark & 0x00ffffff
//		}
//		chain pin6 { ... rt ip6 nexthop ... }
//	}
//
// post records in the ct mark where the hashed route sent a connection's
// packet (a packet a pin routed carries its mark and is left alone); the
// last rule of pin4/pin6 clears the slot of a next hop with no pin.
const (
	chainPre  = "pre"
	chainPost = "post"
	chainPin4 = "pin4"
	chainPin6 = "pin6"
)

func native(v uint32) []byte {
	b := make([]byte, 4)
	binary.NativeEndian.PutUint32(b, v)
	return b
}

// ctMarkIs: ct mark & MarkMask == v.
func ctMarkIs(op expr.CmpOp, v uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native(MarkMask), Xor: native(0)},
		&expr.Cmp{Op: op, Register: 1, Data: native(v)},
	}
}

// replyReturn: ct direction reply return.
func replyReturn() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeyDIRECTION, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{ctDirReply}},
		&expr.Verdict{Kind: expr.VerdictReturn},
	}
}

// setCtSlot: ct mark set ct mark & ^MarkMask | v.
func setCtSlot(v uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native(^MarkMask), Xor: native(v)},
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true},
	}
}

// daddrIn: meta nfproto FAMILY <ip|ip6> daddr SUBNET.
func daddrIn(p netip.Prefix) []expr.Any {
	proto, off := byte(unix.NFPROTO_IPV4), uint32(16)
	if p.Addr().Is6() {
		proto, off = unix.NFPROTO_IPV6, 24
	}
	n := uint32(p.Addr().BitLen() / 8)
	out := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
	}
	if p.Bits() < int(n)*8 {
		mask := make([]byte, n)
		for i := 0; i < p.Bits(); i++ {
			mask[i/8] |= 0x80 >> (i % 8)
		}
		out = append(out, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)})
	}
	return append(out, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()})
}

// nftRule is one rule of our table.
type nftRule struct {
	chain string
	exprs []expr.Any
}

// tableRules renders the table's rules for the pins and service subnets.
// Pure.
func tableRules(subnets []netip.Prefix, pins []Pin) []nftRule {
	var out []nftRule
	add := func(chain string, xs ...[]expr.Any) {
		var all []expr.Any
		for _, x := range xs {
			all = append(all, x...)
		}
		out = append(out, nftRule{chain: chain, exprs: all})
	}
	ret := []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}}
	add(chainPre, ctMarkIs(expr.CmpOpEq, 0), ret)
	add(chainPre, replyReturn())
	for _, p := range pins {
		add(chainPre, ctMarkIs(expr.CmpOpEq, p.Mark()), []expr.Any{
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native(^MarkMask), Xor: native(p.Mark())},
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1, SourceRegister: true},
			&expr.Counter{},
		})
	}
	add(chainPost, []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native(MarkMask), Xor: native(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: native(0)},
		&expr.Verdict{Kind: expr.VerdictReturn},
	})
	add(chainPost, replyReturn())
	for _, s := range subnets {
		chain := chainPin4
		if s.Addr().Is6() {
			chain = chainPin6
		}
		add(chainPost, daddrIn(s), []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: chain}})
	}
	for _, p := range pins {
		chain, key := chainPin4, expr.RtNexthop4
		if p.NextHop.Is6() {
			chain, key = chainPin6, expr.RtNexthop6
		}
		add(chain, []expr.Any{
			&expr.Rt{Key: key, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.NextHop.AsSlice()},
		}, setCtSlot(p.Mark()), ret)
	}
	for _, c := range []string{chainPin4, chainPin6} {
		add(c, setCtSlot(0))
	}
	return out
}

// nftBatch queues on c the transaction that replaces our table by one for
// the pins (or, with none, deletes it): add (so that the delete cannot
// fail), delete, add again, in one netlink batch, so no packet sees a half
// table.
func nftBatch(c *nftables.Conn, subnets []netip.Prefix, pins []Pin) {
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: NftTable}
	c.AddTable(t)
	c.DelTable(t)
	if len(pins) == 0 {
		return
	}
	c.AddTable(t)
	accept := nftables.ChainPolicyAccept
	chains := map[string]*nftables.Chain{
		chainPre: c.AddChain(&nftables.Chain{Table: t, Name: chainPre, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle, Policy: &accept}),
		chainPost: c.AddChain(&nftables.Chain{Table: t, Name: chainPost, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityMangle, Policy: &accept}),
		chainPin4: c.AddChain(&nftables.Chain{Table: t, Name: chainPin4}),
		chainPin6: c.AddChain(&nftables.Chain{Table: t, Name: chainPin6}),
	}
	for _, r := range tableRules(subnets, pins) {
		c.AddRule(&nftables.Rule{Table: t, Chain: chains[r.chain], Exprs: r.exprs})
	}
}

// ctDirReply is IP_CT_DIR_REPLY (ct direction reply).
const ctDirReply = 1
