package agent

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/bgplb/bgplb/internal/version"
	"github.com/bgplb/bgplb/routeragent/bgp"
	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/firewall"
	"github.com/bgplb/bgplb/routeragent/policy"
	"github.com/bgplb/bgplb/routeragent/routes"
	"github.com/bgplb/bgplb/routeragent/symmetry"
	"github.com/bgplb/bgplb/routeragent/sysctl"
)

// Status is what `bgplb-routeragent status --json` prints.
type Status struct {
	Version string    `json:"version"`
	Started time.Time `json:"started"`
	// Updated is when the last reconcile pass ended.
	Updated time.Time     `json:"updated"`
	Config  StatusConfig  `json:"config"`
	Peers   []PeerStatus  `json:"peers"`
	Prefix  PrefixSummary `json:"prefixes"`
	Routes  RouteSummary  `json:"routes"`
	// Firewall is the state of the exemptions (absent when mode is off).
	Firewall *firewall.Status `json:"firewall,omitempty"`
	// Sysctl is the send_redirects state.
	Sysctl      *sysctl.Report `json:"sysctl,omitempty"`
	SysctlError string         `json:"sysctlError,omitempty"`
	LAN         LANStatus      `json:"lan"`
	// Families sums up IPv4 and IPv6 side by side.
	Families []FamilyStatus `json:"families"`
	// Trace holds the last verdicts of `trace` (absent before the first).
	Trace *TraceStatus `json:"trace,omitempty"`
	// Symmetry is, in firewall mode verify, the proof that service
	// traffic passes the router both ways (absent in other modes).
	Symmetry *symmetry.Status `json:"symmetry,omitempty"`
	// BFD sums up the BFD sessions (absent when no neighbour enables BFD).
	BFD *BFDSummary `json:"bfd,omitempty"`
	// Pins is connection pinning (absent when routes.pinConnections is off).
	Pins *PinStatus `json:"pins,omitempty"`
}

// FamilyStatus is one address family at a glance: what is configured, the
// sessions, the routes, the firewall exemptions and how the router's
// redirects about service addresses are stopped.
type FamilyStatus struct {
	// Family is ipv4 or ipv6.
	Family         string   `json:"family"`
	ServiceSubnets []string `json:"serviceSubnets"`
	// Peers and PeersUp count the sessions whose speaker address is of
	// this family (the transport; a session may carry either family's
	// routes).
	Peers   int `json:"peers"`
	PeersUp int `json:"peersUp"`
	// RoutesDesired and RoutesInstalled count this family's service
	// routes (/32s or /128s).
	RoutesDesired   int `json:"routesDesired"`
	RoutesInstalled int `json:"routesInstalled"`
	// Exemptions counts the firewall exemptions for this family's subnets
	// and ExemptedPackets the packets they accepted.
	Exemptions      int    `json:"exemptions"`
	ExemptedPackets uint64 `json:"exemptedPackets"`
	// Redirects says how redirects about service addresses are stopped:
	// send_redirects=0 for IPv4, ip6tables OUTPUT rules for IPv6 (which
	// has no send_redirects).
	Redirects string `json:"redirects"`
	// RedirectsOK is false when such redirects can leave the router (or
	// it is not known yet).
	RedirectsOK bool `json:"redirectsOK"`
}

// StatusConfig is the part of the configuration an operator needs to read the rest.
type StatusConfig struct {
	ASN            uint32              `json:"asn"`
	RouterID       string              `json:"routerID"`
	ListenPort     int                 `json:"listenPort"`
	ServiceSubnets []string            `json:"serviceSubnets"`
	LANInterfaces  []string            `json:"lanInterfaces"`
	Table          int                 `json:"table"`
	Metric         int                 `json:"metric"`
	Protocol       int                 `json:"protocol"`
	FirewallMode   config.FirewallMode `json:"firewallMode"`
}

