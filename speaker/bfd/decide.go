package bfd

import (
	ibfd "github.com/bgplb/bgplb/internal/bfd"
)

// observed is what the watcher last saw of one session: which session (its
// local discriminator: a re-created session has a new one) and how many
// times it had gone down from Up.
type observed struct {
	discr uint32
	downs uint64
}

// action is what a session's new level asks of the BGP session.
type action int

const (
	actionNone action = iota
	// actionReset: the session went down after having been up.
	actionReset
	// actionPeerAdminDown: the peer took BFD down administratively (RFC
	// 5882 3.2: not a failure of the path); the BGP session stays.
	actionPeerAdminDown
)

// decide compares a session's state with what was last observed. It works
// on levels (the session's count of downs from Up), so a Down that the
// coalescing Changed channel folded together with the following Up still
// resets the BGP session, and a second look at the same Down does not.
func decide(prev observed, st ibfd.SessionState) (observed, action) {
	if prev.discr != st.LocalDiscr {
		// A new session: everything it counted is news.
		prev = observed{discr: st.LocalDiscr}
	}
	next := observed{discr: st.LocalDiscr, downs: st.Counters.DownEvents}
	if st.Counters.DownEvents <= prev.downs {
		return next, actionNone
	}
	if st.State != ibfd.StateUp && st.RemoteState == ibfd.StateAdminDown && st.Diag == ibfd.DiagNeighborSignaledSessionDown {
		return next, actionPeerAdminDown
	}
	return next, actionReset
}
