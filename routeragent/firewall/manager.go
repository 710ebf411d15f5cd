// Package firewall keeps scoped conntrack-INVALID exemptions for the service
// subnets in the iptables backend that holds the host firewall's INVALID
// drop.
//
// Clients and Kubernetes nodes share one L2; a client's SYN to a service
// address goes through the router, the node answers the client directly, and
// the router's conntrack marks the client's following packets INVALID. The
// usual `--ctstate INVALID -j DROP` then kills the connection. The manager
// owns one chain (BGPLB-EXEMPT) with one ACCEPT rule per LAN interface ×
// service subnet × protocol, and exactly one jump to it at the top of
// FORWARD, in the backend (legacy or nf_tables) that holds the drop. Ensure
// verifies all of that by listing and repairs drift (a ferm reload deletes
// every chain); it is cheap enough to call every second.
package firewall

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bgplb/bgplb/routeragent/config"
)

// Status is the firewall state after the last Ensure.
type Status struct {
	// Mode is exempt, off or verify.
	Mode config.FirewallMode `json:"mode"`
	// Backend is where the exemptions live: legacy, nft, or legacy+nft
	// when both backends drop INVALID packets; "" before the first pass.
	Backend string `json:"backend"`
	// Reason says why that backend was chosen.
	Reason string `json:"reason,omitempty"`
	// Table is "filter" for the iptables backends; with backend nftables
	// the native tables holding our chain ("inet filter").
	Table string `json:"table"`
	// Chain is our chain, BGPLB-EXEMPT (bgplb_exempt with backend
	// nftables).
	Chain string `json:"chain"`
	// Rules are the exemptions with their counters.
	Rules []RuleStatus `json:"rules"`
	// Redirects are the ICMPv6 Redirect suppressions (one per IPv6
	// service subnet) with their counters: in chain BGPLB-NOREDIRECT6 of
	// ip6tables' filter table, jumped to from OUTPUT, or with native
	// nftables in chain noredirect6 (hook output) of table inet bgplb
	// (RedirectsInNative says which).
	Redirects []RedirectStatus `json:"redirects,omitempty"`
	// Invalid are, in verify mode, the counters of INVALID forwarded
	// packets to and from each service subnet (see verify.go).
	Invalid []InvalidCount `json:"invalid,omitempty"`
	// Repairs counts passes that found drift after the rules had been in
	// place (an external flush, a ferm reload, a hand edit) and fixed it.
	Repairs int `json:"repairs"`
	// LastRepair is when the last repair happened.
	LastRepair time.Time `json:"lastRepair,omitzero"`
	// LastError is the error of the last pass, "" if it succeeded.
	LastError string `json:"lastError,omitempty"`
}

