// Package agent wires the router agent together: configuration, the BGP
// speaker, the import policy, the kernel route reconciler, the firewall
// exemptions and the ICMP-redirect sysctls. Work is level-triggered: every
// event (a BGP change, a link change, a timer) only signals; one loop then
// recomputes the desired routes from the current state and reconciles.
//
// Stopping the agent (SIGTERM) leaves routes, firewall rules and connection
// pins in place so a restart never blackholes traffic; on start, routes left
// by the previous run are kept until the peer that announced them sent
// End-of-RIB (or the stale timeout passed).
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime/debug"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/bgplb/bgplb/routeragent/bgp"
	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/firewall"
	"github.com/bgplb/bgplb/routeragent/pinning"
	"github.com/bgplb/bgplb/routeragent/policy"
	"github.com/bgplb/bgplb/routeragent/routes"
	"github.com/bgplb/bgplb/routeragent/symmetry"
	"github.com/bgplb/bgplb/routeragent/sysctl"
)

// Speaker is the BGP side (package bgp implements it).
type Speaker interface {
	Start(ctx context.Context) error
	Stop()
	Changed() <-chan struct{}
	Paths() []policy.Path
	// TakeChanges returns the prefixes whose paths changed since the last
	// call and every path now received for them, and forgets them.
	TakeChanges() (changed []netip.Prefix, paths []policy.Path)
	Peers() []bgp.PeerState
	EndOfRIB(peer netip.Addr) bool
	SetNeighbors(ctx context.Context, cfg bgp.Config) error
	// Disconnect closes the session with a peer (max-prefix teardown).
	Disconnect(ctx context.Context, peer netip.Addr, reason string) error
	// Reset closes the session with a peer whose BFD session failed; it
	// may connect again.
	Reset(ctx context.Context, peer netip.Addr, reason string) error
	// DecodeErrors counts the paths the speaker could not decode (since
	// start); they are neither accepted nor rejected, so status shows them.
	DecodeErrors() int
	// PrefixLimitTeardowns returns the peers GoBGP closed at their hard
	// prefix limit since the last call (see hardPrefixLimit).
	PrefixLimitTeardowns() []netip.Addr
}

// Routes is the kernel side (package routes implements it).
type Routes interface {
	Load() (map[netip.Prefix][]netip.Addr, error)
	Reconcile(desired map[netip.Prefix][]netip.Addr, full bool) routes.Result
	// ReconcileChanged programs the changed prefixes only (an incremental
	// pass); Installed returns our routes in the kernel.
	ReconcileChanged(desired map[netip.Prefix][]netip.Addr, changed []netip.Prefix) routes.Result
	Installed() map[netip.Prefix][]netip.Addr
	// SetWeights sets the next hops' announced weights (link bandwidth)
	// that the next passes install.
	SetWeights(w routes.Weights)
	// Details says how routes are installed (nexthop groups, weights).
	Details() routes.Details
}

// Firewall keeps the exemptions (package firewall implements it).
type Firewall interface {
	Ensure(ctx context.Context) (firewall.Status, error)
}

// Redirects sets send_redirects=0 and reads the values (sysctl.Redirects
// implements it).
type Redirects interface {
	Apply(ifaces []string) (sysctl.Report, error)
	Read(ifaces []string) (sysctl.Report, error)
}

// LAN reports the LAN subnets and our addresses on the LAN interfaces.
type LAN func(ifaces []string) (connected []netip.Prefix, local []netip.Addr, missing []string, err error)

// Deps are the side-effect boundaries, built by the caller (the command
// line, routeragent/cli) so tests can pass their own.
type Deps struct {
	Speaker   Speaker
	Routes    Routes
	Firewall  Firewall // nil when firewall.mode is off
	Redirects Redirects
	LAN       LAN
	// LinkEvents receives when a link or address changed (may be nil).
	LinkEvents <-chan struct{}
	// FirewallEvents receives when the nftables ruleset changed (a new
	// generation: `nft -f`, iptables-nft, ours); may be nil. Each asks for
	// a firewall pass at once instead of at the next tick.
	FirewallEvents <-chan struct{}
	// Notify tells systemd our state (READY=1, RELOADING=1, STOPPING=1); may be nil.
	Notify func(state string)
	// NewFirewall builds the firewall for a reloaded config (nil: keep).
	NewFirewall func(cfg *config.Config) (Firewall, error)
	// Conntrack reads the service flows for firewall.mode verify (nil:
	// no symmetry check).
	Conntrack symmetry.Source
	// NewBFD builds the BFD Manager when a neighbour enables BFD (nil:
	// internal/bfd with the kernel's sockets).
	NewBFD func(log *slog.Logger) BFD
	// Pins installs the connection pins (routes.pinConnections, see
	// pinning.go); nil: no pinning.
	Pins Pins
}

