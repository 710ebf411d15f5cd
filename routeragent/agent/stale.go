package agent

import (
	"net/netip"
	"slices"
	"time"
)

// reconnectSpread is how far apart the speakers' sessions come back after
// an agent restart. They all lost their sessions at the same moment, and a
// GoBGP v3 speaker then waits 5 s idle and dials after a random 5-10 s
// (fsmHandler.connectLoop), or, when the agent was down longer, every
// connect-retry interval (5 s by default): the live ones return within 5 s
// of the first. A next hop whose peer has not returned by then, in a prefix
// that a returned peer announces again, is taken for a node that died
// while the agent was down.
const reconnectSpread = 5 * time.Second

// stalePeer is what the stale decision needs to know of one peer.
type stalePeer struct {
	up       bool
	endOfRIB bool
	// bfdDown: BFD says the node is unreachable (its next hops go at once).
	bfdDown bool
}

// keepStale adds to fromBGP the next hops kept from the previous run that
// stay for now, and counts them. A kept next hop leaves
//   - when its own peer sent End-of-RIB (what that peer announces now is
//     complete), or BFD says its node is unreachable, or
//   - once settled (see reconnectSpread), when its peer has not come back
//     and the prefix has a fresh next hop from a peer that has: the node
//     is gone, and the prefix still has somewhere to go. Where it is the
//     prefix's last next hop it stays until its peer returns or the stale
//     timeout passes (a route to a dead node costs nothing more than no
//     route; a missing route to a slow node does).
//
// It is pure: the caller gives the peers' state and the time decision.
func keepStale(fromBGP, stale map[netip.Prefix][]netip.Addr, peers map[netip.Addr]stalePeer, settled bool) (map[netip.Prefix][]netip.Addr, int) {
	out := clone(fromBGP)
	kept := 0
	for pfx, nhs := range stale {
		fresh := len(fromBGP[pfx]) > 0
		for _, nh := range nhs {
			if slices.Contains(out[pfx], nh) {
				continue
			}
			p := peers[nh]
			if p.endOfRIB || p.bfdDown || (settled && !p.up && fresh) {
				continue
			}
			out[pfx] = append(out[pfx], nh)
			kept++
		}
		if nhs := out[pfx]; len(nhs) > 0 {
			slices.SortFunc(nhs, netip.Addr.Compare)
		}
	}
	return out, kept
}

func clone(m map[netip.Prefix][]netip.Addr) map[netip.Prefix][]netip.Addr {
	out := make(map[netip.Prefix][]netip.Addr, len(m))
	for k, v := range m {
		out[k] = slices.Clone(v)
	}
	return out
}
