package agent

import (
	"net/netip"
	"slices"
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

func TestGoneDynamicPeers(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	a1, a2, a3, fixed := netip.MustParseAddr("192.168.2.41"), netip.MustParseAddr("192.168.2.42"), netip.MustParseAddr("192.168.2.43"), netip.MustParseAddr("192.168.2.30")
	dynamic := func(p netip.Addr) bool { return p != fixed }
	tests := []struct {
		name    string
		tracked []netip.Addr
		present []netip.Addr
		until   map[netip.Addr]time.Time
		limit   int
		want    []netip.Addr
	}{
		{name: "gone and hold-down over: dropped", tracked: []netip.Addr{a1}, limit: 10,
			until: map[netip.Addr]time.Time{a1: now.Add(-time.Second)}, want: []netip.Addr{a1}},
		{name: "gone but in its hold-down: kept", tracked: []netip.Addr{a1}, limit: 10,
			until: map[netip.Addr]time.Time{a1: now.Add(time.Second)}},
		{name: "still tracked by the speaker: kept", tracked: []netip.Addr{a1}, present: []netip.Addr{a1}, limit: 10},
		{name: "an address: neighbour is never dropped", tracked: []netip.Addr{fixed}, limit: 0},
		{name: "beyond the bound the earliest hold-down ends go first", tracked: []netip.Addr{a1, a2, a3, fixed}, limit: 1,
			until: map[netip.Addr]time.Time{a1: now.Add(3 * time.Second), a2: now.Add(time.Second), a3: now.Add(2 * time.Second)},
			want:  []netip.Addr{a2, a3}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			present := func(p netip.Addr) bool { return slices.Contains(tc.present, p) }
			got := goneDynamicPeers(tc.tracked, dynamic, present, tc.until, now, tc.limit)
			if d := cmp.Diff(tc.want, got, cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); d != "" {
				t.Errorf("goneDynamicPeers (-want +got):\n%s", d)
			}
		})
	}
}

// TestTeardownOutlivesPeer: a dynamic peer torn down at its limit that the
// speaker then forgets (no session, no paths) keeps its status row and
// count while its hold-down lasts, and loses both (and every per-peer
// state) after it; with maxDynamicPeers 1 only one gone peer is tracked.
func TestTeardownOutlivesPeer(t *testing.T) {
	sp := &fakeSpeaker{eor: map[netip.Addr]bool{pA: true}}
	a := testAgent(t, sp, &fakeRoutes{})
	cfg := a.config()
	now := time.Now()
	a.recordTeardown(teardown{peer: pA, overLimit: true}, now)
	delete(sp.eor, pA) // the speaker forgot it
	a.expireHoldDowns(cfg, now.Add(time.Second))
	a.reconcile(t.Context(), true)
	rows := a.Snapshot().Peers
	if len(rows) != 1 || rows[0].Address != pA || rows[0].MaxPrefixTeardowns != 1 || rows[0].Up {
		t.Fatalf("in its hold-down, the gone peer's row: %+v", rows)
	}
	a.expireHoldDowns(cfg, now.Add(config.MaxPrefixesHoldDown+time.Second))
	if rows := a.Snapshot().Peers; len(rows) != 0 {
		t.Errorf("after its hold-down, rows of a gone dynamic peer: %+v", rows)
	}
	if len(a.maxPfx.closed)+len(a.maxPfx.holdDown)+len(a.maxPfx.teardowns) != 0 {
		t.Errorf("state of a gone dynamic peer kept: %+v", a.maxPfx)
	}

	cfg.MaxDynamicPeers = 1
	a.recordTeardown(teardown{peer: pA, overLimit: true}, now)
	a.recordTeardown(teardown{peer: pB, overLimit: true}, now.Add(time.Second))
	a.expireHoldDowns(cfg, now.Add(2*time.Second))
	rows = a.Snapshot().Peers
	if len(rows) != 1 || rows[0].Address != pB {
		t.Errorf("maxDynamicPeers 1: rows %+v, want only the later hold-down (%s)", rows, pB)
	}
}
