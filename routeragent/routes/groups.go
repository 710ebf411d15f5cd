package routes

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// Mode is how a route with several next hops is put in the kernel.
type Mode string

// Modes (config routes.nexthopGroups).
const (
	// ModeAuto uses resilient nexthop groups where the kernel has them
	// (Linux 5.13), plain multipath routes elsewhere.
	ModeAuto Mode = "auto"
	// ModeResilient points every route at a resilient nexthop group: a
	// next hop that leaves moves only its own hash buckets, so the flows
	// through the other next hops keep theirs (plain multipath re-hashes
	// about half of them, and their new node resets them).
	ModeResilient Mode = "resilient"
	// ModeMultipath installs plain (hash-threshold) multipath routes.
	ModeMultipath Mode = "multipath"
)

// firstNexthopID is where our nexthop ids start: far from the low ids
// `ip nexthop` users pick by hand and from zebra's (which start low too);
// any id already taken is skipped.
const firstNexthopID = 0x62670000 // "bg"

// hop is a next hop with its weight (1..MaxWeight).
type hop struct {
	Addr   netip.Addr
	Weight uint16
}

func hopsOf(nhs []netip.Addr, w []uint16) []hop {
	out := make([]hop, len(nhs))
	for i, nh := range nhs {
		out[i] = hop{Addr: nh, Weight: 1}
		if w != nil {
			out[i].Weight = w[i]
		}
	}
	return out
}

func hopsKey(hs []hop) string {
	var b strings.Builder
	for _, h := range hs {
		b.WriteString(h.Addr.String())
		b.WriteByte('*')
		b.WriteString(strconv.Itoa(int(h.Weight)))
		b.WriteByte(' ')
	}
	return b.String()
}

// groupState is what the kernel holds of our nexthop objects, as far as we
// know: one gateway object per next hop, one resilient group per distinct
// weighted set of next hops, and which of our routes use which group.
type groupState struct {
	gw     map[netip.Addr]Nexthop // our gateway objects
	groups map[uint32][]hop       // our groups' members
	byKey  map[string]uint32      // group by hopsKey of its members
	users  map[uint32]int         // our routes per group
	route  map[netip.Prefix]uint32
	taken  map[uint32]bool // every id in the kernel, ours or not
	next   uint32
}

// groupPlan is decided once per pass from all its ops (planGroups).
type groupPlan struct {
	// mutate: groups all of whose routes move to the same new set of next
	// hops (a node drained, a node back): the group is changed in place,
	// so the kernel keeps every bucket whose next hop stays.
	mutate map[uint32][]hop
}

// planGroups decides which groups change in place in this pass: a group
// whose every route is in ops, and all those not deleted want one same
// set of next hops that no other group has. Pure.
func planGroups(ops []Op, gs *groupState, want func(Op) []hop) groupPlan {
	movers := map[uint32][]Op{}
	for _, op := range ops {
		if op.Kind == OpConflict {
			continue
		}
		if g := gs.route[op.Prefix]; g != 0 {
			movers[g] = append(movers[g], op)
		}
	}
	ids := make([]uint32, 0, len(movers))
	for g := range movers {
		ids = append(ids, g)
	}
	slices.Sort(ids)
	plan := groupPlan{mutate: map[uint32][]hop{}}
	claimed := map[string]bool{}
	for _, g := range ids {
		ms := movers[g]
		if len(ms) != gs.users[g] {
			continue // some of its routes stay: they keep the group as it is
		}
		var key string
		var hs []hop
		same := true
		for _, op := range ms {
			if op.Kind == OpDelete {
				continue
			}
			h := want(op)
			k := hopsKey(h)
			switch {
			case key == "":
				key, hs = k, h
			case k != key:
				same = false
			}
		}
		if !same || key == "" || claimed[key] {
			continue
		}
		if _, ok := gs.byKey[key]; ok {
			continue
		}
		claimed[key] = true
		plan.mutate[g] = hs
	}
	return plan
}

