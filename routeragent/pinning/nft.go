package pinning

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The table, as nft lists it (slot 1 pins 10.0.0.1, slot 2 pins 10.0.0.2;
// KEY is ip saddr . ip daddr . meta l4proto . th sport . th dport):
//
//	table inet bgplb_pin {
//		map flows4 {
//			type ipv4_addr . ipv4_addr . inet_proto . inet_service . inet_service : mark
//			size 262144; flags dynamic,timeout; timeout 5m
//		}
//		map flows6 { type ipv6_addr . ipv6_addr . ... : mark; ... }
//		set live { type mark; elements = { 0x01000000, 0x02000000 } }
//		chain pre {
//			type filter hook prerouting priority mangle; policy accept;
//			ip daddr 198.51.100.0/24 jump pre4
//		}
//		chain pre4 {
//			meta l4proto != tcp meta l4proto != udp meta l4proto != sctp return
//			tcp flags syn / syn,ack return
//			meta mark set KEY map @flows4
//		}
//		chain post {
//			type filter hook postrouting priority mangle; policy accept;
//			ip daddr 198.51.100.0/24 jump post4
//		}
//		chain post4 {
//			meta l4proto != tcp meta l4proto != udp meta l4proto != sctp return
//			meta mark & 0xff000000 @live update @flows4 { KEY : meta mark & 0xff000000 } return
//			tcp flags syn / syn,ack delete @flows4 { KEY }
//			rt ip nexthop 10.0.0.1 add @flows4 { KEY : 0x01000000 } return
//			rt ip nexthop 10.0.0.2 add @flows4 { KEY : 0x02000000 } return
//		}
//		(pre6, post6 alike with ip6 and rt ip6 nexthop)
//	}
//
// The flow maps, not conntrack, hold a connection's slot: a router whose
// nodes answer clients directly (bgplb's usual LAN) sees one direction
// only, and conntrack then calls every packet after the SYN INVALID (no
// entry attached) while the SYN's entry stays in SYN_SENT for two minutes,
// so a later connection from the same port would inherit its mark. Here a
// connection's first packet (a SYN, which also deletes an old flow of the
// same ports) is routed by the hashed route and recorded in post; the next
// ones get their slot in pre, before the routing decision, and every packet
// pinned to a live slot refreshes its flow's timeout. A flow whose slot went
// is routed by the hashed route and expires FlowTimeout after its last
// pinned packet; the next one records it where the route sends it.
//
// pre sets the whole packet mark of a pinned packet to its slot (nft cannot
// or the map's value into the mark): other bits of the mark set before
// prerouting priority mangle are cleared on those packets only.
const (
	chainPre   = "pre"
	chainPost  = "post"
	chainPre4  = "pre4"
	chainPre6  = "pre6"
	chainPost4 = "post4"
	chainPost6 = "post6"
	mapFlows4  = "flows4"
	mapFlows6  = "flows6"
	setLive    = "live"
)

// FlowTimeout is how long a flow keeps its slot without a packet.
const FlowTimeout = 5 * time.Minute

// FlowsMax bounds each family's flow map (a full map pins no new flow:
// they follow the hashed route).
const FlowsMax = 262144

// nft registers: NFT_REG32_00 is 8; the key is concatenated from there
// (each field padded to 4 bytes), the data in NFT_REG32_12.
const (
	regKey  = 8
	regData = 20
)

// nftDynsetOpDelete is NFT_DYNSET_OP_DELETE, which
// x/sys/unix does not name.
const nftDynsetOpDelete = 2

func native(v uint32) []byte {
	b := make([]byte, 4)
	binary.NativeEndian.PutUint32(b, v)
	return b
}

// keyExprs loads saddr . daddr . l4proto . sport . dport into the key
// registers (after a meta nfproto test, which lets nft list them as ip
// saddr, ...).
func keyExprs(v6 bool) []expr.Any {
	src, dst, n, next, proto := uint32(12), uint32(16), uint32(4), uint32(regKey+1), byte(unix.NFPROTO_IPV4)
	if v6 {
		src, dst, n, next, proto = 8, 24, 16, regKey+4, unix.NFPROTO_IPV6
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: regKey},
		&expr.Cmp{Op: expr.CmpOpEq, Register: regKey, Data: []byte{proto}},
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: regKey, Base: expr.PayloadBaseNetworkHeader, Offset: src, Len: n},
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: next, Base: expr.PayloadBaseNetworkHeader, Offset: dst, Len: n},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: next + n/4},
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: next + n/4 + 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: next + n/4 + 2, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	}
}