// Pins is the connection pinning's kernel side (pinning.Netlink).
type Pins = pinning.Kernel

// After this many route changes, once no change came for releaseWhenIdle,
// the agent returns its grown heap to the system (a burst of thousands of
// routes doubles the Go heap for a moment; the router keeps the RSS). One
// second (it was 3 s): the release costs one garbage collection per burst
// (tens of ms at 100,000 routes), and the RSS two seconds after a bulk is
// what bench-routers compares with BIRD and FRR.
const (
	releaseAfterChanges = 1000
	releaseWhenIdle     = time.Second
)

// Agent is the running daemon.
type Agent struct {
	log  *slog.Logger
	deps Deps

	reload chan *config.Config
	kickFW chan struct{} // to the firewall loop
	resync chan struct{} // to the run loop

	mu     sync.Mutex
	cfg    *config.Config
	status Status // firewall, sysctl and start time; the rest is built from last
	last   pass
	fw     Firewall

	// Owned by the run loop.
	stale         map[netip.Prefix][]netip.Addr
	staleDeadline time.Time
	connected     []netip.Prefix
	local         []netip.Addr
	missing       []string
	retry         *time.Timer
	retryDelay    time.Duration
	release       *time.Timer
	churn         int            // route changes since the heap was last released
	resyncLater   bool           // the periodic full pass waits for a bulk's end (deferResync)
	maxPfx        maxPrefixState // guarded by mu for its counters
	traces        traceLog       // verdicts of `trace`, own lock
	// rejectedBefore: the rejections of the last pass (logged once each).
	rejectedBefore map[rejectKey]bool
	// rejectedBy: the last pass's rejections by prefix, for incremental
	// passes (a.mu, like last).
	rejectedBy map[netip.Prefix][]policy.Rejected
	bfd        bfdState // see bfd.go
	// weights: the accepted paths' link-bandwidth weights (see weights.go).
	weights routes.Weights
	pins    pinState // see pinning.go

	// staleFirstReturn: when the first peer came back with End-of-RIB;
	// staleSettle fires reconnectSpread later (see keepStale).
	staleFirstReturn time.Time
	staleSettle      *time.Timer
}

// New returns an agent for a validated config.
func New(cfg *config.Config, deps Deps, log *slog.Logger) *Agent {
	a := &Agent{log: log, deps: deps, cfg: cfg, fw: deps.Firewall, reload: make(chan *config.Config, 1),
		kickFW: make(chan struct{}, 1), resync: make(chan struct{}, 1)}
	a.status.Started = time.Now()
	// The first pass removes pins a previous run left if pinning is off.
	a.pins.applied = deps.Pins != nil
	return a
}

// BGPConfig turns the agent config into the speaker's. lan is the LAN
// interfaces' addresses (routes.LANAddresses): with listen.address unset
// BGP listens on those only, so no other interface (the WAN) sees port 179.
// The listeners are made when the speaker starts: an address a LAN
// interface gets later (DHCP, an interface brought up later) is listened
// on after a restart. With no LAN address at all the speaker does not
// listen (never on every address by accident); the CLI refuses to start
// then.
func BGPConfig(c *config.Config, lan []netip.Addr) bgp.Config {
	v4, v6 := c.Families()
	out := bgp.Config{ASN: c.ASN, RouterID: c.RouterIDAddr(), ListenPort: int32(c.Listen.Port), IPv4: v4, IPv6: v6,
		PrefixLimitHoldDown: config.MaxPrefixesHoldDown}
	switch {
	case c.ListenOnLAN():
		out.ListenAddresses = ListenAddresses(lan)
		if len(out.ListenAddresses) == 0 {
			out.ListenPort = -1
		}
	case c.Listen.Address != "0.0.0.0" && c.Listen.Address != "::":
		out.ListenAddresses = []string{c.Listen.Address}
	}
	for _, n := range c.Neighbors {
		// The agent enforces maxPrefixes on acceptable paths (see
		// enforceMaxPrefixes: reject or tear down); GoBGP's own limit,
		// hardPrefixLimit, bounds every path before policy.
		out.Neighbors = append(out.Neighbors, bgp.Neighbor{
			Prefix: n.NeighborPrefix(), Single: n.Address != "", ASN: n.ASN, Password: n.Password(),
			HoldTime: n.HoldTime, Keepalive: n.KeepaliveTime, GracefulRestart: *n.GracefulRestart,
			PrefixLimit: hardPrefixLimit(n.MaxPrefixes), TTLSecurity: *n.TTLSecurity,
		})
	}
	return out
}