// refreshGroups re-reads our nexthop objects and which of our routes use
// them, and takes our routes' next hops and weights from their groups.
func (r *Reconciler) refreshGroups() error {
	nhs, err := r.nk.ListNexthops()
	if err != nil {
		return fmt.Errorf("list nexthop objects: %w", err)
	}
	gs := &groupState{gw: map[netip.Addr]Nexthop{}, groups: map[uint32][]hop{}, byKey: map[string]uint32{},
		users: map[uint32]int{}, route: map[netip.Prefix]uint32{}, taken: map[uint32]bool{}, next: firstNexthopID}
	byID := map[uint32]netip.Addr{}
	for _, nh := range nhs {
		gs.taken[nh.ID] = true
		if nh.Protocol == r.cfg.Protocol && len(nh.Members) == 0 && nh.Gateway.IsValid() {
			gs.gw[nh.Gateway] = nh
			byID[nh.ID] = nh.Gateway
		}
	}
	for _, nh := range nhs {
		if nh.Protocol != r.cfg.Protocol || len(nh.Members) == 0 {
			continue
		}
		hs := make([]hop, 0, len(nh.Members))
		for _, m := range nh.Members {
			hs = append(hs, hop{Addr: byID[m.ID], Weight: m.Weight}) // a member not ours: an invalid Addr
		}
		slices.SortFunc(hs, func(a, b hop) int { return a.Addr.Compare(b.Addr) })
		gs.groups[nh.ID] = hs
		if !nh.Resilient {
			continue // not ours to reuse; collected once unused
		}
		if _, dup := gs.byKey[hopsKey(hs)]; !dup {
			gs.byKey[hopsKey(hs)] = nh.ID
		}
	}
	ids, err := r.nk.RouteNexthopIDs(r.cfg.Table, r.cfg.Protocol)
	if err != nil {
		return fmt.Errorf("list routes' nexthop objects: %w", err)
	}
	for k, id := range ids {
		if k.Metric != r.metric(k.Prefix.Addr()) {
			continue
		}
		if _, ok := r.ours[k.Prefix]; !ok {
			continue
		}
		gs.route[k.Prefix] = id
		gs.users[id]++
		if hs, ok := gs.groups[id]; ok {
			// The group says what the route does, also where the kernel
			// lists no next hops (nexthop_compat_mode=0).
			nhs := make([]netip.Addr, len(hs))
			w := make([]uint16, len(hs))
			for i, h := range hs {
				nhs[i], w[i] = h.Addr, h.Weight
			}
			r.ours[k.Prefix], r.oursW[k.Prefix] = nhs, equalAsNil(w)
		}
	}
	r.gs = gs
	return nil
}

func equalAsNil(w []uint16) []uint16 {
	if len(w) == 0 || slices.Min(w) == slices.Max(w) {
		return nil
	}
	return w
}

// allocID returns an id no nexthop object has.
func (gs *groupState) allocID() uint32 {
	for gs.taken[gs.next] || gs.next == 0 {
		gs.next++
	}
	id := gs.next
	gs.next++
	return id
}

// create makes a new nexthop object under a free id; an id taken meanwhile
// (EEXIST: someone else made it) is skipped.
func (r *Reconciler) create(nh Nexthop) (uint32, error) {
	for range 8 {
		nh.ID = r.gs.allocID()
		err := r.nk.SetNexthop(nh, r.cfg.Protocol, true)
		r.gs.taken[nh.ID] = true
		if errors.Is(err, syscall.EEXIST) {
			continue
		}
		return nh.ID, err
	}
	return 0, errors.New("no free nexthop id")
}

// gateway returns the id of our nexthop object for gw, making it first.
func (r *Reconciler) gateway(gw netip.Addr) (uint32, error) {
	if nh, ok := r.gs.gw[gw]; ok {
		return nh.ID, nil
	}
	oif, err := r.nk.GatewayOIF(gw)
	if err != nil {
		return 0, err
	}
	nh := Nexthop{Gateway: gw, OIF: oif, Protocol: r.cfg.Protocol}
	id, err := r.create(nh)
	if err != nil {
		return 0, fmt.Errorf("nexthop object for %s: %w", gw, err)
	}
	nh.ID = id
	r.gs.gw[gw] = nh
	return id, nil
}

