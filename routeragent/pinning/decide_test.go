package pinning

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

func set(as ...netip.Addr) map[netip.Addr]bool {
	m := map[netip.Addr]bool{}
	for _, a := range as {
		m[a] = true
	}
	return m
}

var (
	nhA = netip.MustParseAddr("10.0.0.1")
	nhB = netip.MustParseAddr("10.0.0.2")
	nhC = netip.MustParseAddr("10.0.0.3")
	nh6 = netip.MustParseAddr("2001:db8::1")
)

// TestDecideLifecycle: announced next hops get slots round robin; one that
// is withdrawn lingers, keeps its slot until the linger ends, and comes
// back with it; a gone one loses it at once; a freed slot is not reused
// before the others.
func TestDecideLifecycle(t *testing.T) {
	t0 := time.Unix(1000, 0)
	in := Input{Now: t0, Announced: set(nhA, nhB, nh6), Linger: 10 * time.Second}
	st, d := Decide(State{}, in)
	want := []Pin{{nhA, 1}, {nhB, 2}, {nh6, 3}}
	if !slices.Equal(d.Pins, want) || !d.Wake.IsZero() {
		t.Fatalf("first: %v wake %v", d.Pins, d.Wake)
	}
	// B withdrawn (a speaker restart): it lingers.
	in.Now, in.Announced = t0.Add(time.Second), set(nhA, nh6)
	st, d = Decide(st, in)
	if !slices.Equal(d.Pins, want) || !d.Wake.Equal(t0.Add(11*time.Second)) || len(d.Unpinned) != 0 {
		t.Fatalf("lingering: %v wake %v unpinned %v", d.Pins, d.Wake, d.Unpinned)
	}
	// Still lingering a moment later; the withdrawal time is kept.
	in.Now = t0.Add(5 * time.Second)
	st, d = Decide(st, in)
	if !slices.Equal(d.Pins, want) || !d.Wake.Equal(t0.Add(11*time.Second)) {
		t.Fatalf("still lingering: %v wake %v", d.Pins, d.Wake)
	}
	// Back before the end: same slot, no linger.
	in.Now, in.Announced = t0.Add(6*time.Second), set(nhA, nhB, nh6)
	st, d = Decide(st, in)
	if !slices.Equal(d.Pins, want) || !d.Wake.IsZero() {
		t.Fatalf("back: %v wake %v", d.Pins, d.Wake)
	}
	// Withdrawn again, and the linger passes.
	in.Now, in.Announced = t0.Add(7*time.Second), set(nhA, nh6)
	st, _ = Decide(st, in)
	in.Now = t0.Add(17 * time.Second)
	st, d = Decide(st, in)
	if !slices.Equal(d.Pins, []Pin{{nhA, 1}, {nh6, 3}}) || !slices.Equal(d.Unpinned, []netip.Addr{nhB}) {
		t.Fatalf("linger over: %v unpinned %v", d.Pins, d.Unpinned)
	}
	// A new next hop takes slot 4, not B's freed 2.
	in.Announced = set(nhA, nhC, nh6)
	st, d = Decide(st, in)
	if !slices.Equal(d.Pins, []Pin{{nhA, 1}, {nhC, 4}, {nh6, 3}}) {
		t.Fatalf("new next hop: %v", d.Pins)
	}
	// A gone (BFD down) while announced or not: unpinned at once.
	in.Gone = set(nhA)
	_, d = Decide(st, in)
	if !slices.Equal(d.Pins, []Pin{{nhC, 4}, {nh6, 3}}) || !slices.Equal(d.Unpinned, []netip.Addr{nhA}) {
		t.Fatalf("gone: %v unpinned %v", d.Pins, d.Unpinned)
	}
}

// TestDecideZeroLinger: with pinLinger 0 a withdrawal unpins at once.
func TestDecideZeroLinger(t *testing.T) {
	st, _ := Decide(State{}, Input{Now: time.Unix(0, 0), Announced: set(nhA, nhB)})
	_, d := Decide(st, Input{Now: time.Unix(0, 0), Announced: set(nhA)})
	if !slices.Equal(d.Pins, []Pin{{nhA, 1}}) || !d.Wake.IsZero() {
		t.Fatalf("%v wake %v", d.Pins, d.Wake)
	}
}

// TestDecideBounds: no more pins than Max (and MaxSlots); the rest are
// reported; slots wrap around after MaxSlots skipping used ones.
func TestDecideBounds(t *testing.T) {
	ann := map[netip.Addr]bool{}
	for i := range 300 {
		ann[netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})] = true
	}
	_, d := Decide(State{}, Input{Announced: ann, Max: 2})
	if len(d.Pins) != 2 || len(d.Overflow) != 298 {
		t.Fatalf("max 2: %d pins, %d overflow", len(d.Pins), len(d.Overflow))
	}
	st, d := Decide(State{}, Input{Announced: ann, Max: 1000})
	if len(d.Pins) != MaxSlots || len(d.Overflow) != 300-MaxSlots {
		t.Fatalf("max slots: %d pins, %d overflow", len(d.Pins), len(d.Overflow))
	}
	slots := map[int]bool{}
	for _, p := range d.Pins {
		if p.Slot < 1 || p.Slot > MaxSlots || slots[p.Slot] || p.Mark()&^MarkMask != 0 {
			t.Fatalf("bad slot %d", p.Slot)
		}
		slots[p.Slot] = true
	}
	// Drop the first pinned next hop: the next new one gets its slot (the
	// only free one) after wrapping.
	delete(ann, d.Pins[0].NextHop)
	_, d2 := Decide(st, Input{Announced: ann, Max: 1000})
	if len(d2.Pins) != MaxSlots {
		t.Fatalf("after wrap: %d pins", len(d2.Pins))
	}
}
