package agent

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bgplb/bgplb/internal/bfd"
	"github.com/bgplb/bgplb/routeragent/bgp"
	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/policy"
)

// bfdSpeaker is fakeSpeaker with the peers' session details BFD needs,
// and a record of the resets.
type bfdSpeaker struct {
	*fakeSpeaker
	peers  []bgp.PeerState
	resets []netip.Addr
}

func (s *bfdSpeaker) Peers() []bgp.PeerState { return slices.Clone(s.peers) }
func (s *bfdSpeaker) Reset(_ context.Context, peer netip.Addr, _ string) error {
	s.resets = append(s.resets, peer)
	return nil
}

func (s *bfdSpeaker) setPeer(p bgp.PeerState) {
	for i := range s.peers {
		if s.peers[i].Address == p.Address {
			s.peers[i] = p
			return
		}
	}
	s.peers = append(s.peers, p)
}

// fakeBFD keeps sessions whose state the test sets.
type fakeBFD struct {
	sessions map[netip.Addr]*bfd.SessionState
	configs  map[netip.Addr]bfd.SessionConfig
	adds     int
	downs    uint64 // as the Manager's counter: kept when a session goes
	changed  chan struct{}
	closed   bool
}

func newFakeBFD() *fakeBFD {
	return &fakeBFD{sessions: map[netip.Addr]*bfd.SessionState{}, configs: map[netip.Addr]bfd.SessionConfig{}, changed: make(chan struct{}, 1)}
}

func (f *fakeBFD) AddSession(_ context.Context, c bfd.SessionConfig) error {
	f.adds++
	if _, ok := f.sessions[c.Peer]; !ok {
		f.sessions[c.Peer] = &bfd.SessionState{Peer: c.Peer, Local: c.Local, State: bfd.StateDown, RemoteState: bfd.StateDown}
	}
	f.configs[c.Peer] = c
	return nil
}
func (f *fakeBFD) RemoveSession(p netip.Addr) error {
	delete(f.sessions, p)
	delete(f.configs, p)
	return nil
}
func (f *fakeBFD) Sessions() []bfd.SessionState {
	var out []bfd.SessionState
	for _, s := range f.sessions {
		out = append(out, *s)
	}
	return out
}
func (f *fakeBFD) Changed() <-chan struct{} { return f.changed }
func (f *fakeBFD) Counters() bfd.Counters {
	return bfd.Counters{DownEvents: f.downs}
}
func (f *fakeBFD) Close() error { f.closed = true; return nil }

func (f *fakeBFD) up(p netip.Addr) {
	s := f.sessions[p]
	s.State, s.RemoteState, s.Diag = bfd.StateUp, bfd.StateUp, bfd.DiagNone
	s.UpTransitions++
}

// down takes the session down with diag d, the speaker's state being remote.
func (f *fakeBFD) down(p netip.Addr, d bfd.Diag, remote bfd.State) {
	s := f.sessions[p]
	s.State, s.RemoteState, s.Diag = bfd.StateDown, remote, d
	s.LastChange = time.Now()
	s.Counters.DownEvents++
	f.downs++
}

const bfdAgentConfig = `asn: 64500
routerID: 192.168.2.1
neighbors:
  - {prefix: 192.168.2.0/24, asn: 64512, allowUnauthenticated: true, bfd: {enabled: true, receiveInterval: 200ms, detectMultiplier: 4}}
  - {address: 192.168.3.9, asn: 64512}
serviceSubnets: [192.168.254.0/24]
lanInterfaces: [lan0]
`

