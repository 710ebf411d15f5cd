package agent

import (
	"net/netip"
	"slices"
	"time"

	"github.com/bgplb/bgplb/internal/version"
	"github.com/bgplb/bgplb/routeragent/bgp"
	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/firewall"
	"github.com/bgplb/bgplb/routeragent/policy"
	"github.com/bgplb/bgplb/routeragent/routes"
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
	Desired   int                  `json:"desired"`
	Installed int                  `json:"installed"`
	Stale     int                  `json:"staleKept"`
	Conflicts []routes.Conflict    `json:"conflicts,omitempty"`
	Errors    []routes.PrefixError `json:"errors,omitempty"`
	// ECMPWidth counts installed routes by number of next hops.
	ECMPWidth map[int]int   `json:"ecmpWidth,omitempty"`
	List      []RouteStatus `json:"list"`
}

// RouteStatus is one prefix: what BGP wants and what the kernel has.
type RouteStatus struct {
	Prefix    netip.Prefix `json:"prefix"`
	Desired   []netip.Addr `json:"desired"`
	Installed []netip.Addr `json:"installed"`
	// State is installed, pending, conflict, error or stale (kept from the
	// previous run, waiting for End-of-RIB).
	State string `json:"state"`
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
	rs := RouteSummary{Desired: len(desired), Installed: len(res.Installed), Stale: last.staleKept,
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
		r := RouteStatus{Prefix: p, Desired: desired[p], Installed: res.Installed[p]}
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
