package returnpath

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// fakeHost records the applied plans; its kernel holds the last one.
type fakeHost struct {
	neigh    map[netip.Addr]Neighbour
	applies  []Plan
	applyErr error
}

func (f *fakeHost) Neighbour(a netip.Addr) (Neighbour, error) {
	if n, ok := f.neigh[a]; ok {
		return n, nil
	}
	return Neighbour{}, errors.New("no neighbour entry")
}

func (f *fakeHost) Installed(cfg Config) ([]Installed, error) {
	if len(f.applies) == 0 {
		return nil, nil
	}
	var out []Installed
	for _, s := range f.applies[len(f.applies)-1].Slots {
		out = append(out, Installed{Slot: s.Slot, Router: s.Router})
	}
	return out, nil
}

func (f *fakeHost) Apply(_ Config, p Plan) error {
	if f.applyErr != nil {
		return f.applyErr
	}
	f.applies = append(f.applies, p)
	return nil
}

// The manager applies a new spec at once and an unchanged one not at all
// (the speaker calls Set on every reconcile); a refused apply is reported
// on every symmetric peer and counted; the gauge follows the status.
func TestManagerSet(t *testing.T) {
	h := &fakeHost{neigh: map[netip.Addr]Neighbour{r1.Address: r1.Neighbour}}
	reg := prometheus.NewRegistry()
	met, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m := NewManager(Config{}, h, logr.Discard(), met)
	spec := Spec{Peers: []Peer{{Name: "r1", Address: r1.Address}, {Name: "r2", Address: r2.Address}}}
	m.Set(spec)
	m.Set(spec)
	if len(h.applies) != 1 {
		t.Fatalf("%d applies for one spec set twice, want 1", len(h.applies))
	}
	st := m.Status()
	if !st["r1"].Ready || st["r2"].Ready || st["r2"].Reason != ReasonRouterUnresolved {
		t.Fatalf("status %+v", st)
	}
	if v := value(t, met.Ready.WithLabelValues("r1")); v != 1 {
		t.Errorf("ready gauge r1 %v", v)
	}

	// The router answers; the resync takes it in, in a new slot.
	h.neigh[r2.Address] = r2.Neighbour
	m.Resync()
	if st := m.Status(); !st["r2"].Ready || st["r2"].Slot.Slot != 2 || st["r1"].Slot.Slot != 1 {
		t.Fatalf("after resync %+v", st)
	}

	// The neighbour entry goes away (router rebooting, garbage
	// collection): the last MAC is kept.
	delete(h.neigh, r2.Address)
	m.Resync()
	if st := m.Status(); !st["r2"].Ready || st["r2"].Slot.Neighbor.Link != "eth0" {
		t.Fatalf("without the neighbour entry %+v", st)
	}

	h.applyErr = errors.New("operation not permitted")
	m.Resync()
	if st := m.Status(); st["r1"].Ready || st["r1"].Reason != ReasonApplyFailed || m.Failures() != 1 {
		t.Fatalf("after a refused apply %+v, failures %d", st, m.Failures())
	}
	if v := value(t, met.Failures); v != 1 {
		t.Errorf("failures counter %v", v)
	}

	// Off: an empty plan is applied, the gauge series go.
	h.applyErr = nil
	m.Set(Spec{})
	if last := h.applies[len(h.applies)-1]; !last.Empty() || len(m.Status()) != 0 {
		t.Fatalf("after off: plan %+v status %+v", last, m.Status())
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "bgplb_speaker_return_path_symmetric" && len(mf.Metric) != 0 {
			t.Errorf("%d ready series left", len(mf.Metric))
		}
	}
}

// RemoveLeftovers clears what an earlier run left, and does nothing when
// nothing is there.
func TestRemoveLeftovers(t *testing.T) {
	h := &fakeHost{}
	RemoveLeftovers(Config{}, h, logr.Discard())
	if len(h.applies) != 0 {
		t.Fatalf("applied %+v with nothing installed", h.applies)
	}
	h.applies = []Plan{{Slots: []Slot{{Slot: 1, Router: r1.Address}}}}
	RemoveLeftovers(Config{}, h, logr.Discard())
	if len(h.applies) != 2 || !h.applies[1].Empty() {
		t.Fatalf("applies %+v, want the leftovers removed", h.applies)
	}
}

func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		t.Fatal(err)
	}
	if out.Counter != nil {
		return out.Counter.GetValue()
	}
	return out.Gauge.GetValue()
}
