package returnpath

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Host is the side-effect boundary: find a router's neighbour entry, read
// what of ours is installed, make the kernel hold a plan. Kernel is the
// real one.
type Host interface {
	// Neighbour returns the interface towards addr and addr's link-layer
	// address from the neighbour table.
	Neighbour(addr netip.Addr) (Neighbour, error)
	// Installed returns the slots our policy rules and routes hold.
	Installed(cfg Config) ([]Installed, error)
	// Apply makes the kernel hold exactly plan: our nftables table, policy
	// rules and routes (an empty plan removes them all).
	Apply(cfg Config, plan Plan) error
}

// Kernel is the Host of the calling thread's network namespace (netlink
// and nftables sockets are opened per call).
type Kernel struct{}

var _ Host = Kernel{}

// Neighbour resolves addr: the route to it must be on-link (a router that
// is not on a connected subnet cannot be identified by its MAC address),
// and its neighbour entry must hold a link-layer address.
func (Kernel) Neighbour(addr netip.Addr) (Neighbour, error) {
	routes, err := netlink.RouteGet(addr.AsSlice())
	if err != nil {
		return Neighbour{}, fmt.Errorf("route to router %s: %w", addr, err)
	}
	if len(routes) == 0 {
		return Neighbour{}, fmt.Errorf("no route to router %s", addr)
	}
	rt := routes[0]
	if rt.Gw != nil {
		return Neighbour{}, fmt.Errorf("router %s is not on a connected subnet of this node (route via %s): returnPath symmetric needs it on-link", addr, rt.Gw)
	}
	link, err := netlink.LinkByIndex(rt.LinkIndex)
	if err != nil {
		return Neighbour{}, fmt.Errorf("interface %d towards router %s: %w", rt.LinkIndex, addr, err)
	}
	fam := netlink.FAMILY_V4
	if !addr.Is4() {
		fam = netlink.FAMILY_V6
	}
	neighs, err := netlink.NeighList(rt.LinkIndex, fam)
	if err != nil {
		return Neighbour{}, fmt.Errorf("neighbour table of %s: %w", link.Attrs().Name, err)
	}
	for _, n := range neighs {
		a, ok := netip.AddrFromSlice(n.IP)
		if !ok || a.Unmap() != addr {
			continue
		}
		if n.State&(netlink.NUD_FAILED|netlink.NUD_INCOMPLETE) != 0 || len(n.HardwareAddr) != 6 {
			break
		}
		return Neighbour{Link: link.Attrs().Name, LinkIndex: rt.LinkIndex, MAC: slices.Clone(n.HardwareAddr)}, nil
	}
	return Neighbour{}, fmt.Errorf("router %s has no usable neighbour entry on %s yet (its BGP session resolves it)", addr, link.Attrs().Name)
}

// Installed reads our policy rules (our priority and mask, a table in our
// range) and their tables' default routes.
func (Kernel) Installed(cfg Config) ([]Installed, error) {
	cfg = cfg.WithDefaults()
	rules, err := ourRules(cfg)
	if err != nil {
		return nil, err
	}
	routes, err := ourRoutes(cfg)
	if err != nil {
		return nil, err
	}
	gw := map[int]netip.Addr{}
	for _, r := range routes {
		if a, ok := netip.AddrFromSlice(r.Gw); ok {
			gw[r.Table] = a.Unmap()
		}
	}
	var out []Installed
	for _, r := range rules {
		if a, ok := gw[r.Table]; ok {
			out = append(out, Installed{Slot: r.Table - cfg.TableBase, Router: a})
		}
	}
	return out, nil
}

func ourRules(cfg Config) ([]netlink.Rule, error) {
	var out []netlink.Rule
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rules, err := netlink.RuleListFiltered(fam, &netlink.Rule{Priority: cfg.RulePriority}, netlink.RT_FILTER_PRIORITY)
		if err != nil {
			return nil, fmt.Errorf("list policy rules: %w", err)
		}
		for _, r := range rules {
			if r.Mask != nil && *r.Mask == cfg.MarkMask && r.Table > cfg.TableBase && r.Table <= cfg.TableBase+cfg.MaxSlots() {
				r.Family = fam
				out = append(out, r)
			}
		}
	}
	return out, nil
}

func ourRoutes(cfg Config) ([]netlink.Route, error) {
	var out []netlink.Route
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		for _, r := range routes {
			if int(r.Protocol) == cfg.Protocol && r.Table > cfg.TableBase && r.Table <= cfg.TableBase+cfg.MaxSlots() {
				out = append(out, r)
			}
		}
	}
	return out, nil
}

