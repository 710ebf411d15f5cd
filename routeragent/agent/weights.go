package agent

import (
	"net/netip"

	"github.com/bgplb/bgplb/routeragent/policy"
	"github.com/bgplb/bgplb/routeragent/routes"
)

// weightsOf collects the link-bandwidth weights of the accepted paths, by
// prefix and next hop (the largest when a next hop announced several).
// Prefixes whose paths carry none are absent, so a router with no weighted
// speaker keeps an empty map. Pure.
func weightsOf(accepted []policy.Path) routes.Weights {
	w := routes.Weights{}
	for _, p := range accepted {
		addWeight(w, p)
	}
	return w
}

func addWeight(w routes.Weights, p policy.Path) {
	if p.Bandwidth <= 0 {
		return
	}
	pfx, nh := p.Prefix.Masked(), p.NextHop.Unmap()
	m := w[pfx]
	if m == nil {
		m = map[netip.Addr]float64{}
		w[pfx] = m
	}
	m[nh] = max(m[nh], float64(p.Bandwidth))
}

// updateWeights redoes the weights of the changed prefixes from their
// paths (every path now received for them) that pol accepts, in place.
func updateWeights(w routes.Weights, pol *policy.Policy, changed []netip.Prefix, paths []policy.Path) {
	for _, pfx := range changed {
		delete(w, pfx)
	}
	for _, p := range paths {
		if p.Bandwidth > 0 && pol.Check(p) == policy.Accept {
			addWeight(w, p)
		}
	}
}
