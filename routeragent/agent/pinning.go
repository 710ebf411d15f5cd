package agent

import (
	"net/netip"
	"slices"
	"time"

	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/pinning"
	"github.com/bgplb/bgplb/routeragent/policy"
)

// Connection pinning (routes.pinConnections, package pinning): after each
// pass the agent decides which next hops keep a slot (announced ones,
// GRACEFUL_SHUTDOWN included; withdrawn ones for routes.pinLinger unless
// really gone) and applies it.

// pinState is owned by the run loop.
type pinState struct {
	st pinning.State
	// announced: the next hops of the last full pass's accepted paths
	// (and stale routes), plus those incremental passes added since.
	announced map[netip.Addr]bool
	// peerOf: a next hop's announcing peer (for BFD down).
	peerOf map[netip.Addr]netip.Addr
	// applied: pins are in the kernel (or may be: a failed Apply).
	applied bool
	wake    *time.Timer
	// logged: the last pins, overflow and error logged (each once).
	lastPins     []pinning.Pin
	lastOverflow int
	lastErr      string
}

// maxPins bounds the pinned next hops by the peers the config admits: one
// per neighbours[].address, maxDynamicPeers for the prefixes.
func maxPins(cfg *config.Config) int {
	n, dynamic := 0, false
	for _, nb := range cfg.Neighbors {
		if nb.Address != "" {
			n++
		} else {
			dynamic = true
		}
	}
	if dynamic {
		n += cfg.MaxDynamicPeers
	}
	return min(max(n, 1), pinning.MaxSlots)
}

// announcedOf collects the next hops (and their peers) of the accepted
// paths and of the routes kept stale (a GRACEFUL_SHUTDOWN path is
// accepted: its next hop stays pinned). Consecutive paths mostly share a
// next hop, so a map write per path is rare.
func announcedOf(accepted []policy.Path, desired map[netip.Prefix][]netip.Addr, staleKept int) (map[netip.Addr]bool, map[netip.Addr]netip.Addr) {
	nhs, peers := map[netip.Addr]bool{}, map[netip.Addr]netip.Addr{}
	// recent: the first distinct next hops, scanned before the map (an
	// ECMP route's paths alternate between a few).
	var recent []netip.Addr
	for _, p := range accepted {
		nh := p.NextHop.Unmap()
		if slices.Contains(recent, nh) {
			continue
		}
		if len(recent) < 8 {
			recent = append(recent, nh)
		} else if nhs[nh] {
			continue
		}
		nhs[nh], peers[nh] = true, p.Peer
	}
	if staleKept > 0 {
		for _, hops := range desired {
			for _, nh := range hops {
				nhs[nh.Unmap()] = true
			}
		}
	}
	return nhs, peers
}

// pinAfterFull decides and applies the pins after a full pass.
func (a *Agent) pinAfterFull(cfg *config.Config, accepted []policy.Path, desired map[netip.Prefix][]netip.Addr, staleKept int, full bool) {
	if a.deps.Pins == nil {
		return
	}
	if !cfg.Routes.Pinning() {
		a.removePins()
		return
	}
	a.pins.announced, a.pins.peerOf = announcedOf(accepted, desired, staleKept)
	a.applyPins(cfg, full)
}

// pinIncremental adds the next hops an incremental pass accepted (one that
// left is noticed by the next full pass: its connections keep their pin
// until then, at most routes.resyncInterval longer).
func (a *Agent) pinIncremental(cfg *config.Config, ds []prefixDecision) {
	if a.deps.Pins == nil || !cfg.Routes.Pinning() {
		return
	}
	added := false
	for _, d := range ds {
		for _, nh := range d.nextHops {
			if nh = nh.Unmap(); !a.pins.announced[nh] {
				if a.pins.announced == nil {
					a.pins.announced = map[netip.Addr]bool{}
				}
				a.pins.announced[nh], added = true, true
			}
		}
	}
	if added {
		a.applyPins(cfg, false)
	}
}

