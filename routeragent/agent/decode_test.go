package agent

import (
	"context"
	"testing"
	"time"

	"github.com/bgplb/bgplb/routeragent/firewall"

	"github.com/prometheus/client_golang/prometheus"
)

// TestUndecodablePathsVisible: the speaker's count of paths it could not
// decode reaches the status and a counter.
func TestUndecodablePathsVisible(t *testing.T) {
	sp := &fakeSpeaker{decodeErrors: 3}
	a := testAgent(t, sp, &fakeRoutes{})
	a.reconcile(t.Context(), true)
	if got := a.Snapshot().Prefix.Undecodable; got != 3 {
		t.Errorf("status prefixes.undecodable = %d, want 3", got)
	}
	sp.decodeErrors = 5
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{a: a})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() != "bgplb_routeragent_bgp_undecodable_paths_total" {
			continue
		}
		found = true
		if c := mf.GetMetric()[0].GetCounter(); c == nil || c.GetValue() != 5 {
			t.Errorf("%s = %v, want a counter at 5", mf.GetName(), mf.GetMetric()[0])
		}
	}
	if !found {
		t.Error("no bgplb_routeragent_bgp_undecodable_paths_total metric")
	}
}

// TestKick: one Kick asks both the firewall loop and the run loop for a
// pass; more Kicks before they ran collapse into one.
func TestKick(t *testing.T) {
	a := testAgent(t, &fakeSpeaker{}, &fakeRoutes{})
	a.Kick()
	a.Kick()
	for name, ch := range map[string]chan struct{}{"firewall": a.kickFW, "resync": a.resync} {
		if n := len(ch); n != 1 {
			t.Errorf("%s: %d signals pending, want 1", name, n)
		}
	}
}

// countingFirewall counts Ensure calls and reports each on a channel.
type countingFirewall struct{ calls chan struct{} }

func (f countingFirewall) Ensure(context.Context) (firewall.Status, error) {
	f.calls <- struct{}{}
	return firewall.Status{}, nil
}

// TestFirewallEvents: an nftables change (FirewallEvents) asks for a
// firewall pass at once, not at the next 1 s tick; a closed event channel
// leaves the ticker running.
func TestFirewallEvents(t *testing.T) {
	a := testAgent(t, &fakeSpeaker{}, &fakeRoutes{})
	fw := countingFirewall{calls: make(chan struct{}, 16)}
	events := make(chan struct{}, 1)
	a.fw, a.deps.FirewallEvents = fw, events
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); a.firewallLoop(ctx) }()
	defer func() { cancel(); <-done }()
	events <- struct{}{}
	select {
	case <-fw.calls:
	case <-time.After(500 * time.Millisecond):
		t.Fatal("no firewall pass within 500 ms of an nftables event")
	}
	close(events)
	select {
	case <-fw.calls: // the ticker still runs
	case <-time.After(3 * time.Second):
		t.Fatal("no firewall pass after the event channel closed")
	}
}
