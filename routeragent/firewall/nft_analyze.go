package firewall

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
)

// Native nftables: the model the agent reads through netlink (NftConn.List)
// and the pure analysis of it. Nothing here talks to the kernel.

const (
	// NftChainName is our regular chain in every native nftables table
	// that drops INVALID forwarded packets.
	NftChainName = "bgplb_exempt"
	// NftJumpComment marks our jump rule (rule userdata comment, shown by
	// `nft list ruleset`).
	NftJumpComment = "bgplb: conntrack-INVALID exemptions for service subnets"
	// FirewalldTable is the table firewalld (nftables backend) owns.
	FirewalldTable = "firewalld"
)

// NftRuleset is the part of the native nftables ruleset the agent looks
// at: the tables of the families inet, ip and ip6.
type NftRuleset struct {
	Tables []NftTable
}

// NftTable is one table: its chains in listing order.
type NftTable struct {
	Family nftables.TableFamily
	Name   string
	Chains []NftChain
	// VerdictMaps holds the elements of the verdict maps the table's rules
	// look up (`ct state vmap { invalid : drop, ... }`), by set name.
	VerdictMaps map[string][]NftMapElem
}

// NftChain is one chain; Hook is nil for a regular chain.
type NftChain struct {
	Name     string
	Hook     *nftables.ChainHook
	Priority int32
	Rules    []NftRule
}

// NftRule is one rule: the expressions as the kernel returns them.
type NftRule struct {
	Handle   uint64
	Exprs    []expr.Any
	UserData []byte
}

// NftMapElem is one element of a verdict map.
type NftMapElem struct {
	Key     []byte
	Verdict expr.Verdict
}

// Comment returns the rule's userdata comment ("" when none).
func (r NftRule) Comment() string {
	s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
	return s
}

// FamilyName is the family as `nft` spells it.
func FamilyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyARP:
		return "arp"
	case nftables.TableFamilyBridge:
		return "bridge"
	case nftables.TableFamilyNetdev:
		return "netdev"
	}
	return fmt.Sprintf("family%d", f)
}

// String names the table as `nft` does: "inet filter".
func (t NftTable) String() string { return FamilyName(t.Family) + " " + t.Name }

// Chain returns the chain called name, nil if there is none.
func (t *NftTable) Chain(name string) *NftChain {
	for i := range t.Chains {
		if t.Chains[i].Name == name {
			return &t.Chains[i]
		}
	}
	return nil
}

// IsForward reports whether the chain is a base chain at the forward hook.
func (c NftChain) IsForward() bool {
	return c.Hook != nil && *c.Hook == *nftables.ChainHookForward
}

// iptablesChains are the built-in chain names iptables-nft creates.
var iptablesChains = []string{"INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING"}

// OwnedByIptables reports whether the table is one iptables-nft made
// (ip/ip6 filter, mangle, raw, nat, security with upper-case built-in
// chains): the iptables-nft backend looks after it, through the iptables
// tools.
func (t NftTable) OwnedByIptables() bool {
	if t.Family != nftables.TableFamilyIPv4 && t.Family != nftables.TableFamilyIPv6 {
		return false
	}
	if !slices.Contains([]string{"filter", "mangle", "raw", "nat", "security"}, t.Name) {
		return false
	}
	return slices.ContainsFunc(t.Chains, func(c NftChain) bool { return slices.Contains(iptablesChains, c.Name) })
}

// InvalidMatch says how a rule's conntrack-state tests treat a packet in
// state INVALID.
type InvalidMatch int

const (
	// MatchAny: the rule does not test ct state (or not in a way we
	// understand); INVALID packets are not singled out.
	MatchAny InvalidMatch = iota
	// MatchInvalid: the rule tests ct state and an INVALID packet passes.
	MatchInvalid
	// MatchNotInvalid: the rule tests ct state and an INVALID packet fails.
	MatchNotInvalid
)

// RuleEffect is what a rule does with an INVALID packet that passes its
// other matches.
type RuleEffect struct {
	Invalid InvalidMatch
	// Verdict is the rule's verdict for such a packet; HasVerdict is false
	// when the rule has none (a counter or log only rule).
	Verdict    expr.VerdictKind
	HasVerdict bool
	// Chain is the jump or goto target.
	Chain string
}

// Drops reports whether the verdict drops (drop, or reject).
func (e RuleEffect) Drops() bool { return e.HasVerdict && e.Verdict == expr.VerdictDrop }

// Jumps reports whether the verdict passes to another chain.
func (e RuleEffect) Jumps() bool {
	return e.HasVerdict && (e.Verdict == expr.VerdictJump || e.Verdict == expr.VerdictGoto)
}

// ctStateInvalid is the value of the ct state key for an INVALID packet
// (nftables' ct state bit, in host byte order like the kernel compares it).
const ctStateInvalid = expr.CtStateBitINVALID

// regState is what the analysis knows of one 32-bit register: it holds
// the ct state, ANDed with mask.
type regState struct{ mask uint32 }

