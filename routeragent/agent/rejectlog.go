package agent

import (
	"net/netip"

	"github.com/bgplb/bgplb/routeragent/policy"
)

// rejectKey is one rejected announcement.
type rejectKey struct {
	peer   netip.Addr
	prefix netip.Prefix
	reason policy.Reason
}

// maxRejectLogs bounds the lines one pass writes (a speaker announcing
// 10,000 bad prefixes must not flood the journal); the rest is summarised.
const maxRejectLogs = 20

// logRejections logs each rejection once, when it first appears (run loop
// only). Status and metrics keep the counts.
func (a *Agent) logRejections(rejected []policy.Rejected) {
	seen := make(map[rejectKey]bool, len(rejected))
	logged, more := 0, 0
	for _, r := range rejected {
		k := rejectKey{r.Path.Peer, r.Path.Prefix, r.Reason}
		seen[k] = true
		if a.rejectedBefore[k] {
			continue
		}
		if logged < maxRejectLogs {
			a.log.Warn("announcement rejected", "peer", r.Path.Peer.String(), "prefix", r.Path.Prefix.String(),
				"nextHop", r.Path.NextHop.String(), "reason", string(r.Reason))
			logged++
		} else {
			more++
		}
	}
	if more > 0 {
		a.log.Warn("more announcements rejected", "count", more)
	}
	a.rejectedBefore = seen
}