func family(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// Apply installs in the order that never leaves a mark without its route:
// routes, rules, the nftables table; then removes what is no longer
// wanted (nothing is marked for it any more).
func (Kernel) Apply(cfg Config, plan Plan) error {
	cfg = cfg.WithDefaults()
	routes, err := ourRoutes(cfg)
	if err != nil {
		return err
	}
	rules, err := ourRules(cfg)
	if err != nil {
		return err
	}
	wantRoute := map[int]netlink.Route{}
	wantRule := map[int]*netlink.Rule{}
	for _, s := range plan.Slots {
		bits := 32
		if !s.Router.Is4() {
			bits = 128
		}
		wantRoute[s.Table] = netlink.Route{
			Family: family(s.Router), Table: s.Table, Protocol: netlink.RouteProtocol(cfg.Protocol),
			Dst:       &net.IPNet{IP: netip.IPv6Unspecified().AsSlice()[:bits/8], Mask: net.CIDRMask(0, bits)},
			Gw:        s.Router.AsSlice(),
			LinkIndex: s.Neighbor.LinkIndex,
		}
		r := netlink.NewRule()
		r.Family, r.Priority, r.Table, r.Mark = family(s.Router), cfg.RulePriority, s.Table, s.Mark
		mask := cfg.MarkMask
		r.Mask = &mask
		wantRule[s.Table] = r
	}
	var errs []error
	for _, s := range plan.Slots {
		rt := wantRoute[s.Table]
		if hasRoute(routes, rt) {
			continue
		}
		if err := netlink.RouteReplace(&rt); err != nil {
			errs = append(errs, fmt.Errorf("route default via %s dev %s table %d: %w", s.Router, s.Neighbor.Link, s.Table, err))
		}
	}
	for _, s := range plan.Slots {
		if hasRule(rules, wantRule[s.Table]) {
			continue
		}
		if err := netlink.RuleAdd(wantRule[s.Table]); err != nil {
			errs = append(errs, fmt.Errorf("ip rule fwmark %#x/%#x lookup %d: %w", s.Mark, cfg.MarkMask, s.Table, err))
		}
	}
	if err := applyNft(cfg, plan); err != nil {
		errs = append(errs, err)
	}
	for _, r := range rules {
		if w := wantRule[r.Table]; w != nil && sameRule(r, w) {
			continue
		}
		if err := netlink.RuleDel(&r); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete ip rule lookup %d: %w", r.Table, err))
		}
	}
	for _, r := range routes {
		if w, ok := wantRoute[r.Table]; ok && sameRoute(r, w) {
			continue
		}
		if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route table %d: %w", r.Table, err))
		}
	}
	return errors.Join(errs...)
}

func sameRoute(have, want netlink.Route) bool {
	ones := 0 // a default route may come without Dst
	if have.Dst != nil {
		ones, _ = have.Dst.Mask.Size()
	}
	return have.Table == want.Table && ones == 0 && have.Gw.Equal(want.Gw) && have.LinkIndex == want.LinkIndex && have.Family == want.Family
}

func hasRoute(have []netlink.Route, want netlink.Route) bool {
	return slices.ContainsFunc(have, func(r netlink.Route) bool { return sameRoute(r, want) })
}

func sameRule(have netlink.Rule, want *netlink.Rule) bool {
	return have.Family == want.Family && have.Table == want.Table && have.Mark == want.Mark && have.Mask != nil && *have.Mask == *want.Mask
}

func hasRule(have []netlink.Rule, want *netlink.Rule) bool {
	return slices.ContainsFunc(have, func(r netlink.Rule) bool { return sameRule(r, want) })
}

// applyNft keeps our table: nothing when its state rule carries the plan's
// fingerprint and the chains hold the plan's number of rules, else the table
// rebuilt whole in one transaction (add, delete, add: no error whether it
// existed or not); an empty plan deletes it.
func applyNft(cfg Config, plan Plan) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	table := &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}
	want := nftRules(cfg, plan)
	if plan.Empty() {
		tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
		if err != nil {
			return fmt.Errorf("nftables: list tables: %w", err)
		}
		if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == TableName }) {
			return nil
		}
		c.DelTable(table)
		if err := c.Flush(); err != nil {
			return fmt.Errorf("nftables: delete table inet %s: %w", TableName, err)
		}
		return nil
	}
	if upToDate(c, table, want) {
		return nil
	}
	c.AddTable(table)
	c.DelTable(table)
	c.AddTable(table)
	accept := nftables.ChainPolicyAccept
	chains := map[string]*nftables.Chain{
		ChainPrerouting: c.AddChain(&nftables.Chain{Name: ChainPrerouting, Table: table, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle, Policy: &accept}),
		ChainOutput: c.AddChain(&nftables.Chain{Name: ChainOutput, Table: table, Type: nftables.ChainTypeRoute,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityMangle, Policy: &accept}),
	}
	sets := map[string]*nftables.Set{
		set4: {Table: table, Name: set4, KeyType: nftables.TypeIPAddr, Interval: true},
		set6: {Table: table, Name: set6, KeyType: nftables.TypeIP6Addr, Interval: true},
	}
	if err := c.AddSet(sets[set4], setElements(plan.Services4, netip.IPv4Unspecified())); err != nil {
		return fmt.Errorf("nftables: set %s: %w", set4, err)
	}
	if err := c.AddSet(sets[set6], setElements(plan.Services6, netip.IPv6Unspecified())); err != nil {
		return fmt.Errorf("nftables: set %s: %w", set6, err)
	}
	for _, r := range want {
		c.AddRule(&nftables.Rule{Table: table, Chain: chains[r.Chain], Exprs: linkSets(r.Exprs, sets),
			UserData: userdata.AppendString(nil, userdata.TypeComment, r.Comment)})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: rebuild table inet %s: %w", TableName, err)
	}
	return nil
}

// upToDate reports whether our table holds want: the state rule's
// fingerprint and the number of rules of each chain.
func upToDate(c *nftables.Conn, table *nftables.Table, want []nftRule) bool {
	count := map[string]int{}
	for _, r := range want {
		count[r.Chain]++
	}
	for chain, n := range count {
		rules, err := c.GetRules(table, &nftables.Chain{Name: chain, Table: table})
		if err != nil || len(rules) != n {
			return false
		}
		if chain == ChainPrerouting {
			got, _ := userdata.GetString(rules[0].UserData, userdata.TypeComment)
			if got != want[0].Comment {
				return false
			}
		}
	}
	return true
}

// linkSets points the lookups at the sets of this transaction (by the ids
// AddSet gave them).
func linkSets(in []expr.Any, sets map[string]*nftables.Set) []expr.Any {
	out := make([]expr.Any, len(in))
	for i, e := range in {
		if l, ok := e.(*expr.Lookup); ok {
			cp := *l
			cp.SetID = sets[l.SetName].ID
			e = &cp
		}
		out[i] = e
	}
	return out
}
