package bfd

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/google/go-cmp/cmp"

	ibfd "github.com/bgplb/bgplb/internal/bfd"
)

func TestDecide(t *testing.T) {
	up := func(discr uint32, downs uint64, last ibfd.DownCause) ibfd.SessionState {
		return ibfd.SessionState{LocalDiscr: discr, State: ibfd.StateUp, RemoteState: ibfd.StateUp, LastDown: last, Counters: ibfd.Counters{DownEvents: downs}}
	}
	down := func(discr uint32, downs uint64, last ibfd.DownCause) ibfd.SessionState {
		return ibfd.SessionState{LocalDiscr: discr, State: ibfd.StateDown, RemoteState: last.RemoteState, Diag: last.Diag, LastDown: last, Counters: ibfd.Counters{DownEvents: downs}}
	}
	expired := ibfd.DownCause{Diag: ibfd.DiagControlDetectionTimeExpired, RemoteState: ibfd.StateUp}
	peerExpired := ibfd.DownCause{Diag: ibfd.DiagNeighborSignaledSessionDown, RemoteDiag: ibfd.DiagControlDetectionTimeExpired, RemoteState: ibfd.StateDown}
	peerPathDown := ibfd.DownCause{Diag: ibfd.DiagNeighborSignaledSessionDown, RemoteDiag: bfdDiagPathDown, RemoteState: ibfd.StateDown}
	peerAdmin := ibfd.DownCause{Diag: ibfd.DiagNeighborSignaledSessionDown, RemoteDiag: ibfd.DiagAdministrativelyDown, RemoteState: ibfd.StateAdminDown}
	// FRR's bfdd re-creating its session when bgpd re-registers it with
	// the BGP session's source address (seen in TestFRRBGPWithBFD).
	peerNew := ibfd.DownCause{Diag: ibfd.DiagNeighborSignaledSessionDown, RemoteDiag: ibfd.DiagNeighborSignaledSessionDown, RemoteState: ibfd.StateDown}
	peerNew0 := ibfd.DownCause{Diag: ibfd.DiagNeighborSignaledSessionDown, RemoteDiag: ibfd.DiagNone, RemoteState: ibfd.StateDown}
	tests := []struct {
		name     string
		prev     observed
		st       ibfd.SessionState
		want     action
		wantNext observed
	}{
		{"first look, never up", observed{}, down(7, 0, ibfd.DownCause{}), actionNone, observed{7, 0}},
		{"up", observed{7, 0}, up(7, 0, ibfd.DownCause{}), actionNone, observed{7, 0}},
		{"detection time expired", observed{7, 0}, down(7, 1, expired), actionReset, observed{7, 1}},
		{"same down seen again", observed{7, 1}, down(7, 1, expired), actionNone, observed{7, 1}},
		{"peer's detection time expired", observed{7, 0}, down(7, 1, peerExpired), actionReset, observed{7, 1}},
		{"peer saw path down", observed{7, 0}, down(7, 1, peerPathDown), actionReset, observed{7, 1}},
		{"down and up again between two looks", observed{7, 1}, up(7, 2, expired), actionReset, observed{7, 2}},
		{"peer AdminDown keeps BGP", observed{7, 0}, down(7, 1, peerAdmin), actionPeerAdminDown, observed{7, 1}},
		{"peer re-created its session (diag 3)", observed{7, 0}, up(7, 1, peerNew), actionPeerRestarted, observed{7, 1}},
		{"peer re-created its session (diag 0)", observed{7, 0}, down(7, 1, peerNew0), actionPeerRestarted, observed{7, 1}},
		{"new session that went down before the first look", observed{7, 3}, down(9, 1, expired), actionReset, observed{9, 1}},
		{"new session up", observed{7, 3}, up(9, 0, ibfd.DownCause{}), actionNone, observed{9, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next, act := decide(tt.prev, tt.st)
			if act != tt.want || next != tt.wantNext {
				t.Errorf("decide(%+v, ...) = %+v, %v; want %+v, %v", tt.prev, next, act, tt.wantNext, tt.want)
			}
		})
	}
}

// bfdDiagPathDown is RFC 5880's diagnostic 5.
const bfdDiagPathDown ibfd.Diag = 5

// fakeEngine records calls and serves states the test sets.
type fakeEngine struct {
	mu      sync.Mutex
	changed chan struct{}
	states  map[netip.Addr]ibfd.SessionState
	calls   []string
	addErr  error
	closed  bool
}

