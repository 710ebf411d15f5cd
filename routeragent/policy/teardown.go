package policy

import "net/netip"

// OverLimit returns the peers that have paths rejected for going over their
// max-prefix limit.
func OverLimit(rejected []Rejected) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	for _, r := range rejected {
		if r.Reason == RejectMaxPrefixes {
			out[r.Path.Peer] = true
		}
	}
	return out
}

// Exclude rejects every accepted path of the given peers with reason
// max-prefixes (a peer whose session is torn down at its limit keeps
// nothing). Both results stay sorted as Evaluate sorts them.
func Exclude(accepted []Path, rejected []Rejected, peers map[netip.Addr]bool) ([]Path, []Rejected) {
	if len(peers) == 0 {
		return accepted, rejected
	}
	kept := make([]Path, 0, len(accepted))
	moved := false
	for _, p := range accepted {
		if peers[p.Peer] {
			rejected = append(rejected, Rejected{Path: p, Reason: RejectMaxPrefixes})
			moved = true
			continue
		}
		kept = append(kept, p)
	}
	if moved {
		sortRejected(rejected)
	}
	return kept, rejected
}
