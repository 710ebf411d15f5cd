package model

import (
	"encoding/binary"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// wellKnownCommunities are the names accepted in spec.communities (RFC 1997,
// RFC 7999, RFC 8326, RFC 7611, RFC 3765, draft-ietf-idr-long-lived-gr).
var wellKnownCommunities = map[string]uint32{
	"graceful-shutdown":   0xFFFF0000,
	"accept-own":          0xFFFF0001,
	"llgr-stale":          0xFFFF0006,
	"no-llgr":             0xFFFF0007,
	"blackhole":           0xFFFF029A,
	"no-export":           0xFFFFFF01,
	"no-advertise":        0xFFFFFF02,
	"no-export-subconfed": 0xFFFFFF03,
	"local-as":            0xFFFFFF03,
	"no-peer":             0xFFFFFF04,
}

// ParseCommunity parses one spec.communities entry into either a standard
// community (large is nil) or a large community.
func ParseCommunity(s string) (std uint32, large *LargeCommunity, err error) {
	if v, ok := wellKnownCommunities[strings.ToLower(s)]; ok {
		return v, nil, nil
	}
	parts := strings.Split(s, ":")
	switch len(parts) {
	case 2:
		hi, err1 := strconv.ParseUint(parts[0], 10, 16)
		lo, err2 := strconv.ParseUint(parts[1], 10, 16)
		if err1 != nil || err2 != nil {
			return 0, nil, fmt.Errorf("community %q: both numbers must be 0-65535", s)
		}
		return uint32(hi)<<16 | uint32(lo), nil, nil
	case 3:
		var v [3]uint32
		for i, p := range parts {
			n, err := strconv.ParseUint(p, 10, 32)
			if err != nil {
				return 0, nil, fmt.Errorf("large community %q: every number must be 0-4294967295", s)
			}
			v[i] = uint32(n)
		}
		return 0, &LargeCommunity{v[0], v[1], v[2]}, nil
	}
	return 0, nil, fmt.Errorf("community %q: want ASN:value, global:local1:local2 or a well-known name", s)
}

// attrs are the attributes one advertisement contributes.
type attrs struct {
	communities []uint32
	large       []LargeCommunity
	localPref   uint32
	lenV4       int
	lenV6       int
}

// Desired computes, for the node in.Node, the advertisements per peer.
//
// A Service address is announced to a peer when all of these hold:
//   - the address lies in an IPPool and an advertisement selects that pool,
//     the Service (serviceSelectors), this node (nodeSelectors) and the peer;
//   - the peer selects this node and has the address's family;
//   - this node is Ready (or in graceful shutdown, with
//     GracefulShutdownOnDrain), not labelled LabelExcludeFromLB and not
//     tainted out-of-service;
//   - externalTrafficPolicy Cluster: the Service has a usable endpoint
//     (Endpoint.Usable: ready, or serving while terminating) anywhere;
//     Local: it has a usable endpoint on this node.
//
// With GracefulShutdownOnDrain, a draining node (Node.Draining) announces
// every route with GRACEFUL_SHUTDOWN, and a Local Service whose endpoints on
// this node are all terminating is announced with it (Advertisement.Draining):
// routers move traffic to the other next hops first, and the route is
// withdrawn when the last local endpoint is gone.
//
// It reads top to bottom: find this node, select its peers, read the
// advertisements (independent of node and Services), plan each one for this
// node, emit every (peer, prefix) contribution of every Service, and merge
// each peer's contributions by prefix.
func Desired(in Input) Result {
	self := findNode(in.Nodes, in.Node)
	peers := selectPeers(in.Peers, self)
	advs, problems := readAdvertisements(in.Advertisements, in.Pools, in.Peers)
	res := Result{
		Peers:             make(map[string][]Advertisement, len(peers)),
		UnadvertisedPools: unadvertisedPools(in.Pools, advs),
		Problems:          problems,
	}
	for _, p := range peers {
		res.Peers[p.Name] = nil
	}
	if !canAnnounce(self, in.Options) || len(peers) == 0 {
		return res
	}
	gshut := in.Options.GracefulShutdownOnDrain && self.Draining()
	plans := planAdvertisements(in.Advertisements, advs, self.Labels, peers, gshut)
	out := emit(in.Services, in.Pools, in.Node, plans, peers, in.Options.WeightClusterServices)
	for pi, p := range peers {
		res.Peers[p.Name] = mergeByPrefix(out[pi], in.Options.GracefulShutdownOnDrain)
	}
	return res
}

// findNode returns the node called name, nil when there is none.
func findNode(nodes []Node, name string) *Node {
	for i := range nodes {
		if nodes[i].Name == name {
			return &nodes[i]
		}
	}
	return nil
}

// canAnnounce reports whether the node itself can take external traffic:
// it exists, is not labelled LabelExcludeFromLB nor tainted out-of-service,
// and is Ready. A node in the kubelet's graceful shutdown is NotReady but
// still runs its pods and kube-proxy for the shutdown grace period: with
// GracefulShutdownOnDrain it keeps announcing (with GRACEFUL_SHUTDOWN)
// until its endpoints are gone or the speaker itself is stopped, so that
// the routers move traffic away first and keep the route while it is the
// only one.
func canAnnounce(self *Node, opts Options) bool {
	if self == nil {
		return false
	}
	_, excluded := self.Labels[LabelExcludeFromLB]
	if excluded || self.OutOfService {
		return false
	}
	return self.Ready || (self.ShuttingDown && opts.GracefulShutdownOnDrain)
}

// selectPeers returns the peers this node opens a session to (those whose
// nodeSelectors match it), sorted by name, one per name (the last wins).
func selectPeers(all []Peer, self *Node) []Peer {
	if self == nil {
		return nil
	}
	byName := map[string]Peer{}
	for _, p := range all {
		if matchesAny(p.NodeSelectors, self.Labels) {
			byName[p.Name] = p
		}
	}
	out := make([]Peer, 0, len(byName))
	for _, p := range byName {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Peer) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// advertisement is what one BGPAdvertisement means before a node or a
// Service is considered: the pools it selects and its parsed attributes.
type advertisement struct {
	pools []bool // by index into the pools
	attrs
}

// readAdvertisements works out, once per pass, which pools each
// advertisement selects and parses its attributes. The problems are the
// user errors found (invalid communities, unknown peers), sorted and unique.
func readAdvertisements(advs []BGPAdvertisement, pools []Pool, peers []Peer) ([]advertisement, []string) {
	knownPeers := make(map[string]bool, len(peers))
	for _, p := range peers {
		knownPeers[p.Name] = true
	}
	problems := map[string]bool{}
	out := make([]advertisement, len(advs))
	for i, a := range advs {
		out[i].pools = make([]bool, len(pools))
		for pi, pool := range pools {
			out[i].pools[pi] = selectsPool(a, pool)
		}
		var errs []error
		out[i].attrs, errs = parseAttrs(a)
		for _, err := range errs {
			problems[fmt.Sprintf("BGPAdvertisement %s: %v", a.Name, err)] = true
		}
		for _, p := range a.Peers {
			if !knownPeers[p] {
				problems[fmt.Sprintf("BGPAdvertisement %s: peer %q does not exist", a.Name, p)] = true
			}
		}
	}
	if len(problems) == 0 {
		return out, nil
	}
	return out, slices.Sorted(maps.Keys(problems))
}

// selectsPool reports whether a selects pool: by name, by label, or every
// pool when it names none and selects none.
func selectsPool(a BGPAdvertisement, pool Pool) bool {
	return (len(a.Pools) == 0 && len(a.PoolSelectors) == 0) ||
		slices.Contains(a.Pools, pool.Name) ||
		(len(a.PoolSelectors) > 0 && matchesAny(a.PoolSelectors, pool.Labels))
}

// parseAttrs parses an advertisement's attributes; an invalid community is
// left out and returned as an error.
func parseAttrs(a BGPAdvertisement) (attrs, []error) {
	at := attrs{lenV4: a.AggregationLength, lenV6: a.AggregationLengthV6}
	if at.lenV4 <= 0 || at.lenV4 > 32 {
		at.lenV4 = 32
	}
	if at.lenV6 <= 0 || at.lenV6 > 128 {
		at.lenV6 = 128
	}
	if a.LocalPref != nil {
		at.localPref = *a.LocalPref
	}
	var errs []error
	for _, c := range a.Communities {
		std, large, err := ParseCommunity(c)
		switch {
		case err != nil:
			errs = append(errs, err)
		case large != nil:
			at.large = append(at.large, *large)
		default:
			at.communities = append(at.communities, std)
		}
	}
	return at, errs
}

// unadvertisedPools are the names of the pools no advertisement selects,
// sorted.
func unadvertisedPools(pools []Pool, advs []advertisement) []string {
	var out []string
	for pi, pool := range pools {
		if !slices.ContainsFunc(advs, func(a advertisement) bool { return a.pools[pi] }) {
			out = append(out, pool.Name)
		}
	}
	slices.Sort(out)
	return out
}

// advPlan is one advertisement as it applies to this node: everything that
// does not depend on the Service, worked out once, since emit runs over
// every Service on every reconcile.
type advPlan struct {
	pools        []bool // by pool index
	peers4       []int  // indexes into the selected peers
	peers6       []int
	communities  []uint32 // sorted, unique, with GRACEFUL_SHUTDOWN if due
	large        []LargeCommunity
	localPref    uint32
	lenV4, lenV6 int
	svcSel       []LabelSelector
}

// planAdvertisements plans the advertisements that select this node (by
// its labels): to which of the selected peers, of which family, each one
// goes, and its final attributes (gshut adds GRACEFUL_SHUTDOWN).
func planAdvertisements(advs []BGPAdvertisement, parsed []advertisement, selfLabels map[string]string, peers []Peer, gshut bool) []advPlan {
	var plans []advPlan
	for i, a := range advs {
		if !matchesAny(a.NodeSelectors, selfLabels) {
			continue
		}
		at := parsed[i].attrs
		pl := advPlan{pools: parsed[i].pools, localPref: at.localPref,
			lenV4: at.lenV4, lenV6: at.lenV6, svcSel: a.ServiceSelectors}
		for pi, p := range peers {
			if len(a.Peers) > 0 && !slices.Contains(a.Peers, p.Name) {
				continue
			}
			if p.Address.Unmap().Is4() {
				pl.peers4 = append(pl.peers4, pi)
			} else {
				pl.peers6 = append(pl.peers6, pi)
			}
		}
		comms := slices.Clone(at.communities)
		if gshut {
			comms = append(comms, CommunityGracefulShutdown)
		}
		pl.communities = sortUniq(comms, cmpU32)
		pl.large = sortUniq(slices.Clone(at.large), compareLarge)
		plans = append(plans, pl)
	}
	return plans
}

// emit appends every (peer, prefix) contribution of the Services served
// from node, one list per peer (by index into peers), unsorted and with
// repeated prefixes (shared addresses, aggregates, several advertisements)
// for mergeByPrefix. No per-entry map or pointer: this runs over every
// Service on every reconcile.
func emit(services []Service, pools []Pool, node string, plans []advPlan, peers []Peer, weightCluster bool) [][]Advertisement {
	out := make([][]Advertisement, len(peers))
	// One backing array for the one-element Services lists of this pass.
	keysBuf := make([]string, 0, len(services))
	for si := range services {
		svc := &services[si]
		announce, draining := serves(svc, node)
		if !announce {
			continue
		}
		weight := weightOf(svc, node, weightCluster)
		var svcKeys []string // shared by this Service's entries; cap 1, so appends copy
		for _, ip := range svc.IPs {
			ip = ip.Unmap()
			pool := poolOf(pools, ip)
			if pool < 0 {
				continue
			}
			for pli := range plans {
				pl := &plans[pli]
				if !pl.pools[pool] || !matchesAny(pl.svcSel, svc.Labels) {
					continue
				}
				bits, targets := pl.lenV4, pl.peers4
				if ip.Is6() {
					bits, targets = pl.lenV6, pl.peers6
				}
				prefix, _ := ip.Prefix(bits)
				if svcKeys == nil {
					if len(keysBuf) == cap(keysBuf) {
						keysBuf = make([]string, 0, len(services))
					}
					keysBuf = append(keysBuf, svc.Key())
					svcKeys = keysBuf[len(keysBuf)-1 : len(keysBuf) : len(keysBuf)]
				}
				for _, pi := range targets {
					if out[pi] == nil {
						out[pi] = make([]Advertisement, 0, len(services))
					}
					// The attribute slices are shared with the plan and
					// must be treated as read-only by every consumer.
					out[pi] = append(out[pi], Advertisement{
						Prefix: prefix, NextHop: nextHop(peers[pi], ip),
						Communities: pl.communities, LargeCommunities: pl.large, LocalPref: pl.localPref,
						Services: svcKeys, Draining: draining, Weight: weight,
					})
				}
			}
		}
	}
	return out
}

// mergeByPrefix sorts one peer's contributions by prefix and merges
// neighbours with the same prefix into one advertisement: the union of
// their communities and Services, the highest LOCAL_PREF; it is Draining
// only when every contribution is (a Service still served here keeps the
// prefix at full preference). gshutDraining adds GRACEFUL_SHUTDOWN to the
// Draining ones. It works in place (list is reused) and returns nil for
// an empty list.
func mergeByPrefix(list []Advertisement, gshutDraining bool) []Advertisement {
	sortByPrefix(list)
	merged := list[:0]
	for i := 0; i < len(list); {
		a := list[i]
		j := i + 1
		if j < len(list) && list[j].Prefix == a.Prefix {
			// Clone first: the attribute slices are shared with the plan.
			a.Communities = slices.Clone(a.Communities)
			a.LargeCommunities = slices.Clone(a.LargeCommunities)
			a.Services = slices.Clone(a.Services)
			for ; j < len(list) && list[j].Prefix == a.Prefix; j++ {
				b := list[j]
				a.Communities = append(a.Communities, b.Communities...)
				a.LargeCommunities = append(a.LargeCommunities, b.LargeCommunities...)
				a.LocalPref = max(a.LocalPref, b.LocalPref)
				a.Services = append(a.Services, b.Services...)
				a.Draining = a.Draining && b.Draining
				// Services sharing an address share its traffic: their
				// endpoints here add up.
				a.Weight += b.Weight
			}
			a.Communities = sortUniq(a.Communities, cmpU32)
			a.LargeCommunities = sortUniq(a.LargeCommunities, compareLarge)
			a.Services = sortUniq(a.Services, strings.Compare)
		}
		if a.Draining && gshutDraining && !slices.Contains(a.Communities, CommunityGracefulShutdown) {
			// A copy: the list may share the plan's slice.
			a.Communities = sortUniq(append(slices.Clone(a.Communities), CommunityGracefulShutdown), cmpU32)
		}
		merged = append(merged, a)
		i = j
	}
	if len(merged) == 0 {
		return nil
	}
	return merged
}

// serves reports whether the Service should be announced from node, going
// by its traffic policy and endpoints, and whether node is draining it:
// externalTrafficPolicy Local with usable endpoints on node that are all
// terminating (being evicted or replaced), so the other nodes' ready
// endpoints should be preferred.
func serves(svc *Service, node string) (announce, draining bool) {
	local := svc.TrafficPolicy == TrafficPolicyLocal
	for _, ep := range svc.Endpoints {
		if !ep.Usable() || (local && ep.NodeName != node) {
			continue
		}
		if !local || ep.Preferred() {
			return true, false
		}
		announce = true
	}
	return announce, announce
}

// weightOf is node's weight for a Service it announces: its ready local
// endpoints (externalTrafficPolicy Local), or, draining, its serving ones,
// so the weight stays positive while GRACEFUL_SHUTDOWN moves traffic away.
// A Cluster Service has none unless weightCluster (then at least 1).
func weightOf(svc *Service, node string, weightCluster bool) uint32 {
	local := svc.TrafficPolicy == TrafficPolicyLocal
	if !local && !weightCluster {
		return 0
	}
	var ready, usable uint32
	for _, ep := range svc.Endpoints {
		if ep.NodeName != node || !ep.Usable() {
			continue
		}
		usable++
		if ep.Preferred() {
			ready++
		}
	}
	switch {
	case ready > 0:
		return ready
	case local:
		return usable
	}
	return 1
}

func poolOf(pools []Pool, ip netip.Addr) int {
	for i, p := range pools {
		for _, r := range p.Ranges {
			if r.Contains(ip) {
				return i
			}
		}
	}
	return -1
}

func cmpU32(a, b uint32) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func nextHop(p Peer, ip netip.Addr) netip.Addr {
	if p.SourceAddress.IsValid() && p.SourceAddress.Unmap().Is4() == ip.Is4() {
		return p.SourceAddress.Unmap()
	}
	if ip.Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}

func compareLarge(a, b LargeCommunity) int {
	for _, d := range [][2]uint32{{a.GlobalAdmin, b.GlobalAdmin}, {a.LocalData1, b.LocalData1}, {a.LocalData2, b.LocalData2}} {
		if d[0] != d[1] {
			if d[0] < d[1] {
				return -1
			}
			return 1
		}
	}
	return 0
}

func sortUniq[T comparable](s []T, cmp func(a, b T) int) []T {
	if len(s) == 0 {
		return nil
	}
	slices.SortFunc(s, cmp)
	return slices.Compact(s)
}

// prefixKey orders prefixes as netip.Addr.Compare and then the length do
// (IPv4 before IPv6), in 24 bytes instead of a 136-byte Advertisement.
type prefixKey struct {
	hi, lo uint64
	bits   int16
	is6    bool
	i      int32 // position in the unsorted list
}

func cmpPrefixKey(a, b prefixKey) int {
	switch {
	case a.is6 != b.is6:
		if b.is6 {
			return -1
		}
		return 1
	case a.hi != b.hi:
		if a.hi < b.hi {
			return -1
		}
		return 1
	case a.lo != b.lo:
		if a.lo < b.lo {
			return -1
		}
		return 1
	}
	return int(a.bits) - int(b.bits)
}

// sortByPrefix sorts list by prefix address, then length. It sorts small
// keys and then permutes the list in place: at 10,000 Services in the order
// the informer delivered them, sorting the Advertisements themselves took
// most of the decision's time.
func sortByPrefix(list []Advertisement) {
	if sortByPrefix4(list) {
		return
	}
	keys := make([]prefixKey, len(list))
	for i := range list {
		a := list[i].Prefix.Addr()
		b := a.As16()
		keys[i] = prefixKey{
			hi: binary.BigEndian.Uint64(b[:8]), lo: binary.BigEndian.Uint64(b[8:]),
			bits: int16(list[i].Prefix.Bits()), is6: a.Is6(), i: int32(i),
		}
	}
	if slices.IsSortedFunc(keys, cmpPrefixKey) {
		return
	}
	slices.SortFunc(keys, cmpPrefixKey)
	from := make([]int32, len(keys))
	for k := range keys {
		from[k] = keys[k].i
	}
	permute(list, from)
}

// sortByPrefix4 is sortByPrefix for the usual all-IPv4 list: each key is
// one uint64 (address, length, position), sorted without a comparison
// function. It reports false, doing nothing, when a prefix is IPv6 or the
// list is too long for the 24 bits of position.
func sortByPrefix4(list []Advertisement) bool {
	const posBits = 24
	if len(list) >= 1<<posBits {
		return false
	}
	keys := make([]uint64, len(list))
	for i := range list {
		a := list[i].Prefix.Addr()
		if !a.Is4() {
			return false
		}
		b := a.As4()
		keys[i] = uint64(binary.BigEndian.Uint32(b[:]))<<32 | uint64(list[i].Prefix.Bits())<<posBits | uint64(i)
	}
	if slices.IsSorted(keys) {
		return true
	}
	slices.Sort(keys)
	from := make([]int32, len(keys))
	for k, key := range keys {
		from[k] = int32(key & (1<<posBits - 1))
	}
	permute(list, from)
	return true
}

// permute reorders list so that list[k] becomes the old list[from[k]],
// following each cycle of the permutation once (from is used up).
func permute(list []Advertisement, from []int32) {
	for k := range from {
		if from[k] < 0 || int(from[k]) == k {
			continue
		}
		tmp := list[k]
		j := k
		for {
			next := int(from[j])
			from[j] = -1
			if next == k {
				list[j] = tmp
				break
			}
			list[j] = list[next]
			j = next
		}
	}
}
