package firewall

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/bgplb/bgplb/routeragent/config"
)

// Verify mode (firewall.mode: verify).
//
// The agent adds no ACCEPT rule anywhere: the nodes send their replies
// back through the router (the speakers' returnPath: symmetric), so the
// host firewall sees both halves of every connection and its INVALID drop
// stays in force for service traffic too. The exemptions a previous mode
// installed are removed from every backend (iptables-legacy, iptables-nft,
// native nftables; both families). What the agent keeps instead is a
// counting-only chain in a native nftables table of its own:
//
//	table inet bgplb_verify {
//		chain count_invalid {
//			type filter hook forward priority -10; policy accept;
//			ip daddr 192.168.254.0/24 ct state invalid counter comment "bgplb: INVALID packets to 192.168.254.0/24"
//			ip saddr 192.168.254.0/24 ct state invalid counter comment "bgplb: INVALID packets from 192.168.254.0/24"
//		}
//	}
//
// The rules have no verdict and the chain's policy is accept: an accept in
// one base chain never overrides a drop in another (nor in iptables), so
// the table changes no packet's fate. Priority -10 runs after conntrack
// (-200) has classified the packet and before every filter chain at 0
// (iptables-legacy's and iptables-nft's filter tables, nftables'
// `priority filter`), so it counts what the firewall then drops, whichever
// of the three firewalls is in force. Kernel netfilter hooks are shared by
// x_tables and nf_tables, so one nftables table covers an iptables-legacy
// (ferm) router too; it needs nf_tables in the kernel (every Debian
// kernel).
const (
	// NftVerifyTable is our inet table holding the counting chain.
	NftVerifyTable = "bgplb_verify"
	// NftVerifyChain is its base chain at the forward hook.
	NftVerifyChain = "count_invalid"
	// NftVerifyPriority runs after conntrack and before the filter.
	NftVerifyPriority = -10
)

// InvalidCounter is one counting rule: INVALID forwarded packets to or
// from one service subnet.
type InvalidCounter struct {
	Subnet netip.Prefix
	// Direction is "to" (daddr in the subnet: the client's half) or
	// "from" (saddr: the node's half).
	Direction string
}

// InvalidCount is one counter's value in Status.
type InvalidCount struct {
	Subnet    string `json:"subnet"`
	Direction string `json:"direction"`
	Packets   uint64 `json:"packets"`
	Bytes     uint64 `json:"bytes"`
}

// DesiredInvalidCounters are the counting rules for the service subnets:
// to and from each, in the subnets' order.
func DesiredInvalidCounters(subnets []netip.Prefix) []InvalidCounter {
	out := make([]InvalidCounter, 0, 2*len(subnets))
	for _, p := range subnets {
		out = append(out, InvalidCounter{Subnet: p, Direction: "to"}, InvalidCounter{Subnet: p, Direction: "from"})
	}
	return out
}

// Comment marks the rule as ours and names what it counts.
func (c InvalidCounter) Comment() string {
	return fmt.Sprintf("bgplb: INVALID packets %s %s", c.Direction, c.Subnet)
}

// NftText is the rule as `nft list` prints it.
func (c InvalidCounter) NftText() string {
	ip, field := "ip", "daddr"
	if !c.Subnet.Addr().Is4() {
		ip = "ip6"
	}
	if c.Direction == "from" {
		field = "saddr"
	}
	return fmt.Sprintf("%s %s %s ct state invalid counter comment %q", ip, field, c.Subnet, c.Comment())
}

// NftExprs renders the rule as nft compiles `ip daddr S ct state invalid
// counter` (saddr for direction from): no verdict.
func (c InvalidCounter) NftExprs() []expr.Any {
	var out []expr.Any
	if c.Direction == "from" {
		out = saddrMatch(c.Subnet)
	} else {
		out = daddrMatch(c.Subnet)
	}
	return append(out,
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: nativeU32(expr.CtStateBitINVALID), Xor: nativeU32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: nativeU32(0)},
		&expr.Counter{},
	)
}

func saddrMatch(p netip.Prefix) []expr.Any {
	nfproto, off := byte(unix.NFPROTO_IPV4), uint32(12)
	if !p.Addr().Is4() {
		nfproto, off = unix.NFPROTO_IPV6, 8
	}
	return append([]expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}},
	}, prefixMatch(expr.PayloadBaseNetworkHeader, off, p)...)
}

// isVerifyTable reports whether t is our counting table.
func isVerifyTable(t NftTable) bool {
	return t.Family == nftables.TableFamilyINet && t.Name == NftVerifyTable
}