func flowsType(v6 bool) nftables.SetDatatype {
	a := nftables.TypeIPAddr
	if v6 {
		a = nftables.TypeIP6Addr
	}
	return nftables.MustConcatSetType(a, a, nftables.TypeInetProto, nftables.TypeInetService, nftables.TypeInetService)
}

// otherProtoReturn: meta l4proto != tcp, udp, sctp: return (no ports).
func otherProtoReturn() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{unix.IPPROTO_SCTP}},
		&expr.Verdict{Kind: expr.VerdictReturn},
	}
}

// isSYN: tcp flags & (syn | ack) == syn (a connection's first packet).
func isSYN() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x12}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}},
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

func cat(xs ...[]expr.Any) []expr.Any {
	var all []expr.Any
	for _, x := range xs {
		all = append(all, x...)
	}
	return all
}

// tableRules renders the chains' rules for the pins and service subnets;
// flows and live are the sets, for their ids in a batch that creates
// them. Pure.
func tableRules(subnets []netip.Prefix, pins []Pin, flows map[bool]*nftables.Set, live *nftables.Set) []nftRule {
	var out []nftRule
	add := func(chain string, xs ...[]expr.Any) { out = append(out, nftRule{chain: chain, exprs: cat(xs...)}) }
	ret := []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}}
	for _, s := range subnets {
		pre, post := chainPre4, chainPost4
		if s.Addr().Is6() {
			pre, post = chainPre6, chainPost6
		}
		add(chainPre, daddrIn(s), []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: pre}})
		add(chainPost, daddrIn(s), []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: post}})
	}
	for _, v6 := range []bool{false, true} {
		pre, post := chainPre4, chainPost4
		if v6 {
			pre, post = chainPre6, chainPost6
		}
		fl := flows[v6]
		dyn := func(op uint32) []expr.Any {
			return []expr.Any{&expr.Dynset{SrcRegKey: regKey, SrcRegData: regData, SetName: fl.Name, SetID: fl.ID, Operation: op}}
		}
		add(pre, otherProtoReturn())
		add(pre, isSYN(), ret)
		add(pre, keyExprs(v6), []expr.Any{
			&expr.Lookup{SourceRegister: regKey, DestRegister: regData, IsDestRegSet: true, SetName: fl.Name, SetID: fl.ID},
			&expr.Meta{Key: expr.MetaKeyMARK, Register: regData, SourceRegister: true},
		})
		add(post, otherProtoReturn())
		add(post, []expr.Any{
			&expr.Meta{Key: expr.MetaKeyMARK, Register: regData},
			&expr.Bitwise{SourceRegister: regData, DestRegister: regData, Len: 4, Mask: native(MarkMask), Xor: native(0)},
			&expr.Lookup{SourceRegister: regData, SetName: live.Name, SetID: live.ID},
		}, keyExprs(v6), dyn(unix.NFT_DYNSET_OP_UPDATE), ret)
		add(post, isSYN(), keyExprs(v6), []expr.Any{&expr.Immediate{Register: regData, Data: native(0)}}, dyn(nftDynsetOpDelete))
		for _, p := range pins {
			if p.NextHop.Is6() != v6 {
				continue
			}
			key := expr.RtNexthop4
			if v6 {
				key = expr.RtNexthop6
			}
			add(post, []expr.Any{
				&expr.Rt{Key: key, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.NextHop.AsSlice()},
			}, keyExprs(v6), []expr.Any{&expr.Immediate{Register: regData, Data: native(p.Mark())}}, dyn(unix.NFT_DYNSET_OP_ADD), ret)
		}
	}
	return out
}

// nftState is what of our table exists.
type nftState struct {
	// exists: the table exists (in any shape).
	exists bool
	// whole: the table with its sets and chains.
	whole bool
}

