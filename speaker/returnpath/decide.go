// Package returnpath makes a node send the replies of the connections a
// router forwarded to a service address back through that router
// (BGPPeer.spec.returnPath: symmetric, issue 12).
//
// The seed's problem: clients, router and nodes share one subnet. A
// client's SYN to a service address goes to its default gateway, the
// router, which forwards it to a node; the node answers the client
// directly, since the client is on-link. The router's conntrack sees one
// half of the connection and its INVALID drop kills the rest. The fix on
// the node is policy routing by connection:
//
//   - mark: a new connection whose first packet came from the router's MAC
//     address (on the interface towards it) and goes to a service address
//     gets a per-router conntrack mark (ct mark, under a mask of ours);
//   - restore: every reply-direction packet of a marked connection gets the
//     mark as its packet mark (fwmark), in prerouting (replies forwarded from
//     pods through the bridge/veth, or from another node after kube-proxy's
//     SNAT) and output (replies of host-network processes);
//   - route: `ip rule fwmark M/mask lookup T` with table T holding
//     `default via <router> dev <link>`.
//
// The conntrack mark lives in the connection, not the packet, so it
// survives kube-proxy's DNAT and SNAT (the reply is un-NATed by the same
// conntrack entry), for externalTrafficPolicy Cluster and Local alike. The
// rules sit in an nftables table of our own (inet bgplb_returnpath) at
// priority mangle (-150): before kube-proxy's DNAT at -100 (so the
// destination is still the service address) whether kube-proxy runs in
// iptables mode (legacy or nft backend: the netfilter hooks and the
// conntrack entry are shared) or in nftables mode (its own table). Neither
// kube-proxy nor the common CNIs touch the ct mark bits of our mask.
//
// Deciding is pure (Decide); doing is behind Host (netlink and nftables
// in production, a fake in tests); Manager glues them in a level-triggered
// loop.
package returnpath

import (
	"cmp"
	"errors"
	"fmt"
	"math/bits"
	"net"
	"net/netip"
	"slices"

	"github.com/bgplb/bgplb/internal/iprange"
)

// Defaults of Config.
const (
	// DefaultMarkMask is the ct mark and packet mark bits that are ours:
	// 15 routers. kube-proxy uses 0x4000 and 0x8000 of the packet mark,
	// Cilium the low 16 bits, flannel and kube-router none of these; Calico
	// defaults to 0xffff0000 (set --return-path-mark-mask to bits Calico's
	// iptablesMarkMask leaves free).
	DefaultMarkMask uint32 = 0x0f000000
	// DefaultTableBase: router slot n uses route table DefaultTableBase+n.
	DefaultTableBase = 4200
	// DefaultRulePriority is the preference of our ip rules: before the
	// main table (32766), after the local one (0).
	DefaultRulePriority = 4200
	// DefaultProtocol marks our routes, as bgplb-routeragent's on the
	// router ("proto bgplb").
	DefaultProtocol = 220
)

// Config are the node-wide settings (speaker flags).
type Config struct {
	MarkMask     uint32
	TableBase    int
	RulePriority int
	Protocol     int
}

// WithDefaults fills zero fields.
func (c Config) WithDefaults() Config {
	if c.MarkMask == 0 {
		c.MarkMask = DefaultMarkMask
	}
	if c.TableBase == 0 {
		c.TableBase = DefaultTableBase
	}
	if c.RulePriority == 0 {
		c.RulePriority = DefaultRulePriority
	}
	if c.Protocol == 0 {
		c.Protocol = DefaultProtocol
	}
	return c
}

// Validate checks the mask: contiguous bits, room for at least one router.
func (c Config) Validate() error {
	c = c.WithDefaults()
	shift := bits.TrailingZeros32(c.MarkMask)
	if v := c.MarkMask >> shift; v&(v+1) != 0 {
		return fmt.Errorf("return path mark mask %#x: the bits must be contiguous", c.MarkMask)
	}
	if first, last := c.TableBase+1, c.TableBase+c.MaxSlots(); c.TableBase < 1 || last > 1<<30 || first <= 255 && last >= 252 {
		return fmt.Errorf("return path table base %d: tables %d-%d collide with the kernel's (252-255) or are invalid", c.TableBase, c.TableBase+1, c.TableBase+c.MaxSlots())
	}
	if c.RulePriority < 1 || c.RulePriority >= 32766 {
		return fmt.Errorf("return path rule priority %d: must be between 1 and 32765 (before the main table)", c.RulePriority)
	}
	return nil
}

// MaxSlots is how many routers the mask has room for (slot 0 is "no mark").
func (c Config) MaxSlots() int {
	c = c.WithDefaults()
	v := c.MarkMask >> bits.TrailingZeros32(c.MarkMask)
	return int(min(v, 1<<16))
}

// Mark is slot's mark under the mask.
func (c Config) Mark(slot int) uint32 {
	c = c.WithDefaults()
	return uint32(slot) << bits.TrailingZeros32(c.MarkMask)
}

// Table is slot's route table.
func (c Config) Table(slot int) int { return c.WithDefaults().TableBase + slot }

// Neighbour is where a router is: the interface towards it and its
// link-layer address.
type Neighbour struct {
	Link      string
	LinkIndex int
	MAC       net.HardwareAddr
}