// ListenAddresses are the LAN addresses BGP listens on, sorted and without
// duplicates (two interfaces may share an address).
func ListenAddresses(lan []netip.Addr) []string {
	as := slices.Clone(lan)
	slices.SortFunc(as, netip.Addr.Compare)
	as = slices.Compact(as)
	out := make([]string, 0, len(as))
	for _, a := range as {
		out = append(out, a.String())
	}
	return out
}

// Kick asks for a firewall pass and a full route resync now (the `poke`
// command, which the ferm hook runs after every ferm reload, which deletes
// our chain, ends here).
func (a *Agent) Kick() {
	for _, ch := range []chan struct{}{a.kickFW, a.resync} {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Reload asks the run loop to apply a new (already validated) config.
func (a *Agent) Reload(cfg *config.Config) {
	select {
	case a.reload <- cfg:
	default:
		// A reload is pending; replace it with the newest.
		select {
		case <-a.reload:
		default:
		}
		a.reload <- cfg
	}
}

func (a *Agent) notify(state string) {
	if a.deps.Notify != nil {
		a.deps.Notify(state)
	}
}

// Run runs until ctx ends. It leaves routes and firewall rules in place.
func (a *Agent) Run(ctx context.Context) error {
	cfg := a.config()
	if err := a.keepPreviousRoutes(cfg); err != nil {
		return err
	}
	a.resumePins()
	a.prepareHost(ctx)
	if err := a.deps.Speaker.Start(ctx); err != nil {
		return fmt.Errorf("start BGP: %w", err)
	}
	defer a.deps.Speaker.Stop()
	defer a.closeBFD()
	defer a.startTimers()()
	a.reconcile(ctx, true)
	a.notify("READY=1")
	a.log.Info("router agent ready", "asn", cfg.ASN, "routerID", cfg.RouterID, "port", cfg.Listen.Port,
		"table", cfg.Routes.Table, "protocol", cfg.Routes.Protocol)
	defer a.startFirewallLoop(ctx)()
	defer a.startSymmetryLoop(ctx)()
	defer a.stopPins()
	return a.loop(ctx, cfg)
}

// keepPreviousRoutes reads the routes a previous run left in the kernel:
// they stay until their peers sent End-of-RIB (or the stale timeout).
func (a *Agent) keepPreviousRoutes(cfg *config.Config) error {
	stale, err := a.deps.Routes.Load()
	if err != nil {
		return fmt.Errorf("read our routes from the kernel: %w", err)
	}
	if len(stale) > 0 {
		a.stale = stale
		a.staleDeadline = time.Now().Add(cfg.Routes.StaleTimeout)
		a.log.Info("keeping routes from the previous run until their peers sent End-of-RIB",
			"routes", len(stale), "staleTimeout", cfg.Routes.StaleTimeout.String())
	}
	return nil
}

// prepareHost reads the LAN, sets the sysctls and, before any route, the
// firewall exemptions: a route to a service is useless while the firewall
// drops its return half.
func (a *Agent) prepareHost(ctx context.Context) {
	a.refreshLAN()
	a.applySysctl()
	a.ensureFirewall(ctx)
}

// startTimers creates the (stopped) retry and heap-release timers the
// passes arm; the returned func stops them.
func (a *Agent) startTimers() (stop func()) {
	a.retry = time.NewTimer(time.Hour)
	a.retry.Stop()
	a.release = time.NewTimer(time.Hour)
	a.release.Stop()
	a.staleSettle = time.NewTimer(time.Hour)
	a.staleSettle.Stop()
	return func() {
		a.retry.Stop()
		a.release.Stop()
		a.staleSettle.Stop()
	}
}

// startFirewallLoop runs firewallLoop until the returned func is called.
func (a *Agent) startFirewallLoop(ctx context.Context) (stop func()) {
	fwCtx, fwCancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { a.firewallLoop(fwCtx) })
	return func() {
		fwCancel()
		wg.Wait()
	}
}

// loop is the run loop: every event only chooses the kind of pass.
func (a *Agent) loop(ctx context.Context, cfg *config.Config) error {
	resync := time.NewTicker(cfg.Routes.ResyncInterval)
	defer resync.Stop()
	var staleTimer <-chan time.Time
	if a.stale != nil {
		t := time.NewTimer(time.Until(a.staleDeadline))
		defer t.Stop()
		staleTimer = t.C
	}
	for {
		select {
		case <-ctx.Done():
			a.notify("STOPPING=1")
			a.log.Info("stopping; routes and firewall rules stay in place")
			return nil
		case <-a.deps.Speaker.Changed():
			a.reconcile(ctx, false)
		case <-a.deps.LinkEvents:
			a.resyncAll(ctx)
		case <-a.resync:
			a.resyncAll(ctx)
		case <-resync.C:
			if !a.deferResync() {
				a.resyncAll(ctx)
			}
		case <-staleTimer:
			staleTimer = nil
			a.reconcile(ctx, false)
		case <-a.staleSettle.C:
			a.reconcile(ctx, false)
		case <-a.retry.C:
			a.reconcile(ctx, true)
		case <-a.bfdEvents():
			a.reconcile(ctx, false)
		case <-a.release.C:
			a.releaseHeap()
			if a.resyncLater {
				a.resyncAll(ctx)
			}
		case nc := <-a.reload:
			a.reloadNow(ctx, nc, resync)
		}
	}
}

// resyncAll re-reads the LAN, re-applies the sysctls (an interface may
// have reappeared) and makes a full pass.
func (a *Agent) resyncAll(ctx context.Context) {
	a.resyncLater = false
	a.refreshLAN()
	a.applySysctl()
	a.reconcile(ctx, true)
}

// releaseHeap: a burst of route changes is over; give the heap it grew back
// to the system instead of keeping it for the next one.
func (a *Agent) releaseHeap() {
	a.churn = 0
	debug.FreeOSMemory()
}

// reloadNow applies a new config, telling systemd, and resets the resync
// ticker to the new interval.
func (a *Agent) reloadNow(ctx context.Context, nc *config.Config, resync *time.Ticker) {
	a.notify("RELOADING=1")
	if err := a.applyReload(ctx, nc); err != nil {
		a.log.Error("reload refused; running state kept", "err", err)
	} else {
		resync.Reset(nc.Routes.ResyncInterval)
		a.log.Info("configuration reloaded")
	}
	a.notify("READY=1")
}

func (a *Agent) config() *config.Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg
}

