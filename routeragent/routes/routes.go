// Package routes programs the kernel with the routes the agent wants, through
// netlink, and never touches a route that is not ours.
//
// Our routes carry our own protocol number (220 by default, named "bgplb"). A route of another
// protocol for the same (table, prefix, metric) is never replaced or deleted:
// it is reported as a conflict. The kernel's RouteReplace ignores the protocol
// when it matches, so new prefixes are added with NLM_F_EXCL (RouteAdd) and
// only our own routes are replaced; deletes carry our protocol, which the
// kernel matches, so a delete can never remove a foreign route.
package routes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Config says where and how our routes live.
type Config struct {
	// Table is the routing table (254 = main).
	Table int
	// Metric is the route priority.
	Metric int
	// Protocol marks routes as ours (and our nexthop objects).
	Protocol int
	// NexthopGroups says how routes reach the kernel (empty: ModeAuto).
	NexthopGroups Mode
}

// Conflict is a foreign route occupying a key we want.
type Conflict struct {
	Prefix   netip.Prefix `json:"prefix"`
	Protocol int          `json:"protocol"`
	// Route is the foreign route as the kernel reports it.
	Route string `json:"route"`
}

// PrefixError is a route that could not be programmed.
type PrefixError struct {
	Prefix netip.Prefix `json:"prefix"`
	Err    string       `json:"error"`
}

// Result is the outcome of one reconcile pass.
type Result struct {
	// Installed are our routes in the kernel after the pass.
	Installed map[netip.Prefix][]netip.Addr
	// Conflicts are desired prefixes held by a foreign route.
	Conflicts []Conflict
	// Errors are desired prefixes that failed; the next pass retries them.
	Errors []PrefixError
	// Added, Replaced, Deleted count the changes made in this pass.
	Added, Replaced, Deleted int
	// InstalledCount is the number of our routes after the pass.
	InstalledCount int
}

// Details are how our routes are installed, for status and doctor.
type Details struct {
	// NexthopGroups is the mode in use: resilient or multipath.
	NexthopGroups Mode `json:"nexthopGroups"`
	// Reason says why, when it is not what the configuration asked for
	// (or when auto chose multipath).
	Reason string `json:"reason,omitempty"`
	// Groups and Nexthops count our nexthop group and gateway objects.
	Groups   int `json:"groups"`
	Nexthops int `json:"nexthops"`
	// Weights are the installed weights of our routes whose next hops
	// have unequal ones, in the order of their next hops.
	Weights map[netip.Prefix][]uint16 `json:"weights,omitempty"`
}

// Reconciler makes the kernel's routes of our protocol equal the desired set.
// It caches what it believes is installed and refreshes that cache from the
// kernel on every full pass (Resync), on EEXIST, and after errors.
type Reconciler struct {
	h   Netlink
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	synced  bool
	ours    map[netip.Prefix][]netip.Addr // our routes at cfg.Metric
	oursW   map[netip.Prefix][]uint16     // their weights (nil: equal), in next-hop order
	strays  []netlink.Route               // our routes at another metric
	foreign map[netip.Prefix]netlink.Route
	weights Weights // desired (SetWeights)

	// Nexthop objects: nk is nil without them (NewWith, or a kernel that
	// has none); gs is what the kernel holds of ours.
	ns      *netns.NsHandle
	nk      NexthopKernel
	nkTried bool
	mode    Mode // in use
	reason  string
	gs      *groupState
	closeNK func()
}

// Option configures a Reconciler.
type Option func(*Reconciler)

// WithNetNS enables nexthop objects (see Mode), through a socket made in
// ns, which must be the handle's namespace (netns.None(): the current
// one). Without it (or WithNexthopKernel) the reconciler installs plain
// multipath routes only: a handle does not say which namespace it is in,
// and nexthop objects made in another would be someone else's.
func WithNetNS(ns netns.NsHandle) Option { return func(r *Reconciler) { r.ns = &ns } }

// WithNexthopKernel uses k for nexthop objects (tests).
func WithNexthopKernel(k NexthopKernel) Option {
	return func(r *Reconciler) { r.nk, r.nkTried = k, true }
}

// New returns a reconciler using h (a handle bound to the target namespace).
func New(h *netlink.Handle, cfg Config, log *slog.Logger, opts ...Option) *Reconciler {
	return NewWith(h, cfg, log, opts...)
}