// RuleStatus is one exemption and its counters.
type RuleStatus struct {
	Interface string `json:"interface"`
	Subnet    string `json:"subnet"`
	Protocol  string `json:"protocol"`
	// Backend is the backend holding this rule.
	Backend string `json:"backend"`
	// Table is the native nftables table holding it ("inet filter"),
	// "" for the iptables backends (always filter).
	Table string `json:"table,omitempty"`
	// Packets and Bytes are the rule's counters: packets that would have
	// been dropped as INVALID without it.
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// RedirectStatus is one ICMPv6 Redirect suppression and its counters.
type RedirectStatus struct {
	Subnet string `json:"subnet"`
	// Backend is the backend holding this rule.
	Backend string `json:"backend"`
	// Packets counts the Redirects the router would have sent about a
	// service address.
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// Option changes how New builds a Manager (tests pass fakes).
type Option func(*Manager)

// WithRunners replaces the real iptables tools.
func WithRunners(f RunnerFactory) Option { return func(m *Manager) { m.factory = f } }

// WithSystemDefault fixes the backend of the system's plain `iptables`
// instead of asking it.
func WithSystemDefault(b Backend) Option {
	return func(m *Manager) { m.sysDefault = func() Backend { return b } }
}

// Manager keeps our chain and jump in place. It is safe for concurrent use;
// passes are serialised.
type Manager struct {
	mu         sync.Mutex // serialises passes
	smu        sync.Mutex // guards status
	status     Status
	cfg        Config
	log        *slog.Logger
	factory    RunnerFactory
	sysDefault func() Backend
	runners    map[runnerKey]Runner
	// sticky holds, per family, the backends chosen on evidence (an
	// INVALID drop seen there). While a firewall reloads no drop may be
	// visible; we keep the earlier choice instead of jumping backends.
	sticky     map[Family][]Backend
	lastReason map[Family]string
	// lastListErr is the last listing error ignored per family (logged once).
	lastListErr map[Family]string
	// lastFull is when all candidate backends were last listed. In auto
	// mode, once the drop has been found, the other backend is listed only
	// every RescanInterval (iptables-nft costs ~5 ms a call), or at once
	// when the chosen backend no longer shows the drop.
	lastFull map[Family]time.Time
	now      func() time.Time
	// Native nftables: the connection factory, the open connection, what
	// the last look found and the last listing error ignored in auto mode.
	nftFactory NftConnFactory
	nft        NftConn
	native     nativeView
	nftCache   nftCache
	lastNftErr string
	converged  bool // a pass has succeeded: later changes count as repairs
	cleaned    bool // the first pass also removed our leftovers elsewhere
}

type runnerKey struct {
	b Backend
	f Family
}

// New validates cfg and returns a Manager. It changes nothing on the host.
func New(cfg Config, log *slog.Logger, opts ...Option) (*Manager, error) {
	c, err := cfg.normalize()
	if err != nil {
		return nil, fmt.Errorf("firewall config: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Manager{
		cfg:         c,
		log:         log.With("component", "firewall"),
		factory:     XtablesRunners,
		nftFactory:  NetlinkNft,
		sysDefault:  SystemDefault,
		runners:     map[runnerKey]Runner{},
		sticky:      map[Family][]Backend{},
		lastReason:  map[Family]string{},
		lastListErr: map[Family]string{},
		lastFull:    map[Family]time.Time{},
		now:         time.Now,
		status:      Status{Mode: c.Mode, Table: TableName, Chain: ChainName},
	}
	for _, o := range opts {
		o(m)
	}
	return m, nil
}

// Status returns the result of the last pass without touching the host.
// It does not wait for a pass in progress.
func (m *Manager) Status() Status {
	m.smu.Lock()
	defer m.smu.Unlock()
	s := m.status
	s.Rules = slices.Clone(s.Rules)
	s.Redirects = slices.Clone(s.Redirects)
	s.Invalid = slices.Clone(s.Invalid)
	return s
}

// update changes the published status under its own lock.
func (m *Manager) update(f func(s *Status)) Status {
	m.smu.Lock()
	defer m.smu.Unlock()
	f(&m.status)
	s := m.status
	s.Rules = slices.Clone(s.Rules)
	s.Redirects = slices.Clone(s.Redirects)
	s.Invalid = slices.Clone(s.Invalid)
	return s
}

func (m *Manager) runner(b Backend, f Family) (Runner, error) {
	k := runnerKey{b, f}
	if r, ok := m.runners[k]; ok {
		return r, nil
	}
	r, err := m.factory(b, f)
	if err != nil {
		return nil, err
	}
	m.runners[k] = r
	return r, nil
}

// Ensure makes one idempotent pass: list the filter table of the candidate
// backends, choose where the exemptions belong, and repair whatever differs
// from the desired chain and jump. In steady state it only lists (one exec
// per backend and family). Call it on a ticker of at most a second and when
// poked (ferm hook).
func (m *Manager) Ensure(ctx context.Context) (Status, error) {
	m.mu.Lock()
	defer m.mu.Unlock()

	if m.cfg.Mode == config.FirewallOff {
		var err error
		if !m.cleaned {
			// The user switched exemptions off: take ours away once.
			err = m.removeAll(ctx)
			if err == nil {
				m.cleaned = true
			}
		}
		st := m.update(func(s *Status) {
			*s = Status{Mode: config.FirewallOff, Table: TableName, Chain: ChainName, Repairs: s.Repairs, Reason: "firewall mode off"}
			m.setErr(s, err)
		})
		return st, err
	}
	if m.cfg.Mode == config.FirewallVerify {
		return m.ensureVerify(ctx)
	}
	if !m.cleaned {
		// The counting table of an earlier verify mode goes, best effort
		// (a kernel without nf_tables has none).
		if err := m.removeVerifyTable(); err != nil {
			m.log.Debug("could not remove the counting table of verify mode", "error", err)
		}
	}

	var (
		errs      []error
		changed   []string
		rules     []RuleStatus
		redirects []RedirectStatus
		backends  []string
		reasons   []string
	)
	// Native nftables first: in auto mode the iptables choice depends on
	// what it holds.
	var native nftResult
	if m.usesNative() {
		res, err := m.ensureNft(append(Desired(m.cfg, IPv4), Desired(m.cfg, IPv6)...))
		native = res
		if err != nil {
			errs = append(errs, err)
		}
		changed = append(changed, res.changed...)
		rules = append(rules, res.rules...)
		if res.target {
			backends = append(backends, string(Nftables))
		}
		if res.reason != "" {
			reasons = append(reasons, "nftables: "+res.reason)
		}
	} else if !m.cleaned {
		// Configured for iptables: take our native leftovers away once,
		// best effort (a kernel without nf_tables has none).
		if err := m.removeNft(); err != nil {
			m.log.Debug("could not remove our native nftables leftovers", "error", err)
		}
	}
	var v6Targets []Backend
	v6Chose := false
	for _, fam := range []Family{IPv4, IPv6} {
		if m.cfg.Backend == config.BackendNftables {
			if !m.cleaned {
				// Configured for native nftables: our iptables leftovers
				// go, once, best effort.
				if err := m.removeFamily(ctx, fam); err != nil {
					m.log.Warn("could not remove our iptables leftovers", "family", fam, "error", err)
				}
			}
			continue
		}
		if other, ok := otherIptables(m.cfg.Backend); ok && !m.cleaned {
			// One iptables backend configured: a reload or restart from
			// the other (or from auto) leaves ours there; it goes once,
			// best effort. Later passes list only the configured one.
			if err := m.removeFrom(ctx, fam, other); err != nil {
				m.log.Warn("could not remove our leftovers from the other iptables backend", "family", fam, "backend", other, "error", err)
			}
		}
		want := Desired(m.cfg, fam)
		if len(want) == 0 {
			if !m.cleaned {
				// A family no longer configured: remove leftovers once,
				// best effort (a broken ip6tables must not block IPv4).
				if err := m.removeFamily(ctx, fam); err != nil {
					m.log.Warn("could not remove our leftovers of an unconfigured family", "family", fam, "error", err)
				}
			}
			continue
		}
		res, err := m.ensureFamily(ctx, fam, want)
		if err != nil {
			errs = append(errs, err)
		}
		if fam == IPv6 {
			v6Targets, v6Chose = res.targets, res.chose
		}
		changed = append(changed, res.changed...)
		rules = append(rules, res.rules...)
		redirects = append(redirects, res.redirects...)
		for _, b := range res.targets {
			if !slices.Contains(backends, string(b)) {
				backends = append(backends, string(b))
			}
		}
		if res.reason != "" {
			reasons = append(reasons, string(fam)+": "+res.reason)
		}
	}
	// The ICMPv6 Redirect suppression in native nftables, when that is
	// where it belongs (else our table there goes).
	if native.ok {
		if inNative, decided := RedirectsInNative(m.cfg.Backend, DesiredRedirectBlocks(m.cfg), v6Targets, v6Chose); decided {
			ch, st, err := m.ensureNftRedirects(native.rs, inNative)
			if err != nil {
				errs = append(errs, err)
			}
			changed = append(changed, ch...)
			redirects = append(redirects, st...)
		}
	}
	err := errors.Join(errs...)

	repair := len(changed) > 0 && m.converged
	m.cleaned = true
	if err == nil {
		m.converged = true
	}
	st := m.update(func(s *Status) {
		if repair {
			s.Repairs++
			s.LastRepair = m.now()
			m.log.Warn("repaired firewall drift", "changes", changed, "repairs", s.Repairs)
		} else if len(changed) > 0 {
			m.log.Info("installed firewall exemptions", "changes", changed)
		}
		s.Mode = m.cfg.Mode
		s.Backend = strings.Join(backends, "+")
		s.Reason = strings.Join(reasons, "; ")
		s.Table, s.Chain = TableName, ChainName
		if m.cfg.Backend == config.BackendNftables {
			s.Table, s.Chain = strings.Join(m.native.analysis.DropTables(), ", "), NftChainName
		}
		if err == nil || len(rules) > 0 {
			s.Rules = rules // on a failed listing keep the last known rules
			s.Redirects = redirects
		}
		m.setErr(s, err)
	})
	return st, err
}

// otherIptables is the iptables backend an explicit iptables backend
// setting does not use.
func otherIptables(b config.FirewallBackend) (Backend, bool) {
	switch b {
	case config.BackendLegacy:
		return NFT, true
	case config.BackendNFT:
		return Legacy, true
	}
	return "", false
}

// setErr records the pass's error; it logs an error once per distinct
// message, not every second while, say, the lock stays held.
func (m *Manager) setErr(s *Status, err error) {
	switch {
	case err != nil && err.Error() != s.LastError:
		m.log.Error("firewall pass failed", "error", err)
	case err == nil && s.LastError != "":
		m.log.Info("firewall pass succeeded again")
	}
	s.LastError = ""
	if err != nil {
		s.LastError = err.Error()
	}
}

type familyResult struct {
	// chose is true when the pass got as far as choosing targets.
	chose     bool
	targets   []Backend
	reason    string
	changed   []string
	rules     []RuleStatus
	redirects []RedirectStatus
}

// RescanInterval is how often auto mode also lists the backend that does
// not hold the drop, to notice the firewall moving between backends.
const RescanInterval = 10 * time.Second

// ensureFamily makes one family's pass: look at the candidate backends,
// choose where the exemptions belong, install them there and take ours
// away from the backends that are no longer targets.
func (m *Manager) ensureFamily(ctx context.Context, fam Family, want []Exemption) (familyResult, error) {
	var res familyResult
	v, err := m.look(ctx, fam)
	if err != nil {
		return res, err
	}
	targets, reason, err := m.choose(fam, v)
	if err != nil {
		return res, err
	}
	res.chose, res.targets, res.reason = true, targets, reason
	errs := m.install(ctx, fam, v, targets, want, &res)
	errs = append(errs, m.removeElsewhere(ctx, fam, v, targets, &res)...)
	return res, errors.Join(errs...)
}

// view is what one look at a family's backends found.
type view struct {
	tables   map[Backend]Table
	runners  map[Backend]Runner
	analyses map[Backend]Analysis
}

func (v view) hasDrop() bool {
	for _, a := range v.analyses {
		if a.Drop != nil {
			return true
		}
	}
	return false
}

// look lists the candidate backends of a family. In auto mode, after the
// drop was found, only the backends where it was are listed (until
// RescanInterval passed); when the drop is gone from there (reloading, or
// moved), every backend is listed at once.
func (m *Manager) look(ctx context.Context, fam Family) (view, error) {
	candidates, partial := m.candidates(fam)
	v, err := m.listBackends(ctx, fam, candidates)
	if err != nil || !partial || v.hasDrop() || len(candidates) == 0 {
		return v, err
	}
	m.lastFull[fam] = m.now()
	return m.listBackends(ctx, fam, []Backend{Legacy, NFT})
}

// candidates are the backends to list: the configured one, or in auto mode
// both, or (partial) only the sticky choice between full looks.
func (m *Manager) candidates(fam Family) (candidates []Backend, partial bool) {
	if m.cfg.Backend != config.BackendAuto {
		return []Backend{Backend(m.cfg.Backend)}, false
	}
	if st := m.sticky[fam]; len(st) > 0 && m.now().Sub(m.lastFull[fam]) < RescanInterval {
		return st, true
	}
	if len(m.sticky[fam]) == 0 && m.nativeHoldsDrop() && m.now().Sub(m.lastFull[fam]) < RescanInterval {
		// The drop is native nftables' and the last full look found none
		// in iptables: list the iptables backends only every
		// RescanInterval (two execs, ~1.8 ms of CPU a pass otherwise).
		return nil, true
	}
	m.lastFull[fam] = m.now()
	return []Backend{Legacy, NFT}, false
}

// listBackends lists and analyses the filter table of each candidate.
func (m *Manager) listBackends(ctx context.Context, fam Family, candidates []Backend) (view, error) {
	v := view{tables: map[Backend]Table{}, runners: map[Backend]Runner{}, analyses: map[Backend]Analysis{}}
	var errs []error
	for _, b := range candidates {
		r, err := m.runner(b, fam)
		if err != nil {
			if errors.Is(err, ErrUnavailable) && len(candidates) > 1 {
				continue // auto: a missing tool is simply not a candidate
			}
			return v, fmt.Errorf("firewall %s %s: %w", fam, b, err)
		}
		t, err := m.list(ctx, r)
		if err != nil {
			errs = append(errs, fmt.Errorf("firewall %s %s: %w", fam, b, err))
			continue
		}
		v.tables[b], v.runners[b], v.analyses[b] = t, r, Analyze(t)
	}
	if len(errs) > 0 {
		// Deciding on a partial view could move the rules to the wrong
		// backend. Go on only when a backend we could list shows the drop
		// (say iptables-nft is installed but the kernel has no nf_tables):
		// the exemption surely belongs there.
		if !v.hasDrop() {
			return v, errors.Join(errs...)
		}
		if msg := errors.Join(errs...).Error(); m.lastListErr[fam] != msg {
			m.log.Warn("ignoring a backend that cannot be listed; the INVALID drop is in another", "family", fam, "error", msg)
			m.lastListErr[fam] = msg
		}
	}
	return v, nil
}

// choose applies ChooseBackends to what look found and remembers a choice
// made on evidence.
func (m *Manager) choose(fam Family, v view) ([]Backend, string, error) {
	if !v.hasDrop() && len(m.sticky[fam]) == 0 && m.nativeExplains() {
		// The forward path is native nftables' (nftables.service): no
		// iptables backend needs an exemption.
		reason := "no INVALID drop in iptables; the forward path is native nftables"
		if m.lastReason[fam] != reason {
			m.log.Info("firewall backend chosen", "family", fam, "backends", "none", "reason", reason)
			m.lastReason[fam] = reason
		}
		return nil, reason, nil
	}
	targets, reason, evidence := ChooseBackends(m.cfg.Backend, v.analyses, m.sticky[fam], m.sysDefault)
	if len(targets) == 0 {
		return nil, "", fmt.Errorf("firewall %s: no iptables backend available (%s)", fam, reason)
	}
	if evidence {
		m.sticky[fam] = targets
	}
	if m.lastReason[fam] != reason {
		m.log.Info("firewall backend chosen", "family", fam, "backends", targets, "reason", reason)
		m.lastReason[fam] = reason
	}
	return targets, reason, nil
}

// install plans and applies our chain and jump in each target backend and
// reports the rules with their counters.
func (m *Manager) install(ctx context.Context, fam Family, v view, targets []Backend, want []Exemption, res *familyResult) []error {
	var errs []error
	for _, b := range targets {
		t := v.tables[b]
		ops := PlanInstall(t, want)
		if err := m.apply(ctx, v.runners[b], ops, false); err != nil {
			errs = append(errs, fmt.Errorf("firewall %s %s: %w", fam, b, err))
		}
		for _, op := range ops {
			res.changed = append(res.changed, fmt.Sprintf("%s/%s: %s", fam, b, op))
		}
		rewritten := slices.ContainsFunc(ops, func(o Op) bool { return o.Chain == ChainName })
		have := t.Rules[ChainName]
		for i, e := range want {
			rs := RuleStatus{Interface: e.Interface, Subnet: e.Subnet.String(), Protocol: e.Protocol, Backend: string(b)}
			if !rewritten && i < len(have) {
				rs.Packets, rs.Bytes = have[i].Packets, have[i].Bytes
			}
			res.rules = append(res.rules, rs)
		}
		if fam == IPv6 {
			if err := m.installRedirectBlocks(ctx, b, v, res); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errs
}

// installRedirectBlocks keeps the ICMPv6 Redirect suppression in an IPv6
// target backend, next to the exemptions: a Redirect about a service
// address would send the client straight to the node, the asymmetric path
// the exemptions are for. A DROP in OUTPUT of either backend stops the
// packet, so the backend holding the firewall is as good as any.
func (m *Manager) installRedirectBlocks(ctx context.Context, b Backend, v view, res *familyResult) error {
	t := v.tables[b]
	want := DesiredRedirectBlocks(m.cfg)
	ops := PlanRedirectInstall(t, want)
	var err error
	if err = m.apply(ctx, v.runners[b], ops, false); err != nil {
		err = fmt.Errorf("firewall %s %s: redirect suppression: %w", IPv6, b, err)
	}
	for _, op := range ops {
		res.changed = append(res.changed, fmt.Sprintf("%s/%s: %s", IPv6, b, op))
	}
	rewritten := slices.ContainsFunc(ops, func(o Op) bool { return o.Chain == RedirectChainName })
	have := t.Rules[RedirectChainName]
	for i, r := range want {
		rs := RedirectStatus{Subnet: r.Subnet.String(), Backend: string(b)}
		if !rewritten && i < len(have) {
			rs.Packets, rs.Bytes = have[i].Packets, have[i].Bytes
		}
		res.redirects = append(res.redirects, rs)
	}
	return err
}

// removeElsewhere takes our chain away from a listed backend that is no
// longer a target (the INVALID drop moved, or the configured backend
// changed).
func (m *Manager) removeElsewhere(ctx context.Context, fam Family, v view, targets []Backend, res *familyResult) []error {
	var errs []error
	for b, t := range v.tables {
		if slices.Contains(targets, b) {
			continue
		}
		ops := PlanRemove(t)
		if len(ops) == 0 {
			continue
		}
		if err := m.apply(ctx, v.runners[b], ops, true); err != nil {
			errs = append(errs, fmt.Errorf("firewall %s %s: remove: %w", fam, b, err))
		}
		for _, op := range ops {
			res.changed = append(res.changed, fmt.Sprintf("%s/%s: %s", fam, b, op))
		}
	}
	return errs
}

// ChooseBackends decides which backends get the exemptions. An explicit
// backend wins. In auto mode: every backend holding an INVALID drop
// reachable from FORWARD (a packet must pass both, so both need the
// exemption); when none shows one, the earlier evidence-based choice
// (sticky) if any; else the only backend with FORWARD rules; else the
// system default. evidence reports whether the choice rests on a drop seen.
func ChooseBackends(mode config.FirewallBackend, analyses map[Backend]Analysis, sticky []Backend, sysDefault func() Backend) (targets []Backend, reason string, evidence bool) {
	if mode == config.BackendLegacy || mode == config.BackendNFT {
		return []Backend{Backend(mode)}, "configured backend " + string(mode), false
	}
	var where []string
	for _, b := range []Backend{Legacy, NFT} {
		a, ok := analyses[b]
		if !ok || a.Drop == nil {
			continue
		}
		targets = append(targets, b)
		where = append(where, fmt.Sprintf("%s (FORWARD rule %d, chain %s: %s)", b, a.Drop.ForwardIndex, a.Drop.Chain, a.Drop.Rule))
	}
	if len(targets) > 0 {
		return targets, "INVALID drop found in " + strings.Join(where, " and "), true
	}
	if len(sticky) > 0 {
		return sticky, "no INVALID drop visible now; keeping " + joinBackends(sticky) + " where it was seen", false
	}
	var withRules []Backend
	for _, b := range []Backend{Legacy, NFT} {
		if a, ok := analyses[b]; ok && a.ForwardRules > 0 {
			withRules = append(withRules, b)
		}
	}
	if len(withRules) == 1 {
		return withRules, "no INVALID drop in any backend; " + string(withRules[0]) + " has the FORWARD rules", false
	}
	def := sysDefault()
	if _, ok := analyses[def]; !ok {
		for _, b := range []Backend{Legacy, NFT} {
			if _, ok := analyses[b]; ok {
				return []Backend{b}, "no INVALID drop in any backend; " + string(b) + " is the only backend available", false
			}
		}
		return nil, "neither iptables-legacy nor iptables-nft is available", false
	}
	return []Backend{def}, "no INVALID drop in any backend; using the system default iptables (" + string(def) + ")", false
}

func joinBackends(bs []Backend) string {
	s := make([]string, len(bs))
	for i, b := range bs {
		s[i] = string(b)
	}
	return strings.Join(s, "+")
}

// Uninstall removes our jump and chain from every backend and family where
// they exist, and nothing else.
func (m *Manager) Uninstall(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	err := m.removeAll(ctx)
	m.sticky = map[Family][]Backend{}
	m.converged = false
	m.update(func(s *Status) {
		s.Rules, s.Redirects, s.Invalid, s.Backend, s.Reason = nil, nil, nil, "", "uninstalled"
		m.setErr(s, err)
	})
	return err
}

func (m *Manager) removeAll(ctx context.Context) error {
	var errs []error
	if err := m.removeNft(); err != nil && m.cfg.Backend == config.BackendNftables {
		errs = append(errs, err)
	} else if err != nil {
		m.log.Warn("could not remove our native nftables rules", "error", err)
	}
	for _, fam := range []Family{IPv4, IPv6} {
		if err := m.removeFamily(ctx, fam); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) removeFamily(ctx context.Context, fam Family) error {
	return m.removeFrom(ctx, fam, Legacy, NFT)
}

// removeFrom removes our jump and chain of fam from the given iptables
// backends (those whose tool is missing are skipped).
func (m *Manager) removeFrom(ctx context.Context, fam Family, backends ...Backend) error {
	var errs []error
	for _, b := range backends {
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
		ops := PlanRemove(t)
		if len(ops) > 0 {
			m.log.Info("removing firewall exemptions", "family", fam, "backend", b, "changes", len(ops))
		}
		if err := m.apply(ctx, r, ops, true); err != nil {
			errs = append(errs, fmt.Errorf("firewall %s %s: remove: %w", fam, b, err))
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) list(ctx context.Context, r Runner) (Table, error) {
	ok, err := r.TableExists(TableName)
	if err != nil {
		return Table{}, err
	}
	if !ok {
		return Table{Policies: map[string]string{}, Rules: map[string][]Rule{}}, nil
	}
	var lines []string
	err = m.retry(ctx, "list filter table", func() error {
		var err error
		lines, err = r.ListTable(TableName)
		return err
	})
	if err != nil {
		return Table{}, err
	}
	t, err := ParseTable(lines)
	if err != nil {
		return Table{}, fmt.Errorf("parse filter table listing: %w", err)
	}
	return t, nil
}

// apply runs ops in order and stops at the first failure; the next pass
// lists again and plans from what is really there.
func (m *Manager) apply(ctx context.Context, r Runner, ops []Op, removing bool) error {
	for _, op := range ops {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		err := m.retry(ctx, op.String(), func() error {
			switch op.Kind {
			case "new-chain":
				return r.NewChain(TableName, op.Chain)
			case "flush-chain":
				return r.ClearChain(TableName, op.Chain)
			case "delete-chain":
				return r.DeleteChain(TableName, op.Chain)
			case "append":
				return r.Append(TableName, op.Chain, op.Args...)
			case "insert":
				return r.Insert(TableName, op.Chain, op.Pos, op.Args...)
			case "delete":
				return r.Delete(TableName, op.Chain, op.Args...)
			}
			return fmt.Errorf("unknown op %q", op.Kind)
		})
		if err != nil && removing && isNotExist(err) {
			continue // someone else removed it first: the goal is reached
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Lock back-off: attempts and first delay. Each attempt itself waits up to
// LockWaitSeconds inside iptables.
const (
	lockAttempts = 4
	lockBackoff  = 100 * time.Millisecond
)

func (m *Manager) retry(ctx context.Context, what string, f func() error) error {
	delay := lockBackoff
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil {
			return nil
		}
		if !isLockError(err) {
			return fmt.Errorf("%s: %w", what, err)
		}
		if attempt >= lockAttempts {
			return fmt.Errorf("%s: %w after %d attempts: %w", what, ErrLocked, attempt, err)
		}
		m.log.Debug("xtables lock busy, backing off", "op", what, "attempt", attempt, "delay", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w: %w", what, ErrLocked, ctx.Err())
		case <-t.C:
		}
		delay *= 2
	}
}