// applyReload applies what can change at run time; a config that changes
// the BGP identity or where routes live is refused (restart to apply).
func (a *Agent) applyReload(ctx context.Context, nc *config.Config) error {
	old := a.config()
	if !bgp.SameSessions(BGPConfig(old, a.local), BGPConfig(nc, a.local)) {
		return errors.New("asn, routerID, listen or address families changed: restart the agent to apply")
	}
	if old.Routes.Table != nc.Routes.Table || old.Routes.Metric != nc.Routes.Metric || old.Routes.Protocol != nc.Routes.Protocol ||
		old.Routes.NexthopGroups != nc.Routes.NexthopGroups {
		return errors.New("routes.table, routes.metric, routes.protocol or routes.nexthopGroups changed: restart the agent to apply")
	}
	var fw Firewall = a.fw
	if a.deps.NewFirewall != nil && (old.Firewall.Mode != nc.Firewall.Mode || old.Firewall.Backend != nc.Firewall.Backend ||
		!slices.Equal(old.Firewall.Protocols, nc.Firewall.Protocols) || !slices.Equal(old.LANInterfaces, nc.LANInterfaces) ||
		!slices.Equal(old.ServiceSubnets, nc.ServiceSubnets)) {
		f, err := a.deps.NewFirewall(nc)
		if err != nil {
			return fmt.Errorf("firewall: %w", err)
		}
		fw = f
	}
	if !sameNeighbors(old, nc) {
		if err := a.deps.Speaker.SetNeighbors(ctx, BGPConfig(nc, a.local)); err != nil {
			return fmt.Errorf("neighbors: %w", err)
		}
	}
	a.mu.Lock()
	a.cfg = nc
	a.fw = fw
	if fw == nil {
		a.status.Firewall = nil // no firewall: no stale section of the last one
	}
	a.mu.Unlock()
	a.resyncAll(ctx)
	return nil
}