// Netlink is the part of *netlink.Handle the reconciler uses (tests pass a
// fake, e.g. one whose dumps are interrupted).
type Netlink interface {
	RouteListFiltered(family int, filter *netlink.Route, filterMask uint64) ([]netlink.Route, error)
	RouteAdd(route *netlink.Route) error
	RouteReplace(route *netlink.Route) error
	RouteDel(route *netlink.Route) error
}

// NewWith returns a reconciler using any Netlink implementation. Nexthop
// objects are used (see Mode) only when an option enables them.
func NewWith(h Netlink, cfg Config, log *slog.Logger, opts ...Option) *Reconciler {
	if cfg.NexthopGroups == "" {
		cfg.NexthopGroups = ModeAuto
	}
	r := &Reconciler{h: h, cfg: cfg, log: log, mode: ModeMultipath}
	for _, o := range opts {
		o(r)
	}
	if r.ns == nil && !r.nkTried {
		r.nkTried = true
		r.reason = "nexthop objects not enabled (no namespace given)"
	}
	return r
}

// Close releases the nexthop-object socket, if one was opened.
func (r *Reconciler) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closeNK != nil {
		r.closeNK()
		r.closeNK, r.nk = nil, nil
	}
}

// SetWeights sets the announced weights the next passes install.
func (r *Reconciler) SetWeights(w Weights) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.weights = w
}

// Details reports how our routes are installed.
func (r *Reconciler) Details() Details {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := Details{NexthopGroups: r.mode, Reason: r.reason}
	if r.gs != nil {
		d.Groups, d.Nexthops = len(r.gs.groups), len(r.gs.gw)
	}
	for p, w := range r.oursW {
		if w != nil {
			if d.Weights == nil {
				d.Weights = map[netip.Prefix][]uint16{}
			}
			d.Weights[p] = w
		}
	}
	return d
}

// openNexthops opens the nexthop-object socket once and decides the mode.
func (r *Reconciler) openNexthops() {
	if !r.nkTried {
		r.nkTried = true
		k, err := newNexthopKernel(*r.ns)
		if err != nil {
			r.reason = err.Error()
		} else {
			r.nk, r.closeNK = k, k.Close
		}
	}
	if r.nk != nil && r.cfg.NexthopGroups != ModeMultipath && r.reason == "" {
		r.mode = ModeResilient
	}
	if r.cfg.NexthopGroups == ModeMultipath {
		r.reason = ""
	}
}

// fallBack gives up nexthop groups for plain multipath (auto, on a kernel
// without them). It reports whether it did.
func (r *Reconciler) fallBack(err error) bool {
	if r.cfg.NexthopGroups != ModeAuto || !nexthopsUnsupported(err) {
		return false
	}
	r.mode = ModeMultipath
	r.reason = fmt.Sprintf("the kernel has no resilient nexthop groups (Linux 5.13): %v", err)
	r.log.Warn("using plain multipath routes", "reason", r.reason)
	return true
}

// Load lists our routes currently in the kernel (for example left by a
// previous run of the agent) and primes the cache with them.
func (r *Reconciler) Load() (map[netip.Prefix][]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.refresh(); err != nil {
		return nil, err
	}
	return clone(r.ours), nil
}

func (r *Reconciler) refresh() error {
	var rts []netlink.Route
	var err error
	for i := 0; i < 5; i++ {
		rts, err = r.h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: r.cfg.Table}, netlink.RT_FILTER_TABLE)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("list routes in table %d: %w", r.cfg.Table, err)
	}
	r.ours = map[netip.Prefix][]netip.Addr{}
	r.oursW = map[netip.Prefix][]uint16{}
	r.foreign = map[netip.Prefix]netlink.Route{}
	r.strays = nil
	for _, rt := range rts {
		if rt.Type != unix.RTN_UNICAST || rt.Table != r.cfg.Table {
			continue
		}
		pfx, ok := dstPrefix(rt)
		if !ok {
			continue
		}
		metric := r.metric(pfx.Addr())
		switch {
		case int(rt.Protocol) == r.cfg.Protocol && rt.Priority == metric:
			r.ours[pfx], r.oursW[pfx] = gatewaysWeights(rt)
		case int(rt.Protocol) == r.cfg.Protocol:
			r.strays = append(r.strays, rt)
		case rt.Priority == metric:
			r.foreign[pfx] = rt
		}
	}
	r.openNexthops()
	r.gs = nil
	if r.nk != nil {
		if err := r.refreshGroups(); err != nil {
			if !r.fallBack(err) {
				return err
			}
			r.nk = nil
		}
	}
	r.synced = true
	return nil
}

