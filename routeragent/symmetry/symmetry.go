// Package symmetry proves, on the router, that service traffic takes a
// symmetric path (firewall.mode: verify): every connection to a service
// address should pass the router in both directions, so its conntrack
// entry sees a reply and becomes ASSURED. A flow that never sees a reply
// after a grace period went one way only: the node answered the client
// around the router (the seed's asymmetric return path). The Tracker is a
// pure evaluation of successive conntrack observations and the INVALID
// counter of the service subnets; Conntrack reads the observations.
//
// Memory is bounded: a Tracker remembers at most Config.MaxTracked
// unreplied flows (beyond that they are counted as Untracked, not
// remembered) and the last Config.MaxOffenders asymmetric flows.
package symmetry

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Verdicts.
const (
	// Symmetric: service flows were seen ASSURED (both directions) and
	// none went one way only; the INVALID counter is flat.
	Symmetric = "symmetric"
	// Asymmetric: a flow's reply bypassed the router, or the INVALID
	// counter of the service subnets rose recently.
	Asymmetric = "asymmetric"
	// NoTraffic: no service flow has been seen yet.
	NoTraffic = "no traffic yet"
)

// Flow is one conntrack entry whose original destination is a service
// address.
type Flow struct {
	// Protocol is the IP protocol number (6 tcp, 17 udp, 132 sctp).
	Protocol uint8
	// Client is the original source, Service the original destination.
	Client, Service netip.AddrPort
	// ReplySource is the reply tuple's source: the service address,
	// unless the router translates it.
	ReplySource netip.Addr
	// SeenReply: a packet of the reply direction passed the router.
	// Assured: conntrack saw both directions (TCP: the handshake
	// completed through the router).
	SeenReply, Assured bool
}

// Config tunes a Tracker; zero fields take the defaults.
type Config struct {
	// Grace is how long a flow may stay without a reply before it counts
	// as asymmetric (default 5s: a SYN-ACK takes a round trip; TCP's
	// first SYN retransmission comes after 1s).
	Grace time.Duration
	// InvalidWindow is how long a rise of the INVALID counter keeps the
	// verdict asymmetric (default 2m).
	InvalidWindow time.Duration
	// MaxTracked bounds the unreplied flows remembered (default 4096).
	MaxTracked int
	// MaxOffenders bounds the asymmetric flows listed (default 20).
	MaxOffenders int
}

// Defaults.
const (
	DefaultGrace         = 5 * time.Second
	DefaultInvalidWindow = 2 * time.Minute
	DefaultMaxTracked    = 4096
	DefaultMaxOffenders  = 20
)

func (c Config) withDefaults() Config {
	if c.Grace <= 0 {
		c.Grace = DefaultGrace
	}
	if c.InvalidWindow <= 0 {
		c.InvalidWindow = DefaultInvalidWindow
	}
	if c.MaxTracked <= 0 {
		c.MaxTracked = DefaultMaxTracked
	}
	if c.MaxOffenders <= 0 {
		c.MaxOffenders = DefaultMaxOffenders
	}
	return c
}

// Status is what `status` shows in verify mode.
type Status struct {
	// Verdict is symmetric, asymmetric or "no traffic yet"; Reason says
	// what it rests on.
	Verdict string `json:"verdict"`
	Reason  string `json:"reason"`
	// Flows counts the service flows in conntrack at the last look:
	// Assured of them seen both ways, Replied with a reply but not (yet)
	// assured, Unreplied without a reply for less than the grace period,
	// Asymmetric without a reply for longer.
	Flows      int `json:"flows"`
	Assured    int `json:"assured"`
	Replied    int `json:"replied"`
	Unreplied  int `json:"unreplied"`
	Asymmetric int `json:"asymmetric"`
	// AssuredSeen is true once any service flow was seen assured.
	AssuredSeen bool `json:"assuredSeen"`
	// Untracked counts unreplied flows not remembered (over MaxTracked)
	// at the last look.
	Untracked int `json:"untracked,omitempty"`
	// Offenders are the last asymmetric flows, newest first (bounded).
	Offenders []Offender `json:"offenders,omitempty"`
	// InvalidPackets is the INVALID counter of forwarded packets to and
	// from the service subnets (the firewall drops them); InvalidKnown is
	// false when it could not be read. LastInvalidRise is when it last
	// went up (zero: not since the agent started watching).
	InvalidPackets  uint64    `json:"invalidPackets"`
	InvalidKnown    bool      `json:"invalidKnown"`
	LastInvalidRise time.Time `json:"lastInvalidRise,omitzero"`
	// ObservedAt is the last look; LastError why it failed ("" if not).
	ObservedAt time.Time `json:"observedAt,omitzero"`
	LastError  string    `json:"lastError,omitempty"`
}