// PeerStatus is one BGP peer with what we made of its paths.
type PeerStatus struct {
	bgp.PeerState
	Accepted int                   `json:"accepted"`
	Rejected map[policy.Reason]int `json:"rejected,omitempty"`
	// MaxPrefixTeardowns counts the sessions closed because the peer went
	// over maxPrefixes (or reconnected during its hold-down).
	MaxPrefixTeardowns int `json:"maxPrefixTeardowns,omitempty"`
	// BFD is the peer's BFD session (absent when it has none).
	BFD *PeerBFD `json:"bfd,omitempty"`
	// Verdicts is what the peer is told about its paths (docs/verdict.md);
	// absent while the session is not established.
	Verdicts *PeerVerdicts `json:"verdicts,omitempty"`
}

// PeerVerdicts is what the agent reports to one peer.
type PeerVerdicts struct {
	// Sent counts the verdicts sent (one per path of the peer's the agent
	// decided on).
	Sent int `json:"sent"`
	// AddPathReceive: the peer negotiated ADD-PATH receive (a
	// bgplb-speaker); without it, it is sent no verdict.
	AddPathReceive bool `json:"addPathReceive"`
}

// fillVerdicts adds what each peer is reported.
func (s *Status) fillVerdicts(per map[netip.Addr]bgp.VerdictReport) {
	for i := range s.Peers {
		if r, ok := per[s.Peers[i].Address]; ok {
			s.Peers[i].Verdicts = &PeerVerdicts{Sent: r.Sent, AddPathReceive: r.AddPathReceive}
		}
	}
}

// PrefixSummary counts accepted and rejected paths and lists the rejected.
type PrefixSummary struct {
	Accepted int                   `json:"accepted"`
	Rejected int                   `json:"rejected"`
	ByReason map[policy.Reason]int `json:"byReason,omitempty"`
	// RejectedPaths lists up to 1000 rejected paths.
	RejectedPaths []RejectedPath `json:"rejectedPaths,omitempty"`
	// Undecodable counts the paths GoBGP delivered that the agent could not
	// decode, since start: neither accepted nor rejected, they would
	// otherwise be invisible.
	Undecodable int `json:"undecodable"`
}

// RejectedPath is one refused announcement.
type RejectedPath struct {
	Peer    netip.Addr    `json:"peer"`
	Prefix  netip.Prefix  `json:"prefix"`
	NextHop netip.Addr    `json:"nextHop"`
	Reason  policy.Reason `json:"reason"`
}

// RouteSummary compares desired and installed routes.
type RouteSummary struct {
	Desired   int `json:"desired"`
	Installed int `json:"installed"`
	Stale     int `json:"staleKept"`
	// Draining counts the next hops carrying GRACEFUL_SHUTDOWN (RFC 8326),
	// left out of their route while another next hop remains.
	Draining  int                  `json:"draining,omitempty"`
	Conflicts []routes.Conflict    `json:"conflicts,omitempty"`
	Errors    []routes.PrefixError `json:"errors,omitempty"`
	// ECMPWidth counts installed routes by number of next hops.
	ECMPWidth map[int]int `json:"ecmpWidth,omitempty"`
	// NexthopGroups is how routes are installed: resilient (nexthop
	// objects in resilient groups) or multipath (plain multipath routes);
	// NexthopGroupsReason says why when it is not what routes.nexthopGroups
	// asked for. Groups and Nexthops count our nexthop objects.
	NexthopGroups       routes.Mode `json:"nexthopGroups,omitempty"`
	NexthopGroupsReason string      `json:"nexthopGroupsReason,omitempty"`
	Groups              int         `json:"nexthopGroupObjects,omitempty"`
	Nexthops            int         `json:"nexthopObjects,omitempty"`
	// Weighted counts installed routes whose next hops have unequal
	// weights (link bandwidth).
	Weighted int           `json:"weighted,omitempty"`
	List     []RouteStatus `json:"list"`
}