// Reconcile programs desired into the kernel. With full set (and always on
// the first call) it first re-reads the table, so routes lost without a
// netlink notification (a link went down) or added by someone else are seen.
// It plans with Diff (pure) and carries the plan out with apply.
func (r *Reconciler) Reconcile(desired map[netip.Prefix][]netip.Addr, full bool) Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	var res Result
	if full || !r.synced {
		if err := r.refresh(); err != nil {
			res.Errors = append(res.Errors, PrefixError{Err: err.Error()})
			res.Installed = clone(r.ours)
			return res
		}
		r.deleteStrays(&res)
	}
	ops := diff(desired, r.ours, r.foreign, r.same)
	if done, reread := r.apply(ops, !full, &res); reread {
		// The table was re-read in the middle of the pass: plan what is
		// left against what the kernel really has.
		r.apply(withoutPrefixes(diff(desired, r.ours, r.foreign, r.same), ops[:done]), false, &res)
	}
	r.collect(&res)
	if len(res.Errors) > 0 {
		// Resync the cache next time: an error may mean it is wrong.
		r.synced = false
	}
	// A shallow copy: the next-hop slices in r.ours are replaced, never
	// modified in place, so sharing them is safe and saves an allocation
	// per route per pass.
	res.Installed = maps.Clone(r.ours)
	res.InstalledCount = len(r.ours)
	sort.Slice(res.Conflicts, func(i, j int) bool { return res.Conflicts[i].Prefix.Addr().Less(res.Conflicts[j].Prefix.Addr()) })
	sort.Slice(res.Errors, func(i, j int) bool { return res.Errors[i].Prefix.Addr().Less(res.Errors[j].Prefix.Addr()) })
	return res
}

// ReconcileChanged is Reconcile for the prefixes in changed only: it plans
// and programs those (desired still holds every route; a prefix of changed
// absent from it is deleted) and leaves the rest alone, so a pass costs
// O(changes), not O(routes). Result.Installed is not filled (Installed
// returns it when asked). When the cache may be wrong (never read, or an
// error since) it re-reads the table first; prefixes outside changed that
// failed before are the caller's full retry's to settle.
func (r *Reconciler) ReconcileChanged(desired map[netip.Prefix][]netip.Addr, changed []netip.Prefix) Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	var res Result
	if !r.synced {
		if err := r.refresh(); err != nil {
			res.Errors = append(res.Errors, PrefixError{Err: err.Error()})
			return res
		}
		r.deleteStrays(&res)
	}
	ops := diffChanged(desired, r.ours, r.foreign, changed, r.same)
	if done, reread := r.apply(ops, true, &res); reread {
		r.apply(withoutPrefixes(diffChanged(desired, r.ours, r.foreign, changed, r.same), ops[:done]), false, &res)
	}
	r.collect(&res)
	if len(res.Errors) > 0 {
		r.synced = false
	}
	res.InstalledCount = len(r.ours)
	return res
}

// Installed returns our routes in the kernel as the reconciler knows them.
func (r *Reconciler) Installed() map[netip.Prefix][]netip.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	// Shallow: next-hop slices are replaced, never modified in place.
	return maps.Clone(r.ours)
}

// OpKind is what an Op does.
type OpKind uint8

const (
	// OpConflict reports a desired prefix held by a foreign route; the
	// kernel is not touched.
	OpConflict OpKind = iota + 1
	// OpAdd adds a route for a prefix we do not hold (NLM_F_EXCL).
	OpAdd
	// OpReplace replaces our route whose next hops differ.
	OpReplace
	// OpDelete deletes our route for a prefix no longer desired.
	OpDelete
)

func (k OpKind) String() string {
	switch k {
	case OpConflict:
		return "conflict"
	case OpAdd:
		return "add"
	case OpReplace:
		return "replace"
	case OpDelete:
		return "delete"
	}
	return fmt.Sprintf("OpKind(%d)", uint8(k))
}

// Op is one step of a reconcile pass.
type Op struct {
	Kind   OpKind
	Prefix netip.Prefix
	// NextHops are the desired next hops (add, replace) or those of our
	// route being deleted (delete).
	NextHops []netip.Addr
}