// nftBatch queues on c the changes that bring our table to the pins (with
// none: no table). An existing whole table keeps its flow maps (the
// connections' slots): its chains are flushed and refilled and its live
// set rewritten, in one transaction. Otherwise the table is made anew
// (added first so that the delete cannot fail).
func nftBatch(c *nftables.Conn, have nftState, subnets []netip.Prefix, pins []Pin) error {
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: NftTable}
	if len(pins) == 0 {
		c.AddTable(t)
		c.DelTable(t)
		return nil
	}
	accept := nftables.ChainPolicyAccept
	flows := map[bool]*nftables.Set{}
	for _, v6 := range []bool{false, true} {
		name := mapFlows4
		if v6 {
			name = mapFlows6
		}
		flows[v6] = &nftables.Set{Table: t, Name: name, KeyType: flowsType(v6), DataType: nftables.TypeMark, IsMap: true,
			Dynamic: true, HasTimeout: true, Timeout: FlowTimeout, Concatenation: true, Size: FlowsMax}
	}
	live := &nftables.Set{Table: t, Name: setLive, KeyType: nftables.TypeMark, KeyByteOrder: binaryutil.NativeEndian}
	names := []string{chainPre, chainPost, chainPre4, chainPre6, chainPost4, chainPost6}
	chains := map[string]*nftables.Chain{}
	if !have.whole {
		c.AddTable(t)
		c.DelTable(t)
		c.AddTable(t)
		for _, v6 := range []bool{false, true} {
			if err := c.AddSet(flows[v6], nil); err != nil {
				return fmt.Errorf("nftables map %s: %w", flows[v6].Name, err)
			}
		}
		if err := c.AddSet(live, nil); err != nil {
			return fmt.Errorf("nftables set %s: %w", setLive, err)
		}
		for _, n := range names {
			ch := &nftables.Chain{Table: t, Name: n}
			switch n {
			case chainPre:
				ch.Type, ch.Hooknum, ch.Priority, ch.Policy = nftables.ChainTypeFilter, nftables.ChainHookPrerouting, nftables.ChainPriorityMangle, &accept
			case chainPost:
				ch.Type, ch.Hooknum, ch.Priority, ch.Policy = nftables.ChainTypeFilter, nftables.ChainHookPostrouting, nftables.ChainPriorityMangle, &accept
			}
			chains[n] = c.AddChain(ch)
		}
	} else {
		for _, n := range names {
			chains[n] = &nftables.Chain{Table: t, Name: n}
			c.FlushChain(chains[n])
		}
		c.FlushSet(live)
	}
	var elems []nftables.SetElement
	for _, p := range pins {
		elems = append(elems, nftables.SetElement{Key: native(p.Mark())})
	}
	if err := c.SetAddElements(live, elems); err != nil {
		return fmt.Errorf("nftables set %s: %w", setLive, err)
	}
	for _, r := range tableRules(subnets, pins, flows, live) {
		c.AddRule(&nftables.Rule{Table: t, Chain: chains[r.chain], Exprs: r.exprs})
	}
	return nil
}

// readNft reads what of our table exists.
func readNft(c *nftables.Conn) (nftState, error) {
	st := nftState{}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return st, fmt.Errorf("list nftables tables: %w", err)
	}
	for _, t := range tables {
		st.exists = st.exists || t.Name == NftTable
	}
	if !st.exists {
		return st, nil
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return st, fmt.Errorf("list nftables chains: %w", err)
	}
	base := 0
	for _, ch := range chains {
		if ch.Table.Name != NftTable {
			continue
		}
		switch ch.Name {
		case chainPre, chainPost, chainPre4, chainPre6, chainPost4, chainPost6:
			base++
		}
	}
	if base != 6 {
		return st, nil
	}
	sets, err := c.GetSets(&nftables.Table{Family: nftables.TableFamilyINet, Name: NftTable})
	if err != nil {
		return st, fmt.Errorf("list nftables sets of %s: %w", NftTable, err)
	}
	n := 0
	for _, s := range sets {
		if s.Name == mapFlows4 || s.Name == mapFlows6 || s.Name == setLive {
			n++
		}
	}
	st.whole = n == 3
	return st, nil
}