// Router is one BGPPeer with returnPath: symmetric, as resolved on this
// node.
type Router struct {
	// Peer is the BGPPeer's name.
	Peer    string
	Address netip.Addr
	// Neighbour is valid when resolved; Err says why not.
	Neighbour Neighbour
	Err       error
}

// Installed is a slot found in the kernel (our policy rule and route).
type Installed struct {
	Slot   int
	Router netip.Addr
}

// Slot is one router's share of the plan.
type Slot struct {
	Peer     string
	Slot     int
	Mark     uint32
	Table    int
	Router   netip.Addr
	Neighbor Neighbour
}

// Plan is the whole desired node state.
type Plan struct {
	// Slots, by slot number.
	Slots []Slot
	// Services4 and Services6 are the service addresses, merged and sorted.
	Services4, Services6 []iprange.Range
}

// Empty reports whether the plan installs nothing.
func (p Plan) Empty() bool { return len(p.Slots) == 0 }

// ErrNoSlot: more routers than the mark mask has room for.
var ErrNoSlot = errors.New("no free return path slot (more routers with returnPath: symmetric than --return-path-mark-mask allows)")

// Decide computes the plan: one slot per resolved router, keeping the slot
// a router already has in the kernel (so that its connections' marks keep
// meaning the same router across restarts and other routers' changes),
// new routers taking the lowest free slot in address order. It returns the
// routers that got no slot with the reason.
func Decide(cfg Config, routers []Router, services []iprange.Range, installed []Installed) (Plan, map[string]error) {
	cfg = cfg.WithDefaults()
	problems := map[string]error{}
	var plan Plan
	plan.Services4, plan.Services6 = mergeRanges(services)

	routers = slices.Clone(routers)
	slices.SortFunc(routers, func(a, b Router) int {
		return cmp.Or(a.Address.Compare(b.Address), cmp.Compare(a.Peer, b.Peer))
	})
	have := map[netip.Addr]int{}
	for _, in := range installed {
		if in.Slot >= 1 && in.Slot <= cfg.MaxSlots() {
			if _, dup := have[in.Router]; !dup {
				have[in.Router] = in.Slot
			}
		}
	}
	taken := map[int]bool{}
	byAddr := map[netip.Addr]*Slot{}
	var pending []Router
	for _, r := range routers {
		if r.Err != nil {
			problems[r.Peer] = r.Err
			continue
		}
		if _, ok := byAddr[r.Address]; ok {
			// Two BGPPeers to one router address: one slot serves both.
			continue
		}
		s, ok := have[r.Address]
		if !ok || taken[s] {
			pending = append(pending, r)
			byAddr[r.Address] = nil
			continue
		}
		taken[s] = true
		plan.Slots = append(plan.Slots, slotFor(cfg, r, s))
		byAddr[r.Address] = &plan.Slots[len(plan.Slots)-1]
	}
	next := 1
	for _, r := range pending {
		for next <= cfg.MaxSlots() && taken[next] {
			next++
		}
		if next > cfg.MaxSlots() {
			problems[r.Peer] = ErrNoSlot
			continue
		}
		taken[next] = true
		plan.Slots = append(plan.Slots, slotFor(cfg, r, next))
	}
	slices.SortFunc(plan.Slots, func(a, b Slot) int { return cmp.Compare(a.Slot, b.Slot) })
	return plan, problems
}

func slotFor(cfg Config, r Router, slot int) Slot {
	return Slot{Peer: r.Peer, Slot: slot, Mark: cfg.Mark(slot), Table: cfg.Table(slot), Router: r.Address, Neighbor: r.Neighbour}
}

// SlotOf returns the slot serving peer's router (the peer may share it
// with another BGPPeer of the same address).
func (p Plan) SlotOf(peer string, addr netip.Addr) (Slot, bool) {
	for _, s := range p.Slots {
		if s.Peer == peer || s.Router == addr {
			return s, true
		}
	}
	return Slot{}, false
}

// mergeRanges sorts the ranges by family and merges overlapping and
// adjacent ones: an nftables interval set refuses overlapping elements.
func mergeRanges(in []iprange.Range) (v4, v6 []iprange.Range) {
	rs := slices.Clone(in)
	slices.SortFunc(rs, func(a, b iprange.Range) int {
		return cmp.Or(a.First.Compare(b.First), a.Last.Compare(b.Last))
	})
	var out []iprange.Range
	for _, r := range rs {
		if !r.First.IsValid() || !r.Last.IsValid() || r.First.BitLen() != r.Last.BitLen() || r.Last.Less(r.First) {
			continue
		}
		if n := len(out); n > 0 {
			last := &out[n-1]
			next := last.Last.Next()
			if last.First.BitLen() == r.First.BitLen() && (r.First.Compare(last.Last) <= 0 || (next.IsValid() && r.First == next)) {
				if last.Last.Less(r.Last) {
					last.Last = r.Last
				}
				continue
			}
		}
		out = append(out, r)
	}
	for _, r := range out {
		if r.First.Is4() {
			v4 = append(v4, r)
		} else {
			v6 = append(v6, r)
		}
	}
	return v4, v6
}