// goneNextHops: next hops whose peer's BFD session is down, and pinned
// next hops no longer announced whose neighbour entry failed.
func (a *Agent) goneNextHops() map[netip.Addr]bool {
	gone := map[netip.Addr]bool{}
	var withdrawn []netip.Addr
	for nh := range a.pins.st.Slots {
		if a.bfd.down[nh] || a.bfd.down[a.pins.peerOf[nh]] {
			gone[nh] = true
		} else if !a.pins.announced[nh] {
			withdrawn = append(withdrawn, nh)
		}
	}
	if len(withdrawn) > 0 {
		failed, err := a.deps.Pins.Failed(withdrawn)
		if err != nil {
			a.log.Warn("connection pinning: read neighbours", "err", err)
		}
		for nh := range failed {
			gone[nh] = true
		}
	}
	return gone
}

// applyPins decides and applies; with pinning off it removes what is there.
func (a *Agent) applyPins(cfg *config.Config, full bool) {
	if !cfg.Routes.Pinning() {
		a.removePins()
		return
	}
	now := time.Now()
	next, d := pinning.Decide(a.pins.st, pinning.Input{Now: now, Announced: a.pins.announced,
		Gone: a.goneNextHops(), Linger: cfg.Routes.Linger(), Max: maxPins(cfg)})
	a.pins.st = next
	if !d.Wake.IsZero() {
		a.pinWakeAt(d.Wake.Sub(now))
	}
	a.pins.applied = true
	err := a.deps.Pins.Apply(cfg.ServicePrefixes(), d.Pins, full)
	a.logPins(d, err)
	a.publishPins(pinView(next, d, cfg.Routes.Linger(), err))
}

// pinWakeAt asks for a full pass when a linger ends.
func (a *Agent) pinWakeAt(d time.Duration) {
	if a.pins.wake != nil {
		a.pins.wake.Stop()
	}
	a.pins.wake = time.AfterFunc(d+10*time.Millisecond, func() {
		select {
		case a.resync <- struct{}{}:
		default:
		}
	})
}

func (a *Agent) logPins(d pinning.Decision, err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if msg != a.pins.lastErr {
		if err != nil {
			a.log.Error("connection pinning", "err", err)
		} else {
			a.log.Info("connection pinning repaired")
		}
		a.pins.lastErr = msg
	}
	if len(d.Overflow) > 0 && len(d.Overflow) != a.pins.lastOverflow {
		a.log.Warn("connection pinning: more next hops than slots; these are not pinned",
			"nextHops", len(d.Overflow), "first", d.Overflow[0].String())
	}
	a.pins.lastOverflow = len(d.Overflow)
	if err == nil && !slices.Equal(d.Pins, a.pins.lastPins) {
		a.log.Info("connection pins", "pinned", len(d.Pins), "unpinned", addrStrings(d.Unpinned))
		a.pins.lastPins = d.Pins
	}
}

func addrStrings(as []netip.Addr) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return out
}

// resumePins takes over the pins a previous run left: stopping the agent
// leaves them in place, like its routes, so that a restart during a drain
// moves no connection; each keeps its slot (pinning.Resume).
func (a *Agent) resumePins() {
	if a.deps.Pins == nil {
		return
	}
	loaded, err := a.deps.Pins.Load()
	if err != nil {
		a.log.Warn("connection pinning: read the pins of the previous run", "err", err)
		return
	}
	if len(loaded) > 0 {
		a.pins.st = pinning.Resume(loaded, time.Now())
		a.log.Info("keeping the connection pins of the previous run", "pinned", len(loaded))
	}
}

// stopPins stops the linger timer; the pins stay (see resumePins;
// `bgplb-routeragent flush` and uninstall remove them).
func (a *Agent) stopPins() {
	if a.pins.wake != nil {
		a.pins.wake.Stop()
	}
}

// removePins deletes our table, rules and routes (pinning turned off): an
// established connection then follows the route, as it did before.
func (a *Agent) removePins() {
	a.stopPins()
	a.publishPins(nil)
	if a.deps.Pins == nil || !a.pins.applied {
		return
	}
	a.pins.applied, a.pins.st, a.pins.lastPins = false, pinning.State{}, nil
	if err := a.deps.Pins.Remove(); err != nil {
		a.log.Error("connection pinning: remove", "err", err)
		return
	}
	a.log.Info("connection pins removed")
}
