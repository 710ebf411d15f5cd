// Package model decides what one node's speaker announces to each BGP peer.
//
// It is pure: the inputs are plain structs that the speaker controller fills
// from the Kubernetes objects, the output is a set of Advertisements per peer
// over netip types. Neither Kubernetes nor GoBGP types appear here, so the
// whole decision is table-tested without an apiserver or a BGP session.
package model

import (
	"net/netip"

	"github.com/bgplb/bgplb/internal/iprange"
)

// Well-known label and community values the decision depends on.
const (
	// LabelExcludeFromLB removes a node from external load balancers, as in
	// kube-proxy and the cloud providers.
	LabelExcludeFromLB = "node.kubernetes.io/exclude-from-external-load-balancers"

	// CommunityGracefulShutdown is GRACEFUL_SHUTDOWN (RFC 8326), 65535:0.
	CommunityGracefulShutdown uint32 = 0xFFFF0000
)

// TrafficPolicy is a Service's externalTrafficPolicy.
type TrafficPolicy string

// Traffic policies.
const (
	TrafficPolicyCluster TrafficPolicy = "Cluster"
	TrafficPolicyLocal   TrafficPolicy = "Local"
)

// Node is the part of a Kubernetes Node the decision needs.
type Node struct {
	Name   string
	Labels map[string]string
	// Ready is the NodeReady condition.
	Ready bool
	// Unschedulable: the node is cordoned (spec.unschedulable, or the
	// node.kubernetes.io/unschedulable taint that mirrors it), the first
	// step of a drain.
	Unschedulable bool
	// ShuttingDown: the kubelet's graceful node shutdown has begun. The
	// kubelet then reports the node NotReady, but it still runs its pods
	// (and kube-proxy) for the shutdown grace period.
	ShuttingDown bool
	// OutOfService: the node.kubernetes.io/out-of-service taint, which an
	// administrator sets on a node that is down (non-graceful shutdown).
	OutOfService bool
}

// Draining reports whether the node is on its way out of service: cordoned
// for a drain, or in the kubelet's graceful shutdown.
func (n Node) Draining() bool { return n.Unschedulable || n.ShuttingDown }

// Endpoint is one endpoint of a Service, from its EndpointSlices. The
// conditions follow the EndpointSlice API, with unset ready/serving read as
// true and unset terminating as false, as kube-proxy does.
type Endpoint struct {
	NodeName    string
	Ready       bool
	Serving     bool
	Terminating bool
}

// Usable reports whether the endpoint can still answer: ready, or serving
// while terminating. kube-proxy sends traffic to serving-and-terminating
// endpoints when a Service has no ready one (KEP-1669), so announcing
// while one exists keeps a route through the end of a pod's termination
// and a rolling update leaves no gap between the last old pod and the
// first new one.
func (e Endpoint) Usable() bool {
	return e.Ready || e.Serving
}

// Preferred reports whether the endpoint takes new traffic without
// reservation: ready, or serving and not terminating. A node whose only
// usable endpoints of a Service are terminating announces that Service
// with GRACEFUL_SHUTDOWN (see Advertisement.Draining), so routers prefer
// the nodes with preferred ones.
func (e Endpoint) Preferred() bool {
	return e.Ready || (e.Serving && !e.Terminating)
}

// Service is a LoadBalancer Service that bgplb handles, with the addresses
// the controller assigned (status.loadBalancer.ingress).
type Service struct {
	Namespace string
	Name      string
	// ID, when set, is namespace/name, precomputed to save an allocation
	// per Service per pass.
	ID     string
	Labels map[string]string
	// IPs are the ingress addresses; addresses outside every pool are not
	// ours and are ignored.
	IPs           []netip.Addr
	TrafficPolicy TrafficPolicy
	Endpoints     []Endpoint
}

// Key is namespace/name (ID when the caller precomputed it).
func (s Service) Key() string {
	if s.ID != "" {
		return s.ID
	}
	return s.Namespace + "/" + s.Name
}

// AddrRange is an inclusive address range of an IPPool, parsed from
// spec.addresses by internal/iprange (the grammar the CRD and
// bgplb-controller share).
type AddrRange = iprange.Range

// Pool is an IPPool: its name, labels and address ranges.
type Pool struct {
	Name   string
	Labels map[string]string
	Ranges []AddrRange
}

// Peer is a BGPPeer as far as the decision goes: which nodes peer with it
// and which address family its session carries.
type Peer struct {
	Name string
	// Address is the router's address; only prefixes of its family are
	// announced on the session (IPv4 over IPv4, IPv6 over IPv6).
	Address       netip.Addr
	NodeSelectors []LabelSelector
	// SourceAddress, when valid, is the node's address on the session and
	// therefore the next hop.
	SourceAddress netip.Addr
}