// Offender is one flow whose reply never passed the router.
type Offender struct {
	Protocol string `json:"protocol"`
	Client   string `json:"client"`
	Service  string `json:"service"`
	// Nodes are the next hops of the router's route to the service
	// address: the node the client's packets went to, which answered
	// around the router (several with ECMP: one of them).
	Nodes []string `json:"nodes"`
	// FirstSeen is when the flow was first seen unreplied, LastSeen the
	// last look that still found it so.
	FirstSeen time.Time `json:"firstSeen"`
	LastSeen  time.Time `json:"lastSeen"`
}

type flowKey struct {
	proto           uint8
	client, service netip.AddrPort
}

// Tracker keeps what successive observations need: when each unreplied
// flow was first seen, the last offenders and the INVALID counter's last
// value. Not safe for concurrent use.
type Tracker struct {
	cfg          Config
	pending      map[flowKey]time.Time
	offenders    []Offender // newest first
	invalid      uint64
	invalidBase  bool
	lastRise     time.Time
	assuredSeen  bool
	lastOffender time.Time
}

// NewTracker returns an empty Tracker.
func NewTracker(cfg Config) *Tracker {
	return &Tracker{cfg: cfg.withDefaults(), pending: map[flowKey]time.Time{}}
}

// NextHops returns the router's next hops towards a service address.
type NextHops func(netip.Addr) []netip.Addr

// Observe takes one look: the service flows in conntrack now, the INVALID
// counter (known false when unreadable) and the routes' next hops, and
// returns the status.
func (t *Tracker) Observe(now time.Time, flows []Flow, invalid uint64, invalidKnown bool, hops NextHops) Status {
	st := Status{ObservedAt: now, Flows: len(flows)}
	seen := make(map[flowKey]bool, len(flows))
	for _, f := range flows {
		switch {
		case f.Assured:
			st.Assured++
			t.assuredSeen = true
		case f.SeenReply:
			st.Replied++
		default:
			k := flowKey{f.Protocol, f.Client, f.Service}
			first, ok := t.pending[k]
			if !ok {
				if len(t.pending) >= t.cfg.MaxTracked {
					st.Untracked++
					continue
				}
				first = now
				t.pending[k] = now
			}
			seen[k] = true
			if now.Sub(first) < t.cfg.Grace {
				st.Unreplied++
				continue
			}
			st.Asymmetric++
			t.offend(f, first, now, hops)
		}
	}
	// Flows replied or gone since: forget them.
	for k := range t.pending {
		if !seen[k] {
			delete(t.pending, k)
		}
	}
	t.observeInvalid(now, invalid, invalidKnown)
	st.InvalidPackets, st.InvalidKnown, st.LastInvalidRise = t.invalid, invalidKnown, t.lastRise
	st.AssuredSeen = t.assuredSeen
	st.Offenders = slices.Clone(t.offenders)
	st.Verdict, st.Reason = t.verdict(now, st)
	return st
}