func sameNeighbors(a, b *config.Config) bool {
	if len(a.Neighbors) != len(b.Neighbors) {
		return false
	}
	for i := range a.Neighbors {
		x, y := a.Neighbors[i], b.Neighbors[i]
		if x.Prefix != y.Prefix || x.Address != y.Address || x.ASN != y.ASN || x.Password() != y.Password() ||
			x.HoldTime != y.HoldTime || x.KeepaliveTime != y.KeepaliveTime || x.MaxPrefixes != y.MaxPrefixes ||
			*x.GracefulRestart != *y.GracefulRestart || *x.TTLSecurity != *y.TTLSecurity {
			return false
		}
	}
	return true
}

func (a *Agent) refreshLAN() {
	cfg := a.config()
	c, l, missing, err := a.deps.LAN(cfg.LANInterfaces)
	if err != nil {
		a.log.Error("read LAN addresses", "err", err)
		return
	}
	if len(missing) > 0 && !slices.Equal(missing, a.missing) {
		a.log.Warn("LAN interfaces not present", "interfaces", missing)
	}
	a.connected, a.local, a.missing = c, l, missing
}

func (a *Agent) applySysctl() {
	if a.deps.Redirects == nil {
		return
	}
	cfg := a.config()
	if cfg.ICMPRedirects == config.RedirectsLeave {
		// Still report the values, so status and doctor show them.
		rep, err := a.deps.Redirects.Read(cfg.LANInterfaces)
		a.mu.Lock()
		defer a.mu.Unlock()
		a.status.Sysctl, a.status.SysctlError = &rep, ""
		if err != nil {
			a.status.SysctlError = err.Error()
		}
		return
	}
	// Missing interfaces are reported as such and set when they appear.
	rep, err := a.deps.Redirects.Apply(cfg.LANInterfaces)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.status.Sysctl = &rep
	a.status.SysctlError = ""
	if err != nil {
		a.status.SysctlError = err.Error()
		a.log.Error("set send_redirects=0", "err", err)
	}
}

func (a *Agent) ensureFirewall(ctx context.Context) {
	a.mu.Lock()
	fw := a.fw
	a.mu.Unlock()
	if fw == nil {
		return
	}
	st, err := fw.Ensure(ctx)
	a.mu.Lock()
	prev := a.status.Firewall
	a.status.Firewall = &st
	a.mu.Unlock()
	if err != nil && ctx.Err() == nil {
		if prev == nil || prev.LastError != st.LastError {
			a.log.Error("firewall exemptions", "err", err)
		}
	} else if prev != nil && st.Repairs > prev.Repairs {
		a.log.Warn("firewall exemptions repaired after external change", "repairs", st.Repairs, "backend", st.Backend)
	}
}

// firewallLoop re-checks the exemptions every second: a ferm reload flushes
// them and they must be back within 2 s.
func (a *Agent) firewallLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	events := a.deps.FirewallEvents
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.ensureFirewall(ctx)
		case <-a.kickFW:
			a.ensureFirewall(ctx)
			t.Reset(time.Second)
		case _, ok := <-events:
			if !ok {
				events = nil // the monitor ended: the ticker remains
				continue
			}
			a.ensureFirewall(ctx)
			t.Reset(time.Second)
		}
	}
}

func (a *Agent) policy(cfg *config.Config) *policy.Policy {
	return &policy.Policy{
		ServiceSubnets: cfg.ServicePrefixes(),
		Connected:      a.connected,
		Local:          a.local,
		MaxPrefixes: func(peer netip.Addr) int {
			if n, ok := cfg.NeighborFor(peer); ok {
				return n.MaxPrefixes
			}
			return 0
		},
	}
}

