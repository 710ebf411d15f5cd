package agent

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestKeepStale(t *testing.T) {
	a, b, c := netip.MustParseAddr("192.168.2.20"), netip.MustParseAddr("192.168.2.21"), netip.MustParseAddr("192.168.2.22")
	p1, p2 := netip.MustParsePrefix("192.168.254.1/32"), netip.MustParsePrefix("192.168.254.2/32")
	type nhs = map[netip.Prefix][]netip.Addr
	// Before the restart: p1 over a, b and c; p2 on c only. c died meanwhile.
	stale := nhs{p1: {a, b, c}, p2: {c}}
	tests := []struct {
		name     string
		fromBGP  nhs
		peers    map[netip.Addr]stalePeer
		settled  bool
		want     nhs
		wantKept int
	}{
		{name: "nobody back: everything kept", fromBGP: nhs{}, want: stale, wantKept: 4},
		{name: "a back without End-of-RIB: its stale copy stays",
			fromBGP: nhs{p1: {a}}, peers: map[netip.Addr]stalePeer{a: {up: true}},
			want: nhs{p1: {a, b, c}, p2: {c}}, wantKept: 3},
		{name: "a and b sent End-of-RIB, not settled: c kept (it may be slow)",
			fromBGP: nhs{p1: {a, b}}, peers: map[netip.Addr]stalePeer{a: {up: true, endOfRIB: true}, b: {up: true, endOfRIB: true}},
			want: nhs{p1: {a, b, c}, p2: {c}}, wantKept: 2},
		{name: "settled: c leaves p1, stays where it is the last next hop",
			fromBGP: nhs{p1: {a, b}}, peers: map[netip.Addr]stalePeer{a: {up: true, endOfRIB: true}, b: {up: true, endOfRIB: true}}, settled: true,
			want: nhs{p1: {a, b}, p2: {c}}, wantKept: 1},
		{name: "settled, a withdrew p1 meanwhile: its End-of-RIB drops it, c goes too",
			fromBGP: nhs{p1: {b}}, peers: map[netip.Addr]stalePeer{a: {up: true, endOfRIB: true}, b: {up: true, endOfRIB: true}}, settled: true,
			want: nhs{p1: {b}, p2: {c}}, wantKept: 1},
		{name: "c back with End-of-RIB, not announcing p2: all gone",
			fromBGP: nhs{p1: {a, b, c}}, peers: map[netip.Addr]stalePeer{a: {up: true, endOfRIB: true}, b: {up: true, endOfRIB: true}, c: {up: true, endOfRIB: true}},
			want: nhs{p1: {a, b, c}}, wantKept: 0},
		{name: "c's BFD down: it goes at once, even where it is the last",
			fromBGP: nhs{}, peers: map[netip.Addr]stalePeer{c: {bfdDown: true}},
			want: nhs{p1: {a, b}}, wantKept: 2},
		{name: "settled but c is up without End-of-RIB: kept",
			fromBGP: nhs{p1: {a, b}}, peers: map[netip.Addr]stalePeer{a: {up: true, endOfRIB: true}, b: {up: true, endOfRIB: true}, c: {up: true}}, settled: true,
			want: nhs{p1: {a, b, c}, p2: {c}}, wantKept: 2},
	}
	for _, tt := range tests {
		got, kept := keepStale(tt.fromBGP, stale, tt.peers, tt.settled)
		if d := cmp.Diff(tt.want, got, cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); d != "" || kept != tt.wantKept {
			t.Errorf("%s: kept %d, want %d (-want +got):\n%s", tt.name, kept, tt.wantKept, d)
		}
	}
}
