package controller

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"

	v1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/speaker/bfd"
	"github.com/bgplb/bgplb/speaker/bgp"
)

func TestBFDPeer(t *testing.T) {
	ms := func(n int) *metav1.Duration { return &metav1.Duration{Duration: time.Duration(n) * time.Millisecond} }
	cfg := bgp.PeerConfig{Name: "r", Address: netip.MustParseAddr("192.168.2.1")}
	src := cfg
	src.SourceAddress = netip.MustParseAddr("192.168.2.10")
	defaults := bfd.Peer{Name: "r", Address: cfg.Address, TransmitInterval: 300 * time.Millisecond, ReceiveInterval: 300 * time.Millisecond, DetectMultiplier: 3}
	tests := []struct {
		name    string
		bfd     *v1.BFD
		cfg     bgp.PeerConfig
		want    bfd.Peer
		wantOn  bool
		wantErr string
	}{
		{name: "no block", cfg: cfg},
		{name: "disabled", bfd: &v1.BFD{Enabled: false, DetectMultiplier: ptr.To[int32](5)}, cfg: cfg},
		{name: "defaults", bfd: &v1.BFD{Enabled: true}, cfg: cfg, want: defaults, wantOn: true},
		{name: "values and source address", bfd: &v1.BFD{Enabled: true, TransmitInterval: ms(100), ReceiveInterval: ms(200), DetectMultiplier: ptr.To[int32](5)}, cfg: src,
			want: bfd.Peer{Name: "r", Address: cfg.Address, Local: src.SourceAddress, TransmitInterval: 100 * time.Millisecond, ReceiveInterval: 200 * time.Millisecond, DetectMultiplier: 5}, wantOn: true},
		{name: "interval too short", bfd: &v1.BFD{Enabled: true, ReceiveInterval: ms(5)}, cfg: cfg, wantOn: true,
			wantErr: "BGPPeer r: bfd.receiveInterval 5ms must be between 10ms and 60s"},
		{name: "interval too long", bfd: &v1.BFD{Enabled: true, TransmitInterval: ms(61000)}, cfg: cfg, wantOn: true,
			wantErr: "BGPPeer r: bfd.transmitInterval 1m1s must be between 10ms and 60s"},
		{name: "multiplier 0", bfd: &v1.BFD{Enabled: true, DetectMultiplier: ptr.To[int32](0)}, cfg: cfg, wantOn: true,
			wantErr: "BGPPeer r: bfd.detectMultiplier 0 must be between 1 and 255"},
		{name: "multiplier 256", bfd: &v1.BFD{Enabled: true, DetectMultiplier: ptr.To[int32](256)}, cfg: cfg, wantOn: true,
			wantErr: "BGPPeer r: bfd.detectMultiplier 256 must be between 1 and 255"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &v1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "r"}, Spec: v1.BGPPeerSpec{PeerAddress: "192.168.2.1", BFD: tt.bfd}}
			got, on, err := bfdPeer(p, tt.cfg)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if on != tt.wantOn {
				t.Errorf("on = %v, want %v", on, tt.wantOn)
			}
			if got != tt.want {
				t.Errorf("peer %+v, want %+v", got, tt.want)
			}
		})
	}
}

// fakeBFD is a BFD side whose status the test sets.
type fakeBFD struct {
	peers  []bfd.Peer
	status []bfd.Status
}

func (f *fakeBFD) Set(_ context.Context, p []bfd.Peer) error { f.peers = p; return nil }
func (f *fakeBFD) Status() []bfd.Status                      { return f.status }
func (f *fakeBFD) Changed() <-chan struct{}                  { return nil }

// A down counted by the BFD side becomes one event and one count of the
// metric, however often it is read; a peer without BFD has no status.bfd.
func TestBFDReport(t *testing.T) {
	f := &fakeBFD{}
	rec := record.NewFakeRecorder(10)
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	r := &Reconciler{BFD: f, Recorder: rec, Metrics: m, Options: Options{NodeName: "n1"}}
	peer := &v1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "r"}, Spec: v1.BGPPeerSpec{PeerAddress: "192.168.2.1", BFD: &v1.BFD{Enabled: true}}}
	plain := &v1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "plain"}, Spec: v1.BGPPeerSpec{PeerAddress: "192.168.2.2"}}
	objs := objects{peers: map[string]*v1.BGPPeer{"r": peer, "plain": plain}}
	configs := []bgp.PeerConfig{{Name: "plain", Address: netip.MustParseAddr("192.168.2.2")}, {Name: "r", Address: netip.MustParseAddr("192.168.2.1")}}
	pass := func(st bfd.Status) {
		f.status = []bfd.Status{st}
		if retry := r.applyBFD(context.Background(), configs, objs, logr.Discard()); retry != 0 {
			t.Errorf("retry %v", retry)
		}
	}
	up := bfd.Status{Name: "r", Running: true, State: "Up", TransmitInterval: 300 * time.Millisecond, ReceiveInterval: 300 * time.Millisecond, DetectMultiplier: 3}
	pass(up)
	if len(f.peers) != 1 || f.peers[0].Name != "r" {
		t.Fatalf("BFD peers %+v, want only r", f.peers)
	}
	if got := r.bfdStatus("plain"); got != nil {
		t.Errorf("status.bfd of a peer without BFD: %+v", got)
	}
	if got := r.bfdStatus("r"); got == nil || got.State != v1.BFDStateUp || got.TransmitInterval.Duration != 300*time.Millisecond {
		t.Errorf("status.bfd %+v", got)
	}
	down := up
	down.State, down.Diag, down.LastDownDiag, down.DownEvents = "Down", "control detection time expired", "control detection time expired", 1
	pass(down)
	pass(down)
	if len(rec.Events) != 1 {
		t.Fatalf("%d events, want 1", len(rec.Events))
	}
	if e := <-rec.Events; !strings.Contains(e, "BFDDown") || !strings.Contains(e, "control detection time expired") {
		t.Errorf("event %q", e)
	}
	if v := metricValue(t, m.BFDDownEvents.WithLabelValues("r")); v != 1 {
		t.Errorf("down events metric %v, want 1", v)
	}
	r.bfdStatus("r")
	if v := metricValue(t, m.BFDUp.WithLabelValues("r")); v != 0 {
		t.Errorf("bfd up metric %v, want 0", v)
	}
}

func metricValue(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}