func (r *Reconciler) groupNexthop(hs []hop) (Nexthop, error) {
	nh := Nexthop{Resilient: true, Protocol: r.cfg.Protocol}
	for _, h := range hs {
		id, err := r.gateway(h.Addr)
		if err != nil {
			return Nexthop{}, err
		}
		nh.Members = append(nh.Members, GroupMember{ID: id, Weight: h.Weight})
	}
	return nh, nil
}

// groupFor returns the group prefix pfx should use for next hops hs: the
// group that already has them, its own group changed in place (plan), or
// a new one.
func (r *Reconciler) groupFor(pfx netip.Prefix, hs []hop, plan groupPlan) (uint32, error) {
	key := hopsKey(hs)
	if id, ok := r.gs.byKey[key]; ok {
		return id, nil
	}
	nh, err := r.groupNexthop(hs)
	if err != nil {
		return 0, err
	}
	if g := r.gs.route[pfx]; g != 0 && hopsKey(plan.mutate[g]) == key {
		nh.ID = g
		if err := r.nk.SetNexthop(nh, r.cfg.Protocol, false); err != nil {
			return 0, fmt.Errorf("change nexthop group %d: %w", g, err)
		}
		if old, ok := r.gs.groups[g]; ok && r.gs.byKey[hopsKey(old)] == g {
			delete(r.gs.byKey, hopsKey(old))
		}
		r.gs.groups[g], r.gs.byKey[key] = hs, g
		return g, nil
	}
	id, err := r.create(nh)
	if err != nil {
		return 0, fmt.Errorf("nexthop group: %w", err)
	}
	r.gs.groups[id], r.gs.byKey[key] = hs, id
	return id, nil
}

// useGroup records that pfx's route now uses group id (0: none).
func (r *Reconciler) useGroup(pfx netip.Prefix, id uint32) {
	if r.gs == nil {
		return
	}
	if old := r.gs.route[pfx]; old != 0 {
		r.gs.users[old]--
		delete(r.gs.route, pfx)
	}
	if id != 0 {
		r.gs.route[pfx] = id
		r.gs.users[id]++
	}
}

// collectNexthops deletes our groups no route uses and then our gateway
// objects no group has: there are never more groups than distinct
// weighted sets of next hops in use, nor gateway objects than next hops.
func (r *Reconciler) collectNexthops() error {
	if r.gs == nil {
		return nil
	}
	var errs []error
	used := map[netip.Addr]bool{}
	for _, id := range sortedIDs(r.gs.groups) {
		if r.gs.users[id] > 0 {
			for _, h := range r.gs.groups[id] {
				used[h.Addr] = true
			}
			continue
		}
		if err := r.nk.DeleteNexthop(id); err != nil && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, err)
			for _, h := range r.gs.groups[id] {
				used[h.Addr] = true
			}
			continue
		}
		if k := hopsKey(r.gs.groups[id]); r.gs.byKey[k] == id {
			delete(r.gs.byKey, k)
		}
		delete(r.gs.groups, id)
		delete(r.gs.users, id)
		delete(r.gs.taken, id)
	}
	for gw, nh := range r.gs.gw {
		if used[gw] || r.gs.users[nh.ID] > 0 { // a route using it directly is not one of ours, but keep it whole
			continue
		}
		if err := r.nk.DeleteNexthop(nh.ID); err != nil && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, err)
			continue
		}
		delete(r.gs.gw, gw)
		delete(r.gs.taken, nh.ID)
	}
	return errors.Join(errs...)
}

func sortedIDs[V any](m map[uint32]V) []uint32 {
	out := make([]uint32, 0, len(m))
	for id := range m {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