// Diff is the pure plan of one pass: it turns the desired routes, our routes
// (ours) and the prefixes held by routes of another protocol (foreign; only
// the keys matter) into operations. A desired prefix with no next hop counts
// as not desired. Adds, replaces and conflicts come first, in map order;
// deletes last, so a prefix moving between next hops is never left without
// a route. A foreign prefix is never added over, and never deleted: deletes
// only come from ours.
func Diff[F any](desired, ours map[netip.Prefix][]netip.Addr, foreign map[netip.Prefix]F) []Op {
	return diff(desired, ours, foreign, nil)
}

// sameFunc reports whether our route for pfx with next hops cur is what
// next hops nhs want (nil: the next hops are equal).
type sameFunc func(pfx netip.Prefix, cur, nhs []netip.Addr) bool

func diff[F any](desired, ours map[netip.Prefix][]netip.Addr, foreign map[netip.Prefix]F, same sameFunc) []Op {
	// A pass takes our routes from len(ours) to about len(desired), one add
	// or delete at a time: sizing for that difference saves regrowing the
	// slice through a big install (10,000 routes: 2.9 MB a pass), and
	// allocates nothing extra when the counts are close (an ordinary pass).
	ops := make([]Op, 0, max(len(desired)-len(ours), len(ours)-len(desired)))
	for pfx, nhs := range desired {
		if len(nhs) == 0 {
			continue
		}
		cur, held := ours[pfx]
		if op, ok := planDesired(pfx, nhs, cur, held, foreign, same); ok {
			ops = append(ops, op)
		}
	}
	for pfx, nhs := range ours {
		if len(desired[pfx]) == 0 {
			ops = append(ops, Op{Kind: OpDelete, Prefix: pfx, NextHops: nhs})
		}
	}
	return ops
}

// DiffChanged is Diff restricted to the prefixes in changed (each once),
// in the same order: adds, replaces and conflicts first, deletes last. Pure;
// O(len(changed)).
func DiffChanged[F any](desired, ours map[netip.Prefix][]netip.Addr, foreign map[netip.Prefix]F, changed []netip.Prefix) []Op {
	return diffChanged(desired, ours, foreign, changed, nil)
}

func diffChanged[F any](desired, ours map[netip.Prefix][]netip.Addr, foreign map[netip.Prefix]F, changed []netip.Prefix, same sameFunc) []Op {
	var ops, dels []Op
	for _, pfx := range changed {
		nhs := desired[pfx]
		cur, held := ours[pfx]
		if len(nhs) == 0 {
			if held {
				dels = append(dels, Op{Kind: OpDelete, Prefix: pfx, NextHops: cur})
			}
			continue
		}
		if op, ok := planDesired(pfx, nhs, cur, held, foreign, same); ok {
			ops = append(ops, op)
		}
	}
	return append(ops, dels...)
}

// planDesired is the one decision Diff and DiffChanged share for a desired
// prefix with next hops nhs: a conflict when another protocol holds it, an
// add when we hold none, a replace when ours (cur, held) differs, and
// nothing (false) when ours already matches.
func planDesired[F any](pfx netip.Prefix, nhs, cur []netip.Addr, held bool, foreign map[netip.Prefix]F, same sameFunc) (Op, bool) {
	if _, ok := foreign[pfx]; ok {
		return Op{Kind: OpConflict, Prefix: pfx}, true
	}
	switch {
	case held && slices.Equal(cur, nhs) && (same == nil || same(pfx, cur, nhs)):
		return Op{}, false
	case held:
		return Op{Kind: OpReplace, Prefix: pfx, NextHops: nhs}, true
	default:
		return Op{Kind: OpAdd, Prefix: pfx, NextHops: nhs}, true
	}
}

// withoutPrefixes drops from ops those whose prefix an op of done has.
func withoutPrefixes(ops, done []Op) []Op {
	seen := make(map[netip.Prefix]bool, len(done))
	for _, op := range done {
		seen[op.Prefix] = true
	}
	return slices.DeleteFunc(ops, func(op Op) bool { return seen[op.Prefix] })
}

