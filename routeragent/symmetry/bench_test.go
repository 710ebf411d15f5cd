package symmetry_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/ti-mo/conntrack"

	"github.com/bgplb/bgplb/internal/netnstest"
	"github.com/bgplb/bgplb/routeragent/symmetry"
)

// BenchmarkObserve: one look of the tracker over 10,000 service flows
// (half assured, half unreplied), as the agent makes every 2 s.
func BenchmarkObserve(b *testing.B) {
	var flows []symmetry.Flow
	for i := range 10000 {
		flows = append(flows, symmetry.Flow{Protocol: 6, Assured: i%2 == 0, SeenReply: i%2 == 0,
			Client:  netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 168, 2, byte(i % 250)}), uint16(1024+i)),
			Service: netip.MustParseAddrPort("192.168.254.1:443")})
	}
	tr := symmetry.NewTracker(symmetry.Config{})
	t0 := time.Now()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		tr.Observe(t0.Add(time.Duration(i)*2*time.Second), flows, 0, true, hops)
	}
}

// BenchmarkConntrackFlows: one dump of a conntrack table of 20,000
// entries, 1,000 of them to a service subnet, in a namespace.
func BenchmarkConntrackFlows(b *testing.B) {
	ns := netnstest.New(b, "ctb")
	if err := ns.Do(func() error {
		c, err := conntrack.Dial(nil)
		if err != nil {
			return err
		}
		defer c.Close()
		for i := range 20000 {
			dst := netip.MustParseAddr("10.0.0.1")
			if i%20 == 0 {
				dst = netip.MustParseAddr(serviceAddr)
			}
			f := conntrack.NewFlow(17, 0, netip.AddrFrom4([4]byte{192, 168, byte(i >> 8), byte(i)}), dst, uint16(1024+i%60000), 443, 300, 0)
			if err := c.Create(f); err != nil {
				return fmt.Errorf("create flow %d: %w", i, err)
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	if err := ns.Do(func() error {
		for b.Loop() {
			fs, err := symmetry.Conntrack{}.Flows(v4Subnets)
			if err != nil {
				return err
			}
			if len(fs) != 1000 {
				return fmt.Errorf("%d service flows, want 1000", len(fs))
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
}

// TestConntrackMatchesLibrary: the dump reader finds the same service
// flows, with the same fields, as github.com/ti-mo/conntrack, for IPv4 and
// IPv6 entries among others. (ctnetlink refuses to create entries with
// SEEN_REPLY or ASSURED set; the kernel tests of verify mode read real
// assured flows.)
func TestConntrackMatchesLibrary(t *testing.T) {
	ns := netnstest.New(t, "ctm")
	subnets := []netip.Prefix{netip.MustParsePrefix("192.168.254.0/24"), netip.MustParsePrefix("2001:db8:254::/64")}
	var got, want []symmetry.Flow
	if err := ns.Do(func() error {
		c, err := conntrack.Dial(nil)
		if err != nil {
			return err
		}
		defer c.Close()
		for i := range 3000 {
			src, dst := netip.AddrFrom4([4]byte{192, 168, 2, byte(i)}), netip.MustParseAddr("10.0.0.1")
			switch i % 3 {
			case 1:
				dst = netip.AddrFrom4([4]byte{192, 168, 254, byte(i)})
			case 2:
				src, dst = netip.MustParseAddr(fmt.Sprintf("2001:db8:2::%x", i)), netip.MustParseAddr(fmt.Sprintf("2001:db8:254::%x", i%7))
			}
			proto := uint8(6)
			if i%5 == 0 {
				proto = 17
			}
			if err := c.Create(conntrack.NewFlow(proto, 0, src, dst, uint16(1024+i), uint16(80+i%3), 300, 0)); err != nil {
				return fmt.Errorf("create %d: %w", i, err)
			}
		}
		raw, err := c.Dump(nil)
		if err != nil {
			return err
		}
		for _, f := range raw {
			o := f.TupleOrig
			want = append(want, symmetry.Flow{Protocol: o.Proto.Protocol,
				Client:      netip.AddrPortFrom(o.IP.SourceAddress, o.Proto.SourcePort),
				Service:     netip.AddrPortFrom(o.IP.DestinationAddress, o.Proto.DestinationPort),
				ReplySource: f.TupleReply.IP.SourceAddress, SeenReply: f.Status.SeenReply(), Assured: f.Status.Assured()})
		}
		got, err = symmetry.Conntrack{}.Flows(subnets)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	want = symmetry.InSubnets(want, subnets)
	if len(want) != 2000 {
		t.Fatalf("the library found %d service flows, want 2000", len(want))
	}
	if d := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
		cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); d != "" {
		t.Errorf("(-library +ours):\n%s", d)
	}
}