// offend records f as an offender (updating it when already listed).
func (t *Tracker) offend(f Flow, first, now time.Time, hops NextHops) {
	t.lastOffender = now
	client, service := f.Client.String(), f.Service.String()
	if i := slices.IndexFunc(t.offenders, func(o Offender) bool {
		return o.Client == client && o.Service == service && o.Protocol == ProtocolName(f.Protocol)
	}); i >= 0 {
		o := t.offenders[i]
		o.LastSeen = now
		t.offenders = slices.Delete(t.offenders, i, i+1)
		t.offenders = slices.Insert(t.offenders, 0, o)
		return
	}
	o := Offender{Protocol: ProtocolName(f.Protocol), Client: client, Service: service, FirstSeen: first, LastSeen: now}
	if hops != nil {
		for _, h := range hops(f.Service.Addr()) {
			o.Nodes = append(o.Nodes, h.String())
		}
	}
	if f.ReplySource.IsValid() && f.ReplySource != f.Service.Addr() && !slices.Contains(o.Nodes, f.ReplySource.String()) {
		o.Nodes = append(o.Nodes, f.ReplySource.String())
	}
	t.offenders = slices.Insert(t.offenders, 0, o)
	if len(t.offenders) > t.cfg.MaxOffenders {
		t.offenders = t.offenders[:t.cfg.MaxOffenders]
	}
}

// observeInvalid notes a rise of the INVALID counter. The first value is
// the baseline; a value below the last (the counting table was rebuilt)
// is a new baseline.
func (t *Tracker) observeInvalid(now time.Time, v uint64, known bool) {
	if !known {
		return
	}
	if t.invalidBase && v > t.invalid {
		t.lastRise = now
	}
	t.invalid, t.invalidBase = v, true
}

func (t *Tracker) verdict(now time.Time, st Status) (string, string) {
	recentRise := !t.lastRise.IsZero() && now.Sub(t.lastRise) <= t.cfg.InvalidWindow
	recentOffender := !t.lastOffender.IsZero() && now.Sub(t.lastOffender) <= t.cfg.InvalidWindow
	switch {
	case st.Asymmetric > 0:
		o := t.offenders[0]
		return Asymmetric, fmt.Sprintf("%d service flow(s) got no reply through the router for over %s (e.g. %s %s -> %s via node %s): the nodes answer around the router",
			st.Asymmetric, t.cfg.Grace, o.Protocol, o.Client, o.Service, nodes(o))
	case recentRise:
		return Asymmetric, fmt.Sprintf("the INVALID counter of the service subnets rose %s ago (now %d): the firewall drops service packets of connections it saw one way only",
			now.Sub(t.lastRise).Round(time.Second), t.invalid)
	case recentOffender:
		o := t.offenders[0]
		return Asymmetric, fmt.Sprintf("a service flow went one way only %s ago (%s %s -> %s via node %s)",
			now.Sub(t.lastOffender).Round(time.Second), o.Protocol, o.Client, o.Service, nodes(o))
	case t.assuredSeen:
		return Symmetric, fmt.Sprintf("%d service flow(s) assured in both directions now; no asymmetric flow and a flat INVALID counter for %s", st.Assured, t.cfg.InvalidWindow)
	}
	return NoTraffic, "no service flow seen yet: connect a client to a service to prove the path"
}

func nodes(o Offender) string {
	if len(o.Nodes) == 0 {
		return "(no route)"
	}
	return fmt.Sprint(o.Nodes)
}

// ProtocolName names an IP protocol number.
func ProtocolName(p uint8) string {
	switch p {
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 132:
		return "sctp"
	case 1:
		return "icmp"
	case 58:
		return "icmpv6"
	}
	return fmt.Sprint(p)
}

// InSubnets keeps the flows whose service address is in one of subnets,
// sorted by service then client (stable output for status and tests).
func InSubnets(flows []Flow, subnets []netip.Prefix) []Flow {
	var out []Flow
	for _, f := range flows {
		if slices.ContainsFunc(subnets, func(p netip.Prefix) bool { return p.Contains(f.Service.Addr()) }) {
			out = append(out, f)
		}
	}
	slices.SortFunc(out, func(a, b Flow) int {
		return cmp.Or(a.Service.Compare(b.Service), a.Client.Compare(b.Client))
	})
	return out
}