// RouteStatus is one prefix: what BGP wants and what the kernel has.
type RouteStatus struct {
	Prefix    netip.Prefix `json:"prefix"`
	Desired   []netip.Addr `json:"desired"`
	Installed []netip.Addr `json:"installed"`
	// State is installed, pending, conflict, error or stale (kept from the
	// previous run, waiting for End-of-RIB).
	State string `json:"state"`
	// Draining counts the next hops carrying GRACEFUL_SHUTDOWN (RFC 8326):
	// left out of Desired while another remains.
	Draining int `json:"draining,omitempty"`
	// Weights are the installed next hops' weights (1-256, in the order
	// of Installed), from the speakers' link-bandwidth communities;
	// absent when equal.
	Weights []uint16 `json:"weights,omitempty"`
}

// fillRouteDetails adds how routes are installed and their weights.
func (s *Status) fillRouteDetails(d routes.Details) {
	s.Routes.NexthopGroups, s.Routes.NexthopGroupsReason = d.NexthopGroups, d.Reason
	s.Routes.Groups, s.Routes.Nexthops, s.Routes.Weighted = d.Groups, d.Nexthops, len(d.Weights)
	for i := range s.Routes.List {
		r := &s.Routes.List[i]
		if w := d.Weights[r.Prefix]; len(w) == len(r.Installed) {
			r.Weights = w
		}
	}
}

// LANStatus is what the policy uses as "connected LAN".
type LANStatus struct {
	Connected []netip.Prefix `json:"connected"`
	Missing   []string       `json:"missingInterfaces,omitempty"`
}

// update fills s from one reconcile pass and the peers as they are now.
func (s *Status) update(p pass, peers []bgp.PeerState) {
	s.Version = version.Version
	s.Updated = p.at
	s.Config = statusConfig(p.cfg)
	var rejected map[netip.Addr]map[policy.Reason]int
	s.Prefix, rejected = prefixSummary(p)
	s.Peers = s.Peers[:0]
	for _, peer := range peers {
		s.Peers = append(s.Peers, PeerStatus{PeerState: peer, Accepted: p.accepted[peer.Address], Rejected: rejected[peer.Address]})
	}
	s.Routes = routeSummary(p)
	s.LAN = LANStatus{Connected: p.connected, Missing: p.missing}
	s.Families = familySummary(*s)
}

// familySummary puts IPv4 and IPv6 side by side from the rest of the
// status. A family with no service subnet is left out.
func familySummary(s Status) []FamilyStatus {
	var out []FamilyStatus
	for _, fam := range []firewall.Family{firewall.IPv4, firewall.IPv6} {
		is := func(a netip.Addr) bool { return a.Is4() == (fam == firewall.IPv4) }
		f := FamilyStatus{Family: string(fam)}
		for _, sub := range s.Config.ServiceSubnets {
			if p, err := netip.ParsePrefix(sub); err == nil && is(p.Addr()) {
				f.ServiceSubnets = append(f.ServiceSubnets, sub)
			}
		}
		if len(f.ServiceSubnets) == 0 {
			continue
		}
		for _, p := range s.Peers {
			if is(p.Address) {
				f.Peers++
				if p.Up {
					f.PeersUp++
				}
			}
		}
		for _, r := range s.Routes.List {
			if !is(r.Prefix.Addr()) {
				continue
			}
			if len(r.Desired) > 0 {
				f.RoutesDesired++
			}
			if len(r.Installed) > 0 {
				f.RoutesInstalled++
			}
		}
		if s.Firewall != nil {
			for _, r := range s.Firewall.Rules {
				if p, err := netip.ParsePrefix(r.Subnet); err == nil && is(p.Addr()) {
					f.Exemptions++
					f.ExemptedPackets += r.Packets
				}
			}
		}
		if fam == firewall.IPv4 {
			f.Redirects, f.RedirectsOK = redirects4(s.Sysctl)
		} else {
			f.Redirects, f.RedirectsOK = redirects6(s.Firewall, len(f.ServiceSubnets))
		}
		out = append(out, f)
	}
	return out
}

// redirects4 describes send_redirects on the LAN interfaces.
func redirects4(r *sysctl.Report) (string, bool) {
	if r == nil {
		return "send_redirects not set yet", false
	}
	if r.Ok() {
		return "send_redirects=0 (all, default, LAN)", true
	}
	var on []string
	if r.All != 0 {
		on = append(on, "all")
	}
	if r.Default != 0 {
		on = append(on, "default")
	}
	for _, n := range slices.Sorted(maps.Keys(r.Interfaces)) {
		if r.Interfaces[n].Effective != 0 {
			on = append(on, n)
		}
	}
	return "send_redirects on: " + strings.Join(on, ", "), false
}

