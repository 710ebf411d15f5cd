// Package verdict is the encoding of the router's verdict (docs/verdict.md):
// what bgplb-routeragent did with a path a speaker announced, carried back to
// that speaker over the same BGP session as BGP large communities (RFC 8092)
// on a path for the same prefix. The router agent encodes, the speaker
// decodes; both are pure and know nothing of GoBGP.
//
// Every community of a verdict has the router's ASN as global administrator
// and a function number as first local data part:
//
//	ASN:0:1       marker, encoding version 1 (a path without it is no verdict)
//	ASN:1:state   1 installed, 2 rejected, 3 pending
//	ASN:2:reason  reason code (Reasons), 0 for none
//	ASN:3:width   next hops of the router's kernel route for the prefix
//	ASN:4:via     1 when the receiving speaker's next hop is one of them
//	ASN:5:tag     the router's number for the receiving session (its export
//	              policy matches it; the speaker ignores it)
package verdict

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Version is the encoding version carried by the marker.
const Version = 1

// Function numbers: the first local data part of each community.
const (
	FuncMarker uint32 = iota
	FuncState
	FuncReason
	FuncWidth
	FuncVia
	FuncTag
)

// State is what the router did with the prefix.
type State uint32

const (
	// Unknown is no verdict (a decoded path never has it).
	Unknown State = iota
	// Installed: the router's kernel has a route for the prefix (see
	// Verdict.Via for whether the speaker's own next hop is in it).
	Installed
	// Rejected: the router refused the path (Verdict.Reason says why).
	Rejected
	// Pending: the path is accepted but no route is in the kernel (yet),
	// for Verdict.Reason when there is one.
	Pending
)

func (s State) String() string {
	switch s {
	case Installed:
		return "installed"
	case Rejected:
		return "rejected"
	case Pending:
		return "pending"
	}
	return "unknown"
}

// Reason codes. The names are the router agent's (policy.Reason and the
// route states of its status), so a user reads the same word on both sides.
// Codes are stable: never renumber, only append.
var Reasons = []string{
	0:  "",
	1:  "default-route",
	2:  "family-mismatch",
	3:  "not-host-route",
	4:  "outside-service-subnets",
	5:  "next-hop-not-peer",
	6:  "next-hop-not-on-lan",
	7:  "max-prefixes",
	8:  "route-conflict", // a foreign route holds the prefix in the kernel
	9:  "route-error",    // the kernel refused the route (retried)
	10: "draining",       // the speaker's next hop carries GRACEFUL_SHUTDOWN
}

// ReasonCode returns the code of a reason name; unknown names get 0.
func ReasonCode(name string) uint32 {
	for i, r := range Reasons {
		if r == name {
			return uint32(i)
		}
	}
	return 0
}

// ReasonName returns the name of a reason code; a code this version does not
// know reads "reason-N".
func ReasonName(code uint32) string {
	if int(code) < len(Reasons) {
		return Reasons[code]
	}
	return "reason-" + strconv.FormatUint(uint64(code), 10)
}

// Verdict is the router's verdict on one path.
type Verdict struct {
	State State
	// Reason is a name of Reasons (or "reason-N"); "" for none.
	Reason string
	// Width is the number of next hops of the router's kernel route for
	// the prefix (0: no route).
	Width int
	// Via: the receiving speaker's next hop is in that route.
	Via bool
}

func (v Verdict) String() string {
	s := fmt.Sprintf("%s width=%d via=%v", v.State, v.Width, v.Via)
	if v.Reason != "" {
		s += " reason=" + v.Reason
	}
	return s
}

// LargeCommunity is one RFC 8092 community.
type LargeCommunity struct {
	GlobalAdmin, LocalData1, LocalData2 uint32
}

func (c LargeCommunity) String() string {
	return fmt.Sprintf("%d:%d:%d", c.GlobalAdmin, c.LocalData1, c.LocalData2)
}

// Encode returns the communities of v for the session numbered tag, asn
// being the router's ASN.
func Encode(asn uint32, tag uint32, v Verdict) []LargeCommunity {
	via := uint32(0)
	if v.Via {
		via = 1
	}
	width := uint32(0)
	if v.Width > 0 {
		width = uint32(v.Width)
	}
	return []LargeCommunity{
		{asn, FuncMarker, Version},
		{asn, FuncState, uint32(v.State)},
		{asn, FuncReason, ReasonCode(v.Reason)},
		{asn, FuncWidth, width},
		{asn, FuncVia, via},
		{asn, FuncTag, tag},
	}
}

// Decode reads a verdict from a path's large communities, asn being the
// router's ASN (the session's peer ASN). ok is false when the path carries
// no marker of that ASN (it is no verdict: another router's path, or a
// router that does not report) or an unknown state; communities of other
// global administrators are ignored.
func Decode(asn uint32, lcs []LargeCommunity) (v Verdict, ok bool) {
	marker := false
	for _, c := range lcs {
		if c.GlobalAdmin != asn {
			continue
		}
		switch c.LocalData1 {
		case FuncMarker:
			marker = c.LocalData2 >= 1
		case FuncState:
			v.State = State(c.LocalData2)
		case FuncReason:
			v.Reason = ReasonName(c.LocalData2)
		case FuncWidth:
			v.Width = int(c.LocalData2)
		case FuncVia:
			v.Via = c.LocalData2 == 1
		}
	}
	if !marker || v.State < Installed || v.State > Pending {
		return Verdict{}, false
	}
	return v, true
}

// NextHop is the next hop of a verdict path: an address of the
// documentation ranges (RFC 5737, RFC 3849) that no network routes, so a
// verdict path that a receiver installed by mistake would resolve to
// nothing and carry no traffic.
func NextHop(prefix netip.Prefix) netip.Addr {
	if prefix.Addr().Is4() {
		return netip.MustParseAddr("192.0.2.1")
	}
	return netip.MustParseAddr("2001:db8::1")
}

// Describe is the verdict as a user reads it, about prefix as the router
// at router saw it: "router 192.168.2.1 installed 192.168.254.1/32 via 2
// nodes", "router 192.168.2.1 rejected 10.1.1.1/32: outside-service-subnets".
func Describe(router netip.Addr, prefix netip.Prefix, v Verdict) string {
	var b strings.Builder
	fmt.Fprintf(&b, "router %s %s %s", router, v.State, prefix)
	if v.State == Installed {
		nodes := "nodes"
		if v.Width == 1 {
			nodes = "node"
		}
		fmt.Fprintf(&b, " via %d %s", v.Width, nodes)
		if !v.Via {
			b.WriteString(" (not via this node)")
		}
	}
	if v.Reason != "" {
		fmt.Fprintf(&b, ": %s", v.Reason)
	}
	return b.String()
}
