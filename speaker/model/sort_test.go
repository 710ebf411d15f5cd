package model

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestSortByPrefix compares sortByPrefix with a plain sort by
// netip.Addr.Compare and length, over mixed IPv4/IPv6 lists with duplicates,
// already sorted and reversed lists; IPv4 only (the one-word key) and mixed.
func TestSortByPrefix(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	withV6 := false
	randPrefix := func() netip.Prefix {
		if withV6 && rng.IntN(3) == 0 {
			var b [16]byte
			b[0], b[1], b[15] = 0x20, 0x01, byte(rng.IntN(8))
			b[7] = byte(rng.IntN(4))
			return netip.PrefixFrom(netip.AddrFrom16(b), []int{64, 128}[rng.IntN(2)]).Masked()
		}
		a := netip.AddrFrom4([4]byte{10, byte(rng.IntN(3)), byte(rng.IntN(4)), byte(rng.IntN(6))})
		return netip.PrefixFrom(a, []int{24, 32}[rng.IntN(2)]).Masked()
	}
	ref := func(a, b Advertisement) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return a.Prefix.Bits() - b.Prefix.Bits()
	}
	prefixes := func(l []Advertisement) []string {
		var out []string
		for _, a := range l {
			out = append(out, a.Prefix.String())
		}
		return out
	}
	for _, v6 := range []bool{false, true} {
		withV6 = v6
		for n := 0; n < 200; n++ {
			list := make([]Advertisement, n)
			for i := range list {
				list[i] = Advertisement{Prefix: randPrefix(), LocalPref: uint32(i)}
			}
			for _, variant := range []string{"random", "sorted", "reversed"} {
				in := slices.Clone(list)
				switch variant {
				case "sorted":
					slices.SortStableFunc(in, ref)
				case "reversed":
					slices.SortStableFunc(in, ref)
					slices.Reverse(in)
				}
				want := slices.Clone(in)
				slices.SortStableFunc(want, ref)
				got := slices.Clone(in)
				sortByPrefix(got)
				if diff := cmp.Diff(prefixes(want), prefixes(got)); diff != "" {
					t.Fatalf("n=%d %s: order (-want +got):\n%s", n, variant, diff)
				}
				// A permutation: every element is still there once.
				key := func(a Advertisement) uint32 { return a.LocalPref }
				gotIDs, inIDs := make([]uint32, n), make([]uint32, n)
				for i := range got {
					gotIDs[i], inIDs[i] = key(got[i]), key(in[i])
				}
				slices.Sort(gotIDs)
				slices.Sort(inIDs)
				if diff := cmp.Diff(inIDs, gotIDs); diff != "" {
					t.Fatalf("n=%d %s: elements (-want +got):\n%s", n, variant, diff)
				}
			}
		}
	}
}