// apply carries out ops in order, keeps the cache in step with what
// succeeded and counts it in res. When an add finds the key taken (EEXIST)
// although the cache said it was free, and mayReread allows it, it re-reads
// the table, settles that prefix against what it found, and stops: done is
// the number of ops handled and reread says the rest must be planned again.
//
// With nexthop groups, consecutive adds and replaces go to the kernel in
// batches (routeBatch): their groups are made first, one by one, and their
// routes sent together. The ops of a batch that follow an EEXIST were
// carried out too; the re-read table tells what became of them.
func (r *Reconciler) apply(ops []Op, mayReread bool, res *Result) (done int, reread bool) {
	var plan groupPlan
	if r.mode == ModeResilient && r.gs != nil {
		plan = planGroups(ops, r.gs, func(op Op) []hop { return hopsOf(op.NextHops, r.want(op.Prefix, op.NextHops)) })
	}
	var b routeBatch
	for i, op := range ops {
		if op.Kind != OpAdd && op.Kind != OpReplace || r.mode != ModeResilient || r.gs == nil {
			// Anything else in order: the batch first.
			if done, reread := r.flush(&b, mayReread, res); reread {
				return done, true
			}
		}
		switch op.Kind {
		case OpConflict:
			res.Conflicts = append(res.Conflicts, conflict(op.Prefix, r.foreign[op.Prefix]))
		case OpReplace, OpAdd:
			add := op.Kind == OpAdd
			if r.mode == ModeResilient && r.gs != nil {
				err := r.queue(&b, i, add, op, plan)
				if err == nil {
					if len(b.reqs) >= routeBatchMax {
						if done, reread := r.flush(&b, mayReread, res); reread {
							return done, true
						}
					}
					continue
				}
				if r.mode == ModeResilient {
					r.failed(add, op, err, res)
					continue
				}
				// Fell back to plain routes: this one as such, after the batch.
				if done, reread := r.flush(&b, mayReread, res); reread {
					return done, true
				}
			}
			err := r.program(add, op, plan)
			if add && errors.Is(err, syscall.EEXIST) && mayReread {
				r.settleTaken(op, res)
				return i + 1, true
			}
			r.settled(add, op, err, res)
		case OpDelete:
			rt := r.route(op.Prefix, op.NextHops)
			if r.gs != nil && r.gs.route[op.Prefix] != 0 {
				// A route using a nexthop object matches no gateway: delete
				// it by its key and our protocol.
				rt.Gw, rt.MultiPath = nil, nil
			}
			err := r.h.RouteDel(rt)
			if err != nil && !errors.Is(err, syscall.ESRCH) {
				res.Errors = append(res.Errors, PrefixError{Prefix: op.Prefix, Err: fmt.Sprintf("delete: %v", err)})
				continue
			}
			delete(r.ours, op.Prefix)
			delete(r.oursW, op.Prefix)
			r.useGroup(op.Prefix, 0)
			res.Deleted++
		}
	}
	if done, reread := r.flush(&b, mayReread, res); reread {
		return done, true
	}
	return len(ops), false
}

// routeBatch is the routes through nexthop groups apply has queued and not
// yet sent, with what to record for each once it succeeds.
type routeBatch struct {
	reqs []RouteNexthop
	ops  []batchedOp
}

type batchedOp struct {
	index int // in apply's ops
	op    Op
	w     []uint16
}

// queue makes (or finds) the group op's route needs and queues the route.
// An error is the group's; after a fall-back to plain routes (r.mode
// changed) the caller programs op itself.
func (r *Reconciler) queue(b *routeBatch, i int, add bool, op Op, plan groupPlan) error {
	w := r.want(op.Prefix, op.NextHops)
	id, err := r.groupFor(op.Prefix, hopsOf(op.NextHops, w), plan)
	if err != nil {
		r.fallBack(err)
		return err
	}
	b.reqs = append(b.reqs, RouteNexthop{Add: add, Prefix: op.Prefix, Table: r.cfg.Table,
		Metric: r.metric(op.Prefix.Addr()), Proto: r.cfg.Protocol, ID: id})
	b.ops = append(b.ops, batchedOp{index: i, op: op, w: w})
	return nil
}

// flush sends the queued routes and records their outcomes, in order, as
// apply would have one by one (see apply for an EEXIST).
func (r *Reconciler) flush(b *routeBatch, mayReread bool, res *Result) (done int, reread bool) {
	if len(b.reqs) == 0 {
		return 0, false
	}
	errs := r.nk.SetRouteNexthops(b.reqs)
	reqs, ops := b.reqs, b.ops
	b.reqs, b.ops = b.reqs[:0], b.ops[:0]
	for j, bo := range ops {
		add, err := reqs[j].Add, errs[j]
		if add && errors.Is(err, syscall.EEXIST) && mayReread {
			r.settleTaken(bo.op, res)
			return bo.index + 1, true
		}
		if err == nil {
			r.record(bo.op, bo.w, reqs[j].ID)
		}
		r.settled(add, bo.op, err, res)
	}
	return 0, false
}