// PlanVerifyCounters returns the changes that make our counting chain hold
// exactly want, given its rules (nil when the table or chain is missing):
// nothing when the rules' comments match want in order, else the table
// rebuilt whole in one transaction (add, delete, add: no error whether it
// existed or not). A rebuild resets the counters.
func PlanVerifyCounters(have []NftRule, want []InvalidCounter) []NftOp {
	if len(have) == len(want) && len(want) > 0 {
		same := true
		for i, r := range have {
			if r.Comment() != want[i].Comment() {
				same = false
				break
			}
		}
		if same {
			return nil
		}
	}
	fam := nftables.TableFamilyINet
	ops := []NftOp{
		{Kind: "add-table", Family: fam, Table: NftVerifyTable},
		{Kind: "delete-table", Family: fam, Table: NftVerifyTable},
	}
	if len(want) == 0 {
		return ops
	}
	ops = append(ops,
		NftOp{Kind: "add-table", Family: fam, Table: NftVerifyTable},
		NftOp{Kind: "add-chain", Family: fam, Table: NftVerifyTable, Chain: NftVerifyChain,
			Hook: nftables.ChainHookForward, Priority: nftables.ChainPriorityRef(NftVerifyPriority)})
	for _, c := range want {
		ops = append(ops, NftOp{Kind: "add-rule", Family: fam, Table: NftVerifyTable, Chain: NftVerifyChain,
			Exprs: c.NftExprs(), Comment: c.Comment()})
	}
	return ops
}

// planVerifyRemove deletes our counting table when rs has it.
func planVerifyRemove(rs NftRuleset) []NftOp {
	for _, t := range rs.Tables {
		if isVerifyTable(t) {
			return []NftOp{{Kind: "delete-table", Family: t.Family, Table: t.Name}}
		}
	}
	return nil
}

// verifyCounts reads the counters of our chain's rules, in want's order.
func verifyCounts(have []NftRule, want []InvalidCounter) []InvalidCount {
	out := make([]InvalidCount, 0, len(want))
	for _, w := range want {
		ic := InvalidCount{Subnet: w.Subnet.String(), Direction: w.Direction}
		for _, r := range have {
			if r.Comment() != w.Comment() {
				continue
			}
			for _, x := range r.Exprs {
				if ctr, ok := x.(*expr.Counter); ok {
					ic.Packets, ic.Bytes = ctr.Packets, ctr.Bytes
				}
			}
		}
		out = append(out, ic)
	}
	return out
}

// InvalidTotal sums the INVALID counters of a status (packets).
func (s Status) InvalidTotal() uint64 {
	var n uint64
	for _, c := range s.Invalid {
		n += c.Packets
	}
	return n
}

// ensureVerify is a pass of verify mode: our exemptions go (from every
// backend, until a pass managed it), the counting table is kept in place.
func (m *Manager) ensureVerify(ctx context.Context) (Status, error) {
	var errs []error
	// The ICMPv6 Redirect suppression stays (in native nftables, where
	// the counting table is too): a Redirect would send clients around
	// the router again. First, so it never lapses while ip6tables' copy
	// goes below.
	redirects, rchanged, err := m.ensureVerifyRedirects()
	if err != nil {
		errs = append(errs, err)
	}
	if !m.cleaned {
		if err := m.removeExemptions(ctx); err != nil {
			errs = append(errs, err)
		} else {
			m.cleaned = true
		}
	}
	counts, changed, err := m.ensureCounters()
	if err != nil {
		errs = append(errs, err)
	}
	changed = changed || rchanged
	err = errors.Join(errs...)
	repair := changed && m.converged
	if err == nil {
		m.converged = true
	}
	st := m.update(func(s *Status) {
		if repair {
			s.Repairs++
			s.LastRepair = m.now()
			m.log.Warn("repaired verify mode's nftables tables (INVALID counters, ICMPv6 redirect suppression)", "repairs", s.Repairs)
		} else if changed {
			m.log.Info("installed verify mode's nftables tables", "counters", "inet "+NftVerifyTable)
		}
		s.Mode = config.FirewallVerify
		s.Backend = string(Nftables)
		s.Reason = "verify mode: no exemption; INVALID service packets are only counted (forward hook, priority -10, before the filter)"
		s.Table, s.Chain = "inet "+NftVerifyTable, NftVerifyChain
		s.Rules = nil
		if counts != nil || err == nil {
			s.Invalid = counts
		}
		if redirects != nil || err == nil {
			s.Redirects = redirects
		}
		m.setErr(s, err)
	})
	return st, err
}

