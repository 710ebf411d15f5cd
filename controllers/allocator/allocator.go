package allocator

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/bgplb/bgplb/internal/iprange"
)

// Selector matches a set of labels (a Kubernetes label selector, translated
// by the caller).
type Selector func(labels map[string]string) bool

// PoolSpec is one IPPool as the allocator sees it.
type PoolSpec struct {
	Name string
	// Addresses as written in the IPPool (CIDRs and a-b ranges).
	Addresses     []string
	AutoAssign    bool
	AvoidBuggyIPs bool
	// Priority: lower is preferred; 0 means lowest.
	Priority int32
	// Namespaces, NamespaceSelectors and ServiceSelectors scope the pool;
	// an empty list does not restrict.
	Namespaces         []string
	NamespaceSelectors []Selector
	ServiceSelectors   []Selector
	// Deleting pools keep the addresses they have handed out but give out
	// no new ones.
	Deleting bool
	// Problem, when set, makes the pool invalid with reason BadSelector
	// (the caller could not translate a selector).
	Problem string
}

// Port is one port of a Service, for address-sharing collision checks.
type Port struct {
	Protocol string
	Port     int32
}

func (p Port) String() string { return fmt.Sprintf("%d/%s", p.Port, p.Protocol) }

// Request is what one Service asks for.
type Request struct {
	// Service is the key, "namespace/name".
	Service         string
	Namespace       string
	Labels          map[string]string
	NamespaceLabels map[string]string
	// Families the Service needs, in order of preference (spec.ipFamilies).
	// Empty means IPv4.
	Families []Family
	// OptionalSecond makes Families[1] best effort (PreferDualStack).
	OptionalSecond bool
	// Requested addresses (annotation or spec.loadBalancerIP), at most one
	// per family.
	Requested []netip.Addr
	// Pool is the pool the Service names, or "".
	Pool string
	// SharingKey lets Services with the same key share an address when their
	// ports do not collide.
	SharingKey string
	Ports      []Port
}

// Reasons carried by *Error.
const (
	ReasonInvalidRequest  = "InvalidRequest"
	ReasonPoolNotFound    = "PoolNotFound"
	ReasonNotInPool       = "RequestedIPNotInPool"
	ReasonNotAllowed      = "NotAllowed"
	ReasonAddressInUse    = "AddressInUse"
	ReasonPoolExhausted   = "PoolExhausted"
	ReasonNoPool          = "NoPool"
	ReasonPoolDeleting    = "PoolDeleting"
	ReasonRestoreConflict = "RestoreConflict"
)

// Error explains why a Service gets no address. Message is written for the
// Service's owner (it becomes an event).
type Error struct {
	Reason  string
	Message string
}

func (e *Error) Error() string { return e.Message }

