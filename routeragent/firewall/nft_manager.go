package firewall

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"

	"github.com/bgplb/bgplb/routeragent/config"
)

// Nftables is the Backend name of native nftables in Status and RuleStatus.
const Nftables = Backend(config.BackendNftables)

// WithNftables replaces the real netlink connection to native nftables.
func WithNftables(f NftConnFactory) Option { return func(m *Manager) { m.nftFactory = f } }

// ErrFirewalld says firewalld owns the nftables ruleset; the agent does not
// fight it.
var ErrFirewalld = errors.New("firewalld manages this host's nftables ruleset")

// FirewalldAdvice is the message of ErrFirewalld: what to run instead.
const FirewalldAdvice = "bgplb does not edit firewalld's ruleset (firewalld would undo it on every reload). " +
	"Either stop firewalld and keep the firewall in /etc/nftables.conf (systemctl disable --now firewalld; systemctl enable --now nftables), " +
	"or set firewall.mode: off and accept the exempted traffic in firewalld yourself"

// nativeView is what the last look at native nftables found; the iptables
// choice in auto mode depends on it.
type nativeView struct {
	available bool
	analysis  NftAnalysis
}

// nftResult is one native pass's outcome.
type nftResult struct {
	target  bool // exemptions are in native nftables
	reason  string
	changed []string
	rules   []RuleStatus
	// ok is true when the ruleset was read and the exemptions' changes
	// applied; rs is what was read (our redirect table is planned from
	// it after the iptables families).
	ok bool
	rs NftRuleset
}

// usesNative reports whether the configured backend involves native
// nftables.
func (m *Manager) usesNative() bool {
	return m.cfg.Backend == config.BackendAuto || m.cfg.Backend == config.BackendNftables
}

func (m *Manager) nftConn() (NftConn, error) {
	if m.nft != nil {
		return m.nft, nil
	}
	c, err := m.nftFactory()
	if err != nil {
		return nil, err
	}
	m.nft = c
	if cl, ok := c.(io.Closer); ok {
		// A config reload replaces the Manager; its sockets go with it.
		runtime.AddCleanup(m, func(cl io.Closer) { _ = cl.Close() }, cl)
	}
	return c, nil
}

// nftCache is the last full listing and its analysis, valid while the
// ruleset's generation id stays the same.
type nftCache struct {
	valid bool
	gen   uint32
	rs    NftRuleset
	view  nativeView
}

// lookNft reads and analyses the native ruleset. In auto mode a host where
// nftables cannot be read (no nf_tables) simply has no native candidate.
//
// Reading every rule costs about 0.5 ms for a small ruleset and ~65 ms of
// CPU for one with 2000 forward rules (google/nftables decodes every
// expression), too much for every second. While the generation id is the
// one of the last full listing, nothing structural changed: only our
// chain's rules are read again, for their counters.
func (m *Manager) lookNft() (NftRuleset, nativeView, error) {
	c, err := m.nftConn()
	var rs NftRuleset
	if err == nil {
		gen, gerr := c.Generation()
		if gerr == nil && m.nftCache.valid && m.nftCache.gen == gen {
			if rs, ok := m.refreshCounters(c); ok {
				return rs, m.nftCache.view, nil
			}
		}
		m.nftCache.valid = false
		rs, err = c.List()
		if err == nil && gerr == nil {
			m.nftCache = nftCache{valid: true, gen: gen, rs: rs, view: nativeView{available: true, analysis: AnalyzeNft(rs)}}
			return rs, m.nftCache.view, nil
		}
	}
	if err != nil {
		if m.cfg.Backend == config.BackendAuto {
			if msg := err.Error(); m.lastNftErr != msg {
				m.log.Warn("native nftables cannot be read; only the iptables backends are candidates", "error", msg)
				m.lastNftErr = msg
			}
			return rs, nativeView{}, nil
		}
		return rs, nativeView{}, fmt.Errorf("firewall nftables: %w", err)
	}
	return rs, nativeView{available: true, analysis: AnalyzeNft(rs)}, nil
}

// refreshCounters re-reads our chains (bgplb_exempt in each table of the
// cached listing that holds it, and our redirect chain) for their
// counters.
func (m *Manager) refreshCounters(c NftConn) (NftRuleset, bool) {
	rs := NftRuleset{Tables: slices.Clone(m.nftCache.rs.Tables)}
	for i := range rs.Tables {
		t := &rs.Tables[i]
		chain := NftChainName
		if isRedirectTable(*t) {
			chain = NftRedirectChain
		}
		if t.Chain(chain) == nil {
			continue
		}
		rules, err := c.Rules(t.Family, t.Name, chain)
		if err != nil {
			return NftRuleset{}, false
		}
		t.Chains = slices.Clone(t.Chains)
		t.Chain(chain).Rules = rules
	}
	return rs, true
}

