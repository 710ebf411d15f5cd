package bgp

import (
	"context"
	"fmt"

	api "github.com/osrg/gobgp/v3/api"
)

// idleHoldAfterReset is how long (seconds) a neighbor waits after
// ResetSession before it dials again; GoBGP's default is 30. A BFD session
// that went down resets the BGP session at once, and the session should be
// back as soon as the path is: GoBGP retries every ConnectRetry after this.
const idleHoldAfterReset = 1

// ResetSession closes the BGP session to peer with a Cease NOTIFICATION
// (administrative reset, RFC 4486, with reason as the RFC 9003 shutdown
// communication); the neighbor stays configured and dials again after
// idleHoldAfterReset. The speaker's BFD layer calls it when the BFD session
// to the peer went down: without the reset, GoBGP (which has no BFD) would
// keep the session until its hold timer expires. The paths are kept and
// announced again when the session is back.
//
// Only an Established session is reset (reset reports whether it was): as
// with FRR's bgpd, a BFD session that goes down while BGP is still
// connecting says nothing about a session that does not exist yet, and
// FRR's bfdd re-creates its BFD session while the BGP session comes up
// (TestFRRBGPWithBFD in speaker/bfd), which would otherwise reset the
// connection being opened.
func (m *Manager) ResetSession(ctx context.Context, peer, reason string) (reset bool, err error) {
	m.mu.Lock()
	s, ok := m.sessions[peer]
	if !ok || s.srv == nil {
		m.mu.Unlock()
		return false, fmt.Errorf("reset BGP session: no configured session for peer %q", peer)
	}
	srv, addr := s.srv, s.cfg.Address.Unmap()
	m.mu.Unlock()
	s.mu.Lock()
	established := s.state == "Established"
	s.mu.Unlock()
	if !established {
		return false, nil
	}
	// Outside m.mu: a long Set must not delay the reset, and GoBGP's
	// management calls are serialised by GoBGP itself. A neighbor deleted
	// meanwhile makes ResetPeer fail, which is reported and harmless.
	if err := srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: addr.String(), Communication: reason}); err != nil {
		return false, fmt.Errorf("reset BGP session to %s (%v): %w", peer, addr, err)
	}
	s.log.Info("BGP session reset", "reason", reason)
	return true, nil
}
