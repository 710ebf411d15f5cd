package controller

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	"k8s.io/client-go/tools/record"

	"github.com/bgplb/bgplb/speaker/bgp"
	"github.com/bgplb/bgplb/speaker/model"
)

// TestServiceEventsPerPass: a pass's Announced/Withdrawn events name the
// Service, prefix, node and peer; a pass that changes more than
// MaxServiceEventsPerPass paths for a peer emits none (it is logged).
func TestServiceEventsPerPass(t *testing.T) {
	rec := record.NewFakeRecorder(1000)
	r := New(nil, nil, rec, nil, logr.Discard(), Options{NodeName: "node-a", ServeServicesWithoutClass: true, ServiceEvents: true})
	w := r.store.serviceWriter(func() {})
	var items []any
	for i := range MaxServiceEventsPerPass + 1 {
		items = append(items, testService(fmt.Sprintf("s%d", i), fmt.Sprintf("10.0.0.%d", i)))
	}
	if err := w.Replace(items, "1"); err != nil {
		t.Fatal(err)
	}
	r.store.snapshot()
	adv := func(i int) model.Advertisement {
		return model.Advertisement{Prefix: netip.MustParsePrefix(fmt.Sprintf("10.0.0.%d/32", i)), Services: []string{fmt.Sprintf("ns/s%d", i)}}
	}
	cfg := bgp.PeerConfig{Name: "router", Address: netip.MustParseAddr("192.168.2.1")}
	drain := func() []string {
		var out []string
		for len(rec.Events) > 0 {
			out = append(out, <-rec.Events)
		}
		return out
	}

	r.report(cfg, bgp.Changes{Added: []model.Advertisement{adv(1)}, Withdrawn: []model.Advertisement{adv(2)}}, logr.Discard())
	want := []string{
		"Normal Announced announced 10.0.0.1/32 from node node-a to peer router (192.168.2.1)",
		"Normal Withdrawn withdrew 10.0.0.2/32 from node node-a to peer router (192.168.2.1)",
	}
	if diff := cmp.Diff(want, drain()); diff != "" {
		t.Errorf("small pass (-want +got):\n%s", diff)
	}

	var many []model.Advertisement
	for i := range MaxServiceEventsPerPass + 1 {
		many = append(many, adv(i))
	}
	r.report(cfg, bgp.Changes{Added: many}, logr.Discard())
	if got := drain(); len(got) != 0 {
		t.Errorf("a pass of %d changes emitted %d events, want none", len(many), len(got))
	}
	r.report(cfg, bgp.Changes{Added: many[:MaxServiceEventsPerPass]}, logr.Discard())
	if got := drain(); len(got) != MaxServiceEventsPerPass {
		t.Errorf("a pass of %d changes emitted %d events, want one each", MaxServiceEventsPerPass, len(got))
	}
}
