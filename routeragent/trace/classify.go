package trace

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/bgplb/bgplb/routeragent/config"
)

// Route is what the router's FIB says about the service address.
type Route struct {
	// Found is false when the lookup failed (unreachable).
	Found bool
	// Prefix is the matching FIB entry's destination (0/0 for the default route).
	Prefix   netip.Prefix
	Protocol int
	Table    int
	// Ours is true when Protocol is the agent's.
	Ours bool
	// NextHop is the gateway the lookup picks for this client (one of an
	// ECMP route's next hops), invalid for an on-link route.
	NextHop netip.Addr
	// Dev is the interface towards NextHop.
	Dev string
	// OnLink are the prefixes connected on Dev.
	OnLink []netip.Prefix
}

func (r Route) String() string {
	if !r.Found {
		return "no route (unreachable)"
	}
	s := fmt.Sprintf("%s proto %d table %d", r.Prefix, r.Protocol, r.Table)
	if r.NextHop.IsValid() {
		s += " via " + r.NextHop.String()
	}
	if r.Dev != "" {
		s += " dev " + r.Dev
	}
	return s
}

// AgentView is what the running agent knows about the address.
type AgentView struct {
	// Reachable is false when the agent did not answer on its socket.
	Reachable bool
	// Rejected are the refused announcements (of every prefix).
	Rejected []Rejection
	// Conflicts are the prefixes the agent wants but a foreign route holds.
	Conflicts []netip.Prefix
}

// Rejection is one announcement the import policy refused.
type Rejection struct {
	Peer    netip.Addr
	Prefix  netip.Prefix
	NextHop netip.Addr
	Reason  string
}

// Static decides from the route and the agent alone, before any
// connection: the route verdicts. ok is false when the route is ours, so
// that only a connection can tell more.
func Static(service string, addr netip.Addr, rt Route, ag AgentView) (v Verdict, ok bool) {
	if rt.Found && rt.Ours {
		return Verdict{}, false
	}
	v = Verdict{Service: service, Route: rt.String()}
	if rej, found := rejectionFor(addr, ag.Rejected); found {
		v.Kind, v.Reason, v.Peer, v.NextHop = Rejected, rej.Reason, rej.Peer, rej.NextHop
		v.Message = fmt.Sprintf("speaker %s announced %s via %s and the import policy rejected it (%s)", rej.Peer, rej.Prefix, rej.NextHop, rej.Reason)
		v.Fix = "make the announcement fit the agent's policy (serviceSubnets, neighbors, next hop on the LAN): see `bgplb-routeragent status` for every rejected path and its reason"
		return v, true
	}
	if rt.Found && rt.Prefix.Bits() > 0 {
		v.Kind = ForeignRoute
		v.NextHop = rt.NextHop
		v.Message = fmt.Sprintf("the route %s is not ours (protocol %d) and decides where %s goes", rt, rt.Protocol, addr)
		v.Fix = fmt.Sprintf("remove the foreign route (ip route del %s proto %d table %d) or move the service address out of its range", rt.Prefix, rt.Protocol, rt.Table)
		if rt.Protocol == protoKernel {
			// A connected subnet: nothing to delete, the address is on the LAN.
			v.Fix = fmt.Sprintf("%s is on a subnet connected to %s: give the Service an address from serviceSubnets, which must not overlap the LAN", addr, rt.Dev)
		}
		if conflicted(addr, ag.Conflicts) {
			v.Message += "; the agent wants this prefix and reports a conflict"
		}
		return v, true
	}
	v.Kind = NoRoute
	v.Message = fmt.Sprintf("no speaker announces %s: the router has no route of ours for it", addr)
	v.Fix = "check that the Service has this address in status.loadBalancer, that the speakers run on nodes with ready endpoints, and that their BGP sessions are up (`bgplb-routeragent status`)"
	if !ag.Reachable {
		v.Message += "; the agent does not answer on its status socket"
		v.Fix = "start the agent (systemctl start bgplb-routeragent), then " + v.Fix
	}
	return v, true
}

// protoKernel is RTPROT_KERNEL: the route of a connected subnet.
const protoKernel = 2

func rejectionFor(addr netip.Addr, rs []Rejection) (Rejection, bool) {
	for _, r := range rs {
		if r.Prefix.Contains(addr) {
			return r, true
		}
	}
	return Rejection{}, false
}

