package pinning

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Kernel is the side-effect boundary: install exactly these pins, or none.
type Kernel interface {
	// Apply makes the kernel hold exactly pins (our nft table, fib rules
	// and per-slot routes to subnets). full re-reads the kernel even when
	// the pins are those applied last (something may have removed them).
	Apply(subnets []netip.Prefix, pins []Pin, full bool) error
	// Remove deletes our table, rules and routes.
	Remove() error
	// Load reads the pins a previous run left (slot by next hop), so that
	// a restarted agent keeps each connection's slot on its next hop.
	Load() (map[netip.Addr]int, error)
	// Failed returns the next hops among nhs whose neighbour entry
	// failed (unreachable); a next hop without an entry is not reported.
	Failed(nhs []netip.Addr) (map[netip.Addr]bool, error)
}

// Netlink is the real Kernel, in the calling thread's network namespace.
type Netlink struct {
	protocol int
	h        *netlink.Handle // rules, neighbours, route changes
	strict   *netlink.Handle // route dumps of one table
	// applied: the fingerprint of the last successful Apply ("" none).
	applied string
}

// NewNetlink opens the netlink handle; rules and routes carry protocol
// (routes.protocol) so that they are recognisable as ours.
func NewNetlink(protocol int) (*Netlink, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	strict, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("netlink: %w", err)
	}
	// Strict checking makes the kernel dump one table, not every route
	// (the rule dump refuses it).
	if err := strict.SetStrictCheck(true); err != nil {
		h.Close()
		strict.Close()
		return nil, fmt.Errorf("netlink strict check: %w", err)
	}
	return &Netlink{protocol: protocol, h: h, strict: strict}, nil
}

// Close closes the handles.
func (k *Netlink) Close() {
	k.h.Close()
	k.strict.Close()
}

func fingerprint(subnets []netip.Prefix, pins []Pin) string {
	var b strings.Builder
	for _, s := range subnets {
		b.WriteString(s.String() + ",")
	}
	for _, p := range pins {
		fmt.Fprintf(&b, ";%s=%d", p.NextHop, p.Slot)
	}
	return b.String()
}

// Apply: routes of new pins, rules, the nft table, then the rules and
// routes that go (a packet marked for a slot without rule follows the
// ordinary route, so every intermediate state forwards).
func (k *Netlink) Apply(subnets []netip.Prefix, pins []Pin, full bool) error {
	fp := fingerprint(subnets, pins)
	if !full && fp == k.applied {
		return nil
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables netlink: %w", err)
	}
	have, err := readNft(c)
	if err != nil {
		return err
	}
	rules, err := k.ourRules()
	if err != nil {
		return err
	}
	wantTables := map[int]bool{}
	for _, p := range pins {
		wantTables[p.Table()] = true
		if err := k.syncRoutes(p.Table(), wantRoutes(subnets, p, k.protocol)); err != nil {
			return err
		}
	}
	if err := k.syncRules(rules, pins, true); err != nil {
		return err
	}
	if (len(pins) > 0 && !have.whole) || (len(pins) == 0 && have.exists) || fp != k.applied {
		if err := nftBatch(c, have, subnets, pins); err != nil {
			return err
		}
		if err := c.Flush(); err != nil {
			return fmt.Errorf("nftables table inet %s: %w", NftTable, err)
		}
	}
	if err := k.syncRules(rules, pins, false); err != nil {
		return err
	}
	for _, r := range rules {
		if !wantTables[r.Table] {
			if err := k.syncRoutes(r.Table, nil); err != nil {
				return err
			}
		}
	}
	k.applied = fp
	return nil
}

// Remove deletes everything of ours, the routes of every slot's table too.
func (k *Netlink) Remove() error {
	k.applied = ""
	var errs []error
	if c, err := nftables.New(); err != nil {
		errs = append(errs, fmt.Errorf("nftables netlink: %w", err))
	} else {
		_ = nftBatch(c, nftState{}, nil, nil) // no pins: only the delete
		if err := c.Flush(); err != nil {
			errs = append(errs, fmt.Errorf("delete nftables table inet %s: %w", NftTable, err))
		}
	}
	rules, err := k.ourRules()
	errs = append(errs, err)
	errs = append(errs, k.syncRules(rules, nil, false))
	for s := 1; s <= MaxSlots; s++ {
		errs = append(errs, k.syncRoutes(TableBase+s, nil))
	}
	return errors.Join(errs...)
}

// Load reads our rules and the next hop of each one's table.
func (k *Netlink) Load() (map[netip.Addr]int, error) {
	rules, err := k.ourRules()
	if err != nil {
		return nil, err
	}
	out := map[netip.Addr]int{}
	for _, r := range rules {
		rs, err := k.strict.RouteListFiltered(r.Family, &netlink.Route{Table: r.Table}, netlink.RT_FILTER_TABLE)
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("list routes of table %d: %w", r.Table, err)
		}
		for _, rt := range rs {
			if nh, ok := netip.AddrFromSlice(rt.Gw); ok && rt.Table == r.Table {
				out[nh.Unmap()] = r.Table - TableBase
				break
			}
		}
	}
	return out, nil
}

