package model

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"sort"
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

// ParseAddresses parses IPPool spec.addresses entries: CIDRs
// ("192.168.254.0/24") and inclusive ranges ("192.168.254.10-192.168.254.20").
func ParseAddresses(entries []string) ([]AddrRange, error) {
	var out []AddrRange
	for _, e := range entries {
		e = strings.TrimSpace(e)
		if from, to, ok := strings.Cut(e, "-"); ok {
			a, err1 := netip.ParseAddr(strings.TrimSpace(from))
			b, err2 := netip.ParseAddr(strings.TrimSpace(to))
			if err1 != nil || err2 != nil || a.BitLen() != b.BitLen() || b.Less(a) {
				return nil, fmt.Errorf("address range %q: want FIRST-LAST of one family, FIRST <= LAST", e)
			}
			out = append(out, AddrRange{From: a.Unmap(), To: b.Unmap()})
			continue
		}
		p, err := netip.ParsePrefix(e)
		if err != nil {
			return nil, fmt.Errorf("address %q: want a CIDR or a FIRST-LAST range: %w", e, err)
		}
		p = p.Masked()
		out = append(out, AddrRange{From: p.Addr(), To: lastAddr(p)})
	}
	return out, nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
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
//   - this node is Ready and not labelled LabelExcludeFromLB;
//   - externalTrafficPolicy Cluster: the Service has a usable endpoint
//     anywhere; Local: it has a usable endpoint on this node.
func Desired(in Input) Result {
	res := Result{Peers: map[string][]Advertisement{}}
	problems := map[string]bool{}

	var self *Node
	for i := range in.Nodes {
		if in.Nodes[i].Name == in.Node {
			self = &in.Nodes[i]
			break
		}
	}
	var selfLabels map[string]string
	if self != nil {
		selfLabels = self.Labels
	}

	// Peers this node opens a session to.
	peers := map[string]Peer{}
	for _, p := range in.Peers {
		if self != nil && matchesAny(p.NodeSelectors, selfLabels) {
			peers[p.Name] = p
			res.Peers[p.Name] = nil
		}
	}
	knownPeers := map[string]bool{}
	for _, p := range in.Peers {
		knownPeers[p.Name] = true
	}

	// Which advertisements select which pool; parse attributes once.
	advPools := make([]map[string]bool, len(in.Advertisements))
	advAttrs := make([]attrs, len(in.Advertisements))
	selected := map[string]bool{}
	for i, a := range in.Advertisements {
		advPools[i] = map[string]bool{}
		for _, pool := range in.Pools {
			if (len(a.Pools) == 0 && len(a.PoolSelectors) == 0) ||
				slices.Contains(a.Pools, pool.Name) ||
				(len(a.PoolSelectors) > 0 && matchesAny(a.PoolSelectors, pool.Labels)) {
				advPools[i][pool.Name] = true
				selected[pool.Name] = true
			}
		}
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
		for _, c := range a.Communities {
			std, large, err := ParseCommunity(c)
			switch {
			case err != nil:
				problems[fmt.Sprintf("BGPAdvertisement %s: %v", a.Name, err)] = true
			case large != nil:
				at.large = append(at.large, *large)
			default:
				at.communities = append(at.communities, std)
			}
		}
		advAttrs[i] = at
		for _, p := range a.Peers {
			if !knownPeers[p] {
				problems[fmt.Sprintf("BGPAdvertisement %s: peer %q does not exist", a.Name, p)] = true
			}
		}
	}
	for _, pool := range in.Pools {
		if !selected[pool.Name] {
			res.UnadvertisedPools = append(res.UnadvertisedPools, pool.Name)
		}
	}
	sort.Strings(res.UnadvertisedPools)

	// The node itself must be able to take external traffic.
	_, excluded := selfLabels[LabelExcludeFromLB]
	nodeOK := self != nil && self.Ready && !excluded
	if nodeOK && len(peers) > 0 {
		gshut := in.Options.GracefulShutdownWhenCordoned && self.Unschedulable
		// Everything that does not depend on the Service is worked out once:
		// this loop runs over every Service on every reconcile.
		peerNames := sortedNames(peers)
		poolIdx := map[string]int{}
		for i, p := range in.Pools {
			poolIdx[p.Name] = i
		}
		type advPlan struct {
			pools        []bool // by pool index
			peers4       []int  // indexes into peerNames
			peers6       []int
			communities  []uint32 // sorted, unique, with GRACEFUL_SHUTDOWN if due
			large        []LargeCommunity
			localPref    uint32
			lenV4, lenV6 int
			svcSel       []LabelSelector
		}
		var plans []advPlan
		for i, a := range in.Advertisements {
			if !matchesAny(a.NodeSelectors, selfLabels) {
				continue
			}
			at := advAttrs[i]
			pl := advPlan{pools: make([]bool, len(in.Pools)), localPref: at.localPref,
				lenV4: at.lenV4, lenV6: at.lenV6, svcSel: a.ServiceSelectors}
			for name := range advPools[i] {
				pl.pools[poolIdx[name]] = true
			}
			for pi, name := range peerNames {
				if len(a.Peers) > 0 && !slices.Contains(a.Peers, name) {
					continue
				}
				if peers[name].Address.Unmap().Is4() {
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

		// Append every (peer, prefix) contribution, then sort each peer's
		// list and merge neighbours with the same prefix (shared addresses,
		// aggregates, several advertisements). No per-entry map or pointer:
		// this runs over every Service on every reconcile.
		out := make([][]Advertisement, len(peerNames))
		// One backing array for the one-element Services lists of this pass.
		keysBuf := make([]string, 0, len(in.Services))
		for si := range in.Services {
			svc := &in.Services[si]
			if !serves(svc, in.Node) {
				continue
			}
			var svcKeys []string // shared by this Service's entries; cap 1, so appends copy
			for _, ip := range svc.IPs {
				ip = ip.Unmap()
				pool := poolOf(in.Pools, ip)
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
							keysBuf = make([]string, 0, len(in.Services))
						}
						keysBuf = append(keysBuf, svc.Key())
						svcKeys = keysBuf[len(keysBuf)-1 : len(keysBuf) : len(keysBuf)]
					}
					for _, pi := range targets {
						if out[pi] == nil {
							out[pi] = make([]Advertisement, 0, len(in.Services))
						}
						// The attribute slices are shared with the plan and
						// must be treated as read-only by every consumer.
						out[pi] = append(out[pi], Advertisement{
							Prefix: prefix, NextHop: nextHop(peers[peerNames[pi]], ip),
							Communities: pl.communities, LargeCommunities: pl.large, LocalPref: pl.localPref,
							Services: svcKeys,
						})
					}
				}
			}
		}
		for pi, name := range peerNames {
			list := out[pi]
			sortByPrefix(list)
			merged := list[:0]
			for i := 0; i < len(list); {
				a := list[i]
				j := i + 1
				if j < len(list) && list[j].Prefix == a.Prefix {
					a.Communities = slices.Clone(a.Communities)
					a.LargeCommunities = slices.Clone(a.LargeCommunities)
					a.Services = slices.Clone(a.Services)
					for ; j < len(list) && list[j].Prefix == a.Prefix; j++ {
						b := list[j]
						a.Communities = append(a.Communities, b.Communities...)
						a.LargeCommunities = append(a.LargeCommunities, b.LargeCommunities...)
						a.LocalPref = max(a.LocalPref, b.LocalPref)
						a.Services = append(a.Services, b.Services...)
					}
					a.Communities = sortUniq(a.Communities, cmpU32)
					a.LargeCommunities = sortUniq(a.LargeCommunities, compareLarge)
					a.Services = sortUniq(a.Services, strings.Compare)
				}
				merged = append(merged, a)
				i = j
			}
			if len(merged) == 0 {
				merged = nil
			}
			res.Peers[name] = merged
		}
	}

	for p := range problems {
		res.Problems = append(res.Problems, p)
	}
	sort.Strings(res.Problems)
	return res
}

// serves reports whether the Service should be announced from node, going
// by its traffic policy and endpoints.
func serves(svc *Service, node string) bool {
	for _, ep := range svc.Endpoints {
		if !ep.Usable() {
			continue
		}
		if svc.TrafficPolicy != TrafficPolicyLocal || ep.NodeName == node {
			return true
		}
	}
	return false
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

func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
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