// reconcile is one pass: incremental (only the prefixes whose paths
// changed, see incremental.go) when it can be, else full. full also
// re-reads the kernel's table.
func (a *Agent) reconcile(ctx context.Context, full bool) {
	cfg := a.config()
	start := time.Now()
	// A peer whose BFD session failed has its paths left out, a decision
	// over all of them: those passes are full (see bfd.go).
	bfdChanged := a.syncBFD(ctx, cfg)
	if !full && !bfdChanged && len(a.bfd.down) == 0 && a.incrementalOK(cfg, start) && a.reconcileChanges(cfg, start) {
		return
	}
	a.reconcileFull(ctx, cfg, full, start)
}

// reconcileFull is one level-triggered pass: all received paths -> policy
// -> desired routes (+ stale routes still kept) -> kernel.
func (a *Agent) reconcileFull(ctx context.Context, cfg *config.Config, full bool, start time.Time) {
	// Changes noted until now are all in Paths: an incremental pass after
	// this one starts from here.
	a.deps.Speaker.TakeChanges()
	accepted, rejected, examined := a.admit(ctx, cfg)
	fromBGP, draining := policy.DesiredRoutesDraining(accepted)
	desired, staleKept := a.withStale(fromBGP)
	a.weights = weightsOf(accepted)
	a.deps.Routes.SetWeights(a.weights)
	res := a.deps.Routes.Reconcile(desired, full)
	a.afterRoutes(res, start)
	a.pinAfterFull(cfg, accepted, desired, staleKept, full)
	// The status asks Routes for what is installed when it needs it: the
	// pass does not keep a second copy of every route.
	res.Installed = nil
	a.record(pass{cfg: cfg, accepted: perPeer(accepted), nAccepted: len(accepted), rejected: rejected,
		fromBGP: fromBGP, desired: desired, res: res, staleKept: staleKept,
		connected: a.connected, missing: a.missing, examined: examined,
		overLimit: len(policy.OverLimit(rejected)) > 0, draining: draining}, indexRejected(rejected))
	a.reportVerdicts(true, nil, accepted, rejected, outcomeOf(desired, res))
}

// admit runs the import policy over every received path, enforces
// maxPrefixes (closing the sessions it names) and logs new rejections.
func (a *Agent) admit(ctx context.Context, cfg *config.Config) ([]policy.Path, []policy.Rejected, int) {
	// The paths of a peer whose BFD session failed count as withdrawn.
	paths := withoutPeers(a.deps.Speaker.Paths(), a.bfd.down)
	accepted, rejected := a.policy(cfg).Evaluate(paths)
	now := time.Now()
	a.recordPrefixLimitTeardowns(cfg, now)
	v := a.maxPfx.enforceMaxPrefixes(cfg, rejected, a.deps.Speaker.Peers, now)
	if len(v.drop) > 0 {
		accepted, rejected = policy.Exclude(accepted, rejected, v.drop)
	}
	a.closeSessions(ctx, cfg, v.disconnect, now)
	a.logRejections(rejected)
	return accepted, rejected, len(paths)
}

// withStale adds the routes kept from the previous run that stay (see
// keepStale), and ends the stale phase when none is left or the stale
// timeout passed. staleKept counts the next hops kept.
func (a *Agent) withStale(fromBGP map[netip.Prefix][]netip.Addr) (desired map[netip.Prefix][]netip.Addr, staleKept int) {
	if a.stale == nil {
		return fromBGP, 0
	}
	now := time.Now()
	reason := "stale timeout passed"
	if !now.After(a.staleDeadline) {
		peers := map[netip.Addr]stalePeer{}
		for _, p := range a.deps.Speaker.Peers() {
			peers[p.Address] = stalePeer{up: p.Up, endOfRIB: p.EndOfRIB}
			if p.EndOfRIB && a.staleFirstReturn.IsZero() {
				// The first session back with End-of-RIB: the others
				// that are alive follow within reconnectSpread.
				a.staleFirstReturn = now
				if a.staleSettle != nil {
					a.staleSettle.Reset(reconnectSpread)
				}
			}
		}
		for nh, down := range a.bfd.down {
			if down {
				p := peers[nh]
				p.bfdDown = true
				peers[nh] = p
			}
		}
		settled := !a.staleFirstReturn.IsZero() && now.Sub(a.staleFirstReturn) >= reconnectSpread
		desired, staleKept = keepStale(fromBGP, a.stale, peers, settled)
		if staleKept > 0 {
			return desired, staleKept
		}
		reason = "every peer sent End-of-RIB or is gone"
	}
	a.log.Info("sweeping stale routes from the previous run", "reason", reason)
	a.stale = nil
	// Nothing kept from the previous run: desired is fromBGP itself (the
	// pass keeps one map, not two equal ones).
	return fromBGP, 0
}

