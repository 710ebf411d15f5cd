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
	// actionReset: the session went down after having been up because
	// the path failed, as seen by us or by the peer.
	actionReset
	// actionPeerAdminDown: the peer took BFD down administratively (RFC
	// 5882 3.2: not a failure of the path); the BGP session stays.
	actionPeerAdminDown
	// actionPeerRestarted: the peer's BFD session went down without a
	// failure of the path (see decide); the BGP session stays.
	actionPeerRestarted
)

// decide compares a session's state with what was last observed. It works
// on levels (the session's count of downs from Up and the cause of the
// last one), so a Down that the coalescing Changed channel folded together
// with the following Up still resets the BGP session, and a second look at
// the same Down does not.
//
// A Down is a failure of the path when our detection time expired, or when
// the peer says Down with a diagnostic of a failure it saw (its detection
// time expired, path down...). A peer that says Down with no diagnostic or
// with "neighbor signaled session down" re-created its session: FRR's bgpd
// re-registers its BFD session with the BGP session's source address when
// the BGP session comes up, and bfdd starts a new session for it (measured
// with FRR 8.4: our session goes Down with diag 3 from the peer's new
// session and is Up again within a second). Resetting BGP then would only
// bring that about again; a router that really restarted closes the BGP
// session by itself.
func decide(prev observed, st ibfd.SessionState) (observed, action) {
	if prev.discr != st.LocalDiscr {
		// A new session: everything it counted is news.
		prev = observed{discr: st.LocalDiscr}
	}
	next := observed{discr: st.LocalDiscr, downs: st.Counters.DownEvents}
	if st.Counters.DownEvents <= prev.downs {
		return next, actionNone
	}
	c := st.LastDown
	switch {
	case c.Diag == ibfd.DiagControlDetectionTimeExpired:
		return next, actionReset
	case c.RemoteState == ibfd.StateAdminDown:
		return next, actionPeerAdminDown
	case c.Diag == ibfd.DiagNeighborSignaledSessionDown && peerSawFailure(c.RemoteDiag):
		return next, actionReset
	case c.Diag == ibfd.DiagNeighborSignaledSessionDown:
		return next, actionPeerRestarted
	}
	// Any other cause of ours (none is set today) counts as a failure.
	return next, actionReset
}

// peerSawFailure reports whether a peer's diagnostic names a failure of
// the path (RFC 5880 4.1) rather than a restart or an administrative act.
func peerSawFailure(d ibfd.Diag) bool {
	switch d {
	case ibfd.DiagNone, ibfd.DiagNeighborSignaledSessionDown, ibfd.DiagAdministrativelyDown:
		return false
	}
	return true
}
