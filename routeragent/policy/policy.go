// Package policy decides which received BGP paths the router accepts and turns
// the accepted ones into the routes the kernel should have. It is pure: no
// GoBGP, netlink or clock, so every rule is table-tested.
package policy

import (
	"cmp"
	"net/netip"
	"slices"
)

// Path is one received announcement, reduced to what the policy needs.
type Path struct {
	// Peer is the announcing speaker's address (the BGP session's remote end).
	Peer netip.Addr
	// Prefix is the announced destination.
	Prefix netip.Prefix
	// NextHop is the announced next hop.
	NextHop netip.Addr
	// Seq orders paths by arrival; the max-prefix limit keeps the earliest.
	Seq uint64
	// GracefulShutdown: the path carries GRACEFUL_SHUTDOWN (RFC 8326,
	// 65535:0), its speaker is draining. It leaves the route's next hops
	// while another remains (NextHops).
	GracefulShutdown bool
	// Bandwidth is the path's BGP link-bandwidth extended community (0:
	// none): the speaker's weight for its next hop (for bgplb speakers,
	// its ready local endpoints). The router weights next hops by it.
	Bandwidth float32
}

// Reason says why a path was rejected; "" means accepted.
type Reason string

// Rejection reasons. They appear in status, logs and metric labels, so they
// are stable identifiers.
const (
	Accept               Reason = ""
	RejectDefaultRoute   Reason = "default-route"
	RejectFamilyMismatch Reason = "family-mismatch"
	RejectNotHostRoute   Reason = "not-host-route"
	RejectOutsideSubnets Reason = "outside-service-subnets"
	RejectNextHopNotPeer Reason = "next-hop-not-peer"
	RejectNextHopNotLAN  Reason = "next-hop-not-on-lan"
	RejectMaxPrefixes    Reason = "max-prefixes"
)

// Reasons lists every rejection reason, for metrics and status tables.
var Reasons = []Reason{RejectDefaultRoute, RejectFamilyMismatch, RejectNotHostRoute,
	RejectOutsideSubnets, RejectNextHopNotPeer, RejectNextHopNotLAN, RejectMaxPrefixes}

// Policy is the import policy.
type Policy struct {
	// ServiceSubnets are the only ranges host routes may come from.
	ServiceSubnets []netip.Prefix
	// Connected are the subnets configured on the LAN interfaces; a next hop
	// must lie in one of them (and not be one of our own addresses).
	Connected []netip.Prefix
	// Local are our own addresses on the LAN interfaces.
	Local []netip.Addr
	// MaxPrefixes returns the limit for a peer (0 = unlimited).
	MaxPrefixes func(peer netip.Addr) int
}

// Check decides one path on its own (everything but the max-prefix limit).
func (p *Policy) Check(path Path) Reason {
	pfx := path.Prefix.Masked()
	nh := path.NextHop.Unmap()
	peer := path.Peer.Unmap()
	switch {
	case pfx.Bits() == 0:
		return RejectDefaultRoute
	case !nh.IsValid() || nh.Is4() != pfx.Addr().Is4():
		return RejectFamilyMismatch
	case pfx.Bits() != pfx.Addr().BitLen():
		return RejectNotHostRoute
	case !containedIn(pfx.Addr(), p.ServiceSubnets):
		return RejectOutsideSubnets
	case nh != peer:
		return RejectNextHopNotPeer
	case !containedIn(nh, p.Connected) || slices.Contains(p.Local, nh):
		return RejectNextHopNotLAN
	}
	return Accept
}

func containedIn(a netip.Addr, ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Rejected is a path with the reason it was refused.
type Rejected struct {
	Path   Path
	Reason Reason
}

// Evaluate decides every path. Per peer, at most MaxPrefixes paths are
// accepted: the earliest by Seq (then by prefix), so a peer that goes over its
// limit never displaces routes that already carry traffic. Both results are
// sorted by peer, prefix.
func (p *Policy) Evaluate(paths []Path) (accepted []Path, rejected []Rejected) {
	// One slice for the accepted paths and a count per peer: a full pass
	// over 100,000 paths allocated 75 MB here when they were grouped by
	// peer first (BenchmarkPass, issue 20).
	accepted = make([]Path, 0, len(paths))
	perPeer := map[netip.Addr]int{}
	for _, path := range paths {
		if r := p.Check(path); r != Accept {
			rejected = append(rejected, Rejected{Path: path, Reason: r})
			continue
		}
		accepted = append(accepted, path)
		perPeer[path.Peer]++
	}
	var over map[netip.Addr]int // peer -> its limit, for the peers above it
	if p.MaxPrefixes != nil {
		for peer, n := range perPeer {
			if limit := p.MaxPrefixes(peer); limit > 0 && n > limit {
				if over == nil {
					over = map[netip.Addr]int{}
				}
				over[peer] = limit
			}
		}
	}
	if over != nil {
		accepted, rejected = keepEarliest(accepted, rejected, over)
	}
	slices.SortFunc(accepted, comparePath)
	sortRejected(rejected)
	return accepted, rejected
}

// keepEarliest keeps, of each peer in over, its earliest paths up to its
// limit (by Seq, then by prefix) and rejects the rest.
func keepEarliest(accepted []Path, rejected []Rejected, over map[netip.Addr]int) ([]Path, []Rejected) {
	byPeer := map[netip.Addr][]Path{}
	n := 0
	for _, a := range accepted {
		if _, ok := over[a.Peer]; ok {
			byPeer[a.Peer] = append(byPeer[a.Peer], a)
			continue
		}
		accepted[n] = a
		n++
	}
	accepted = accepted[:n]
	for peer, ps := range byPeer {
		slices.SortFunc(ps, func(x, y Path) int {
			if x.Seq != y.Seq {
				return cmp.Compare(x.Seq, y.Seq)
			}
			return x.Prefix.Addr().Compare(y.Prefix.Addr())
		})
		limit := over[peer]
		accepted = append(accepted, ps[:limit]...)
		for _, r := range ps[limit:] {
			rejected = append(rejected, Rejected{Path: r, Reason: RejectMaxPrefixes})
		}
	}
	return accepted, rejected
}

func sortRejected(rejected []Rejected) {
	slices.SortFunc(rejected, func(x, y Rejected) int { return comparePath(x.Path, y.Path) })
}

// comparePath orders paths by peer, then prefix.
func comparePath(a, b Path) int {
	if c := a.Peer.Compare(b.Peer); c != 0 {
		return c
	}
	if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits())
}