// afterRoutes logs what the kernel pass did, counts the churn for the heap
// release, and arms the retry with backoff when routes failed.
func (a *Agent) afterRoutes(res routes.Result, start time.Time) {
	if n := res.Added + res.Replaced + res.Deleted; n > 0 {
		a.churn += n
		if a.churn >= releaseAfterChanges {
			a.release.Reset(releaseWhenIdle)
		}
		a.log.Info("routes reconciled", "added", res.Added, "replaced", res.Replaced, "deleted", res.Deleted,
			"installed", res.InstalledCount, "took", time.Since(start).String())
	}
	for _, c := range res.Conflicts {
		a.log.Debug("route conflict: a foreign route holds a service prefix; left alone", "prefix", c.Prefix.String(), "protocol", c.Protocol)
	}
	if len(res.Errors) == 0 {
		a.retryDelay = 0
		return
	}
	a.log.Error("some routes could not be programmed; retrying", "errors", len(res.Errors), "first", res.Errors[0].Err)
	if a.retryDelay == 0 {
		a.retryDelay = 500 * time.Millisecond
	} else if a.retryDelay < 30*time.Second {
		a.retryDelay *= 2
	}
	a.retry.Reset(a.retryDelay)
}

// record keeps what the pass saw and did; the status is built from it when
// asked for (rarely), not on every pass (often, and O(routes)).
func (a *Agent) record(p pass, rejectedBy map[netip.Prefix][]policy.Rejected) {
	p.at = time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.last = p
	a.rejectedBy = rejectedBy
}

func perPeer(accepted []policy.Path) map[netip.Addr]int {
	acc := make(map[netip.Addr]int, 8)
	for _, p := range accepted {
		acc[p.Peer]++
	}
	return acc
}

// pass is what one reconcile pass saw and did.
type pass struct {
	cfg       *config.Config
	accepted  map[netip.Addr]int // per peer
	nAccepted int
	rejected  []policy.Rejected
	// fromBGP are the routes the accepted paths make; desired adds the
	// stale routes kept (the same map when none is kept).
	fromBGP, desired map[netip.Prefix][]netip.Addr
	res              routes.Result
	staleKept        int
	connected        []netip.Prefix
	missing          []string
	at               time.Time
	// examined counts the paths the pass decided: every path in a full
	// pass, those of the changed prefixes in an incremental one.
	examined int
	// overLimit: a peer was over maxPrefixes (the next pass is full).
	overLimit bool
	// draining counts per route the next hops carrying GRACEFUL_SHUTDOWN
	// (nil when none; the next pass is full while any is).
	draining map[netip.Prefix]int
}

// Snapshot returns the current status.
func (a *Agent) Snapshot() Status {
	peers := a.deps.Speaker.Peers()
	undecodable := a.deps.Speaker.DecodeErrors()
	installed := a.deps.Routes.Installed()
	details := a.deps.Routes.Details()
	bfdPeers, bfdSum := a.bfdStatus(a.config(), peers, a.bfdManager())
	verdicts := a.verdictReports()
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.status
	if a.last.cfg != nil {
		last := a.last
		last.res.Installed = installed
		s.update(last, peers)
		s.fillRouteDetails(details)
		a.maxPfx.fill(&s)
		s.fillBFD(bfdPeers, bfdSum)
		s.fillVerdicts(verdicts)
	}
	s.Prefix.Undecodable = undecodable
	s.Trace = a.traces.snapshot()
	return s
}

func sortedPrefixes[V any](m map[netip.Prefix]V) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool {
		if c := out[i].Addr().Compare(out[j].Addr()); c != 0 {
			return c < 0
		}
		return out[i].Bits() < out[j].Bits()
	})
	return out
}
