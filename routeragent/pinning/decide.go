// Package pinning keeps an established connection through the router on the
// next hop it started on, while the ECMP set of its route changes.
//
// A route's next hops change during a drain (a next hop carrying
// GRACEFUL_SHUTDOWN leaves the set), a rolling update (the weights change)
// and a speaker restart (GRACEFUL_SHUTDOWN, then a withdrawal). Hashing,
// even a resilient nexthop group's, moves the flows of a next hop that
// leaves to another one, whose node has no socket for them and resets them.
// Pinning keeps per-connection state instead (see nft.go):
//
//   - postrouting: the first packet of a flow (TCP, UDP, SCTP) to a service
//     subnet, routed by the ordinary (hashed) route, records its next hop,
//     `rt ip nexthop`, as a slot number in an nftables flow map keyed by
//     addresses, protocol and ports;
//   - prerouting: the flow's next packets get their slot in the packet mark
//     (bits MarkMask), before the routing decision;
//   - per slot, `ip rule fwmark SLOT/MASK lookup TABLE` (priority
//     RulePriority), the table holding the service subnets via the slot's
//     next hop.
//
// A next hop keeps its slot while it is announced (GRACEFUL_SHUTDOWN or a
// zero weight included) and for a linger after it was withdrawn (a speaker
// restart withdraws while its node still serves); it loses it at once when
// it is really gone (its BFD session went down, its neighbour entry failed),
// so its connections re-hash. Decide is the pure decision; Netlink applies
// it.
package pinning

import (
	"net/netip"
	"slices"
	"time"
)

// Kernel identifiers the agent owns.
const (
	// NftTable is our inet table (its own, beside the firewall's "bgplb").
	NftTable = "bgplb_pin"
	// MarkMask are the packet mark bits of the slot.
	MarkMask uint32 = 0xff000000
	// MarkShift is the slot's position in the mark.
	MarkShift = 24
	// MaxSlots bounds the next hops pinned at once (the mask's values but 0).
	MaxSlots = 255
	// RulePriority is the priority of our fib rules: before the main
	// table's (32766) and a routes.table's usual rule, after local (0).
	RulePriority = 900
	// TableBase + slot is the routing table of a slot.
	TableBase = 0x62700000
)

// Pin is a next hop with its slot.
type Pin struct {
	NextHop netip.Addr
	Slot    int
}

// Mark is the pin's mark value (within MarkMask).
func (p Pin) Mark() uint32 { return uint32(p.Slot) << MarkShift }

// Table is the pin's routing table.
func (p Pin) Table() int { return TableBase + p.Slot }

// State is what Decide remembers between passes.
type State struct {
	// Slots: the pinned next hops.
	Slots map[netip.Addr]int
	// Withdrawn: when a pinned next hop stopped being announced.
	Withdrawn map[netip.Addr]time.Time
	// Last is the slot allocated last: slots are handed out round robin,
	// so a freed slot (whose old connections may still carry its mark) is
	// reused as late as possible.
	Last int
}

// Resume is the state of an agent that found loaded (Netlink.Load) in the
// kernel at start: the same slots, each withdrawn at now (it lingers
// unless announced by the first passes, or the stale routes kept).
func Resume(loaded map[netip.Addr]int, now time.Time) State {
	st := State{Slots: map[netip.Addr]int{}, Withdrawn: map[netip.Addr]time.Time{}}
	for nh, s := range loaded {
		if s < 1 || s > MaxSlots {
			continue
		}
		st.Slots[nh], st.Withdrawn[nh] = s, now
		st.Last = max(st.Last, s)
	}
	return st
}

// Input is what one decision looks at.
type Input struct {
	Now time.Time
	// Announced: the next hops of the accepted paths (draining ones
	// included) and of the stale routes kept.
	Announced map[netip.Addr]bool
	// Gone: next hops really gone (BFD down, neighbour failed): no linger.
	Gone map[netip.Addr]bool
	// Linger: how long a withdrawn next hop keeps its pin.
	Linger time.Duration
	// Max bounds the pins (at most MaxSlots).
	Max int
}

// Decision is the pins to install.
type Decision struct {
	// Pins sorted by next hop.
	Pins []Pin
	// Overflow: announced next hops left unpinned (over Max).
	Overflow []netip.Addr
	// Wake: when the earliest linger ends (zero: none lingers).
	Wake time.Time
	// Unpinned: next hops whose pin went in this decision.
	Unpinned []netip.Addr
}

// Decide returns the next state and the pins. Pure.
func Decide(prev State, in Input) (State, Decision) {
	limit := min(in.Max, MaxSlots)
	if in.Max <= 0 {
		limit = MaxSlots
	}
	next := State{Slots: map[netip.Addr]int{}, Withdrawn: map[netip.Addr]time.Time{}, Last: prev.Last}
	var d Decision
	// Keep the pins that stay: announced, or withdrawn and lingering.
	for nh, slot := range prev.Slots {
		switch {
		case in.Gone[nh]:
		case in.Announced[nh]:
			next.Slots[nh] = slot
		default:
			since, ok := prev.Withdrawn[nh]
			if !ok {
				since = in.Now
			}
			if in.Now.Sub(since) >= in.Linger {
				break
			}
			next.Slots[nh], next.Withdrawn[nh] = slot, since
			if end := since.Add(in.Linger); d.Wake.IsZero() || end.Before(d.Wake) {
				d.Wake = end
			}
		}
		if _, kept := next.Slots[nh]; !kept {
			d.Unpinned = append(d.Unpinned, nh)
		}
	}
	used := make(map[int]bool, len(next.Slots))
	for _, s := range next.Slots {
		used[s] = true
	}
	// New next hops, in address order so the allocation is deterministic.
	var fresh []netip.Addr
	for nh := range in.Announced {
		if _, ok := next.Slots[nh]; !ok && !in.Gone[nh] {
			fresh = append(fresh, nh)
		}
	}
	slices.SortFunc(fresh, netip.Addr.Compare)
	for _, nh := range fresh {
		if len(next.Slots) >= limit {
			d.Overflow = append(d.Overflow, nh)
			continue
		}
		s := next.Last
		for {
			s = s%MaxSlots + 1
			if !used[s] {
				break
			}
		}
		used[s], next.Slots[nh], next.Last = true, s, s
	}
	for nh, s := range next.Slots {
		d.Pins = append(d.Pins, Pin{NextHop: nh, Slot: s})
	}
	slices.SortFunc(d.Pins, func(a, b Pin) int { return a.NextHop.Compare(b.NextHop) })
	slices.SortFunc(d.Unpinned, netip.Addr.Compare)
	return next, d
}