// ensureNft makes the native nftables part of a pass: our chain and jumps
// in every table whose forward path drops INVALID packets, nothing of ours
// elsewhere.
func (m *Manager) ensureNft(want []Exemption) (nftResult, error) {
	var res nftResult
	rs, v, err := m.lookNft()
	m.native = v
	if err != nil || !v.available {
		return res, err
	}
	a := v.analysis
	if a.Firewalld {
		return res, fmt.Errorf("firewall nftables: %w (table %s exists): %s", ErrFirewalld, FirewalldTable, FirewalldAdvice)
	}
	res.reason = nftReason(a)
	res.target = len(a.Drops) > 0
	ops := PlanNft(rs, a, want)
	if len(ops) > 0 {
		m.nftCache.valid = false // our transaction makes a new generation
	}
	if err := m.nft.Apply(ops); err != nil {
		return res, fmt.Errorf("firewall nftables: %w", err)
	}
	for _, op := range ops {
		res.changed = append(res.changed, "nftables: "+op.String())
	}
	res.rules = nftRuleStatus(rs, a, want, len(ops) > 0)
	res.ok, res.rs = true, rs
	return res, nil
}

// ensureNftRedirects keeps or removes the ICMPv6 Redirect suppression in
// our native table, as RedirectsInNative decided (native is what it
// returned), from the ruleset ensureNft read: the exemptions' changes do
// not touch our redirect table.
func (m *Manager) ensureNftRedirects(rs NftRuleset, native bool) (changed []string, st []RedirectStatus, err error) {
	var want []RedirectBlock
	if native {
		want = DesiredRedirectBlocks(m.cfg)
	}
	ops := PlanNftRedirects(rs, want)
	if len(ops) > 0 {
		m.nftCache.valid = false
	}
	if err := m.nft.Apply(ops); err != nil {
		return nil, nil, fmt.Errorf("firewall nftables: redirect suppression: %w", err)
	}
	for _, op := range ops {
		changed = append(changed, "nftables: "+op.String())
	}
	return changed, nftRedirectStatus(rs, want, len(ops) > 0), nil
}

func nftReason(a NftAnalysis) string {
	if len(a.Drops) == 0 {
		if a.ForwardChains == 0 {
			return "native nftables has no forward chain: nothing to do there"
		}
		return "native nftables forward chains drop no INVALID packets: nothing to do there"
	}
	s := make([]string, len(a.Drops))
	for i, d := range a.Drops {
		s[i] = d.String()
	}
	return "INVALID drop found in nftables " + joinAnd(s)
}

func joinAnd(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += " and "
		}
		out += x
	}
	return out
}

// nftRuleStatus reports each table's exemptions with their counters (zero
// when the pass rewrote anything).
func nftRuleStatus(rs NftRuleset, a NftAnalysis, want []Exemption, rewritten bool) []RuleStatus {
	var out []RuleStatus
	tables := a.DropTables()
	for _, t := range rs.Tables {
		if !slices.Contains(tables, t.String()) {
			continue
		}
		for _, e := range forTable(t.Family, want) {
			rs := RuleStatus{Interface: e.Interface, Subnet: e.Subnet.String(), Protocol: e.Protocol, Backend: string(Nftables), Table: t.String()}
			if !rewritten {
				rs.Packets, rs.Bytes = nftCounters(t, e)
			}
			out = append(out, rs)
		}
	}
	return out
}

// nativeExplains reports, in auto mode, whether native nftables accounts
// for the forward path so that the iptables backends need nothing when
// they show no drop: it holds a drop, or it has forward chains.
func (m *Manager) nativeExplains() bool {
	return m.cfg.Backend == config.BackendAuto && m.native.available &&
		(len(m.native.analysis.Drops) > 0 || m.native.analysis.ForwardChains > 0)
}

// Where names the backend holding a rule, and for native nftables its
// table ("nftables inet filter"): unique per rule, for displays and metric
// labels.
func (r RuleStatus) Where() string {
	if r.Table == "" {
		return r.Backend
	}
	return r.Backend + " " + r.Table
}

// nativeHoldsDrop reports, in auto mode, whether the last look found an
// INVALID drop in native nftables.
func (m *Manager) nativeHoldsDrop() bool {
	return m.cfg.Backend == config.BackendAuto && m.native.available && len(m.native.analysis.Drops) > 0
}

// removeNft takes our chains and jumps out of native nftables.
func (m *Manager) removeNft() error {
	c, err := m.nftConn()
	if err != nil {
		return fmt.Errorf("firewall nftables: %w", err)
	}
	rs, err := c.List()
	if err != nil {
		return fmt.Errorf("firewall nftables: %w", err)
	}
	ops := PlanNftRemove(rs)
	m.nftCache.valid = false
	if len(ops) > 0 {
		m.log.Info("removing firewall exemptions", "backend", Nftables, "changes", len(ops))
	}
	if err := c.Apply(ops); err != nil {
		return fmt.Errorf("firewall nftables: remove: %w", err)
	}
	return nil
}