func conflicted(addr netip.Addr, ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// TCPState is conntrack's TCP state (include/uapi/linux/netfilter/nf_conntrack_tcp.h).
type TCPState uint8

// The TCP states trace looks at.
const (
	TCPNone        TCPState = 0
	TCPSynSent     TCPState = 1
	TCPSynRecv     TCPState = 2
	TCPEstablished TCPState = 3
	TCPFinWait     TCPState = 4
	TCPCloseWait   TCPState = 5
	TCPLastAck     TCPState = 6
	TCPTimeWait    TCPState = 7
	TCPClose       TCPState = 8
	TCPSynSent2    TCPState = 9
)

var tcpStateNames = [...]string{"NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2"}

func (s TCPState) String() string {
	if int(s) < len(tcpStateNames) {
		return tcpStateNames[s]
	}
	return fmt.Sprintf("STATE_%d", uint8(s))
}

// FlowEventType is conntrack's event type.
type FlowEventType string

// Conntrack event types.
const (
	FlowNew     FlowEventType = "new"
	FlowUpdate  FlowEventType = "update"
	FlowDestroy FlowEventType = "destroy"
)

// FlowEvent is one conntrack event of the traced connection.
type FlowEvent struct {
	At        time.Time
	Type      FlowEventType
	Client    netip.AddrPort
	Service   netip.AddrPort
	State     TCPState
	SeenReply bool
}

// RuleCount is one firewall rule and its packet counter (or, in a Delta,
// the packets it matched during the connection).
type RuleCount struct {
	RuleRef
	Packets uint64
	// Uncounted: the rule has no counter (a native nftables rule without
	// `counter`), so Packets says nothing.
	Uncounted bool
}

// Counters are the router-wide counters trace compares before and after a
// connection.
type Counters struct {
	// OutRedirects is /proc/net/snmp's Icmp OutRedirects.
	OutRedirects uint64
	// Packets counts the client's packets to the service (our temporary
	// counting rule), Invalid those of them conntrack marked INVALID.
	Packets, Invalid uint64
	// Drops are the INVALID drops reachable from FORWARD, per backend.
	Drops []RuleCount
	// Exemptions are our exemption rules.
	Exemptions []RuleCount
}

// Delta returns after minus before, rule by rule (rules absent before
// count from zero).
func Delta(before, after Counters) Counters {
	d := Counters{OutRedirects: sub(after.OutRedirects, before.OutRedirects),
		Packets: sub(after.Packets, before.Packets), Invalid: sub(after.Invalid, before.Invalid)}
	d.Drops = deltaRules(before.Drops, after.Drops)
	d.Exemptions = deltaRules(before.Exemptions, after.Exemptions)
	return d
}

func sub(a, b uint64) uint64 {
	if a < b { // counters reset (a ferm reload): count from zero
		return a
	}
	return a - b
}

func deltaRules(before, after []RuleCount) []RuleCount {
	var out []RuleCount
	for _, a := range after {
		d := a
		for _, b := range before {
			if b.Backend == a.Backend && b.Table == a.Table && b.Chain == a.Chain && b.Spec == a.Spec {
				d.Packets = sub(a.Packets, b.Packets)
				break
			}
		}
		out = append(out, d)
	}
	return out
}

// Conn is everything trace observed about one connection attempt.
type Conn struct {
	Service string
	Client  netip.AddrPort
	// Start is the first event's time, End when the counters were read.
	Start, End time.Time
	// Route is the lookup for this client's packets to the service.
	Route Route
	// Ingress is the router's interface towards the client.
	Ingress string
	// RedirectsOn is send_redirects as effective on Ingress.
	RedirectsOn bool
	Events      []FlowEvent
	// Delta are the counters' changes over the connection.
	Delta Counters
	// FirewallMode is the agent's firewall.mode (empty: exempt).
	FirewallMode config.FirewallMode
}

// Classify names what happened to one connection. It reads as the
// questions the seeds' authors asked of their captures, in order.
func Classify(c Conn) Verdict {
	v := Verdict{Service: c.Service, Client: c.Client.Addr(), NextHop: c.Route.NextHop, Interface: c.Route.Dev, Timeline: timeline(c)}
	established, reset := handshake(c.Events)
	node := nodeName(c.Route)
	switch {
	case redirected(c):
		v.Kind = Redirect
		v.Message = fmt.Sprintf("the router forwarded the SYN back out of %s and sent %s an ICMP redirect (%d sent): clients that obey it talk to %s directly until the redirect expires, others keep failing", c.Ingress, c.Client.Addr(), c.Delta.OutRedirects, node)
		v.Fix = fmt.Sprintf("sysctl -w net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.default.send_redirects=0 net.ipv4.conf.%s.send_redirects=0 (the agent does this for its lanInterfaces: is %s one of them? see `bgplb-routeragent doctor`)", c.Ingress, c.Ingress)
		if c.Client.Addr().Is6() {
			v.Fix = fmt.Sprintf("IPv6 has no send_redirects: the agent drops the ICMPv6 Redirects for its serviceSubnets (ip6tables OUTPUT chain BGPLB-NOREDIRECT6, or chain noredirect6 of native nftables table inet bgplb) with firewall.mode exempt or verify; is the service subnet in serviceSubnets and %s in lanInterfaces? see `bgplb-routeragent doctor`", c.Ingress)
		}
	case reset:
		v.Kind = RST
		v.Message = fmt.Sprintf("%s answered the SYN with a RST: nothing listens on %s on that node (or externalTrafficPolicy: Local and the node has no ready endpoint)", node, c.Service)
		v.Fix = fmt.Sprintf("check the Service's endpoints and port; with externalTrafficPolicy: Local, only nodes with a ready endpoint may announce the address (is the speaker on %s up to date?)", node)
	case established:
		v.Kind = Healthy
		v.Message = fmt.Sprintf("handshake completed through the router both ways, via next hop %s", node)
		v.Fix = "none needed"
	case c.Delta.Invalid > 0 && !onLink(c.Client.Addr(), c.Route.OnLink):
		v.Kind = OtherRouter
		v.Message = fmt.Sprintf("the SYN went to %s but its SYN-ACK never came back through this router, while %s went on (%d INVALID packets): the reply took another router", node, c.Client.Addr(), c.Delta.Invalid)
		v.Fix = fmt.Sprintf("make %s route its replies to %s through this router (policy routing on the node, or one gateway for both directions), or announce from nodes on the client's subnet", node, c.Client.Addr())
	case c.Delta.Invalid > 0:
		v.Kind, v.Rule, v.Message, v.Fix = asymmetric(c, node)
	case c.Delta.Packets <= 1:
		v.Kind = RST
		v.Message = fmt.Sprintf("the SYN went to %s and %s sent nothing more: the node refused it with a RST straight to the client (nothing listens on %s there, or externalTrafficPolicy: Local without a ready endpoint on that node)", node, c.Client.Addr(), c.Service)
		v.Fix = fmt.Sprintf("check the Service's endpoints and port; with externalTrafficPolicy: Local, only nodes with a ready endpoint may announce the address (is the speaker on %s up to date?)", node)
	default:
		v.Kind = OtherRouter
		v.Message = fmt.Sprintf("the SYN went to %s and was retransmitted (%d packets) with no answer through this router: the reply took another path, or none", node, c.Delta.Packets)
		v.Fix = fmt.Sprintf("check %s's route back to %s (its default gateway) and that it answers on %s", node, c.Client.Addr(), c.Service)
	}
	return v
}

// redirected: the router sent ICMP redirects while it forwarded the
// client's packets out of the interface they came in on, with
// send_redirects effective there (else the redirects went to someone else).
func redirected(c Conn) bool {
	return c.Delta.OutRedirects > 0 && c.RedirectsOn && c.Ingress != "" && c.Ingress == c.Route.Dev
}

// asymmetric names what became of the client's INVALID packets: the node
// answered it directly (it is on-link), so the router saw no SYN-ACK.
//
// A drop counts first, unless an exemption of its own backend (and, for
// native nftables, table) counted too: an ACCEPT in one backend does not
// undo a DROP in the other (legacy, nf_tables and every native base chain
// hook the same packets in turn), so our exemption may count packets that
// another one then drops. A native drop without a counter is named when no
// counted drop explains the INVALID packets and no exemption of its table
// accepted them.
func asymmetric(c Conn, node string) (Kind, *RuleRef, string, string) {
	accepted := map[string]bool{} // backends (and tables) whose exemption counted
	for _, e := range c.Delta.Exemptions {
		if e.Packets > 0 {
			accepted[e.Backend+" "+e.Table] = true
		}
	}
	dropped := func(d RuleCount) bool { return d.Packets > 0 && !d.Uncounted }
	for _, pass := range []func(RuleCount) bool{dropped, func(d RuleCount) bool { return d.Uncounted }} {
		for _, d := range c.Delta.Drops {
			// A drop behind a counting exemption of the same backend saw
			// other traffic (its counter is router-wide).
			if pass(d) && !accepted[d.Backend+" "+d.Table] {
				return invalidDrop(c, node, d)
			}
		}
	}
	for _, e := range c.Delta.Exemptions {
		if e.Packets > 0 {
			r := e.RuleRef
			return AsymmetricOK, &r, fmt.Sprintf("%s answered %s directly (asymmetric path) and our exemption accepted the %d INVALID packets (backend %s)", node, c.Client.Addr(), c.Delta.Invalid, r.Backend), "none needed"
		}
	}
	return AsymmetricOK, nil, fmt.Sprintf("%s answered %s directly (asymmetric path); no firewall rule dropped the %d INVALID packets", node, c.Client.Addr(), c.Delta.Invalid), "none needed"
}

func invalidDrop(c Conn, node string, d RuleCount) (Kind, *RuleRef, string, string) {
	r := d.RuleRef
	msg := fmt.Sprintf("%s answered %s directly (asymmetric path); the client's next packets were INVALID and %s dropped them (%s)", node, c.Client.Addr(), r.Where(), r.Spec)
	if d.Uncounted {
		msg = fmt.Sprintf("%s answered %s directly (asymmetric path); the client's next %d packets were INVALID and nothing accepted them before %s, which drops INVALID packets (it has no counter to confirm it: %s)", node, c.Client.Addr(), c.Delta.Invalid, r.Where(), r.Spec)
	}
	before := fmt.Sprintf("rule %d", r.Number)
	if r.Table != "" {
		before = fmt.Sprintf("rule handle %d of chain %s in table %s", r.Handle, r.Chain, r.Table)
	}
	if c.FirewallMode == config.FirewallVerify {
		// Verify mode adds no exemption by design: the return path is what
		// must change.
		return InvalidDrop, &r, msg,
			fmt.Sprintf("firewall.mode is verify, so the agent adds no exemption and %s must send its replies back through this router: set returnPath: symmetric on the speakers' BGPPeer for this router (or policy-route the node's replies here), or switch to firewall.mode: exempt; `bgplb-routeragent status` shows the symmetry section", node)
	}
	return InvalidDrop, &r, msg,
		fmt.Sprintf("let the agent insert its exemption in backend %s (firewall.mode: exempt, firewall.backend: auto or %s), or accept INVALID packets to the service subnets before %s; `bgplb-routeragent doctor` shows where", r.Backend, r.Backend, before)
}

func onLink(a netip.Addr, ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func nodeName(r Route) string {
	if r.NextHop.IsValid() {
		return "node " + r.NextHop.String()
	}
	return "the node"
}

// handshake reads the conntrack events: established when the router saw
// the reply and the handshake complete; reset when the flow closed before
// that (the kernel kills a flow whose only reply is a RST at once, so its
// destroy event carries state CLOSE without SeenReply).
//
// A flow that was ESTABLISHED or later without SeenReply was picked up
// mid-stream (conntrack's nf_conntrack_tcp_loose: its first packet was not
// a SYN, so the router missed the SYN's entry), and its CLOSE is an
// ordinary end, not a reset: the counters decide.
func handshake(es []FlowEvent) (established, reset bool) {
	pickedUp := false
	for _, e := range es {
		open := e.State >= TCPEstablished && e.State <= TCPTimeWait
		switch {
		case e.SeenReply && open:
			established = true
		case open:
			pickedUp = true
		case e.State == TCPClose && !established && !pickedUp:
			reset = true
		}
	}
	return established, reset
}

// timeline renders what the router saw: the conntrack events, then the
// counters.
func timeline(c Conn) []Event {
	var out []Event
	for _, e := range c.Events {
		what := fmt.Sprintf("conntrack %s %s -> %s %s", e.Type, e.Client, e.Service, e.State)
		if e.SeenReply {
			what += " (reply seen)"
		}
		if e.Type == FlowNew {
			what += fmt.Sprintf("; forwarded via %s", c.Route)
		}
		out = append(out, Event{MS: e.At.Sub(c.Start).Milliseconds(), What: what})
	}
	d := c.Delta
	var facts []string
	facts = append(facts, fmt.Sprintf("%d packets from the client, %d INVALID", d.Packets, d.Invalid))
	if d.OutRedirects > 0 {
		facts = append(facts, fmt.Sprintf("%d ICMP redirects sent", d.OutRedirects))
	}
	for _, r := range d.Drops {
		switch {
		case r.Packets > 0 && r.Table != "":
			facts = append(facts, fmt.Sprintf("%s %s chain %s handle %d dropped %d", r.Backend, r.Table, r.Chain, r.Handle, r.Packets))
		case r.Packets > 0:
			facts = append(facts, fmt.Sprintf("%s rule %d of %s dropped %d", r.Backend, r.Number, r.Chain, r.Packets))
		}
	}
	for _, r := range d.Exemptions {
		if r.Packets > 0 {
			facts = append(facts, fmt.Sprintf("%s exemption %s accepted %d", r.Backend, r.Spec, r.Packets))
		}
	}
	end := time.Duration(0)
	if !c.End.IsZero() {
		end = c.End.Sub(c.Start)
	}
	out = append(out, Event{MS: end.Milliseconds(), What: "counters: " + strings.Join(facts, "; ")})
	return out
}
