package agent

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/policy"
)

// maxPrefixState is the max-prefix teardown bookkeeping. holdDown and
// closed are owned by the run loop; teardowns is read by Snapshot (a.mu).
type maxPrefixState struct {
	// holdDown: peers torn down at their limit, refused until the time.
	holdDown map[netip.Addr]time.Time
	// closed: when we last closed each peer's session (to close a session
	// once, not on every pass until it is gone).
	closed map[netip.Addr]time.Time
	// teardowns counts sessions closed per peer since start.
	teardowns map[netip.Addr]int
}

// enforceMaxPrefixes applies maxPrefixesAction teardown: a peer over its
// limit, or in its hold-down after such a teardown, has none of its paths
// accepted (all are rejected as max-prefixes and counted), and its
// established session is closed with a Cease once per session. Peers of
// action reject keep what Evaluate gave them (the earliest paths).
func (a *Agent) enforceMaxPrefixes(cfg *config.Config, accepted []policy.Path, rejected []policy.Rejected) ([]policy.Path, []policy.Rejected) {
	now := time.Now()
	drop := map[netip.Addr]bool{}
	over := policy.OverLimit(rejected)
	for peer := range over {
		if n, ok := cfg.NeighborFor(peer); ok && n.MaxPrefixesAction == config.MaxPrefixesTeardown {
			drop[peer] = true
		}
	}
	for peer, until := range a.maxPfx.holdDown {
		if now.Before(until) {
			drop[peer] = true
		} else {
			delete(a.maxPfx.holdDown, peer)
		}
	}
	if len(drop) == 0 {
		return accepted, rejected
	}
	accepted, rejected = policy.Exclude(accepted, rejected, drop)
	for _, p := range a.deps.Speaker.Peers() {
		if !drop[p.Address] || !p.Up || a.maxPfx.closed[p.Address].After(p.Since) {
			continue
		}
		limit := 0
		if n, ok := cfg.NeighborFor(p.Address); ok {
			limit = n.MaxPrefixes
		}
		reason := fmt.Sprintf("bgplb: more than maxPrefixes (%d) acceptable prefixes", limit)
		if !over[p.Address] {
			reason = fmt.Sprintf("bgplb: refused for %s after going over maxPrefixes (%d)", config.MaxPrefixesHoldDown, limit)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := a.deps.Speaker.Disconnect(ctx, p.Address, reason)
		cancel()
		if err != nil {
			a.log.Error("close the session of a peer over maxPrefixes", "peer", p.Address.String(), "err", err)
			continue
		}
		if a.maxPfx.closed == nil {
			a.maxPfx.closed = map[netip.Addr]time.Time{}
			a.maxPfx.holdDown = map[netip.Addr]time.Time{}
		}
		a.maxPfx.closed[p.Address] = now
		if over[p.Address] {
			a.maxPfx.holdDown[p.Address] = now.Add(config.MaxPrefixesHoldDown)
		}
		a.mu.Lock()
		if a.maxPfx.teardowns == nil {
			a.maxPfx.teardowns = map[netip.Addr]int{}
		}
		a.maxPfx.teardowns[p.Address]++
		a.mu.Unlock()
		a.log.Warn("session closed: peer over maxPrefixes; none of its paths is installed", "peer", p.Address.String(),
			"maxPrefixes", limit, "overLimit", over[p.Address], "holdDown", config.MaxPrefixesHoldDown.String())
	}
	return accepted, rejected
}

// fill adds the teardown counters to a status (a.mu held).
func (m *maxPrefixState) fill(s *Status) {
	for i := range s.Peers {
		s.Peers[i].MaxPrefixTeardowns = m.teardowns[s.Peers[i].Address]
	}
}