// normReg maps a register to its first 32-bit register: NFT_REG_1..4 are
// 16 bytes wide and alias NFT_REG32_00..15 (8..23).
func normReg(r uint32) uint32 {
	if r >= 1 && r <= 4 {
		return 8 + 4*(r-1)
	}
	return r
}

// clobber forgets what a write of n bytes into reg overwrote.
func clobber(regs map[uint32]regState, reg uint32, n uint32) {
	start := normReg(reg)
	words := (n + 3) / 4
	if words == 0 || words > 16 {
		words = 4
	}
	for i := uint32(0); i < words; i++ {
		delete(regs, start+i)
	}
}

func le32(b []byte) (uint32, bool) {
	if len(b) != 4 {
		return 0, false
	}
	return binary.NativeEndian.Uint32(b), true
}

// ClassifyNftRule works out, from a rule's expressions alone, how it treats
// an INVALID packet: whether its ct state tests let such a packet through,
// and its verdict. maps resolves verdict maps by name (may be nil). It
// follows the register data flow the way nft compiles `ct state invalid`
// (ct load; bitwise AND; cmp neq 0), `ct state == invalid` (cmp eq),
// `ct state != invalid`, and `ct state vmap { invalid : drop }`.
func ClassifyNftRule(exprs []expr.Any, maps map[string][]NftMapElem) RuleEffect {
	var eff RuleEffect
	regs := map[uint32]regState{}
	note := func(pass bool) {
		if !pass {
			eff.Invalid = MatchNotInvalid
		} else if eff.Invalid == MatchAny {
			eff.Invalid = MatchInvalid
		}
	}
	for _, x := range exprs {
		switch e := x.(type) {
		case *expr.Ct:
			if e.SourceRegister {
				continue // ct set: writes conntrack, not a register
			}
			clobber(regs, e.Register, 16)
			if e.Key == expr.CtKeySTATE {
				regs[normReg(e.Register)] = regState{mask: ^uint32(0)}
			}
		case *expr.Bitwise:
			src, ok := regs[normReg(e.SourceRegister)]
			mask, okm := le32(e.Mask)
			xor, okx := le32(e.Xor)
			clobber(regs, e.DestRegister, e.Len)
			if ok && okm && okx && xor == 0 && e.Len == 4 {
				regs[normReg(e.DestRegister)] = regState{mask: src.mask & mask}
			}
		case *expr.Cmp:
			st, ok := regs[normReg(e.Register)]
			if !ok {
				continue // another match: it narrows the rule, no more
			}
			v, ok := le32(e.Data)
			if !ok {
				continue
			}
			got := ctStateInvalid & st.mask
			switch e.Op {
			case expr.CmpOpEq:
				note(got == v)
			case expr.CmpOpNeq:
				note(got != v)
			default:
				// Ordered comparisons of a bit mask: not something nft
				// writes for ct state; stay out of the way.
			}
		case *expr.Lookup:
			st, ok := regs[normReg(e.SourceRegister)]
			if e.IsDestRegSet {
				clobber(regs, e.DestRegister, 16)
			}
			if !ok || st.mask != ^uint32(0) || !e.IsDestRegSet || e.DestRegister != 0 {
				continue
			}
			elems, known := maps[e.SetName]
			if !known {
				continue
			}
			note(true)
			i := slices.IndexFunc(elems, func(m NftMapElem) bool {
				v, ok := le32(m.Key)
				return ok && v == ctStateInvalid
			})
			if i < 0 {
				eff.Invalid = MatchNotInvalid // the map has no verdict for invalid
				continue
			}
			eff.Verdict, eff.HasVerdict, eff.Chain = elems[i].Verdict.Kind, true, elems[i].Verdict.Chain
		case *expr.Reject:
			eff.Verdict, eff.HasVerdict, eff.Chain = expr.VerdictDrop, true, ""
		case *expr.Verdict:
			eff.Verdict, eff.HasVerdict, eff.Chain = e.Kind, true, e.Chain
		case *expr.Meta:
			if !e.SourceRegister {
				clobber(regs, e.Register, 16)
			}
		case *expr.Payload:
			if e.OperationType == expr.PayloadLoad {
				clobber(regs, e.DestRegister, e.Len)
			}
		case *expr.Immediate:
			clobber(regs, e.Register, uint32(len(e.Data)))
		}
	}
	return eff
}

// NftDrop is one native nftables base chain at the forward hook whose path
// drops INVALID packets.
type NftDrop struct {
	// Table is the table, e.g. "inet filter".
	Table string
	// BaseChain is the base chain at the forward hook.
	BaseChain string
	// Chain holds the rule through which INVALID packets are dropped (the
	// base chain, or a chain it jumps to).
	Chain string
	// Handle is that rule's handle.
	Handle uint64
	// BaseIndex is the 1-based position in the base chain (our jump not
	// counted) of the rule through which the drop is reached.
	BaseIndex int
	// OurJumpIndex is the 1-based position of our jump in the base chain,
	// 0 when there is none.
	OurJumpIndex int
}