func errorf(reason, format string, args ...any) *Error {
	return &Error{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// PoolState is the observed state of one pool, for its status.
type PoolState struct {
	Name string
	// Valid pools are used for allocation.
	Valid bool
	// Reason and Problem say why a pool is invalid (Valid false), or which
	// in-use addresses were removed from a valid pool.
	Reason  string
	Problem string
	// Removed lists assigned addresses of this pool that are no longer in
	// its spec (or whose pool is invalid or deleted), with their users.
	Removed                 []RemovedAddress
	AssignedV4, AvailableV4 int64
	AssignedV6, AvailableV6 int64
	// TotalV4 and TotalV6 count the addresses the spec offers (buggy
	// addresses excluded when avoided), saturated at math.MaxInt64.
	TotalV4, TotalV6 int64
	// InUse counts the addresses attributed to this pool, removed included.
	InUse int
	// Users names up to five Services holding addresses of a pool that is
	// being deleted, in name order.
	Users []string
}

// RemovedAddress is an assigned address outside its pool's current spec.
type RemovedAddress struct {
	Addr     netip.Addr
	Services []string
}

type use struct {
	pool       string
	sharingKey string
	services   map[string][]Port
}

type assignment struct {
	addrs []netip.Addr
}

type rng struct {
	Range
	cursor netip.Addr
	usable uint64 // addresses that may be handed out
	used   uint64 // usable addresses in use
}

type pool struct {
	spec    PoolSpec
	ranges  []*rng
	valid   bool
	reason  string
	problem string
}

// Allocator keeps the assignments of every Service and the pools. It is
// not safe for concurrent use: the caller serialises (one mutex).
type Allocator struct {
	pools  map[string]*pool
	order  []*pool // valid pools, most preferred first
	uses   map[netip.Addr]*use
	svcs   map[string]*assignment
	shared map[string]map[netip.Addr]struct{} // sharing key -> addresses
}

// New returns an empty allocator.
func New() *Allocator {
	return &Allocator{
		pools:  map[string]*pool{},
		uses:   map[netip.Addr]*use{},
		svcs:   map[string]*assignment{},
		shared: map[string]map[netip.Addr]struct{}{},
	}
}

// SetPools replaces the pool configuration. Pools are accepted in the given
// order (callers pass them oldest first): a pool that overlaps one accepted
// before it is invalid. Existing assignments are never dropped: addresses no
// longer in any pool stay assigned and are reported in the states.
func (a *Allocator) SetPools(specs []PoolSpec) {
	a.pools = make(map[string]*pool, len(specs))
	a.order = a.order[:0]
	var accepted []*pool
	for _, s := range specs {
		p := &pool{spec: s}
		a.pools[s.Name] = p
		if s.Problem != "" {
			p.reason, p.problem = "BadSelector", s.Problem
			continue
		}
		rs, err := iprange.ParsePool(s.Addresses)
		if err != nil {
			p.reason, p.problem = "BadAddresses", err.Error()
			continue
		}
		var overlap string
	check:
		for _, o := range accepted {
			for _, r := range rs {
				for _, or := range o.ranges {
					if r.Overlaps(or.Range) {
						overlap = fmt.Sprintf("%s overlaps %s of pool %s", r, or.Range, o.spec.Name)
						break check
					}
				}
			}
		}
		if overlap != "" {
			p.reason, p.problem = "Overlap", overlap
			continue
		}
		p.valid = true
		for _, r := range rs {
			n := &rng{Range: r, cursor: r.First, usable: usableSize(r, s.AvoidBuggyIPs)}
			p.ranges = append(p.ranges, n)
		}
		accepted = append(accepted, p)
	}
	a.order = append(a.order, accepted...)
	sort.SliceStable(a.order, func(i, j int) bool {
		pi, pj := prio(a.order[i].spec.Priority), prio(a.order[j].spec.Priority)
		if pi != pj {
			return pi < pj
		}
		return a.order[i].spec.Name < a.order[j].spec.Name
	})
	// Re-attribute every assigned address to the valid pool containing it.
	for addr, u := range a.uses {
		if p, r := a.find(addr); p != nil {
			u.pool = p.spec.Name
			if a.countable(p, addr) {
				r.used++
			}
		}
	}
}

func prio(p int32) int64 {
	if p <= 0 {
		return math.MaxInt64
	}
	return int64(p)
}

// find returns the valid pool and range that contain addr.
func (a *Allocator) find(addr netip.Addr) (*pool, *rng) {
	for _, p := range a.order {
		for _, r := range p.ranges {
			if r.Contains(addr) {
				return p, r
			}
		}
	}
	return nil, nil
}

func (a *Allocator) countable(p *pool, addr netip.Addr) bool {
	return !(p.spec.AvoidBuggyIPs && buggy(addr))
}

// Lookup returns the addresses currently assigned to service.
func (a *Allocator) Lookup(service string) []netip.Addr {
	if s := a.svcs[service]; s != nil {
		return slices.Clone(s.addrs)
	}
	return nil
}

// PoolOf returns the pool an assigned address is attributed to.
func (a *Allocator) PoolOf(addr netip.Addr) string {
	if u := a.uses[addr]; u != nil {
		return u.pool
	}
	return ""
}

// Release frees the addresses of service. It reports whether it had any.
func (a *Allocator) Release(service string) bool {
	s := a.svcs[service]
	if s == nil {
		return false
	}
	for _, addr := range s.addrs {
		a.unuse(service, addr)
	}
	delete(a.svcs, service)
	return true
}

func (a *Allocator) unuse(service string, addr netip.Addr) {
	u := a.uses[addr]
	if u == nil {
		return
	}
	delete(u.services, service)
	if len(u.services) > 0 {
		return
	}
	delete(a.uses, addr)
	if u.sharingKey != "" {
		if m := a.shared[u.sharingKey]; m != nil {
			delete(m, addr)
			if len(m) == 0 {
				delete(a.shared, u.sharingKey)
			}
		}
	}
	if p, r := a.find(addr); p != nil && a.countable(p, addr) {
		r.used--
	}
}

func (a *Allocator) take(req *Request, addr netip.Addr, poolName string) {
	u := a.uses[addr]
	if u == nil {
		u = &use{pool: poolName, sharingKey: req.SharingKey, services: map[string][]Port{}}
		a.uses[addr] = u
		if u.sharingKey != "" {
			m := a.shared[u.sharingKey]
			if m == nil {
				m = map[netip.Addr]struct{}{}
				a.shared[u.sharingKey] = m
			}
			m[addr] = struct{}{}
		}
		if p, r := a.find(addr); p != nil && a.countable(p, addr) {
			r.used++
		}
	}
	u.services[req.Service] = slices.Clone(req.Ports)
}

// shareProblem says why req cannot use addr held by others, or "".
func (a *Allocator) shareProblem(req *Request, addr netip.Addr) string {
	u := a.uses[addr]
	if u == nil {
		return ""
	}
	others := make([]string, 0, len(u.services))
	for s := range u.services {
		if s != req.Service {
			others = append(others, s)
		}
	}
	if len(others) == 0 {
		return ""
	}
	sort.Strings(others)
	if req.SharingKey == "" || u.sharingKey != req.SharingKey {
		return fmt.Sprintf("address %s is in use by Service %s (sharing needs the same %s key on both)", addr, others[0], "bgplb.io/allow-shared-ip")
	}
	for _, o := range others {
		for _, p := range u.services[o] {
			for _, q := range req.Ports {
				if p == q {
					return fmt.Sprintf("address %s is shared with Service %s, whose port %s collides", addr, o, p)
				}
			}
		}
	}
	return ""
}

func (a *Allocator) allowed(p *pool, req *Request) string {
	s := &p.spec
	if len(s.Namespaces) > 0 && !slices.Contains(s.Namespaces, req.Namespace) {
		return fmt.Sprintf("pool %s does not allow namespace %s", s.Name, req.Namespace)
	}
	if len(s.NamespaceSelectors) > 0 && !anyMatch(s.NamespaceSelectors, req.NamespaceLabels) {
		return fmt.Sprintf("pool %s: namespace %s matches none of its namespaceSelectors", s.Name, req.Namespace)
	}
	if len(s.ServiceSelectors) > 0 && !anyMatch(s.ServiceSelectors, req.Labels) {
		return fmt.Sprintf("pool %s: the Service matches none of its serviceSelectors", s.Name)
	}
	return ""
}

func anyMatch(sels []Selector, labels map[string]string) bool {
	for _, m := range sels {
		if m(labels) {
			return true
		}
	}
	return false
}

func (p *pool) hasFamily(f Family) bool {
	for _, r := range p.ranges {
		if FamilyOf(r.First) == f {
			return true
		}
	}
	return false
}

func families(req *Request) []Family {
	if len(req.Families) == 0 {
		return []Family{IPv4}
	}
	return req.Families
}

// satisfies reports whether the current addresses of req.Service still
// meet req, so that the Service keeps them.
func (a *Allocator) satisfies(cur []netip.Addr, req *Request) bool {
	fams := families(req)
	have := map[Family]netip.Addr{}
	for _, addr := range cur {
		have[FamilyOf(addr)] = addr
	}
	for i, f := range fams {
		if _, ok := have[f]; !ok && !(i == 1 && req.OptionalSecond) {
			return false
		}
	}
	for f := range have {
		if !slices.Contains(fams, f) {
			return false
		}
	}
	for _, r := range req.Requested {
		if have[FamilyOf(r)] != r {
			return false
		}
	}
	if len(req.Requested) > 0 && len(req.Requested) != len(cur) {
		return false
	}
	for _, addr := range cur {
		u := a.uses[addr]
		if req.Pool != "" && (u == nil || u.pool != req.Pool) {
			return false
		}
		if a.shareProblem(req, addr) != "" {
			return false
		}
	}
	return true
}

// Assign gives req.Service its addresses. An existing assignment that still
// meets the request is kept unchanged (changed reports false); otherwise the
// old addresses are released and new ones chosen. On error the Service holds
// no address.
func (a *Allocator) Assign(req Request) (addrs []netip.Addr, changed bool, err error) {
	if err := validate(&req); err != nil {
		a.Release(req.Service)
		return nil, true, err
	}
	if cur := a.svcs[req.Service]; cur != nil {
		if a.satisfies(cur.addrs, &req) {
			// Refresh ports and, for an unshared address, the sharing key.
			for _, addr := range cur.addrs {
				u := a.uses[addr]
				u.services[req.Service] = slices.Clone(req.Ports)
				if len(u.services) == 1 && u.sharingKey != req.SharingKey {
					a.rekey(addr, u, req.SharingKey)
				}
			}
			return slices.Clone(cur.addrs), false, nil
		}
		a.Release(req.Service)
	}
	var got []netip.Addr
	rollback := func() {
		for _, g := range got {
			a.unuse(req.Service, g)
		}
	}
	for i, f := range families(&req) {
		optional := i == 1 && req.OptionalSecond
		if len(req.Requested) > 0 && !requests(&req, f) {
			// Requested addresses are taken literally: no automatic
			// address is added for a family the request leaves out.
			if optional {
				break
			}
			rollback()
			return nil, true, errorf(ReasonInvalidRequest, "requested addresses name no %s address, which the Service requires (ipFamilies %v, ipFamilyPolicy RequireDualStack or first family)", f, families(&req))
		}
		addr, poolName, aerr := a.pick(&req, f)
		if aerr != nil {
			if optional && len(req.Requested) == 0 {
				break
			}
			rollback()
			return nil, true, aerr
		}
		a.take(&req, addr, poolName)
		got = append(got, addr)
	}
	a.svcs[req.Service] = &assignment{addrs: got}
	return slices.Clone(got), true, nil
}

func requests(req *Request, f Family) bool {
	for _, r := range req.Requested {
		if FamilyOf(r) == f {
			return true
		}
	}
	return false
}

func (a *Allocator) rekey(addr netip.Addr, u *use, key string) {
	if u.sharingKey != "" {
		delete(a.shared[u.sharingKey], addr)
		if len(a.shared[u.sharingKey]) == 0 {
			delete(a.shared, u.sharingKey)
		}
	}
	u.sharingKey = key
	if key != "" {
		if a.shared[key] == nil {
			a.shared[key] = map[netip.Addr]struct{}{}
		}
		a.shared[key][addr] = struct{}{}
	}
}

func validate(req *Request) *Error {
	fams := families(req)
	seen := map[Family]bool{}
	for _, r := range req.Requested {
		f := FamilyOf(r)
		if seen[f] {
			return errorf(ReasonInvalidRequest, "more than one %s address requested; at most one per family", f)
		}
		seen[f] = true
		if !slices.Contains(fams, f) {
			return errorf(ReasonInvalidRequest, "requested address %s is %s but the Service's ipFamilies are %v", r, f, fams)
		}
	}
	return nil
}

// pick chooses one address of family f for req.
func (a *Allocator) pick(req *Request, f Family) (netip.Addr, string, *Error) {
	for _, r := range req.Requested {
		if FamilyOf(r) == f {
			return a.pickRequested(req, r)
		}
	}
	var cands []*pool
	if req.Pool != "" {
		p := a.pools[req.Pool]
		switch {
		case p == nil:
			return netip.Addr{}, "", errorf(ReasonPoolNotFound, "IPPool %s (annotation %s) does not exist", req.Pool, "bgplb.io/ip-pool")
		case !p.valid:
			return netip.Addr{}, "", errorf(ReasonPoolNotFound, "IPPool %s is invalid: %s", req.Pool, p.problem)
		case p.spec.Deleting:
			return netip.Addr{}, "", errorf(ReasonPoolDeleting, "IPPool %s is being deleted", req.Pool)
		case !p.hasFamily(f):
			return netip.Addr{}, "", errorf(ReasonNoPool, "IPPool %s has no %s addresses", req.Pool, f)
		}
		if why := a.allowed(p, req); why != "" {
			return netip.Addr{}, "", errorf(ReasonNotAllowed, "%s", why)
		}
		cands = []*pool{p}
	} else {
		var refused []string
		for _, p := range a.order {
			if !p.spec.AutoAssign || p.spec.Deleting || !p.hasFamily(f) {
				continue
			}
			if why := a.allowed(p, req); why != "" {
				refused = append(refused, why)
				continue
			}
			cands = append(cands, p)
		}
		if len(cands) == 0 {
			msg := fmt.Sprintf("no IPPool with autoAssign and %s addresses", f)
			if len(refused) > 0 {
				msg += " allows this Service: " + strings.Join(refused, "; ")
			}
			return netip.Addr{}, "", errorf(ReasonNoPool, "%s", msg)
		}
	}
	if req.SharingKey != "" {
		// Join an address already shared under this key, in pool order.
		for _, p := range cands {
			for addr := range a.shared[req.SharingKey] {
				if FamilyOf(addr) == f && a.uses[addr].pool == p.spec.Name && a.shareProblem(req, addr) == "" {
					return addr, p.spec.Name, nil
				}
			}
		}
	}
	for _, p := range cands {
		for _, r := range p.ranges {
			if FamilyOf(r.First) != f {
				continue
			}
			if addr, ok := a.free(p, r); ok {
				return addr, p.spec.Name, nil
			}
		}
	}
	names := make([]string, len(cands))
	for i, p := range cands {
		names[i] = p.spec.Name
	}
	return netip.Addr{}, "", errorf(ReasonPoolExhausted, "no free %s address: IPPool %s exhausted", f, strings.Join(names, ", "))
}

func (a *Allocator) pickRequested(req *Request, addr netip.Addr) (netip.Addr, string, *Error) {
	p, _ := a.find(addr)
	if p == nil {
		// An address already held (restored, pool since removed) by a
		// Service that shares with us is still acceptable.
		if u := a.uses[addr]; u != nil && a.shareProblem(req, addr) == "" {
			return addr, u.pool, nil
		}
		return netip.Addr{}, "", errorf(ReasonNotInPool, "requested address %s is in no IPPool", addr)
	}
	if req.Pool != "" && req.Pool != p.spec.Name {
		return netip.Addr{}, "", errorf(ReasonInvalidRequest, "requested address %s is in IPPool %s, not in IPPool %s named by %s", addr, p.spec.Name, req.Pool, "bgplb.io/ip-pool")
	}
	if why := a.allowed(p, req); why != "" {
		return netip.Addr{}, "", errorf(ReasonNotAllowed, "requested address %s: %s", addr, why)
	}
	// avoidBuggyIPs holds for requested addresses too; one already held
	// (assigned before the pool set it) may still be shared.
	if !a.countable(p, addr) && a.uses[addr] == nil {
		return netip.Addr{}, "", errorf(ReasonNotAllowed, "requested address %s is one IPPool %s avoids (avoidBuggyIPs: %s)", addr, p.spec.Name, buggyWhy(addr))
	}
	if why := a.shareProblem(req, addr); why != "" {
		return netip.Addr{}, "", errorf(ReasonAddressInUse, "requested %s", why)
	}
	if p.spec.Deleting && a.uses[addr] == nil {
		return netip.Addr{}, "", errorf(ReasonPoolDeleting, "requested address %s is in IPPool %s, which is being deleted", addr, p.spec.Name)
	}
	return addr, p.spec.Name, nil
}

// free finds an unused address in r, starting at its cursor so that
// consecutive allocations do not rescan the addresses handed out before.
func (a *Allocator) free(p *pool, r *rng) (netip.Addr, bool) {
	if r.used >= r.usable {
		return netip.Addr{}, false
	}
	addr := r.cursor
	if !r.Contains(addr) {
		addr = r.First
	}
	for n := uint64(0); n < r.Size(); n++ {
		if a.uses[addr] == nil && a.countable(p, addr) {
			next := addr.Next()
			if !next.IsValid() || !r.Contains(next) {
				next = r.First
			}
			r.cursor = next
			return addr, true
		}
		addr = addr.Next()
		if !addr.IsValid() || !r.Contains(addr) {
			addr = r.First
		}
	}
	return netip.Addr{}, false
}

// Restore records an assignment read back from the cluster (a Service's
// status) without applying pool rules, so that a restarted controller keeps
// every address. It fails when an address is held by another Service that
// may not share it; the caller then treats the Service as new.
func (a *Allocator) Restore(req Request, addrs []netip.Addr) error {
	a.Release(req.Service)
	seen := map[Family]bool{}
	for _, addr := range addrs {
		if seen[FamilyOf(addr)] {
			return errorf(ReasonRestoreConflict, "more than one %s address in status", FamilyOf(addr))
		}
		seen[FamilyOf(addr)] = true
		if why := a.shareProblem(&req, addr); why != "" {
			return errorf(ReasonRestoreConflict, "%s", why)
		}
	}
	for _, addr := range addrs {
		poolName := ""
		if p, _ := a.find(addr); p != nil {
			poolName = p.spec.Name
		}
		a.take(&req, addr, poolName)
	}
	a.svcs[req.Service] = &assignment{addrs: slices.Clone(addrs)}
	return nil
}

// States returns the state of every configured pool, in name order.
func (a *Allocator) States() []PoolState {
	byPool := map[string]*PoolState{}
	names := make([]string, 0, len(a.pools))
	for name, p := range a.pools {
		st := &PoolState{Name: name, Valid: p.valid, Reason: p.reason, Problem: p.problem}
		for _, r := range p.ranges {
			avail := sat64(r.usable - r.used)
			if FamilyOf(r.First) == IPv4 {
				st.AvailableV4 += avail
				st.TotalV4 += sat64(r.usable)
			} else {
				st.AvailableV6 = addSat(st.AvailableV6, avail)
				st.TotalV6 = addSat(st.TotalV6, sat64(r.usable))
			}
		}
		byPool[name] = st
		names = append(names, name)
	}
	users := map[string][]string{}
	for addr, u := range a.uses {
		st := byPool[u.pool]
		if st == nil {
			continue
		}
		st.InUse++
		if p := a.pools[u.pool]; p.spec.Deleting {
			for s := range u.services {
				users[u.pool] = append(users[u.pool], s)
			}
		}
		if FamilyOf(addr) == IPv4 {
			st.AssignedV4++
		} else {
			st.AssignedV6++
		}
		if p, _ := a.find(addr); p == nil || p.spec.Name != u.pool {
			svcs := make([]string, 0, len(u.services))
			for s := range u.services {
				svcs = append(svcs, s)
			}
			sort.Strings(svcs)
			st.Removed = append(st.Removed, RemovedAddress{Addr: addr, Services: svcs})
		}
	}
	sort.Strings(names)
	out := make([]PoolState, 0, len(names))
	for _, n := range names {
		st := byPool[n]
		sort.Slice(st.Removed, func(i, j int) bool { return st.Removed[i].Addr.Less(st.Removed[j].Addr) })
		if us := users[n]; len(us) > 0 {
			sort.Strings(us)
			st.Users = us[:min(5, len(us))]
		}
		if st.Valid && len(st.Removed) > 0 {
			st.Reason = "InUseAddressesRemoved"
			parts := make([]string, 0, len(st.Removed))
			for i, r := range st.Removed {
				if i == 5 {
					parts = append(parts, fmt.Sprintf("and %d more", len(st.Removed)-5))
					break
				}
				parts = append(parts, fmt.Sprintf("%s (used by %s)", r.Addr, strings.Join(r.Services, ", ")))
			}
			st.Problem = "addresses removed from spec.addresses are still assigned and kept until released: " + strings.Join(parts, ", ")
		}
		out = append(out, *st)
	}
	return out
}

func sat64(u uint64) int64 {
	if u > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(u)
}

func addSat(x, y int64) int64 {
	if x > math.MaxInt64-y {
		return math.MaxInt64
	}
	return x + y
}
