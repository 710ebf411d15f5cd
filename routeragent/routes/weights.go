package routes

import (
	"math"
	"net/netip"
	"slices"
)

// Weights are the weights announced for a route's next hops (the BGP
// link-bandwidth extended community, any unit), by prefix. A prefix absent,
// or one of whose next hops has no weight, gets equal weights: as FRR does
// by default, weights only count when every path carries one.
type Weights map[netip.Prefix]map[netip.Addr]float64

// MaxWeight is the kernel's largest next-hop weight: multipath routes keep
// weight-1 in rtnh_hops (a byte), nexthop groups in a byte too (16 bits
// since Linux 6.12, which we do not need).
const MaxWeight = 256

// Normalize turns the announced weights of next hops nhs into the kernel's
// 1..MaxWeight, in the order of nhs, keeping their ratios: small whole
// ratios exactly (3:1 stays 3:1, 1.5:1 becomes 3:2), others scaled so the
// largest is MaxWeight. It returns nil when the weights are equal, or
// missing, zero or not finite for any next hop (equal-cost multipath then).
// Pure.
func Normalize(nhs []netip.Addr, announced map[netip.Addr]float64) []uint16 {
	if len(nhs) < 2 || announced == nil {
		return nil
	}
	lo, hi := math.Inf(1), 0.0
	for _, nh := range nhs {
		w, ok := announced[nh]
		if !ok || !(w > 0) || math.IsInf(w, 0) {
			return nil
		}
		lo, hi = min(lo, w), max(hi, w)
	}
	if hi/lo < 1+1e-6 {
		return nil
	}
	out := make([]uint16, len(nhs))
	// The smallest multiplier that makes every ratio whole (within 1%).
	for k := 1.0; k*hi/lo <= MaxWeight; k++ {
		whole := true
		for i, nh := range nhs {
			r := announced[nh] / lo * k
			if math.Abs(r-math.Round(r)) > 0.01*r {
				whole = false
				break
			}
			out[i] = uint16(math.Round(r))
		}
		if whole {
			return out
		}
	}
	for i, nh := range nhs {
		out[i] = uint16(max(1, math.Round(announced[nh]/hi*MaxWeight)))
	}
	if slices.Min(out) == slices.Max(out) {
		return nil
	}
	return out
}
