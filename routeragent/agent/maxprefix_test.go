package agent

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bgplb/bgplb/routeragent/bgp"
	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/policy"
)

// TestEnforceMaxPrefixes: the pure decision of maxPrefixesAction teardown.
func TestEnforceMaxPrefixes(t *testing.T) {
	cfg, err := config.Parse([]byte(`asn: 64500
routerID: 192.168.2.1
neighbors:
  - {prefix: 192.168.2.0/24, asn: 64512, maxPrefixes: 2, allowUnauthenticated: true} # no secret in tests
  - {address: 192.168.2.30, asn: 64512, maxPrefixes: 5, maxPrefixesAction: reject}
serviceSubnets: [192.168.254.0/24]
lanInterfaces: [lan0]
`))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	pR := netip.MustParseAddr("192.168.2.30") // action reject
	overLimit := func(peers ...netip.Addr) []policy.Rejected {
		var out []policy.Rejected
		for _, p := range peers {
			out = append(out, policy.Rejected{Path: policy.Path{Peer: p, NextHop: p, Prefix: svc2}, Reason: policy.RejectMaxPrefixes})
		}
		return out
	}
	up := func(a netip.Addr, since time.Time) bgp.PeerState {
		return bgp.PeerState{Address: a, State: "established", Up: true, Since: since}
	}
	tests := []struct {
		name     string
		state    maxPrefixState
		rejected []policy.Rejected
		peers    []bgp.PeerState
		want     maxPrefixVerdict
	}{
		{name: "nobody over: nothing to do", rejected: []policy.Rejected{{Path: policy.Path{Peer: pA}, Reason: policy.RejectOutsideSubnets}},
			peers: []bgp.PeerState{up(pA, now.Add(-time.Hour))}},
		{name: "over the limit: dropped and disconnected", rejected: overLimit(pA), peers: []bgp.PeerState{up(pA, now.Add(-time.Hour)), up(pB, now.Add(-time.Hour))},
			want: maxPrefixVerdict{drop: map[netip.Addr]bool{pA: true}, disconnect: []teardown{
				{peer: pA, overLimit: true, limit: 2, reason: "bgplb: more than maxPrefixes (2) acceptable prefixes"}}}},
		{name: "action reject keeps the session", rejected: overLimit(pR), peers: []bgp.PeerState{up(pR, now.Add(-time.Hour))}},
		{name: "over but the session is down: dropped only", rejected: overLimit(pA), peers: []bgp.PeerState{{Address: pA, State: "active"}},
			want: maxPrefixVerdict{drop: map[netip.Addr]bool{pA: true}}},
		{name: "already closed this session: dropped only",
			state:    maxPrefixState{closed: map[netip.Addr]time.Time{pA: now.Add(-time.Second)}},
			rejected: overLimit(pA), peers: []bgp.PeerState{up(pA, now.Add(-time.Minute))},
			want: maxPrefixVerdict{drop: map[netip.Addr]bool{pA: true}}},
		{name: "reconnected during the hold-down: dropped and closed again",
			state: maxPrefixState{holdDown: map[netip.Addr]time.Time{pA: now.Add(time.Second)}, closed: map[netip.Addr]time.Time{pA: now.Add(-time.Minute)}},
			peers: []bgp.PeerState{up(pA, now.Add(-time.Second))},
			want: maxPrefixVerdict{drop: map[netip.Addr]bool{pA: true}, disconnect: []teardown{
				{peer: pA, limit: 2, reason: "bgplb: refused for 1m0s after going over maxPrefixes (2)"}}}},
		{name: "hold-down over: accepted again",
			state: maxPrefixState{holdDown: map[netip.Addr]time.Time{pA: now}, closed: map[netip.Addr]time.Time{pA: now.Add(-time.Minute)}},
			peers: []bgp.PeerState{up(pA, now.Add(-time.Second))}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			peers := func() []bgp.PeerState { calls++; return tc.peers }
			got := tc.state.enforceMaxPrefixes(cfg, tc.rejected, peers, now)
			if d := cmp.Diff(tc.want, got, cmp.AllowUnexported(maxPrefixVerdict{}, teardown{}), cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); d != "" {
				t.Errorf("verdict (-want +got):\n%s", d)
			}
			if len(tc.want.drop) == 0 && calls != 0 {
				t.Errorf("listed the peers %d times with nobody to drop", calls)
			}
		})
	}
}