func bfdTestAgent(t *testing.T, yaml string, sp *bfdSpeaker, rt *fakeRoutes, fb *fakeBFD) (*Agent, *int) {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	made := 0
	a := New(cfg, Deps{Speaker: sp, Routes: rt, LAN: func([]string) ([]netip.Prefix, []netip.Addr, []string, error) {
		return []netip.Prefix{netip.MustParsePrefix("192.168.2.0/24"), netip.MustParsePrefix("192.168.3.0/24")},
			[]netip.Addr{netip.MustParseAddr("192.168.2.1")}, nil, nil
	}, NewBFD: func(*slog.Logger) BFD { made++; return fb }}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	a.retry, a.release = time.NewTimer(time.Hour), time.NewTimer(time.Hour)
	a.retry.Stop()
	a.release.Stop()
	a.refreshLAN()
	t.Cleanup(a.closeBFD)
	return a, &made
}

// TestBFDFailureWithdrawsAndResets: the agent runs one BFD session per
// established BGP session of a bfd-enabled entry, between the session's
// addresses and with the entry's timers. When a session that was Up fails,
// that pass leaves the peer's next hop out of the routes and resets its BGP
// session, once; the session follows the BGP session (gone with it, new
// for a new one) and the peer's next hop is back with it.
func TestBFDFailureWithdrawsAndResets(t *testing.T) {
	local := netip.MustParseAddr("192.168.2.1")
	pC := netip.MustParseAddr("192.168.3.9") // an entry without BFD
	t0 := time.Now().Add(-time.Minute)
	sp := &bfdSpeaker{fakeSpeaker: &fakeSpeaker{eor: map[netip.Addr]bool{}, paths: []policy.Path{
		{Peer: pA, NextHop: pA, Prefix: svc1}, {Peer: pB, NextHop: pB, Prefix: svc1}, {Peer: pC, NextHop: pC, Prefix: svc1},
	}}, peers: []bgp.PeerState{
		{Address: pA, State: "established", Up: true, Since: t0, Local: local, Received: 1},
		{Address: pB, State: "established", Up: true, Since: t0, Local: local, Received: 1},
		{Address: pC, State: "established", Up: true, Since: t0, Local: local, Received: 1},
	}}
	rt, fb := &fakeRoutes{}, newFakeBFD()
	a, _ := bfdTestAgent(t, bfdAgentConfig, sp, rt, fb)
	route := func(want ...netip.Addr) {
		t.Helper()
		if d := cmp.Diff(want, rt.installed[svc1], cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); d != "" {
			t.Fatalf("next hops of %s (-want +got):\n%s", svc1, d)
		}
	}

	a.reconcile(t.Context(), true)
	wantCfg := bfd.SessionConfig{Local: local, Peer: pA, DesiredMinTx: 300 * time.Millisecond, RequiredMinRx: 200 * time.Millisecond, DetectMultiplier: 4}
	if d := cmp.Diff(wantCfg, fb.configs[pA], cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); d != "" {
		t.Errorf("session to A (-want +got):\n%s", d)
	}
	if len(fb.sessions) != 2 || fb.sessions[pC] != nil {
		t.Errorf("sessions %v: want A and B only (C's entry has no bfd)", fb.Sessions())
	}
	route(pA, pB, pC)
	// Not Up yet is no failure: a speaker without BFD keeps its routes.
	fb.up(pA)
	fb.up(pB)
	a.reconcile(t.Context(), false)
	route(pA, pB, pC)

	// A's BFD detection time passes: its next hop goes in this pass.
	fb.down(pA, bfd.DiagControlDetectionTimeExpired, bfd.StateDown)
	a.reconcile(t.Context(), false)
	route(pB, pC)
	if !slices.Equal(sp.resets, []netip.Addr{pA}) {
		t.Errorf("resets %v, want [A]", sp.resets)
	}
	st := a.Snapshot()
	pa := peerStatus(t, st, pA)
	if pa.BFD == nil || pa.BFD.State != "down" || !pa.BFD.Withdrawn || pa.BFD.Resets != 1 ||
		pa.BFD.Diag != "control detection time expired" || pa.BFD.ReceiveInterval != "200ms" || pa.BFD.DetectMultiplier != 4 {
		t.Errorf("status of A's BFD: %+v", pa.BFD)
	}
	if st.BFD == nil || st.BFD.Sessions["up"] != 1 || st.BFD.Sessions["down"] != 1 || st.BFD.DownEvents != 1 || st.BFD.Resets != 1 || st.BFD.Withdrawn != 1 {
		t.Errorf("BFD summary: %+v", st.BFD)
	}
	if pc := peerStatus(t, st, pC); pc.BFD != nil {
		t.Errorf("C has BFD status without bfd: %+v", pc.BFD)
	}
	// Another pass: no second reset for the same failure.
	a.reconcile(t.Context(), false)
	if len(sp.resets) != 1 {
		t.Errorf("resets %v after another pass, want one", sp.resets)
	}

	// The reset took: the session is idle, GoBGP not done dropping the
	// paths yet. They stay withdrawn, the BFD session stays.
	sp.setPeer(bgp.PeerState{Address: pA, State: "idle", Since: time.Now(), Received: 1})
	a.reconcile(t.Context(), false)
	route(pB, pC)
	if fb.sessions[pA] == nil {
		t.Error("A's BFD session removed while its paths are still held")
	}
	// Paths dropped: the BFD session goes with the peer.
	sp.paths = sp.paths[1:]
	sp.setPeer(bgp.PeerState{Address: pA, State: "idle", Since: time.Now()})
	a.reconcile(t.Context(), false)
	if fb.sessions[pA] != nil {
		t.Error("A's BFD session kept without a BGP session or paths")
	}
	// A is back: a new BGP session gets a new BFD session; its route is
	// accepted again.
	t1 := time.Now()
	sp.setPeer(bgp.PeerState{Address: pA, State: "established", Up: true, Since: t1, Local: local, Received: 1})
	sp.paths = append(sp.paths, policy.Path{Peer: pA, NextHop: pA, Prefix: svc1})
	a.reconcile(t.Context(), false)
	route(pA, pB, pC)
	if s := fb.sessions[pA]; s == nil || s.UpTransitions != 0 {
		t.Errorf("A's new BFD session: %+v", s)
	}
	if st := peerStatus(t, a.Snapshot(), pA); st.BFD == nil || st.BFD.Withdrawn {
		t.Errorf("A's BFD after its return: %+v", st.BFD)
	}

	// B's speaker takes its session AdminDown (BFD turned off, a clean
	// stop): no failure (RFC 5882 3.2), no reset, its route stays.
	fb.down(pB, bfd.DiagNeighborSignaledSessionDown, bfd.StateAdminDown)
	a.reconcile(t.Context(), false)
	route(pA, pB, pC)
	if len(sp.resets) != 1 {
		t.Errorf("resets %v after B's AdminDown, want A's only", sp.resets)
	}
	// B's speaker signals Down (its own detection time passed): a failure.
	fb.up(pB)
	a.reconcile(t.Context(), false)
	fb.down(pB, bfd.DiagNeighborSignaledSessionDown, bfd.StateDown)
	a.reconcile(t.Context(), false)
	route(pA, pC)
	if !slices.Equal(sp.resets, []netip.Addr{pA, pB}) {
		t.Errorf("resets %v, want [A B]", sp.resets)
	}
	// B's BFD comes back Up on the same BGP session: its route is back.
	fb.up(pB)
	a.reconcile(t.Context(), false)
	route(pA, pB, pC)

	// B's BFD fails; before GoBGP dropped its paths, B is back with a
	// new BGP session (its paths held meanwhile): the same BFD session
	// carries on (no AdminDown to B), the new BGP session starts without
	// the old failure, and is not reset for it.
	fb.down(pB, bfd.DiagControlDetectionTimeExpired, bfd.StateDown)
	a.reconcile(t.Context(), false)
	route(pA, pC)
	sp.setPeer(bgp.PeerState{Address: pB, State: "established", Up: true, Since: time.Now(), Local: local, Received: 1})
	discr := fb.sessions[pB]
	a.reconcile(t.Context(), false)
	route(pA, pB, pC)
	if fb.sessions[pB] != discr || len(sp.resets) != 3 {
		t.Errorf("after B's new BGP session: session replaced %v, resets %v (want [A B B])", fb.sessions[pB] != discr, sp.resets)
	}
	fb.up(pB)
	a.reconcile(t.Context(), false)

	got := gatherMetrics(t, a)
	for k, v := range map[string]float64{
		"bgplb_routeragent_bfd_sessions{state=up}":        1, // B
		"bgplb_routeragent_bfd_sessions{state=down}":      1, // A's new one, not Up yet
		"bgplb_routeragent_bfd_sessions{state=adminDown}": 0,
		"bgplb_routeragent_bfd_down_events_total{}":       4,
		"bgplb_routeragent_bfd_bgp_resets_total{}":        3,
		"bgplb_routeragent_bfd_withdrawn_peers{}":         0,
	} {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
}

// TestBFDOffNoManager: without a bfd-enabled entry no Manager is made (no
// socket on 3784); a reload that turns BFD off closes it.
func TestBFDOffNoManager(t *testing.T) {
	sp := &bfdSpeaker{fakeSpeaker: &fakeSpeaker{eor: map[netip.Addr]bool{}}, peers: []bgp.PeerState{
		{Address: pA, State: "established", Up: true, Since: time.Now(), Local: netip.MustParseAddr("192.168.2.1")}}}
	fb := newFakeBFD()
	a, made := bfdTestAgent(t, baseUnitConfig, sp, &fakeRoutes{}, fb)
	a.reconcile(t.Context(), true)
	if *made != 0 || a.Snapshot().BFD != nil {
		t.Fatalf("BFD Manager made without a bfd entry (made %d)", *made)
	}
	cfg, err := config.Parse([]byte(bfdAgentConfig))
	if err != nil {
		t.Fatal(err)
	}
	a.cfg = cfg
	a.reconcile(t.Context(), true)
	if *made != 1 || len(fb.sessions) != 1 {
		t.Fatalf("after enabling: made %d, sessions %v", *made, fb.Sessions())
	}
	cfg, _ = config.Parse([]byte(baseUnitConfig))
	a.cfg = cfg
	a.reconcile(t.Context(), true)
	if !fb.closed || a.Snapshot().BFD != nil {
		t.Errorf("after disabling: closed %v", fb.closed)
	}
}

const baseUnitConfig = `asn: 64500
routerID: 192.168.2.1
neighbors: [{prefix: 192.168.2.0/24, asn: 64512, allowUnauthenticated: true}]
serviceSubnets: [192.168.254.0/24]
lanInterfaces: [lan0]
`

// TestWantBFD: sessions only for established sessions of bfd entries, of
// the session's own family; a down session is kept only while it has paths.
func TestWantBFD(t *testing.T) {
	cfg, err := config.Parse([]byte(bfdAgentConfig))
	if err != nil {
		t.Fatal(err)
	}
	local := netip.MustParseAddr("192.168.2.1")
	now := time.Now()
	kept := bfdWant{owner: now.Add(-time.Hour), cfg: bfd.SessionConfig{Local: local, Peer: netip.MustParseAddr("192.168.2.31")}}
	have := map[netip.Addr]bfdWant{netip.MustParseAddr("192.168.2.31"): kept, netip.MustParseAddr("192.168.2.32"): kept}
	got := wantBFD(cfg, []bgp.PeerState{
		{Address: netip.MustParseAddr("192.168.2.30"), Up: true, Since: now, Local: local},
		{Address: netip.MustParseAddr("192.168.2.31"), Received: 3},           // down, paths held: kept
		{Address: netip.MustParseAddr("192.168.2.32")},                        // down, no paths: gone
		{Address: netip.MustParseAddr("192.168.2.33"), Received: 3},           // down, never had one
		{Address: netip.MustParseAddr("192.168.2.34"), Up: true},              // no local address known
		{Address: netip.MustParseAddr("192.168.3.9"), Up: true, Local: local}, // entry without bfd
	}, have)
	keys := slices.SortedFunc(func(yield func(netip.Addr) bool) {
		for k := range got {
			if !yield(k) {
				return
			}
		}
	}, netip.Addr.Compare)
	if want := []netip.Addr{netip.MustParseAddr("192.168.2.30"), netip.MustParseAddr("192.168.2.31")}; !slices.Equal(keys, want) {
		t.Fatalf("sessions for %v, want %v", keys, want)
	}
	if w := got[netip.MustParseAddr("192.168.2.30")]; !w.owner.Equal(now) || w.cfg.Local != local || w.cfg.DetectMultiplier != 4 {
		t.Errorf("session for .30: %+v", w)
	}
	if got[netip.MustParseAddr("192.168.2.31")] != kept {
		t.Errorf("kept session changed: %+v", got[netip.MustParseAddr("192.168.2.31")])
	}
}

func peerStatus(t *testing.T, s Status, a netip.Addr) PeerStatus {
	t.Helper()
	for _, p := range s.Peers {
		if p.Address == a {
			return p
		}
	}
	t.Fatalf("no status row for %v", a)
	return PeerStatus{}
}

func gatherMetrics(t *testing.T, a *Agent) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{a: a})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName() + "{"
			for i, l := range m.GetLabel() {
				if i > 0 {
					key += ","
				}
				key += l.GetName() + "=" + l.GetValue()
			}
			v := m.GetGauge().GetValue()
			if m.GetCounter() != nil {
				v = m.GetCounter().GetValue()
			}
			got[key+"}"] = v
		}
	}
	return got
}