func (d NftDrop) String() string {
	s := fmt.Sprintf("%s chain %s rule %d", d.Table, d.BaseChain, d.BaseIndex)
	if d.Chain != d.BaseChain {
		s += fmt.Sprintf(" (through chain %s, rule handle %d)", d.Chain, d.Handle)
	} else {
		s += fmt.Sprintf(" (handle %d)", d.Handle)
	}
	return s
}

// NftAnalysis is what the agent needs to know about the native ruleset.
type NftAnalysis struct {
	// Drops lists every forward base chain whose path drops INVALID
	// packets, in listing order.
	Drops []NftDrop
	// ForwardChains counts the forward base chains of native tables (not
	// iptables-nft's, not firewalld's).
	ForwardChains int
	// Firewalld is true when firewalld's table exists.
	Firewalld bool
	// Ours lists the tables holding our chain or a jump to it.
	Ours []string
}

// DropTables returns the names of the tables holding a drop, once each.
func (a NftAnalysis) DropTables() []string {
	var out []string
	for _, d := range a.Drops {
		if !slices.Contains(out, d.Table) {
			out = append(out, d.Table)
		}
	}
	return out
}

// isOurJump reports whether a rule jumps to our chain.
func isOurJump(r NftRule) bool {
	for _, x := range r.Exprs {
		if v, ok := x.(*expr.Verdict); ok && v.Chain == NftChainName && (v.Kind == expr.VerdictJump || v.Kind == expr.VerdictGoto) {
			return true
		}
	}
	return false
}

// AnalyzeNft finds, in every native table of the families inet, ip and
// ip6, the forward base chains whose rules drop (or reject) INVALID
// packets, directly or through jump/goto chains, and where our chain and
// jumps are. iptables-nft's own tables are left to the iptables backend.
func AnalyzeNft(rs NftRuleset) NftAnalysis {
	var a NftAnalysis
	for ti := range rs.Tables {
		t := &rs.Tables[ti]
		switch t.Family {
		case nftables.TableFamilyINet, nftables.TableFamilyIPv4, nftables.TableFamilyIPv6:
		default:
			continue
		}
		if t.Name == FirewalldTable {
			a.Firewalld = true
			continue
		}
		if t.OwnedByIptables() {
			continue
		}
		if t.Chain(NftChainName) != nil || slices.ContainsFunc(t.Chains, func(c NftChain) bool { return slices.ContainsFunc(c.Rules, isOurJump) }) {
			a.Ours = append(a.Ours, t.String())
		}
		for _, c := range t.Chains {
			if !c.IsForward() {
				continue
			}
			a.ForwardChains++
			if d, ok := baseChainDrop(t, c); ok {
				a.Drops = append(a.Drops, d)
			}
		}
	}
	return a
}

// baseChainDrop looks for the first rule of base chain c through which
// INVALID packets are dropped.
func baseChainDrop(t *NftTable, c NftChain) (NftDrop, bool) {
	d := NftDrop{Table: t.String(), BaseChain: c.Name}
	if i := slices.IndexFunc(c.Rules, isOurJump); i >= 0 {
		d.OurJumpIndex = i + 1
	}
	idx := 0
	for _, r := range c.Rules {
		if isOurJump(r) {
			continue
		}
		idx++
		if chain, handle, ok := nftDropsInvalid(t, c.Name, r, map[string]bool{c.Name: true}); ok {
			d.Chain, d.Handle, d.BaseIndex = chain, handle, idx
			return d, true
		}
	}
	return NftDrop{}, false
}

// nftDropsInvalid reports whether rule r of chain drops INVALID packets,
// directly or through the chain it jumps to; it mirrors the iptables
// analysis (dropsInvalid).
func nftDropsInvalid(t *NftTable, chain string, r NftRule, seen map[string]bool) (string, uint64, bool) {
	eff := ClassifyNftRule(r.Exprs, t.VerdictMaps)
	switch eff.Invalid {
	case MatchNotInvalid:
		return "", 0, false
	case MatchInvalid:
		if eff.Drops() {
			return chain, r.Handle, true
		}
		// `ct state invalid jump some_drop_chain`: count it when that
		// chain drops or rejects.
		if eff.Jumps() && eff.Chain != NftChainName {
			if sub := t.Chain(eff.Chain); sub != nil {
				for _, sr := range sub.Rules {
					if se := ClassifyNftRule(sr.Exprs, t.VerdictMaps); se.Drops() && se.Invalid != MatchNotInvalid {
						return chain, r.Handle, true
					}
				}
			}
		}
		return "", 0, false
	}
	if !eff.Jumps() || eff.Chain == NftChainName || seen[eff.Chain] {
		return "", 0, false
	}
	sub := t.Chain(eff.Chain)
	if sub == nil || sub.Hook != nil {
		return "", 0, false
	}
	seen[eff.Chain] = true
	for _, sr := range sub.Rules {
		if c, h, ok := nftDropsInvalid(t, sub.Name, sr, seen); ok {
			return c, h, true
		}
	}
	return "", 0, false
}
