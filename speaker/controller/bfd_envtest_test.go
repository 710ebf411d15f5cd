package controller_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/internal/testenv"
	"github.com/bgplb/bgplb/speaker/bfd"
	"github.com/bgplb/bgplb/speaker/bgp/bgptest"
	"github.com/bgplb/bgplb/speaker/controller"
)

// fakeBFD stands in for speaker/bfd.Sessions: it records the wanted
// sessions and serves the states the test sets (the BFD protocol itself is
// tested in internal/bfd and, with FRR, in speaker/bfd).
type fakeBFD struct {
	mu      sync.Mutex
	peers   []bfd.Peer
	status  map[string]bfd.Status
	changed chan struct{}
}

func (f *fakeBFD) Set(_ context.Context, peers []bfd.Peer) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.peers = peers
	for name := range f.status {
		if !slices.ContainsFunc(peers, func(p bfd.Peer) bool { return p.Name == name }) {
			delete(f.status, name)
		}
	}
	for _, p := range peers {
		if _, ok := f.status[p.Name]; !ok {
			f.status[p.Name] = bfd.Status{Name: p.Name, Running: true, State: "Down", Diag: "no diagnostic", RemoteDiag: "no diagnostic",
				TransmitInterval: time.Second, ReceiveInterval: p.ReceiveInterval, DetectMultiplier: p.DetectMultiplier}
		}
	}
	return nil
}

func (f *fakeBFD) Status() []bfd.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []bfd.Status
	for _, s := range f.status {
		out = append(out, s)
	}
	return out
}

func (f *fakeBFD) Changed() <-chan struct{} { return f.changed }

func (f *fakeBFD) wanted() []bfd.Peer {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.peers)
}