// settled counts the outcome of an add or replace (a success is recorded).
func (r *Reconciler) settled(add bool, op Op, err error, res *Result) {
	switch {
	case add:
		r.added(op, err, res)
	case err != nil:
		r.failed(false, op, err, res)
	default:
		res.Replaced++
	}
}

// failed counts an add or replace that could not be made.
func (r *Reconciler) failed(add bool, op Op, err error, res *Result) {
	if add {
		r.added(op, err, res)
		return
	}
	res.Errors = append(res.Errors, PrefixError{Prefix: op.Prefix, Err: fmt.Sprintf("replace: %v", err)})
}

// want is the weights prefix pfx with next hops nhs should have.
func (r *Reconciler) want(pfx netip.Prefix, nhs []netip.Addr) []uint16 {
	return Normalize(nhs, r.weights[pfx])
}

// same is the reconciler's sameFunc: weights and the way the route is
// installed (group or plain) count too.
func (r *Reconciler) same(pfx netip.Prefix, _, nhs []netip.Addr) bool {
	if !slices.Equal(r.oursW[pfx], r.want(pfx, nhs)) {
		return false
	}
	grouped := r.gs != nil && r.gs.route[pfx] != 0
	return grouped == (r.mode == ModeResilient && r.gs != nil)
}

// program adds (add) or replaces the route of op, through a nexthop group
// or as a plain route, and records it on success.
func (r *Reconciler) program(add bool, op Op, plan groupPlan) error {
	w := r.want(op.Prefix, op.NextHops)
	var gid uint32
	if r.mode == ModeResilient && r.gs != nil {
		id, err := r.groupFor(op.Prefix, hopsOf(op.NextHops, w), plan)
		if err != nil && r.fallBack(err) {
			return r.program(add, op, plan) // plain, this once and from now on
		}
		if err != nil {
			return err
		}
		err = r.nk.SetRouteNexthop(add, op.Prefix, r.cfg.Table, r.metric(op.Prefix.Addr()), r.cfg.Protocol, id)
		if err != nil {
			return err
		}
		gid = id
	} else {
		rt := r.weighted(r.route(op.Prefix, op.NextHops), w)
		var err error
		if add {
			err = r.h.RouteAdd(rt)
		} else {
			err = r.h.RouteReplace(rt)
		}
		if err != nil {
			return err
		}
	}
	r.record(op, w, gid)
	return nil
}

// record notes that op's route is in the kernel with weights w, through
// group gid (0: a plain route).
func (r *Reconciler) record(op Op, w []uint16, gid uint32) {
	r.ours[op.Prefix] = slices.Clone(op.NextHops)
	r.oursW[op.Prefix] = w
	r.useGroup(op.Prefix, gid)
}

// weighted puts weights w (nil: equal) on a multipath route.
func (r *Reconciler) weighted(rt *netlink.Route, w []uint16) *netlink.Route {
	if w == nil || len(rt.MultiPath) != len(w) {
		return rt
	}
	for i, nh := range rt.MultiPath {
		nh.Hops = int(w[i]) - 1 // rtnh_hops is the weight less one
	}
	return rt
}

// collect deletes the nexthop objects no route of ours uses any more.
func (r *Reconciler) collect(res *Result) {
	if err := r.collectNexthops(); err != nil {
		res.Errors = append(res.Errors, PrefixError{Err: fmt.Sprintf("delete unused nexthop objects: %v", err)})
	}
}

// settleTaken handles an add that met EEXIST: someone holds this key and our
// cache did not know. It re-reads the table and looks: a foreign route is a
// conflict, a route of ours is replaced, anything else stays an error.
func (r *Reconciler) settleTaken(op Op, res *Result) {
	if err := r.refresh(); err != nil {
		res.Errors = append(res.Errors, PrefixError{Prefix: op.Prefix, Err: err.Error()})
		return
	}
	if f, ok := r.foreign[op.Prefix]; ok {
		res.Conflicts = append(res.Conflicts, conflict(op.Prefix, f))
		return
	}
	err := error(syscall.EEXIST)
	if _, ok := r.ours[op.Prefix]; ok {
		err = r.program(false, op, groupPlan{})
	}
	r.added(op, err, res)
}

// added counts the outcome of an add (program recorded a success).
func (r *Reconciler) added(op Op, err error, res *Result) {
	if err != nil {
		res.Errors = append(res.Errors, PrefixError{Prefix: op.Prefix, Err: fmt.Sprintf("add: %v", err)})
		return
	}
	res.Added++
}