// DesiredRoutes turns accepted paths into one route per prefix whose next
// hops are every distinct announcing next hop, sorted (ECMP), less the
// draining ones while another remains (NextHops).
func DesiredRoutes(accepted []Path) map[netip.Prefix][]netip.Addr {
	out, _ := DesiredRoutesDraining(accepted)
	return out
}

// DesiredRoutesDraining is DesiredRoutes that also counts the draining next
// hops of each route (NextHops), left out or kept; nil when none drains.
func DesiredRoutesDraining(accepted []Path) (routes map[netip.Prefix][]netip.Addr, draining map[netip.Prefix]int) {
	out := make(map[netip.Prefix][]netip.Addr, len(accepted))
	var gshut []Path // rare: kept aside so the common case costs nothing more
	for _, p := range accepted {
		if p.GracefulShutdown {
			gshut = append(gshut, p)
			continue
		}
		addNextHop(out, p)
	}
	var onlyDraining map[netip.Prefix]bool
	for _, p := range gshut {
		pfx := p.Prefix.Masked()
		if _, ok := out[pfx]; !ok || onlyDraining[pfx] {
			if onlyDraining == nil {
				onlyDraining = map[netip.Prefix]bool{}
			}
			onlyDraining[pfx] = true
			addNextHop(out, p)
		}
	}
	for _, nhs := range out {
		slices.SortFunc(nhs, netip.Addr.Compare)
	}
	return out, countDraining(gshut, out, onlyDraining)
}

// countDraining counts the distinct draining next hops per prefix: those
// not also announced plainly, or all of them where only draining ones are.
func countDraining(gshut []Path, out map[netip.Prefix][]netip.Addr, onlyDraining map[netip.Prefix]bool) map[netip.Prefix]int {
	type key struct {
		pfx netip.Prefix
		nh  netip.Addr
	}
	seen := map[key]bool{}
	var n map[netip.Prefix]int
	for _, p := range gshut {
		pfx, nh := p.Prefix.Masked(), p.NextHop.Unmap()
		if !onlyDraining[pfx] && slices.Contains(out[pfx], nh) {
			continue // also announced without it: not draining
		}
		if k := (key{pfx, nh}); !seen[k] {
			seen[k] = true
			if n == nil {
				n = map[netip.Prefix]int{}
			}
			n[pfx]++
		}
	}
	return n
}

func addNextHop(out map[netip.Prefix][]netip.Addr, p Path) {
	pfx := p.Prefix.Masked()
	nh := p.NextHop.Unmap()
	if !slices.Contains(out[pfx], nh) {
		out[pfx] = append(out[pfx], nh)
	}
}

// NextHops decides the ECMP next hops of one prefix from its accepted
// paths: every distinct next hop, sorted, except those whose every path
// carries GRACEFUL_SHUTDOWN, unless all do (then all stay: a draining next
// hop is still better than no route, RFC 8326 section 3). draining counts
// the distinct next hops that carry it, whether dropped or kept.
func NextHops(accepted []Path) (nextHops []netip.Addr, draining int) {
	var gshut []netip.Addr
	for _, p := range accepted {
		nh := p.NextHop.Unmap()
		if p.GracefulShutdown {
			if !slices.Contains(gshut, nh) {
				gshut = append(gshut, nh)
			}
			continue
		}
		if !slices.Contains(nextHops, nh) {
			nextHops = append(nextHops, nh)
		}
	}
	// A next hop announced both with and without it (two sessions, one
	// draining) stays: it is not draining.
	gshut = slices.DeleteFunc(gshut, func(nh netip.Addr) bool { return slices.Contains(nextHops, nh) })
	if len(nextHops) == 0 {
		nextHops = gshut
	}
	slices.SortFunc(nextHops, netip.Addr.Compare)
	return nextHops, len(gshut)
}