// redirects6 describes the ICMPv6 Redirect suppression (one rule per IPv6
// subnet and backend holding it).
func redirects6(f *firewall.Status, subnets int) (string, bool) {
	if f == nil || f.Mode == config.FirewallOff {
		return "not suppressed (firewall mode off)", false
	}
	var pk uint64
	seen := map[string]bool{}
	for _, r := range f.Redirects {
		pk += r.Packets
		seen[r.Subnet] = true
	}
	if len(seen) < subnets {
		return fmt.Sprintf("suppressed for %d of %d subnets", len(seen), subnets), false
	}
	return fmt.Sprintf("dropped in ip6tables OUTPUT (%s): %d", firewall.RedirectChainName, pk), true
}

// prefixSummary counts the pass's accepted and rejected paths, and the
// rejected per peer and reason.
func prefixSummary(p pass) (PrefixSummary, map[netip.Addr]map[policy.Reason]int) {
	perPeer := map[netip.Addr]map[policy.Reason]int{}
	byReason := map[policy.Reason]int{}
	var list []RejectedPath
	for _, r := range p.rejected {
		if perPeer[r.Path.Peer] == nil {
			perPeer[r.Path.Peer] = map[policy.Reason]int{}
		}
		perPeer[r.Path.Peer][r.Reason]++
		byReason[r.Reason]++
		if len(list) < 1000 {
			list = append(list, RejectedPath{Peer: r.Path.Peer, Prefix: r.Path.Prefix, NextHop: r.Path.NextHop, Reason: r.Reason})
		}
	}
	return PrefixSummary{Accepted: p.nAccepted, Rejected: len(p.rejected), ByReason: byReason, RejectedPaths: list}, perPeer
}

func statusConfig(cfg *config.Config) StatusConfig {
	return StatusConfig{ASN: cfg.ASN, RouterID: cfg.RouterID, ListenPort: cfg.Listen.Port, ServiceSubnets: cfg.ServiceSubnets,
		LANInterfaces: cfg.LANInterfaces, Table: cfg.Routes.Table, Metric: cfg.Routes.Metric, Protocol: cfg.Routes.Protocol,
		FirewallMode: cfg.Firewall.Mode}
}

// routeSummary compares, per prefix, what the pass wanted with what the
// kernel has.
func routeSummary(last pass) RouteSummary {
	res, desired, fromBGP := last.res, last.desired, last.fromBGP

	conflict := map[netip.Prefix]bool{}
	for _, c := range res.Conflicts {
		conflict[c.Prefix] = true
	}
	errs := map[netip.Prefix]bool{}
	for _, e := range res.Errors {
		errs[e.Prefix] = true
	}
	rs := RouteSummary{Desired: len(desired), Installed: len(res.Installed), Stale: last.staleKept, Draining: sumValues(last.draining),
		Conflicts: res.Conflicts, Errors: res.Errors, ECMPWidth: map[int]int{}}
	all := map[netip.Prefix]bool{}
	for p := range desired {
		all[p] = true
	}
	for p, nhs := range res.Installed {
		all[p] = true
		rs.ECMPWidth[len(nhs)]++
	}
	for _, p := range sortedPrefixes(all) {
		r := RouteStatus{Prefix: p, Desired: desired[p], Installed: res.Installed[p], Draining: last.draining[p]}
		switch {
		case conflict[p]:
			r.State = "conflict"
		case errs[p]:
			r.State = "error"
		case len(desired[p]) > 0 && !slices.Equal(desired[p], fromBGP[p]):
			r.State = "stale"
		case slices.Equal(desired[p], res.Installed[p]):
			r.State = "installed"
		default:
			r.State = "pending"
		}
		rs.List = append(rs.List, r)
	}
	return rs
}

func sumValues(m map[netip.Prefix]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
