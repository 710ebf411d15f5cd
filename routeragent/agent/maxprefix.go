package agent

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/bgplb/bgplb/routeragent/bgp"
	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/policy"
)

// hardPrefixLimit is GoBGP's own per-family limit for a neighbour of
// maxPrefixes: max(2*maxPrefixes, maxPrefixes+1000) paths of any kind,
// counted before policy (2000 for the default 1000). It sits well above
// maxPrefixes so that maxPrefixesAction: reject still keeps the earliest
// maxPrefixes paths of a peer that overshoots modestly (or sends some
// unacceptable paths besides), while a flood (a full table, a million
// /32s) is cut off by GoBGP before it is stored: the adj-RIB-in and the
// speaker's copy of a peer never exceed the limit plus one UPDATE. GoBGP
// recounts the family's adj-RIB-in after each UPDATE, so the cost per
// UPDATE is bounded by this number too.
func hardPrefixLimit(maxPrefixes int) uint32 {
	return uint32(max(2*maxPrefixes, maxPrefixes+1000))
}

// recordPrefixLimitTeardowns holds down the peers GoBGP closed at their
// hardPrefixLimit, as the agent's own teardown does: none of their paths
// is accepted and a reconnection is closed at once until the hold-down
// ends.
func (a *Agent) recordPrefixLimitTeardowns(cfg *config.Config, now time.Time) {
	for _, peer := range a.deps.Speaker.PrefixLimitTeardowns() {
		td := teardown{peer: peer, overLimit: true}
		if n, ok := cfg.NeighborFor(peer); ok {
			td.limit = n.MaxPrefixes
		}
		a.recordTeardown(td, now)
		a.log.Warn("session closed by BGP: peer over its hard prefix limit (paths of any kind); none of its paths is installed",
			"peer", peer.String(), "maxPrefixes", td.limit, "hardLimit", hardPrefixLimit(td.limit),
			"holdDown", config.MaxPrefixesHoldDown.String())
	}
}

// maxPrefixState is the max-prefix teardown bookkeeping, keyed by peer
// address apart from the speaker's peers: the speaker forgets a dynamic
// peer as soon as its session and paths are gone, which must not end its
// hold-down or hide its teardown count while the hold-down lasts (a
// teardown followed by a reconnection in TestHostilePeers). An entry of a
// dynamic peer is dropped once its hold-down ended and the speaker no
// longer tracks it, and at most maxDynamicPeers dynamic peers are kept
// (forgetGonePeers). holdDown and closed are owned by the run loop;
// teardowns is read by Snapshot (a.mu).
type maxPrefixState struct {
	// holdDown: peers torn down at their limit, refused until the time.
	holdDown map[netip.Addr]time.Time
	// closed: when we last closed each peer's session (to close a session
	// once, not on every pass until it is gone).
	closed map[netip.Addr]time.Time
	// teardowns counts sessions closed per peer since start.
	teardowns map[netip.Addr]int
}

// maxPrefixVerdict is what enforceMaxPrefixes decided for one pass.
type maxPrefixVerdict struct {
	// drop: peers none of whose paths is accepted this pass.
	drop map[netip.Addr]bool
	// disconnect: established sessions to close now.
	disconnect []teardown
}

// teardown is one session to close for maxPrefixes.
type teardown struct {
	peer netip.Addr
	// overLimit: the peer is over maxPrefixes now (it then gets a
	// hold-down); else it reconnected during its hold-down.
	overLimit bool
	limit     int
	// reason is the Cease's administrative communication.
	reason string
}

// enforceMaxPrefixes decides maxPrefixesAction teardown: a peer over its
// limit, or in its hold-down after such a teardown, has none of its paths
// accepted (all are rejected as max-prefixes and counted), and its
// established session is closed with a Cease once per session. Peers of
// action reject keep what Evaluate gave them (the earliest paths). It
// changes nothing: the run loop excludes the dropped peers' paths and
// closes the sessions (closeSessions). peers is called only when a peer is
// dropped.
func (m *maxPrefixState) enforceMaxPrefixes(cfg *config.Config, rejected []policy.Rejected, peers func() []bgp.PeerState, now time.Time) maxPrefixVerdict {
	var v maxPrefixVerdict
	over := policy.OverLimit(rejected)
	for peer := range over {
		if n, ok := cfg.NeighborFor(peer); ok && n.MaxPrefixesAction == config.MaxPrefixesTeardown {
			v.add(peer)
		}
	}
	for peer, until := range m.holdDown {
		if now.Before(until) {
			v.add(peer)
		}
	}
	if len(v.drop) == 0 {
		return v
	}
	for _, p := range peers() {
		if !v.drop[p.Address] || !p.Up || m.closed[p.Address].After(p.Since) {
			continue
		}
		limit := 0
		if n, ok := cfg.NeighborFor(p.Address); ok {
			limit = n.MaxPrefixes
		}
		td := teardown{peer: p.Address, overLimit: over[p.Address], limit: limit,
			reason: fmt.Sprintf("bgplb: more than maxPrefixes (%d) acceptable prefixes", limit)}
		if !td.overLimit {
			td.reason = fmt.Sprintf("bgplb: refused for %s after going over maxPrefixes (%d)", config.MaxPrefixesHoldDown, limit)
		}
		v.disconnect = append(v.disconnect, td)
	}
	return v
}