// BGPAdvertisement is the spec of one BGPAdvertisement.
type BGPAdvertisement struct {
	Name             string
	Pools            []string
	PoolSelectors    []LabelSelector
	ServiceSelectors []LabelSelector
	NodeSelectors    []LabelSelector
	Peers            []string
	// Communities as written by the user: "65000:100", "1:2:3", "no-export".
	Communities []string
	// LocalPref is the LOCAL_PREF, nil when unset.
	LocalPref *uint32
	// AggregationLength and AggregationLengthV6 are the prefix lengths; 0
	// is read as the default (32 and 128), since an aggregate of length 0
	// (a default route) is never what a user means.
	AggregationLength   int
	AggregationLengthV6 int
}

// Options are speaker-wide switches.
type Options struct {
	// GracefulShutdownOnDrain adds the GRACEFUL_SHUTDOWN community (RFC
	// 8326) to every route while the node is draining (Node.Draining), and
	// to the routes of Services whose local endpoints are all terminating
	// (externalTrafficPolicy Local), so that routers that honour it move
	// traffic to the other next hops before this one is withdrawn, while
	// keeping it when it is the only one. It also keeps a node in graceful
	// shutdown announcing (with GRACEFUL_SHUTDOWN) although the kubelet
	// reports it NotReady; without the option such a node withdraws at
	// once, like any NotReady node.
	GracefulShutdownOnDrain bool
	// WeightClusterServices announces a weight (Advertisement.Weight) for
	// Services with externalTrafficPolicy Cluster too: the node's ready
	// endpoints of the Service, at least 1 (a node without one still
	// forwards). Off by default: Cluster traffic is spread by kube-proxy
	// over every endpoint whichever node it enters by.
	WeightClusterServices bool
}

// Input is everything the decision reads.
type Input struct {
	// Node is the name of the node this speaker runs on.
	Node           string
	Nodes          []Node
	Services       []Service
	Pools          []Pool
	Peers          []Peer
	Advertisements []BGPAdvertisement
	Options        Options
}

// LargeCommunity is a BGP large community (RFC 8092).
type LargeCommunity struct {
	GlobalAdmin, LocalData1, LocalData2 uint32
}

// Advertisement is one prefix announced to one peer with its attributes.
type Advertisement struct {
	Prefix netip.Prefix
	// NextHop is the node's address on the session: the peer's
	// SourceAddress when set, otherwise the unspecified address of the
	// prefix's family, which the BGP layer replaces with the session's
	// local address.
	NextHop netip.Addr
	// Communities are standard communities, sorted and unique.
	Communities []uint32
	// LargeCommunities are sorted and unique.
	LargeCommunities []LargeCommunity
	// LocalPref is the LOCAL_PREF, 0 when unset.
	LocalPref uint32
	// Services are the namespace/name of the Services this prefix carries,
	// sorted; they do not go on the wire and only feed events.
	Services []string
	// Draining: this node is leaving the prefix (every Service it carries
	// has externalTrafficPolicy Local and only terminating endpoints
	// here). Not on the wire: with Options.GracefulShutdownOnDrain it
	// puts GRACEFUL_SHUTDOWN in Communities.
	Draining bool
	// Weight is this node's share of the prefix's traffic, announced as
	// the BGP link-bandwidth extended community (WeightBandwidth bytes/s
	// per unit) so routers weight their ECMP next hops by it: the ready
	// local endpoints of the Services it carries (externalTrafficPolicy
	// Local; see Options.WeightClusterServices). 0: no community.
	Weight uint32
}

// WeightBandwidth is the link bandwidth announced per unit of weight: one
// endpoint is 1 Mbit/s (125,000 bytes/s). Routers use only the ratios;
// FRR reads the value in whole Mbit/s, so a smaller unit would round to 0
// there.
const WeightBandwidth = 125000

// SameRoute reports whether two advertisements put the same route on the
// wire (Services are ignored).
func (a Advertisement) SameRoute(b Advertisement) bool {
	return a.SameRouteButWeight(b) && a.Weight == b.Weight
}

// SameRouteButWeight is SameRoute that ignores Weight: two advertisements
// that differ only there (an endpoint count changed) differ in one
// community, whose changes the BGP layer rate-limits.
func (a Advertisement) SameRouteButWeight(b Advertisement) bool {
	if a.Prefix != b.Prefix || a.NextHop != b.NextHop || a.LocalPref != b.LocalPref ||
		len(a.Communities) != len(b.Communities) || len(a.LargeCommunities) != len(b.LargeCommunities) {
		return false
	}
	for i := range a.Communities {
		if a.Communities[i] != b.Communities[i] {
			return false
		}
	}
	for i := range a.LargeCommunities {
		if a.LargeCommunities[i] != b.LargeCommunities[i] {
			return false
		}
	}
	return true
}

// Result is the decision for one node.
type Result struct {
	// Peers maps the name of every peer this node opens a session to onto
	// the advertisements for it, sorted by prefix. A selected peer with
	// nothing to announce is present with an empty list.
	Peers map[string][]Advertisement
	// UnadvertisedPools are the pools that no BGPAdvertisement selects, sorted.
	// Their addresses are announced nowhere.
	UnadvertisedPools []string
	// Problems are user errors found on the way (an invalid community, an
	// advertisement naming an unknown peer), one readable line each, sorted.
	Problems []string
}