// ensureCounters keeps our counting chain and returns its counters.
func (m *Manager) ensureCounters() ([]InvalidCount, bool, error) {
	c, err := m.nftConn()
	if err != nil {
		return nil, false, fmt.Errorf("firewall verify: INVALID counters need nf_tables: %w", err)
	}
	want := DesiredInvalidCounters(m.cfg.Subnets)
	have, lerr := c.Rules(nftables.TableFamilyINet, NftVerifyTable, NftVerifyChain)
	if lerr != nil {
		have = nil // missing table or chain: (re)build it
	}
	ops := PlanVerifyCounters(have, want)
	if len(ops) == 0 {
		return verifyCounts(have, want), false, nil
	}
	if err := c.Apply(ops); err != nil {
		return nil, false, fmt.Errorf("firewall verify: install counting table inet %s: %w", NftVerifyTable, err)
	}
	have, err = c.Rules(nftables.TableFamilyINet, NftVerifyTable, NftVerifyChain)
	if err != nil {
		return nil, true, fmt.Errorf("firewall verify: read counters: %w", err)
	}
	return verifyCounts(have, want), true, nil
}

// removeExemptions takes our exemption chains and jumps out of every
// backend and family (native nftables too), and the ICMPv6 Redirect
// suppression out of ip6tables (verify mode keeps it in native nftables).
func (m *Manager) removeExemptions(ctx context.Context) error {
	var errs []error
	if c, err := m.nftConn(); err == nil {
		rs, err := c.List()
		if err != nil {
			errs = append(errs, fmt.Errorf("firewall nftables: %w", err))
		} else {
			var ops []NftOp
			for _, t := range rs.Tables {
				if !isRedirectTable(t) && !isVerifyTable(t) {
					ops = append(ops, planNftRemoveTable(t)...)
				}
			}
			m.nftCache.valid = false
			if len(ops) > 0 {
				m.log.Info("verify mode: removing firewall exemptions", "backend", Nftables, "changes", len(ops))
			}
			if err := c.Apply(ops); err != nil {
				errs = append(errs, fmt.Errorf("firewall nftables: remove exemptions: %w", err))
			}
		}
	} else {
		m.log.Debug("native nftables not available; no exemption there to remove", "error", err)
	}
	for _, fam := range []Family{IPv4, IPv6} {
		for _, b := range []Backend{Legacy, NFT} {
			r, err := m.runner(b, fam)
			if errors.Is(err, ErrUnavailable) {
				continue
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("firewall %s %s: %w", fam, b, err))
				continue
			}
			t, err := m.list(ctx, r)
			if err != nil {
				errs = append(errs, fmt.Errorf("firewall %s %s: %w", fam, b, err))
				continue
			}
			ops := planRemoveChain(t, ChainName)
			if fam == IPv6 {
				ops = append(ops, planRemoveChain(t, RedirectChainName)...)
			}
			if len(ops) > 0 {
				m.log.Info("verify mode: removing firewall exemptions", "family", fam, "backend", b, "changes", len(ops))
			}
			if err := m.apply(ctx, r, ops, true); err != nil {
				errs = append(errs, fmt.Errorf("firewall %s %s: remove: %w", fam, b, err))
			}
		}
	}
	return errors.Join(errs...)
}

// ensureVerifyRedirects keeps the ICMPv6 Redirect suppression in our
// native table inet bgplb (removes it when no IPv6 subnet is left).
// Without IPv6 subnets it looks only on the first pass, for leftovers.
func (m *Manager) ensureVerifyRedirects() ([]RedirectStatus, bool, error) {
	if len(DesiredRedirectBlocks(m.cfg)) == 0 && m.converged {
		return nil, false, nil
	}
	c, err := m.nftConn()
	if err != nil {
		return nil, false, fmt.Errorf("firewall verify: ICMPv6 redirect suppression needs nf_tables: %w", err)
	}
	rs, err := c.List()
	if err != nil {
		return nil, false, fmt.Errorf("firewall verify: %w", err)
	}
	changed, st, err := m.ensureNftRedirects(rs, true)
	return st, len(changed) > 0, err
}

// removeVerifyTable deletes our counting table (another mode runs now).
func (m *Manager) removeVerifyTable() error {
	c, err := m.nftConn()
	if err != nil {
		return err
	}
	rs, err := c.List()
	if err != nil {
		return err
	}
	ops := planVerifyRemove(rs)
	if len(ops) == 0 {
		return nil
	}
	m.log.Info("removing the INVALID counting table of verify mode", "table", "inet "+NftVerifyTable)
	m.nftCache.valid = false
	return c.Apply(ops)
}

// VerifyNftCommands are the nft commands that build the counting table by
// hand (docs and doctor's fixes).
func VerifyNftCommands(subnets []netip.Prefix) []string {
	out := []string{
		"nft add table inet " + NftVerifyTable,
		fmt.Sprintf("nft 'add chain inet %s %s { type filter hook forward priority %d; policy accept; }'", NftVerifyTable, NftVerifyChain, NftVerifyPriority),
	}
	for _, c := range DesiredInvalidCounters(subnets) {
		out = append(out, fmt.Sprintf("nft 'add rule inet %s %s %s'", NftVerifyTable, NftVerifyChain, strings.ReplaceAll(c.NftText(), "'", "")))
	}
	return out
}
