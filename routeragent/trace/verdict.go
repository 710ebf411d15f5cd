// Package trace is `bgplb-routeragent trace`: it watches real connection
// attempts to a service address from the router, which sees every packet
// of the forward path, and names why a client cannot reach the service.
//
// The deciding part is pure: Static (route and agent state alone) and
// Classify (one connection's timeline: conntrack events, counter deltas,
// ICMP statistics, the route) each return one Verdict. The observing part
// sits behind small interfaces (Conntrack, Counters, ICMP, Routes, Agent)
// with real adapters in this package; Tracer wires them together.
package trace

import (
	"fmt"
	"net/netip"
	"time"
)

// Kind is a verdict's kind. The set is fixed: metrics use it as a label.
type Kind string

// The verdict kinds, as `trace --json` prints them.
const (
	// NoRoute: the router has no route of ours for the address (nothing
	// announces it).
	NoRoute Kind = "no-route"
	// Rejected: a speaker announced it and the import policy refused it.
	Rejected Kind = "rejected"
	// ForeignRoute: a route that is not ours decides where the address goes.
	ForeignRoute Kind = "foreign-route"
	// Redirect: the router sent the client an ICMP redirect.
	Redirect Kind = "redirect"
	// InvalidDrop: the client's packets after the SYN were marked INVALID
	// (the node answered the client directly) and a firewall rule dropped them.
	InvalidDrop Kind = "invalid-drop"
	// AsymmetricOK: the same asymmetric path, with the INVALID packets let
	// through (our exemption, or no drop at all).
	AsymmetricOK Kind = "asymmetric-ok"
	// RST: the node refused the connection.
	RST Kind = "rst"
	// OtherRouter: the node's reply did not come back through this router.
	OtherRouter Kind = "other-router"
	// Healthy: handshake seen both ways through this router.
	Healthy Kind = "healthy"
)

// Kinds lists every kind, in the order above.
var Kinds = []Kind{NoRoute, Rejected, ForeignRoute, Redirect, InvalidDrop, AsymmetricOK, RST, OtherRouter, Healthy}

// Valid reports whether k is one of Kinds.
func (k Kind) Valid() bool {
	for _, v := range Kinds {
		if k == v {
			return true
		}
	}
	return false
}

// OK reports whether the verdict means the connection works.
func (k Kind) OK() bool { return k == Healthy || k == AsymmetricOK }

// Verdict is what trace concludes about one connection attempt (or, for
// the route verdicts, about the address before any attempt).
type Verdict struct {
	Kind Kind `json:"verdict"`
	// Client is the connecting client (unset for route verdicts without --client).
	Client netip.Addr `json:"client,omitzero"`
	// Service is ADDRESS or ADDRESS:PORT as traced.
	Service string `json:"service"`
	// NextHop is the node the router forwards the client's packets to.
	NextHop netip.Addr `json:"nextHop,omitzero"`
	// Interface is the router's interface towards the next hop.
	Interface string `json:"interface,omitempty"`
	// Rule is the firewall rule involved (the INVALID drop or our exemption).
	Rule *RuleRef `json:"rule,omitempty"`
	// Route describes the route involved (foreign-route, no-route).
	Route string `json:"route,omitempty"`
	// Reason is the import policy's reason (rejected).
	Reason string `json:"reason,omitempty"`
	// Peer is the speaker whose announcement was rejected.
	Peer netip.Addr `json:"peer,omitzero"`
	// Message says what happened, in one sentence.
	Message string `json:"message"`
	// Fix says what to do.
	Fix string `json:"fix"`
	// Timeline is what the router saw, in order.
	Timeline []Event `json:"timeline,omitempty"`
	// At is when the verdict was reached.
	At time.Time `json:"at,omitzero"`
}

// RuleRef names one firewall rule: rule Number (1-based) of Chain in the
// filter table of Backend (legacy, nft), or, with Backend nftables, in the
// native Table, where Handle names it for `nft -a list ruleset`.
type RuleRef struct {
	Backend string `json:"backend"`
	// Table is the native nftables table ("inet filter"); empty for iptables.
	Table  string `json:"table,omitempty"`
	Chain  string `json:"chain"`
	Number int    `json:"number"`
	// Handle is the native nftables rule handle; 0 for iptables.
	Handle uint64 `json:"handle,omitempty"`
	Spec   string `json:"spec"`
}

// Where says where the rule is, in a sentence: "rule 1 of chain FORWARD
// in backend legacy", "rule handle 4 of chain forward in table inet filter
// (backend nftables)".
func (r RuleRef) Where() string {
	if r.Table != "" {
		return fmt.Sprintf("rule handle %d of chain %s in table %s (backend %s)", r.Handle, r.Chain, r.Table, r.Backend)
	}
	return fmt.Sprintf("rule %d of chain %s in backend %s", r.Number, r.Chain, r.Backend)
}

// Event is one line of the timeline.
type Event struct {
	// MS is the time since the connection's first event, in milliseconds.
	MS   int64  `json:"ms"`
	What string `json:"what"`
}
