package gobgputil

import api "github.com/osrg/gobgp/v3/api"

// StateName is the RFC 4271 name of a session state ("Idle", "Connect",
// "Active", "OpenSent", "OpenConfirm", "Established"; "Unknown" otherwise),
// as the speaker's BGPSessionState reports it. The router agent's status
// shows the same names in lower case.
func StateName(s api.PeerState_SessionState) string {
	switch s {
	case api.PeerState_IDLE:
		return "Idle"
	case api.PeerState_CONNECT:
		return "Connect"
	case api.PeerState_ACTIVE:
		return "Active"
	case api.PeerState_OPENSENT:
		return "OpenSent"
	case api.PeerState_OPENCONFIRM:
		return "OpenConfirm"
	case api.PeerState_ESTABLISHED:
		return "Established"
	}
	return "Unknown"
}
