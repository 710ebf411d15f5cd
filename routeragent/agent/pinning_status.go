package agent

import (
	"net/netip"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bgplb/bgplb/routeragent/pinning"
)

// PinStatus is the connection pinning section of the status (absent when
// routes.pinConnections is off or no pass has run yet).
type PinStatus struct {
	// Pinned lists the next hops holding a slot, by next hop.
	Pinned []PinnedNextHop `json:"pinned"`
	// Overflow counts next hops left unpinned because every slot the
	// config admits is taken.
	Overflow int `json:"overflow,omitempty"`
	// Error is the last failure to apply the pins (empty: applied).
	Error string `json:"error,omitempty"`
}

// PinnedNextHop is one next hop with its slot: its connections carry
// mark Slot<<24 and follow table 0x62700000+Slot.
type PinnedNextHop struct {
	NextHop netip.Addr `json:"nextHop"`
	Slot    int        `json:"slot"`
	Mark    uint32     `json:"mark"`
	Table   int        `json:"table"`
	// Withdrawn is when the next hop stopped being announced (absent
	// while it is announced); its pin lingers until LingerUntil.
	Withdrawn   *time.Time `json:"withdrawn,omitempty"`
	LingerUntil *time.Time `json:"lingerUntil,omitempty"`
}

// pinView builds the status section from the run loop's state. Pure.
func pinView(st pinning.State, d pinning.Decision, linger time.Duration, err error) *PinStatus {
	v := &PinStatus{Pinned: make([]PinnedNextHop, 0, len(d.Pins)), Overflow: len(d.Overflow)}
	for _, p := range d.Pins {
		n := PinnedNextHop{NextHop: p.NextHop, Slot: p.Slot, Mark: p.Mark(), Table: p.Table()}
		if w, ok := st.Withdrawn[p.NextHop]; ok {
			until := w.Add(linger)
			n.Withdrawn, n.LingerUntil = &w, &until
		}
		v.Pinned = append(v.Pinned, n)
	}
	slices.SortFunc(v.Pinned, func(a, b PinnedNextHop) int { return a.NextHop.Compare(b.NextHop) })
	if err != nil {
		v.Error = err.Error()
	}
	return v
}

// publishPins hands the run loop's view to Snapshot (nil: none).
func (a *Agent) publishPins(v *PinStatus) {
	a.mu.Lock()
	a.status.Pins = v
	a.mu.Unlock()
}

// collectPins exports the pins: counts only (next hops come and go).
func collectPins(ch chan<- prometheus.Metric, p *PinStatus) {
	if p == nil {
		return
	}
	lingering := 0
	for _, n := range p.Pinned {
		if n.Withdrawn != nil {
			lingering++
		}
	}
	ok := 1.0
	if p.Error != "" {
		ok = 0
	}
	ch <- prometheus.MustNewConstMetric(mPinned, prometheus.GaugeValue, float64(len(p.Pinned)-lingering), "announced")
	ch <- prometheus.MustNewConstMetric(mPinned, prometheus.GaugeValue, float64(lingering), "lingering")
	ch <- prometheus.MustNewConstMetric(mPinOverflow, prometheus.GaugeValue, float64(p.Overflow))
	ch <- prometheus.MustNewConstMetric(mPinOK, prometheus.GaugeValue, ok)
}

var (
	mPinned      = prometheus.NewDesc("bgplb_routeragent_pinned_next_hops", "Next hops whose connections are pinned (routes.pinConnections), announced or lingering after a withdrawal.", []string{"state"}, nil)
	mPinOverflow = prometheus.NewDesc("bgplb_routeragent_pin_overflow_next_hops", "Announced next hops left unpinned because every slot is taken.", nil, nil)
	mPinOK       = prometheus.NewDesc("bgplb_routeragent_pins_applied", "1 when the connection pins are in the kernel as decided, 0 after a failure to apply them.", nil, nil)
)
