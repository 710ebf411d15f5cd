package returnpath

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bgplb/bgplb/internal/iprange"
)

func rng(t *testing.T, s string) iprange.Range {
	t.Helper()
	r, err := iprange.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var (
	mac1 = net.HardwareAddr{2, 0, 0, 0, 0, 1}
	mac2 = net.HardwareAddr{2, 0, 0, 0, 0, 2}
	r1   = Router{Peer: "r1", Address: netip.MustParseAddr("192.168.2.1"), Neighbour: Neighbour{Link: "eth0", LinkIndex: 2, MAC: mac1}}
	r2   = Router{Peer: "r2", Address: netip.MustParseAddr("192.168.2.2"), Neighbour: Neighbour{Link: "eth0", LinkIndex: 2, MAC: mac2}}
	r6   = Router{Peer: "r6", Address: netip.MustParseAddr("2001:db8:2::1"), Neighbour: Neighbour{Link: "eth0", LinkIndex: 2, MAC: mac1}}
)

var addrCmp = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

func slot(r Router, n int) Slot {
	return Slot{Peer: r.Peer, Slot: n, Mark: uint32(n) << 24, Table: 4200 + n, Router: r.Address, Neighbor: r.Neighbour}
}

func TestDecideSlots(t *testing.T) {
	unresolved := r2
	unresolved.Err = errors.New("no neighbour entry")
	sameAddr := r1
	sameAddr.Peer = "r1-again"
	for _, tc := range []struct {
		name      string
		routers   []Router
		installed []Installed
		want      []Slot
		problems  []string
	}{
		{name: "none"},
		{name: "address order", routers: []Router{r2, r6, r1}, want: []Slot{slot(r1, 1), slot(r2, 2), slot(r6, 3)}},
		{name: "kept slots survive a new router in front",
			routers:   []Router{r1, r2},
			installed: []Installed{{Slot: 1, Router: r2.Address}},
			want:      []Slot{slot(r2, 1), slot(r1, 2)}},
		{name: "a removed router's slot is free, the others keep theirs",
			routers:   []Router{r2},
			installed: []Installed{{Slot: 1, Router: r1.Address}, {Slot: 2, Router: r2.Address}},
			want:      []Slot{slot(r2, 2)}},
		{name: "an installed slot out of the mask's range is not kept",
			routers:   []Router{r1},
			installed: []Installed{{Slot: 99, Router: r1.Address}},
			want:      []Slot{slot(r1, 1)}},
		{name: "unresolved router gets no slot and a problem",
			routers: []Router{r1, unresolved}, want: []Slot{slot(r1, 1)}, problems: []string{"r2"}},
		{name: "two peers of one address share its slot",
			routers: []Router{r1, sameAddr}, want: []Slot{slot(r1, 1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan, problems := Decide(Config{}, tc.routers, nil, tc.installed)
			if d := cmp.Diff(tc.want, plan.Slots, addrCmp); d != "" {
				t.Errorf("slots (-want +got):\n%s", d)
			}
			var got []string
			for p := range problems {
				got = append(got, p)
			}
			if d := cmp.Diff(tc.problems, got); d != "" {
				t.Errorf("problems (-want +got):\n%s", d)
			}
		})
	}
}

func TestDecideOutOfSlots(t *testing.T) {
	cfg := Config{MarkMask: 0x3 << 8} // 3 slots
	var routers []Router
	for i := range 4 {
		r := r1
		r.Peer = string(rune('a' + i))
		r.Address = netip.AddrFrom4([4]byte{192, 168, 2, byte(1 + i)})
		routers = append(routers, r)
	}
	plan, problems := Decide(cfg, routers, nil, nil)
	if len(plan.Slots) != 3 || !errors.Is(problems["d"], ErrNoSlot) {
		t.Fatalf("slots %+v problems %v, want 3 slots and d without one", plan.Slots, problems)
	}
	if plan.Slots[2].Mark != 3<<8 || plan.Slots[2].Table != DefaultTableBase+3 {
		t.Errorf("third slot %+v", plan.Slots[2])
	}
}

func TestMergeRanges(t *testing.T) {
	in := []iprange.Range{
		rng(t, "192.168.254.0/25"), rng(t, "2001:db8::/64"), rng(t, "192.168.254.128/25"),
		rng(t, "10.0.0.5-10.0.0.9"), rng(t, "10.0.0.1-10.0.0.6"), rng(t, "10.0.0.20/32"), rng(t, "255.255.255.255/32"),
	}
	v4, v6 := mergeRanges(in)
	want4 := []iprange.Range{rng(t, "10.0.0.1-10.0.0.9"), rng(t, "10.0.0.20/32"), rng(t, "192.168.254.0/24"), rng(t, "255.255.255.255/32")}
	if d := cmp.Diff(want4, v4, addrCmp); d != "" {
		t.Errorf("v4 (-want +got):\n%s", d)
	}
	if len(v6) != 1 || v6[0] != rng(t, "2001:db8::/64") {
		t.Errorf("v6 %v", v6)
	}
	// The last address of the family has no exclusive end.
	els := setElements(v4, netip.IPv4Unspecified())
	if n := len(els); n != 1+2*4-1 || els[n-1].IntervalEnd {
		t.Errorf("elements %+v", els)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, ""},
		{Config{MarkMask: 0x0500}, "contiguous"},
		{Config{TableBase: 250}, "collide"},
		{Config{RulePriority: 40000}, "main table"},
	} {
		err := tc.cfg.Validate()
		if (err == nil) != (tc.want == "") || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

// TestFingerprint: the table is rebuilt when anything it renders changes.
func TestFingerprint(t *testing.T) {
	p, _ := Decide(Config{}, []Router{r1}, []iprange.Range{rng(t, "192.168.254.0/24")}, nil)
	base := Fingerprint(Config{}, p)
	q := p
	q.Slots = []Slot{p.Slots[0]}
	q.Slots[0].Neighbor.MAC = mac2
	if Fingerprint(Config{}, q) == base {
		t.Error("a new router MAC keeps the fingerprint")
	}
	q, _ = Decide(Config{}, []Router{r1}, []iprange.Range{rng(t, "192.168.253.0/24")}, nil)
	if Fingerprint(Config{}, q) == base {
		t.Error("new service addresses keep the fingerprint")
	}
	if len(nftRules(Config{}, p)) != 1+1+2 {
		t.Errorf("rules for one router: %d, want state, mark and two restores", len(nftRules(Config{}, p)))
	}
}