// deleteStrays deletes our routes at another metric (routes.metric changed
// since they were installed); a full pass found them.
func (r *Reconciler) deleteStrays(res *Result) {
	for _, rt := range r.strays {
		// By key and protocol: a route using a nexthop object matches no
		// gateway.
		rt.Gw, rt.MultiPath = nil, nil
		if err := r.h.RouteDel(&rt); err != nil && !errors.Is(err, syscall.ESRCH) {
			pfx, _ := dstPrefix(rt)
			res.Errors = append(res.Errors, PrefixError{Prefix: pfx, Err: fmt.Sprintf("delete our route at old metric %d: %v", rt.Priority, err)})
		} else {
			res.Deleted++
		}
	}
	r.strays = nil
}

// Flush deletes every route of our protocol in the table, at any metric.
func (r *Reconciler) Flush() (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.refresh(); err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	del := func(rt *netlink.Route) {
		if err := r.h.RouteDel(rt); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("delete %s: %w", rt.Dst, err))
			return
		}
		n++
	}
	for pfx := range r.ours {
		rt := r.route(pfx, nil)
		del(rt)
	}
	for _, rt := range r.strays {
		rt.Gw, rt.MultiPath = nil, nil
		del(&rt)
	}
	if r.gs != nil {
		// Our nexthop objects go with our routes: groups first, then the
		// gateways they hold.
		for pfx := range r.gs.route {
			r.useGroup(pfx, 0)
		}
		if err := r.collectNexthops(); err != nil {
			errs = append(errs, err)
		}
	}
	r.synced = false
	return n, errors.Join(errs...)
}

func (r *Reconciler) route(pfx netip.Prefix, nhs []netip.Addr) *netlink.Route {
	rt := &netlink.Route{
		Dst:      &net.IPNet{IP: pfx.Addr().AsSlice(), Mask: net.CIDRMask(pfx.Bits(), pfx.Addr().BitLen())},
		Table:    r.cfg.Table,
		Priority: r.metric(pfx.Addr()),
		Protocol: netlink.RouteProtocol(r.cfg.Protocol),
		Type:     unix.RTN_UNICAST,
		Family:   family(pfx.Addr()),
	}
	if len(nhs) == 1 {
		rt.Gw = nhs[0].AsSlice()
	} else {
		for _, nh := range nhs {
			rt.MultiPath = append(rt.MultiPath, &netlink.NexthopInfo{Gw: nh.AsSlice()})
		}
	}
	return rt
}

// metric is the priority the kernel gives our route: IPv6 turns 0 into 1024
// (IP6_RT_PRIO_USER), and a listing must compare with what the kernel stores.
func (r *Reconciler) metric(a netip.Addr) int {
	if r.cfg.Metric == 0 && !a.Is4() {
		return 1024
	}
	return r.cfg.Metric
}

