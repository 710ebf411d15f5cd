package bgp

import (
	"maps"
	"net/netip"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"

	"github.com/bgplb/bgplb/internal/verdict"
)

// The router's verdicts (docs/verdict.md): a bgplb-routeragent announces
// back, for every path this node announced to it, the same prefix with large
// communities that say what it did with it (package internal/verdict). The
// speaker reads them from each neighbor's adj-RIB-in, before policy (the
// global import policy rejects every received path, see rejectImports, so
// none is ever installed, preferred over our own or re-advertised), through
// the same watch as the session states. Each neighbor negotiates ADD-PATH
// receive, which is how the agent sends one peer's verdict on a prefix
// beside the paths of other peers (a router that does not send ADD-PATH is
// unaffected). A path without the verdict marker of the neighbor's ASN is
// not a verdict and is ignored: FRR, BIRD or any router that does not
// report sends none, and the speaker reads their absence as "the router does
// not report".

// Verdicts returns the verdicts the router of peer sent on the prefixes of
// the current session (nil when none), a copy.
func (m *Manager) Verdicts(peer string) map[netip.Prefix]verdict.Verdict {
	m.mu.Lock()
	s := m.sessions[peer]
	m.mu.Unlock()
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.verdicts) == 0 {
		return nil
	}
	return maps.Clone(s.verdicts)
}

// onPathEvent applies received paths (pre-policy) to the verdicts of their
// session. It runs on GoBGP's watcher goroutine: no m.mu.
func (m *Manager) onPathEvent(t *api.WatchEventResponse_TableEvent) {
	changed := false
	for _, p := range t.Paths {
		addr, err := netip.ParseAddr(p.NeighborIp)
		if err != nil || p.Nlri == nil {
			continue // a local path or an End-of-RIB
		}
		m.addrMu.Lock()
		s := m.byAddr[addr.Unmap()]
		m.addrMu.Unlock()
		if s != nil && s.applyVerdictPath(p) {
			changed = true
		}
	}
	if changed {
		m.verdictGen.Add(1)
		m.signal()
	}
}

// VerdictGeneration changes whenever any session's verdicts changed.
func (m *Manager) VerdictGeneration() uint64 { return m.verdictGen.Load() }

// applyVerdictPath records or forgets the verdict one path carries and
// reports whether the session's verdicts changed.
func (s *session) applyVerdictPath(p *api.Path) bool {
	nlri, err := apiutil.GetNativeNlri(p)
	if err != nil {
		return false
	}
	pfx, err := netip.ParsePrefix(nlri.String())
	if err != nil {
		return false
	}
	v, ok := verdict.Verdict{}, false
	if !p.IsWithdraw {
		v, ok = decodeVerdict(s.cfg.PeerASN, p)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, had := s.verdicts[pfx]
	// With ADD-PATH a prefix may have several paths, told apart by their
	// identifier: the router replaces a verdict by a new path and then
	// withdraws the old one, so only the path that carries the verdict
	// may take it away.
	sameID := had && s.verdictIDs[pfx] == p.Identifier
	switch {
	case ok:
		if s.verdicts == nil {
			s.verdicts, s.verdictIDs = map[netip.Prefix]verdict.Verdict{}, map[netip.Prefix]uint32{}
		}
		s.verdictIDs[pfx] = p.Identifier
		if had && old == v {
			return false
		}
		s.verdicts[pfx] = v
		s.log.V(1).Info("router verdict", "prefix", pfx, "verdict", v.String())
		return true
	case sameID:
		delete(s.verdicts, pfx)
		delete(s.verdictIDs, pfx)
		return true
	}
	return false
}

// decodeVerdict reads the verdict of a received path, if it carries one.
func decodeVerdict(routerASN uint32, p *api.Path) (verdict.Verdict, bool) {
	attrs, err := apiutil.GetNativePathAttributes(p)
	if err != nil {
		return verdict.Verdict{}, false
	}
	for _, a := range attrs {
		if lc, ok := a.(*bgp.PathAttributeLargeCommunities); ok {
			cs := make([]verdict.LargeCommunity, 0, len(lc.Values))
			for _, c := range lc.Values {
				cs = append(cs, verdict.LargeCommunity{GlobalAdmin: c.ASN, LocalData1: c.LocalData1, LocalData2: c.LocalData2})
			}
			return verdict.Decode(routerASN, cs)
		}
	}
	return verdict.Verdict{}, false
}

// verdictCounts counts a session's verdicts: installed (the router's
// kernel has the route) and rejected.
func verdictCounts(vs map[netip.Prefix]verdict.Verdict) (installed, rejected int) {
	for _, v := range vs {
		switch v.State {
		case verdict.Installed:
			installed++
		case verdict.Rejected:
			rejected++
		}
	}
	return installed, rejected
}