func familyOf(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// wantRoutes: the subnets of the pin's family via its next hop.
func wantRoutes(subnets []netip.Prefix, p Pin, protocol int) []netlink.Route {
	var out []netlink.Route
	for _, s := range subnets {
		if s.Addr().Is4() != p.NextHop.Is4() {
			continue
		}
		out = append(out, netlink.Route{Table: p.Table(), Dst: ipNet(s.Masked()), Gw: p.NextHop.AsSlice(),
			Protocol: netlink.RouteProtocol(protocol), Family: familyOf(p.NextHop)})
	}
	return out
}

// syncRoutes makes table hold exactly want.
func (k *Netlink) syncRoutes(table int, want []netlink.Route) error {
	var have []netlink.Route
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := k.strict.RouteListFiltered(fam, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
		if errors.Is(err, unix.ENOENT) {
			continue // no such table: empty
		}
		if err != nil {
			return fmt.Errorf("list routes of table %d: %w", table, err)
		}
		have = append(have, rs...)
	}
	same := func(a, b netlink.Route) bool {
		return a.Dst != nil && b.Dst != nil && a.Dst.String() == b.Dst.String() && a.Gw.Equal(b.Gw) && a.Table == b.Table
	}
	for _, w := range want {
		if slices.ContainsFunc(have, func(h netlink.Route) bool { return same(h, w) }) {
			continue
		}
		if err := k.h.RouteReplace(&w); err != nil {
			return fmt.Errorf("route %s via %s table %d: %w", w.Dst, w.Gw, table, err)
		}
	}
	for _, h := range have {
		if h.Table != table || slices.ContainsFunc(want, func(w netlink.Route) bool { return same(h, w) }) {
			continue
		}
		if err := k.h.RouteDel(&h); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("delete route %s table %d: %w", h.Dst, table, err)
		}
	}
	return nil
}

// ourRules lists the fib rules at RulePriority with our protocol.
func (k *Netlink) ourRules() ([]netlink.Rule, error) {
	var out []netlink.Rule
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := k.h.RuleList(fam)
		if err != nil {
			return nil, fmt.Errorf("list fib rules: %w", err)
		}
		for _, r := range rs {
			if r.Priority == RulePriority && int(r.Protocol) == k.protocol && r.Table > TableBase && r.Table <= TableBase+MaxSlots {
				r.Family = fam
				out = append(out, r)
			}
		}
	}
	return out, nil
}

func wantRule(p Pin, protocol int) *netlink.Rule {
	r := netlink.NewRule()
	mask := MarkMask
	r.Priority, r.Family, r.Table, r.Mark, r.Mask, r.Protocol = RulePriority, familyOf(p.NextHop), p.Table(), p.Mark(), &mask, uint8(protocol)
	return r
}

func sameRule(a, b netlink.Rule) bool {
	return a.Family == b.Family && a.Table == b.Table && a.Mark == b.Mark && a.Mask != nil && b.Mask != nil && *a.Mask == *b.Mask
}

// syncRules adds the pins' missing rules (add) or deletes the rules no pin
// wants (!add).
func (k *Netlink) syncRules(have []netlink.Rule, pins []Pin, add bool) error {
	if add {
		for _, p := range pins {
			w := wantRule(p, k.protocol)
			if slices.ContainsFunc(have, func(h netlink.Rule) bool { return sameRule(h, *w) }) {
				continue
			}
			if err := k.h.RuleAdd(w); err != nil && !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("fib rule fwmark %#x table %d: %w", w.Mark, w.Table, err)
			}
		}
		return nil
	}
	for _, h := range have {
		if slices.ContainsFunc(pins, func(p Pin) bool { return sameRule(h, *wantRule(p, k.protocol)) }) {
			continue
		}
		if err := k.h.RuleDel(&h); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete fib rule fwmark %#x table %d: %w", h.Mark, h.Table, err)
		}
	}
	return nil
}

// Failed reads the neighbour tables.
func (k *Netlink) Failed(nhs []netip.Addr) (map[netip.Addr]bool, error) {
	out := map[netip.Addr]bool{}
	if len(nhs) == 0 {
		return out, nil
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		ns, err := k.h.NeighList(0, fam)
		if err != nil {
			return nil, fmt.Errorf("list neighbours: %w", err)
		}
		for _, n := range ns {
			a, ok := netip.AddrFromSlice(n.IP)
			if !ok || !slices.Contains(nhs, a.Unmap()) {
				continue
			}
			if n.State&netlink.NUD_FAILED != 0 {
				out[a.Unmap()] = true
			}
		}
	}
	return out, nil
}