func family(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

func conflict(pfx netip.Prefix, rt netlink.Route) Conflict {
	return Conflict{Prefix: pfx, Protocol: int(rt.Protocol), Route: rt.String()}
}

func dstPrefix(rt netlink.Route) (netip.Prefix, bool) {
	if rt.Dst == nil {
		return netip.Prefix{}, false // a default route is never ours
	}
	a, ok := netip.AddrFromSlice(rt.Dst.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := rt.Dst.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones).Masked(), true
}

// gatewaysWeights returns a route's next hops, sorted, and their weights
// in the same order (nil when equal).
func gatewaysWeights(rt netlink.Route) ([]netip.Addr, []uint16) {
	var hs []hop
	add := func(ip net.IP, w int) {
		if a, ok := netip.AddrFromSlice(ip); ok {
			hs = append(hs, hop{Addr: a.Unmap(), Weight: uint16(w + 1)})
		}
	}
	if rt.Gw != nil {
		add(rt.Gw, 0)
	}
	for _, nh := range rt.MultiPath {
		if nh.Gw != nil {
			add(nh.Gw, nh.Hops)
		}
	}
	slices.SortFunc(hs, func(a, b hop) int { return a.Addr.Compare(b.Addr) })
	out := make([]netip.Addr, len(hs))
	w := make([]uint16, len(hs))
	for i, h := range hs {
		out[i], w[i] = h.Addr, h.Weight
	}
	if len(out) == 0 {
		out = nil
	}
	return out, equalAsNil(w)
}

func clone(m map[netip.Prefix][]netip.Addr) map[netip.Prefix][]netip.Addr {
	out := make(map[netip.Prefix][]netip.Addr, len(m))
	for k, v := range m {
		out[k] = slices.Clone(v)
	}
	return out
}

// WithStale adds to desired the stale routes (found at start) whose next hop
// keep still holds: the peer that announced it has not yet sent End-of-RIB
// and the stale timeout has not passed. Pure.
func WithStale(desired, stale map[netip.Prefix][]netip.Addr, keep func(nh netip.Addr) bool) map[netip.Prefix][]netip.Addr {
	out := clone(desired)
	for pfx, nhs := range stale {
		for _, nh := range nhs {
			if keep(nh) && !slices.Contains(out[pfx], nh) {
				out[pfx] = append(out[pfx], nh)
			}
		}
		if nhs := out[pfx]; len(nhs) > 0 {
			slices.SortFunc(nhs, netip.Addr.Compare)
		}
	}
	return out
}

// LANAddresses returns the subnets and our addresses on the given interfaces.
// Missing interfaces are returned by name, not as an error: they may appear later.
func LANAddresses(h *netlink.Handle, ifaces []string) (connected []netip.Prefix, local []netip.Addr, missing []string, err error) {
	for _, name := range ifaces {
		link, lerr := h.LinkByName(name)
		if lerr != nil {
			var nf netlink.LinkNotFoundError
			if errors.As(lerr, &nf) {
				missing = append(missing, name)
				continue
			}
			return nil, nil, nil, fmt.Errorf("link %s: %w", name, lerr)
		}
		var addrs []netlink.Addr
		var aerr error
		for i := 0; i < 5; i++ {
			// An interrupted dump (addresses changed meanwhile) may be
			// incomplete: read again rather than miss a LAN subnet.
			addrs, aerr = h.AddrList(link, netlink.FAMILY_ALL)
			if !errors.Is(aerr, netlink.ErrDumpInterrupted) {
				break
			}
		}
		if aerr != nil {
			return nil, nil, nil, fmt.Errorf("addresses of %s: %w", name, aerr)
		}
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			if !ok || ip.IsLinkLocalUnicast() {
				continue
			}
			ones, _ := a.Mask.Size()
			ip = ip.Unmap()
			local = append(local, ip)
			connected = append(connected, netip.PrefixFrom(ip, ones).Masked())
		}
	}
	return connected, local, missing, nil
}

// RTProtosConf is the iproute2 file naming our protocol, so `ip route` shows
// "proto bgplb". The package ships the same line (packaging/iproute2/bgplb.conf,
// installed as /etc/iproute2/rt_protos.d/bgplb.conf); `rt-protos` prints it.
func RTProtosConf(protocol int) string {
	return fmt.Sprintf("# bgplb-routeragent marks its routes with this protocol number.\n%d bgplb\n", protocol)
}

// WatchLinks signals (coalesced into a channel of size 1) whenever a link or
// an address changes in the current network namespace, until ctx ends. The
// kernel drops routes silently when their link goes down, and an interface
// that reappears needs its sysctls again: the agent resyncs on this signal.
func WatchLinks(ctx context.Context, log *slog.Logger) <-chan struct{} {
	out := make(chan struct{}, 1)
	signal := func() {
		select {
		case out <- struct{}{}:
		default:
		}
	}
	go func() {
		for ctx.Err() == nil {
			done := make(chan struct{})
			lch := make(chan netlink.LinkUpdate, 64)
			ach := make(chan netlink.AddrUpdate, 64)
			onErr := func(err error) { log.Debug("netlink subscription", "err", err) }
			lerr := netlink.LinkSubscribeWithOptions(lch, done, netlink.LinkSubscribeOptions{ErrorCallback: onErr})
			aerr := netlink.AddrSubscribeWithOptions(ach, done, netlink.AddrSubscribeOptions{ErrorCallback: onErr})
			if lerr != nil || aerr != nil {
				log.Error("subscribe to link events; relying on periodic resync", "err", errors.Join(lerr, aerr))
			}
			for open := lerr == nil && aerr == nil; open; {
				select {
				case <-ctx.Done():
					open = false
				case _, ok := <-lch:
					open = ok
					signal()
				case _, ok := <-ach:
					open = ok
					signal()
				}
			}
			close(done)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
				signal() // we may have missed events while resubscribing
			}
		}
	}()
	return out
}
