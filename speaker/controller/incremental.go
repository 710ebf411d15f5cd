package controller

import (
	"cmp"
	"net/netip"
	"reflect"
	"slices"
	"time"

	"github.com/bgplb/bgplb/speaker/model"
)

// fullPassEvery bounds how long the reconciler runs on incremental passes
// alone: a full pass (every Service decided, every path diffed) at least
// this often re-asserts the whole announced set.
const fullPassEvery = 30 * time.Second

// incremental decides whether a reconcile may decide only the Services that
// changed since the last pass, and which Services and prefixes that takes.
//
// The decision for one prefix depends on the configuration (node, pools,
// peers, advertisements, options) and on every Service with an address in
// that prefix, and on nothing else. So while the configuration equals the
// last pass's, deciding the Services that have an address in a touched
// prefix (the old and new addresses of the changed Services) gives exactly
// the advertisements a full pass would give for those prefixes, and the
// other prefixes cannot have changed. Advertisements that aggregate
// (aggregationLength below 32 or 128) make a prefix depend on a whole range
// of addresses; then every pass is full.
//
// It only plans: the reconciler decides and applies, and reports back with
// done. Any failed pass makes the next one full.
type incremental struct {
	// cfg is the configuration of the last successful pass; valid is false
	// before the first one and after a failure.
	cfg      model.Input
	valid    bool
	lastFull time.Time
	// ips are the addresses of every Service as of the last pass, byIP the
	// other way round (several Services can share an address).
	ips  map[string][]netip.Addr
	byIP map[netip.Addr][]string
}

// passPlan is what one reconcile decides.
type passPlan struct {
	// full: decide every Service and Set every peer's whole list.
	full bool
	// reason says why a pass is full (for logs and metrics).
	reason string
	// services and prefixes of an incremental pass: decide services, then
	// SetPrefixes(prefixes) with the result.
	services []model.Service
	prefixes []netip.Prefix
	// changed are the keys the pass covers; done records their addresses.
	changed []string
}

func newIncremental() *incremental {
	return &incremental{ips: map[string][]netip.Addr{}, byIP: map[netip.Addr][]string{}}
}

// configOf returns in without its Services, in a canonical order, for
// comparing two passes' configurations.
func configOf(in model.Input) model.Input {
	cfg := in
	cfg.Services = nil
	cfg.Nodes = slices.SortedFunc(slices.Values(in.Nodes), func(a, b model.Node) int { return cmp.Compare(a.Name, b.Name) })
	cfg.Pools = slices.SortedFunc(slices.Values(in.Pools), func(a, b model.Pool) int { return cmp.Compare(a.Name, b.Name) })
	cfg.Peers = slices.SortedFunc(slices.Values(in.Peers), func(a, b model.Peer) int { return cmp.Compare(a.Name, b.Name) })
	cfg.Advertisements = slices.SortedFunc(slices.Values(in.Advertisements), func(a, b model.BGPAdvertisement) int { return cmp.Compare(a.Name, b.Name) })
	return cfg
}

// aggregates reports whether an advertisement announces aggregates.
func aggregates(advs []model.BGPAdvertisement) bool {
	for _, a := range advs {
		if (a.AggregationLength > 0 && a.AggregationLength < 32) || (a.AggregationLengthV6 > 0 && a.AggregationLengthV6 < 128) {
			return true
		}
	}
	return false
}

// plan works out the next pass. cfg is the current configuration
// (configOf), changed the keys of the Services that changed since the last
// pass, lookup returns a handled Service by key (false when it is gone or
// not handled), and total is the number of handled Services.
func (inc *incremental) plan(cfg model.Input, changed []string, lookup func(string) (model.Service, bool), total int, now time.Time) passPlan {
	full := func(reason string) passPlan { return passPlan{full: true, reason: reason, changed: changed} }
	switch {
	case !inc.valid:
		return full("first pass or last pass failed")
	case now.Sub(inc.lastFull) >= fullPassEvery:
		return full("periodic")
	case aggregates(cfg.Advertisements):
		return full("aggregation")
	case !reflect.DeepEqual(cfg, inc.cfg):
		return full("configuration changed")
	case len(changed) > total/8+16:
		// Deciding a large part of the Services one by one costs more
		// than one pass over all of them.
		return full("many changes")
	}

	// The touched addresses: old and new addresses of the changed Services.
	isChanged := make(map[string]bool, len(changed))
	touched := map[netip.Addr]bool{}
	for _, k := range changed {
		isChanged[k] = true
		for _, ip := range inc.ips[k] {
			touched[ip] = true
		}
		if s, ok := lookup(k); ok {
			for _, ip := range s.IPs {
				touched[ip.Unmap()] = true
			}
		}
	}
	p := passPlan{changed: changed}
	seen := map[string]bool{}
	add := func(k string) {
		if seen[k] {
			return
		}
		seen[k] = true
		if s, ok := lookup(k); ok {
			p.services = append(p.services, s)
		}
	}
	for _, k := range changed {
		add(k)
	}
	for ip := range touched {
		p.prefixes = append(p.prefixes, netip.PrefixFrom(ip, ip.BitLen()))
		// Unchanged Services sharing a touched address: their index entry
		// is current.
		for _, k := range inc.byIP[ip] {
			if !isChanged[k] {
				add(k)
			}
		}
	}
	slices.SortFunc(p.prefixes, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return p
}

// done records a pass: on success the configuration and, for a full pass,
// the address index of every Service (all), otherwise of the changed ones;
// on failure it makes the next pass full.
func (inc *incremental) done(p passPlan, cfg model.Input, all []model.Service, lookup func(string) (model.Service, bool), ok bool, now time.Time) {
	if !ok {
		inc.valid = false
		return
	}
	inc.cfg, inc.valid = cfg, true
	if p.full {
		inc.lastFull = now
		inc.ips = make(map[string][]netip.Addr, len(all))
		inc.byIP = make(map[netip.Addr][]string, len(all))
		for i := range all {
			inc.set(all[i].Key(), all[i].IPs)
		}
		return
	}
	for _, k := range p.changed {
		var ips []netip.Addr
		if s, ok := lookup(k); ok {
			ips = s.IPs
		}
		inc.set(k, ips)
	}
}

// set replaces the addresses indexed for key.
func (inc *incremental) set(key string, ips []netip.Addr) {
	for _, ip := range inc.ips[key] {
		l := slices.DeleteFunc(inc.byIP[ip], func(k string) bool { return k == key })
		if len(l) == 0 {
			delete(inc.byIP, ip)
		} else {
			inc.byIP[ip] = l
		}
	}
	if len(ips) == 0 {
		delete(inc.ips, key)
		return
	}
	own := make([]netip.Addr, len(ips))
	for i, ip := range ips {
		own[i] = ip.Unmap()
		inc.byIP[own[i]] = append(inc.byIP[own[i]], key)
	}
	inc.ips[key] = own
}