// update changes a session's status and signals, as Sessions does.
func (f *fakeBFD) update(name string, fn func(*bfd.Status)) {
	f.mu.Lock()
	st := f.status[name]
	fn(&st)
	f.status[name] = st
	f.mu.Unlock()
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

// The BFD state of a BGPPeer with bfd.enabled appears in the node's
// BGPSessionState, a down becomes a Warning event on the BGPPeer and a
// count of bgplb_speaker_bfd_down_events_total, and disabling BFD removes
// the session and status.bfd.
func TestBFDStateInSessionState(t *testing.T) {
	testenv.Skip(t, env)
	ctx := context.Background()
	router := bgptest.Start(t, lo4, 64512, bgptest.Neighbor{Address: lo4, ASN: 65011})
	readyNode(t, "node-bfd", nil)
	peer := &v1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "bfd-router"}, Spec: v1.BGPPeerSpec{
		PeerAddress: "127.0.0.1", PeerPort: ptr.To(int32(router.Port)), PeerASN: 64512, MyASN: 65011,
		BFD: &v1.BFD{Enabled: true, ReceiveInterval: &metav1.Duration{Duration: 200 * time.Millisecond}},
	}}
	create(t, peer)
	// No garbage collector in envtest: remove the session state (after the
	// speaker stopped; cleanups run last-in first-out) so other tests do
	// not see it.
	t.Cleanup(func() {
		_ = env.Client.DeleteAllOf(context.Background(), &v1.BGPSessionState{}, client.MatchingLabels{v1.LabelSessionNode: "node-bfd"})
	})

	fb := &fakeBFD{status: map[string]bfd.Status{}, changed: make(chan struct{}, 1)}
	f := startSpeakerWith(t, "node-bfd", fixtureHooks{reconciler: func(r *controller.Reconciler, _ *prometheus.Registry) { r.BFD = fb }})
	reg, events := f.reg, f.events

	getBFD := func() (*v1.BFDSessionStatus, error) {
		s := &v1.BGPSessionState{}
		if err := env.Client.Get(ctx, client.ObjectKey{Name: "node-bfd-bfd-router"}, s); err != nil {
			return nil, err
		}
		return s.Status.BFD, nil
	}
	eventually(t, "the BFD session wanted with the BGPPeer's values", func() error {
		w := fb.wanted()
		if len(w) != 1 || w[0].Name != "bfd-router" || w[0].ReceiveInterval != 200*time.Millisecond ||
			w[0].TransmitInterval != 300*time.Millisecond || w[0].DetectMultiplier != 3 || w[0].Address != lo4 {
			return fmt.Errorf("wanted %+v", w)
		}
		return nil
	})
	eventually(t, "status.bfd Down", func() error {
		b, err := getBFD()
		if err != nil || b == nil || b.State != v1.BFDStateDown || b.ReceiveInterval == nil || b.ReceiveInterval.Duration != 200*time.Millisecond || b.DetectMultiplier != 3 {
			return fmt.Errorf("status.bfd %+v (%w)", b, err)
		}
		return nil
	})

	changedAt := time.Now().Truncate(time.Second)
	fb.update("bfd-router", func(s *bfd.Status) {
		s.State, s.Diag, s.TransmitInterval, s.DetectionTime, s.LastChange = "Up", "no diagnostic", 300*time.Millisecond, 900*time.Millisecond, changedAt
	})
	eventually(t, "status.bfd Up", func() error {
		b, err := getBFD()
		if err != nil || b == nil || b.State != v1.BFDStateUp || b.TransmitInterval == nil || b.TransmitInterval.Duration != 300*time.Millisecond ||
			b.DetectionTime == nil || b.DetectionTime.Duration != 900*time.Millisecond || b.LastTransition == nil || !b.LastTransition.Time.Equal(changedAt) {
			return fmt.Errorf("status.bfd %+v (%w)", b, err)
		}
		return nil
	})
	if v := gaugeValue(t, reg, "bgplb_speaker_bfd_session_up"); v != 1 {
		t.Errorf("bgplb_speaker_bfd_session_up %v, want 1", v)
	}

	// Down after Up (the BFD side has reset the BGP session).
	fb.update("bfd-router", func(s *bfd.Status) {
		s.State, s.Diag, s.LastDownDiag, s.LastDownRemoteDiag, s.DownEvents = "Down", "control detection time expired", "control detection time expired", "no diagnostic", 1
	})
	eventually(t, "status.bfd Down with downEvents 1", func() error {
		b, err := getBFD()
		if err != nil || b == nil || b.State != v1.BFDStateDown || b.DownEvents != 1 || b.Diagnostic != "control detection time expired" {
			return fmt.Errorf("status.bfd %+v (%w)", b, err)
		}
		return nil
	})
	want := "Warning BFDDown BFD session from node node-bfd to 127.0.0.1 went down (control detection time expired, peer: no diagnostic)"
	eventually(t, "BFDDown event", func() error {
		for len(events.Events) > 0 {
			if e := <-events.Events; e == want {
				return nil
			}
		}
		return fmt.Errorf("no event %q", want)
	})
	if v := gaugeValue(t, reg, "bgplb_speaker_bfd_down_events_total"); v != 1 {
		t.Errorf("bgplb_speaker_bfd_down_events_total %v, want 1", v)
	}

	// BFD disabled: no session wanted, status.bfd gone.
	cur := &v1.BGPPeer{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(peer), cur); err != nil {
		t.Fatal(err)
	}
	cur.Spec.BFD.Enabled = false
	if err := env.Client.Update(ctx, cur); err != nil {
		t.Fatal(err)
	}
	eventually(t, "status.bfd removed", func() error {
		b, err := getBFD()
		if err != nil || b != nil || len(fb.wanted()) != 0 {
			return fmt.Errorf("status.bfd %+v (%w), wanted %+v", b, err, fb.wanted())
		}
		return nil
	})
}

// gaugeValue returns the one sample of a metric family (gauge or counter),
// -1 when absent.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name || len(mf.Metric) == 0 {
			continue
		}
		if mt := mf.Metric[0]; mt.Counter != nil {
			return mt.GetCounter().GetValue()
		}
		return mf.Metric[0].GetGauge().GetValue()
	}
	return -1
}