func newFakeEngine() *fakeEngine {
	return &fakeEngine{changed: make(chan struct{}, 1), states: map[netip.Addr]ibfd.SessionState{}}
}

func (f *fakeEngine) AddSession(_ context.Context, c ibfd.SessionConfig) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.addErr != nil {
		return f.addErr
	}
	f.calls = append(f.calls, "add "+c.Peer.String()+" from "+c.Local.String()+" "+c.DesiredMinTx.String())
	if _, ok := f.states[c.Peer]; !ok {
		f.states[c.Peer] = ibfd.SessionState{Peer: c.Peer, Local: c.Local, LocalDiscr: uint32(len(f.calls)), State: ibfd.StateDown}
	}
	return nil
}

func (f *fakeEngine) RemoveSession(p netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "remove "+p.String())
	delete(f.states, p)
	return nil
}

func (f *fakeEngine) State(p netip.Addr) (ibfd.SessionState, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.states[p]
	return st, ok
}

func (f *fakeEngine) Sessions() []ibfd.SessionState { return nil }
func (f *fakeEngine) Changed() <-chan struct{}      { return f.changed }
func (f *fakeEngine) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

// set changes a session's state and signals, as the Manager does.
func (f *fakeEngine) set(p netip.Addr, fn func(*ibfd.SessionState)) {
	f.mu.Lock()
	st := f.states[p]
	fn(&st)
	f.states[p] = st
	f.mu.Unlock()
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

func (f *fakeEngine) takeCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

type fakeResetter struct {
	mu    sync.Mutex
	peers []string
	ch    chan string
}

func (r *fakeResetter) ResetSession(_ context.Context, peer, reason string) (bool, error) {
	r.mu.Lock()
	r.peers = append(r.peers, peer)
	r.mu.Unlock()
	r.ch <- peer + ": " + reason
	return true, nil
}

var (
	r1    = netip.MustParseAddr("192.168.2.1")
	r2    = netip.MustParseAddr("192.168.2.2")
	node  = netip.MustParseAddr("192.168.2.10")
	node2 = netip.MustParseAddr("192.168.2.11")
)

func newTest(t *testing.T) (*Sessions, *fakeEngine, *fakeResetter, *int) {
	eng := newFakeEngine()
	res := &fakeResetter{ch: make(chan string, 10)}
	made := 0
	local := node
	s := New(Options{Log: testr.New(t), Reset: res,
		NewEngine: func() Engine { made++; return eng },
		LocalAddr: func(netip.Addr) (netip.Addr, error) { return local, nil },
	})
	t.Cleanup(func() { _ = s.Close() })
	return s, eng, res, &made
}

func TestSetLevelTriggered(t *testing.T) {
	s, eng, _, made := newTest(t)
	ctx := context.Background()
	p := func(name string, addr netip.Addr, tx time.Duration) Peer {
		return Peer{Name: name, Address: addr, TransmitInterval: tx, ReceiveInterval: 300 * time.Millisecond, DetectMultiplier: 3}
	}
	steps := []struct {
		name  string
		peers []Peer
		want  []string
	}{
		{"no peer: no engine", nil, nil},
		{"first peer", []Peer{p("a", r1, 300*time.Millisecond)}, []string{"add 192.168.2.1 from 192.168.2.10 300ms"}},
		{"unchanged: no call (no Poll Sequence)", []Peer{p("a", r1, 300*time.Millisecond)}, nil},
		{"timers changed", []Peer{p("a", r1, 100*time.Millisecond)}, []string{"add 192.168.2.1 from 192.168.2.10 100ms"}},
		{"second peer", []Peer{p("a", r1, 100*time.Millisecond), p("b", r2, 300*time.Millisecond)}, []string{"add 192.168.2.2 from 192.168.2.10 300ms"}},
		{"source address set", []Peer{p("a", r1, 100*time.Millisecond), {Name: "b", Address: r2, Local: node2, TransmitInterval: 300 * time.Millisecond, ReceiveInterval: 300 * time.Millisecond, DetectMultiplier: 3}},
			[]string{"remove 192.168.2.2", "add 192.168.2.2 from 192.168.2.11 300ms"}},
		{"peer address changed", []Peer{p("a", r2, 100*time.Millisecond)}, []string{"remove 192.168.2.1", "remove 192.168.2.2", "add 192.168.2.2 from 192.168.2.10 100ms"}},
		{"all gone", nil, []string{"remove 192.168.2.2"}},
	}
	for _, st := range steps {
		if err := s.Set(ctx, st.peers); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		got := eng.takeCalls()
		// Removals run in map order; compare as sets where they are several.
		if diff := cmp.Diff(st.want, got, cmpSorted); diff != "" {
			t.Errorf("%s: engine calls (-want +got):\n%s", st.name, diff)
		}
		if st.name == "no peer: no engine" && *made != 0 {
			t.Errorf("engine made without a BFD peer")
		}
	}
	if *made != 1 {
		t.Errorf("engine made %d times, want 1", *made)
	}
}

var cmpSorted = cmp.Transformer("sort", func(in []string) map[string]int {
	m := map[string]int{}
	for _, s := range in {
		m[s]++
	}
	return m
})

func TestDownResetsBGP(t *testing.T) {
	s, eng, res, _ := newTest(t)
	ctx := context.Background()
	peers := []Peer{{Name: "a", Address: r1}, {Name: "b", Address: r2}}
	if err := s.Set(ctx, peers); err != nil {
		t.Fatal(err)
	}
	for _, a := range []netip.Addr{r1, r2} {
		eng.set(a, func(st *ibfd.SessionState) { st.State = ibfd.StateUp; st.RemoteState = ibfd.StateUp })
	}
	s.check(ctx)
	select {
	case r := <-res.ch:
		t.Fatalf("reset while Up: %s", r)
	default:
	}

	// a: detection time expired. The watcher (not the test) sees it.
	eng.set(r1, func(st *ibfd.SessionState) {
		st.State, st.Diag = ibfd.StateDown, ibfd.DiagControlDetectionTimeExpired
		st.LastDown = ibfd.DownCause{Diag: st.Diag, RemoteState: ibfd.StateUp}
		st.Counters.DownEvents++
	})
	select {
	case r := <-res.ch:
		if r != "a: BFD session down (control detection time expired)" {
			t.Errorf("reset %q", r)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no reset after BFD went down")
	}
	// b: the router removed its session (AdminDown): BGP stays.
	eng.set(r2, func(st *ibfd.SessionState) {
		st.State, st.RemoteState, st.Diag = ibfd.StateDown, ibfd.StateAdminDown, ibfd.DiagNeighborSignaledSessionDown
		st.LastDown = ibfd.DownCause{Diag: st.Diag, RemoteDiag: ibfd.DiagAdministrativelyDown, RemoteState: ibfd.StateAdminDown}
		st.Counters.DownEvents++
	})
	s.check(ctx)
	s.check(ctx) // the same level again: nothing new
	select {
	case r := <-res.ch:
		t.Fatalf("unexpected reset %s", r)
	default:
	}
	got := map[string]uint64{}
	for _, st := range s.Status() {
		got[st.Name+" "+st.State] = st.DownEvents
	}
	if diff := cmp.Diff(map[string]uint64{"a Down": 1, "b Down": 0}, got); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}
}

func TestStartErrorReportedAndRetried(t *testing.T) {
	s, eng, _, _ := newTest(t)
	ctx := context.Background()
	eng.addErr = errors.New("listen udp4 0.0.0.0:3784: bind: address already in use")
	err := s.Set(ctx, []Peer{{Name: "a", Address: r1}})
	if err == nil {
		t.Fatal("Set succeeded with a failing engine")
	}
	st := s.Status()
	if len(st) != 1 || st[0].Running || st[0].LastError != err.Error() {
		t.Errorf("status %+v, want not running with %q", st, err)
	}
	eng.addErr = nil
	if err := s.Set(ctx, []Peer{{Name: "a", Address: r1}}); err != nil {
		t.Fatal(err)
	}
	if st := s.Status(); !st[0].Running || st[0].LastError != "" || st[0].State != "Down" {
		t.Errorf("status after retry %+v", st)
	}
	// Two peers at one address: the second is refused with a reason.
	err = s.Set(ctx, []Peer{{Name: "a", Address: r1}, {Name: "b", Address: r1}})
	if err == nil || s.Status()[1].LastError == "" {
		t.Errorf("second session at the same address: err %v, status %+v", err, s.Status())
	}
	if err := s.Close(); err != nil || !eng.closed {
		t.Errorf("Close: %v, engine closed %v", err, eng.closed)
	}
}