func (v *maxPrefixVerdict) add(peer netip.Addr) {
	if v.drop == nil {
		v.drop = map[netip.Addr]bool{}
	}
	v.drop[peer] = true
}

// closeSessions closes the sessions enforceMaxPrefixes named, each within
// 5 s, and records each teardown that succeeded (a failed one is tried
// again next pass). Expired hold-downs are forgotten.
func (a *Agent) closeSessions(ctx context.Context, cfg *config.Config, tds []teardown, now time.Time) {
	a.expireHoldDowns(cfg, now)
	for _, td := range tds {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := a.deps.Speaker.Disconnect(dctx, td.peer, td.reason)
		cancel()
		if err != nil {
			a.log.Error("close the session of a peer over maxPrefixes", "peer", td.peer.String(), "err", err)
			continue
		}
		a.recordTeardown(td, now)
		a.log.Warn("session closed: peer over maxPrefixes; none of its paths is installed", "peer", td.peer.String(),
			"maxPrefixes", td.limit, "overLimit", td.overLimit, "holdDown", config.MaxPrefixesHoldDown.String())
	}
}

// expireHoldDowns forgets the hold-downs that ended, and the state of
// dynamic peers that went away.
func (a *Agent) expireHoldDowns(cfg *config.Config, now time.Time) {
	a.forgetGonePeers(cfg, now)
	for peer, until := range a.maxPfx.holdDown {
		if !now.Before(until) {
			delete(a.maxPfx.holdDown, peer)
		}
	}
}

func (a *Agent) recordTeardown(td teardown, now time.Time) {
	m := &a.maxPfx
	if m.closed == nil {
		m.closed = map[netip.Addr]time.Time{}
		m.holdDown = map[netip.Addr]time.Time{}
	}
	m.closed[td.peer] = now
	if td.overLimit {
		m.holdDown[td.peer] = now.Add(config.MaxPrefixesHoldDown)
	}
	// GoBGP read the flood (its UPDATEs queue unbounded before the limit is
	// counted) and dropped it: return that heap once the peer is quiet, as
	// after a burst of routes (no route changed, so churn would not).
	if a.release != nil {
		a.release.Reset(releaseWhenIdle)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if m.teardowns == nil {
		m.teardowns = map[netip.Addr]int{}
	}
	m.teardowns[td.peer]++
}

// fill adds the teardown counters to a status, and a row (state idle) for
// each peer in its hold-down that the speaker no longer lists (a.mu held).
func (m *maxPrefixState) fill(s *Status) {
	listed := make(map[netip.Addr]bool, len(s.Peers))
	for i := range s.Peers {
		listed[s.Peers[i].Address] = true
		s.Peers[i].MaxPrefixTeardowns = m.teardowns[s.Peers[i].Address]
	}
	added := false
	for peer, n := range m.teardowns {
		if !listed[peer] {
			s.Peers = append(s.Peers, PeerStatus{PeerState: bgp.PeerState{Address: peer, State: "idle"}, MaxPrefixTeardowns: n})
			added = true
		}
	}
	if added {
		slices.SortFunc(s.Peers, func(x, y PeerStatus) int { return x.Address.Compare(y.Address) })
	}
}

// goneDynamicPeers chooses the dynamic peers whose teardown state is
// dropped: those not in their hold-down (until) that the speaker no longer
// tracks (present), then, beyond limit, those whose hold-down ends first.
// tracked lists every peer with state; address: neighbours are never
// chosen. Pure.
func goneDynamicPeers(tracked []netip.Addr, dynamic, present func(netip.Addr) bool, until map[netip.Addr]time.Time, now time.Time, limit int) []netip.Addr {
	var drop, kept []netip.Addr
	for _, p := range tracked {
		switch {
		case !dynamic(p):
		case !present(p) && !now.Before(until[p]):
			drop = append(drop, p)
		default:
			kept = append(kept, p)
		}
	}
	if len(kept) <= limit {
		return drop
	}
	slices.SortFunc(kept, func(x, y netip.Addr) int {
		if c := until[x].Compare(until[y]); c != 0 {
			return c
		}
		return x.Compare(y)
	})
	return append(drop, kept[:len(kept)-limit]...)
}

// forgetGonePeers drops the teardown state of dynamic peers that went away
// (see goneDynamicPeers). It asks the speaker for its peers only when some
// state is kept.
func (a *Agent) forgetGonePeers(cfg *config.Config, now time.Time) {
	m := &a.maxPfx
	if len(m.closed) == 0 {
		return
	}
	present := map[netip.Addr]bool{}
	for _, p := range a.deps.Speaker.Peers() {
		present[p.Address] = true
	}
	tracked := make([]netip.Addr, 0, len(m.closed))
	for p := range m.closed {
		tracked = append(tracked, p)
	}
	dynamic := func(p netip.Addr) bool {
		n, ok := cfg.NeighborFor(p)
		return !ok || n.Address == ""
	}
	drop := goneDynamicPeers(tracked, dynamic, func(p netip.Addr) bool { return present[p] }, m.holdDown, now, cfg.MaxDynamicPeers)
	if len(drop) == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range drop {
		delete(m.closed, p)
		delete(m.holdDown, p)
		delete(m.teardowns, p)
	}
}
