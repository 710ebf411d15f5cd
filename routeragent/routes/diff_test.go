package routes

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestDiff(t *testing.T) {
	a, b := addr("192.168.2.20"), addr("192.168.2.21")
	p1, p2, p3 := pfx("192.168.254.1/32"), pfx("192.168.254.2/32"), pfx("2001:db8:254::3/128")
	type routes = map[netip.Prefix][]netip.Addr
	tests := []struct {
		name          string
		desired, ours routes
		foreign       map[netip.Prefix]bool
		want          []Op
	}{
		{name: "nothing to do"},
		{name: "new prefixes are added", desired: routes{p1: {a}, p3: {a, b}},
			want: []Op{{Kind: OpAdd, Prefix: p1, NextHops: []netip.Addr{a}}, {Kind: OpAdd, Prefix: p3, NextHops: []netip.Addr{a, b}}}},
		{name: "ours with the same next hops is left alone", desired: routes{p1: {a, b}}, ours: routes{p1: {a, b}}},
		{name: "ours with other next hops is replaced", desired: routes{p1: {b}}, ours: routes{p1: {a, b}},
			want: []Op{{Kind: OpReplace, Prefix: p1, NextHops: []netip.Addr{b}}}},
		{name: "ours no longer desired is deleted", desired: routes{p1: {a}}, ours: routes{p1: {a}, p2: {b}},
			want: []Op{{Kind: OpDelete, Prefix: p2, NextHops: []netip.Addr{b}}}},
		{name: "a desired prefix without next hops counts as not desired", desired: routes{p1: {}, p2: nil}, ours: routes{p1: {a}},
			want: []Op{{Kind: OpDelete, Prefix: p1, NextHops: []netip.Addr{a}}}},
		{name: "a foreign prefix is a conflict, never added over", desired: routes{p1: {a}, p2: {a}}, foreign: map[netip.Prefix]bool{p2: true},
			want: []Op{{Kind: OpAdd, Prefix: p1, NextHops: []netip.Addr{a}}, {Kind: OpConflict, Prefix: p2}}},
		{name: "a foreign prefix not desired is not ours to delete", ours: routes{p1: {a}}, foreign: map[netip.Prefix]bool{p2: true},
			want: []Op{{Kind: OpDelete, Prefix: p1, NextHops: []netip.Addr{a}}}},
		{name: "everything at once", desired: routes{p1: {a, b}, p2: {a}}, ours: routes{p1: {a}, p3: {b}}, foreign: map[netip.Prefix]bool{p2: true},
			want: []Op{{Kind: OpReplace, Prefix: p1, NextHops: []netip.Addr{a, b}}, {Kind: OpConflict, Prefix: p2}, {Kind: OpDelete, Prefix: p3, NextHops: []netip.Addr{b}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Diff(tc.desired, tc.ours, tc.foreign)
			// Map order: compare as sets, but deletes must come last.
			for i := 1; i < len(got); i++ {
				if got[i-1].Kind == OpDelete && got[i].Kind != OpDelete {
					t.Errorf("op %d (%v) after a delete: deletes must come last: %v", i, got[i].Kind, got)
				}
			}
			sortOps := cmpopts.SortSlices(func(x, y Op) bool { return x.Prefix.Addr().Less(y.Prefix.Addr()) })
			if d := cmp.Diff(tc.want, got, append(cmps, sortOps, cmpopts.EquateEmpty())...); d != "" {
				t.Errorf("Diff (-want +got):\n%s", d)
			}
			// DiffChanged over every prefix plans what Diff plans; over
			// none it plans nothing; over one, only that one.
			var all []netip.Prefix
			for p := range tc.desired {
				all = append(all, p)
			}
			for p := range tc.ours {
				if _, ok := tc.desired[p]; !ok {
					all = append(all, p)
				}
			}
			if d := cmp.Diff(tc.want, DiffChanged(tc.desired, tc.ours, tc.foreign, all), append(cmps, sortOps, cmpopts.EquateEmpty())...); d != "" {
				t.Errorf("DiffChanged over every prefix (-want +got):\n%s", d)
			}
			if ops := DiffChanged(tc.desired, tc.ours, tc.foreign, nil); len(ops) != 0 {
				t.Errorf("DiffChanged over no prefix: %v", ops)
			}
			for _, p := range all {
				for _, op := range DiffChanged(tc.desired, tc.ours, tc.foreign, []netip.Prefix{p}) {
					if op.Prefix != p {
						t.Errorf("DiffChanged over %s planned %v", p, op)
					}
				}
			}
		})
	}
}

// TestReconcileEEXISTRereads: an add that finds its key taken although the
// cache said it was free re-reads the table once; a foreign route found
// there is a conflict, a route of ours is replaced, and the rest of the pass
// is planned against what the kernel really has.
func TestReconcileEEXISTRereads(t *testing.T) {
	f := &interruptingNetlink{}
	r := NewWith(f, Config{Table: 254, Protocol: 220}, quiet())
	if res := r.Reconcile(nil, true); len(res.Errors) > 0 { // prime an empty cache
		t.Fatal(res.Errors)
	}
	// Behind the cache's back: a foreign route, one of ours for a desired
	// prefix and one of ours no longer desired.
	f.table = []netlink.Route{
		kroute("192.168.254.2/32", "192.168.2.30", unix.RTPROT_STATIC),
		kroute("192.168.254.1/32", "192.168.2.30", 220),
		kroute("192.168.254.9/32", "192.168.2.30", 220),
	}
	res := r.Reconcile(desiredOf("192.168.254.1/32", "192.168.2.20", "192.168.254.2/32", "192.168.2.20"), false)
	if len(res.Errors) != 0 {
		t.Fatalf("errors: %v", res.Errors)
	}
	if d := cmp.Diff([]netip.Prefix{pfx("192.168.254.2/32")}, conflictPrefixes(res), cmps...); d != "" {
		t.Errorf("conflicts (-want +got):\n%s", d)
	}
	if d := cmp.Diff(desiredOf("192.168.254.1/32", "192.168.2.20"), res.Installed, addrCmp); d != "" {
		t.Errorf("installed (-want +got):\n%s", d)
	}
	if f.dumps != 2 {
		t.Errorf("%d dumps, want 2 (the priming pass and one re-read)", f.dumps)
	}
	if res.Deleted != 1 {
		t.Errorf("deleted %d, want 1 (ours no longer desired, found by the re-read)", res.Deleted)
	}
}
