package returnpath

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/bgplb/bgplb/internal/iprange"
)

// Our nftables table. Roughly what `nft list table inet bgplb_returnpath`
// shows for one IPv4 router in slot 1 (mask 0x0f000000):
//
//	table inet bgplb_returnpath {
//		set svc4 { type ipv4_addr; flags interval; elements = { 192.168.254.0/24 } }
//		set svc6 { type ipv6_addr; flags interval; }
//		chain prerouting {
//			type filter hook prerouting priority mangle; policy accept;
//			counter comment "bgplb returnpath <fingerprint>"
//			iifname "eth0" iiftype ether ether saddr 52:54:00:00:00:01 ip daddr @svc4 ct state new ct mark set ct mark & 0xf1ffffff | 0x01000000 counter comment "bgplb: mark new connections from router 192.168.2.1 (peer r1)"
//			ct direction reply ct mark & 0x0f000000 == 0x01000000 meta mark set meta mark & 0xf1ffffff | 0x01000000 counter comment "bgplb: replies of router 192.168.2.1's connections"
//		}
//		chain output {
//			type route hook output priority mangle; policy accept;
//			ct direction reply ct mark & 0x0f000000 == 0x01000000 meta mark set meta mark & 0xf1ffffff | 0x01000000 counter comment "..."
//		}
//	}
//
// Priority mangle (-150): after conntrack (-200) and before DNAT (-100),
// so `ip daddr` is still the service address. The output chain is of type
// route: the kernel routes a local packet again when the chain changed its
// mark. The chains' policy is accept and no rule has a verdict: the table
// changes marks, never a packet's fate.
const (
	TableName       = "bgplb_returnpath"
	ChainPrerouting = "prerouting"
	ChainOutput     = "output"
	set4, set6      = "svc4", "svc6"
	commentPrefix   = "bgplb returnpath "
)

// nftRule is one rule of our table: its chain, expressions and comment.
type nftRule struct {
	Chain   string
	Exprs   []expr.Any
	Comment string
}

// Fingerprint sums up the plan as our table renders it: a table whose
// state rule carries it is up to date.
func Fingerprint(cfg Config, p Plan) string {
	h := sha256.New()
	fmt.Fprintf(h, "%#x|", cfg.WithDefaults().MarkMask)
	for _, s := range p.Slots {
		fmt.Fprintf(h, "%d|%d|%s|%s|%s|%d;", s.Slot, s.Mark, s.Router, s.Neighbor.Link, s.Neighbor.MAC, s.Table)
	}
	for _, r := range append(p.Services4, p.Services6...) {
		fmt.Fprintf(h, "%s;", r)
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// nftRules renders the plan's rules (the state rule first).
func nftRules(cfg Config, p Plan) []nftRule {
	cfg = cfg.WithDefaults()
	out := []nftRule{{Chain: ChainPrerouting, Exprs: []expr.Any{&expr.Counter{}}, Comment: commentPrefix + Fingerprint(cfg, p)}}
	for _, s := range p.Slots {
		out = append(out, nftRule{Chain: ChainPrerouting, Exprs: markExprs(cfg, s),
			Comment: fmt.Sprintf("bgplb: mark new connections from router %s (peer %s)", s.Router, s.Peer)})
	}
	for _, chain := range []string{ChainPrerouting, ChainOutput} {
		for _, s := range p.Slots {
			out = append(out, nftRule{Chain: chain, Exprs: restoreExprs(cfg, s),
				Comment: fmt.Sprintf("bgplb: replies of router %s's connections", s.Router)})
		}
	}
	return out
}

// markExprs: iifname L iiftype ether ether saddr MAC ip daddr @svc4 ct
// state new ct mark set ct mark & ^mask | mark counter.
func markExprs(cfg Config, s Slot) []expr.Any {
	nfproto, off, set := byte(unix.NFPROTO_IPV4), uint32(16), set4
	if !s.Router.Is4() {
		nfproto, off, set = unix.NFPROTO_IPV6, 24, set6
	}
	alen := uint32(s.Router.BitLen() / 8)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(s.Neighbor.Link)},
		// The link-layer header is only there (and Ethernet) on Ethernet
		// links; nft adds the same test for `ether saddr`.
		&expr.Meta{Key: expr.MetaKeyIIFTYPE, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.NativeEndian.AppendUint16(nil, unix.ARPHRD_ETHER)},
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(s.Neighbor.MAC)},
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}},
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: alen},
		&expr.Lookup{SourceRegister: 1, SetName: set},
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: u32(expr.CtStateBitNEW), Xor: u32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: u32(0)},
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: u32(^cfg.MarkMask), Xor: u32(s.Mark)},
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true},
		&expr.Counter{},
	}
}

// restoreExprs: ct direction reply ct mark & mask == mark meta mark set
// meta mark & ^mask | mark counter.
func restoreExprs(cfg Config, s Slot) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeyDIRECTION, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{ctDirReply}},
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: u32(cfg.MarkMask), Xor: u32(0)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: u32(s.Mark)},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: u32(^cfg.MarkMask), Xor: u32(s.Mark)},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1, SourceRegister: true},
		&expr.Counter{},
	}
}

// ctDirReply is IP_CT_DIR_REPLY (enum ip_conntrack_dir).
const ctDirReply = 1

func u32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

// ifname is an interface name as the kernel compares it: NUL-terminated.
func ifname(s string) []byte { return append([]byte(s), 0) }

// setElements renders merged ranges as interval set elements, as nft
// does: a leading interval end at the zero address, then start and
// exclusive end of each range (no end after the family's last address).
func setElements(rs []iprange.Range, zero netip.Addr) []nftables.SetElement {
	if len(rs) == 0 {
		return nil
	}
	var out []nftables.SetElement
	if rs[0].First != zero {
		out = append(out, nftables.SetElement{Key: zero.AsSlice(), IntervalEnd: true})
	}
	for _, r := range rs {
		out = append(out, nftables.SetElement{Key: r.First.AsSlice()})
		if n := r.Last.Next(); n.IsValid() {
			out = append(out, nftables.SetElement{Key: n.AsSlice(), IntervalEnd: true})
		}
	}
	return out
}
