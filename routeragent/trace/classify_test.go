package trace

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bgplb/bgplb/routeragent/config"
)

// key is the part of a verdict the tables pin: kind and the key facts.
type key struct {
	Kind      Kind
	NextHop   string
	Interface string
	Rule      *RuleRef
	Reason    string
	Peer      string
}

func keyOf(v Verdict) key {
	k := key{Kind: v.Kind, Interface: v.Interface, Rule: v.Rule, Reason: v.Reason}
	if v.NextHop.IsValid() {
		k.NextHop = v.NextHop.String()
	}
	if v.Peer.IsValid() {
		k.Peer = v.Peer.String()
	}
	return k
}

var (
	svcAddr = netip.MustParseAddr("192.168.254.10")
	lan     = []netip.Prefix{netip.MustParsePrefix("192.168.2.0/24")}
	ours    = Route{Found: true, Prefix: netip.MustParsePrefix("192.168.254.10/32"), Protocol: 220, Table: 254, Ours: true,
		NextHop: netip.MustParseAddr("192.168.2.10"), Dev: "lan0", OnLink: lan}
)

func TestStatic(t *testing.T) {
	rej := Rejection{Peer: netip.MustParseAddr("192.168.2.10"), Prefix: netip.MustParsePrefix("192.168.254.10/32"),
		NextHop: netip.MustParseAddr("10.0.0.1"), Reason: "next-hop-not-on-lan"}
	other := Rejection{Peer: rej.Peer, Prefix: netip.MustParsePrefix("192.168.254.99/32"), NextHop: rej.NextHop, Reason: "outside-service-subnets"}
	def := Route{Found: true, Prefix: netip.MustParsePrefix("0.0.0.0/0"), Protocol: 3, Table: 254, NextHop: netip.MustParseAddr("192.168.2.254"), Dev: "lan0"}
	foreign := Route{Found: true, Prefix: netip.MustParsePrefix("192.168.254.0/24"), Protocol: 4, Table: 254, NextHop: netip.MustParseAddr("192.168.2.50"), Dev: "lan0"}
	tests := []struct {
		name   string
		rt     Route
		ag     AgentView
		want   key
		wantOK bool
		fixHas string
	}{
		{name: "our route: ask a connection", rt: ours, ag: AgentView{Reachable: true}},
		{name: "unreachable", rt: Route{}, ag: AgentView{Reachable: true}, want: key{Kind: NoRoute}, wantOK: true},
		{name: "default route only", rt: def, ag: AgentView{Reachable: true}, want: key{Kind: NoRoute}, wantOK: true},
		{name: "agent down", rt: def, want: key{Kind: NoRoute}, wantOK: true},
		{name: "rejected", rt: def, ag: AgentView{Reachable: true, Rejected: []Rejection{other, rej}},
			want: key{Kind: Rejected, NextHop: "10.0.0.1", Reason: "next-hop-not-on-lan", Peer: "192.168.2.10"}, wantOK: true},
		{name: "rejected other prefix only", rt: def, ag: AgentView{Reachable: true, Rejected: []Rejection{other}}, want: key{Kind: NoRoute}, wantOK: true},
		{name: "foreign route", rt: foreign, ag: AgentView{Reachable: true},
			want: key{Kind: ForeignRoute, NextHop: "192.168.2.50"}, wantOK: true, fixHas: "ip route del 192.168.254.0/24 proto 4 table 254"},
		{name: "connected subnet", rt: Route{Found: true, Prefix: netip.MustParsePrefix("192.168.254.0/24"), Protocol: 2, Table: 254, Dev: "lan2"},
			ag: AgentView{Reachable: true}, want: key{Kind: ForeignRoute}, wantOK: true, fixHas: "from serviceSubnets"},
		{name: "rejection wins over a foreign route", rt: foreign, ag: AgentView{Reachable: true, Rejected: []Rejection{rej}},
			want: key{Kind: Rejected, NextHop: "10.0.0.1", Reason: "next-hop-not-on-lan", Peer: "192.168.2.10"}, wantOK: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, ok := Static("192.168.254.10:80", svcAddr, tt.rt, tt.ag)
			if ok != tt.wantOK {
				t.Fatalf("ok = %v, want %v", ok, tt.wantOK)
			}
			if !ok {
				return
			}
			if diff := cmp.Diff(tt.want, keyOf(v)); diff != "" {
				t.Errorf("verdict (-want +got):\n%s", diff)
			}
			if v.Fix == "" || v.Message == "" {
				t.Errorf("verdict without message or fix: %+v", v)
			}
			if !strings.Contains(v.Fix, tt.fixHas) {
				t.Errorf("fix %q lacks %q", v.Fix, tt.fixHas)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 3, 0, 0, 0, time.UTC)
	client := netip.MustParseAddrPort("192.168.2.100:40000")
	remote := netip.MustParseAddrPort("10.9.0.2:40000")
	svc := netip.MustParseAddrPort("192.168.254.10:80")
	ev := func(ms int, typ FlowEventType, st TCPState, reply bool) FlowEvent {
		return FlowEvent{At: t0.Add(time.Duration(ms) * time.Millisecond), Type: typ, Client: client, Service: svc, State: st, SeenReply: reply}
	}
	syn := []FlowEvent{ev(0, FlowNew, TCPSynSent, false)}
	drop := RuleCount{RuleRef: RuleRef{Backend: "legacy", Chain: "FORWARD", Number: 2, Spec: "-m conntrack --ctstate INVALID -j DROP"}}
	exempt := RuleCount{RuleRef: RuleRef{Backend: "legacy", Chain: "BGPLB-EXEMPT", Number: 1, Spec: "-i lan0 -d 192.168.254.0/24 -p tcp -m conntrack --ctstate INVALID -j ACCEPT"}}
	nftDrop := drop
	nftDrop.Backend = "nft"
	hit := func(r RuleCount, n uint64) RuleCount { r.Packets = n; return r }
	native := RuleCount{RuleRef: RuleRef{Backend: BackendNftables, Table: "inet filter", Chain: "forward", Number: 1, Handle: 4, Spec: "inet filter chain forward handle 4"}}
	native2 := RuleCount{RuleRef: RuleRef{Backend: BackendNftables, Table: "ip fw", Chain: "fwd", Number: 3, Handle: 9, Spec: "ip fw chain fwd handle 9"}}
	nativeEx := RuleCount{RuleRef: RuleRef{Backend: BackendNftables, Table: "inet filter", Chain: "bgplb_exempt", Number: 1, Handle: 7, Spec: "inet filter chain bgplb_exempt handle 7"}}
	uncounted := native
	uncounted.Uncounted = true
	tests := []struct {
		name string
		conn Conn
		want key
	}{
		{name: "healthy", conn: Conn{Client: remote, Route: ours, Ingress: "lan1",
			Events: []FlowEvent{syn[0], ev(1, FlowUpdate, TCPSynRecv, true), ev(2, FlowUpdate, TCPEstablished, true)},
			Delta:  Counters{Packets: 3}},
			want: key{Kind: Healthy, NextHop: "192.168.2.10", Interface: "lan0"}},
		{name: "redirect (Linux obeys: SYN only)", conn: Conn{Client: client, Route: ours, Ingress: "lan0", RedirectsOn: true,
			Events: syn, Delta: Counters{Packets: 1, OutRedirects: 1}},
			want: key{Kind: Redirect, NextHop: "192.168.2.10", Interface: "lan0"}},
		{name: "redirects from elsewhere do not count when forwarding to another interface", conn: Conn{Client: remote, Route: ours, Ingress: "lan1", RedirectsOn: true,
			Events: []FlowEvent{syn[0], ev(1, FlowUpdate, TCPSynRecv, true), ev(2, FlowUpdate, TCPEstablished, true)},
			Delta:  Counters{Packets: 3, OutRedirects: 4}},
			want: key{Kind: Healthy, NextHop: "192.168.2.10", Interface: "lan0"}},
		{name: "redirects counted while send_redirects is off on the interface were not ours", conn: Conn{Client: client, Route: ours, Ingress: "lan0",
			Events: syn, Delta: Counters{Packets: 1, OutRedirects: 1}},
			want: key{Kind: RST, NextHop: "192.168.2.10", Interface: "lan0"}},
		{name: "invalid drop", conn: Conn{Client: client, Route: ours, Ingress: "lan0",
			Events: syn, Delta: Counters{Packets: 5, Invalid: 4, Drops: []RuleCount{hit(drop, 4)}, Exemptions: nil}},
			want: key{Kind: InvalidDrop, NextHop: "192.168.2.10", Interface: "lan0", Rule: &drop.RuleRef}},
		{name: "exemption accepts", conn: Conn{Client: client, Route: ours, Ingress: "lan0",
			Events: syn, Delta: Counters{Packets: 5, Invalid: 4, Drops: []RuleCount{hit(drop, 0)}, Exemptions: []RuleCount{hit(exempt, 4)}}},
			want: key{Kind: AsymmetricOK, NextHop: "192.168.2.10", Interface: "lan0", Rule: &exempt.RuleRef}},
		{name: "exemption in legacy, drop in nft: the drop wins", conn: Conn{Client: client, Route: ours, Ingress: "lan0",
			Events: syn, Delta: Counters{Packets: 5, Invalid: 4, Drops: []RuleCount{hit(nftDrop, 4)}, Exemptions: []RuleCount{hit(exempt, 4)}}},
			want: key{Kind: InvalidDrop, NextHop: "192.168.2.10", Interface: "lan0", Rule: &nftDrop.RuleRef}},
		{name: "exemption and a drop in one backend: the drop counted other traffic", conn: Conn{Client: client, Route: ours, Ingress: "lan0",
			Events: syn, Delta: Counters{Packets: 5, Invalid: 4, Drops: []RuleCount{hit(drop, 9)}, Exemptions: []RuleCount{hit(exempt, 4)}}},
			want: key{Kind: AsymmetricOK, NextHop: "192.168.2.10", Interface: "lan0", Rule: &exempt.RuleRef}},
		{name: "native nftables drop", conn: Conn{Client: client, Route: ours, Ingress: "lan0",
			Events: syn, Delta: Counters{Packets: 5, Invalid: 4, Drops: []RuleCount{hit(native, 4)}}},
			want: key{Kind: InvalidDrop, NextHop: "192.168.2.10", Interface: "lan0", Rule: &native.RuleRef}},
		{name: "native exemption accepts", conn: Conn{Client: client, Route: ours, Ingress: "lan0",
			Events: syn, Delta: Counters{Packets: 5, Invalid: 4, Drops: []RuleCount{native}, Exemptions: []RuleCount{hit(nativeEx, 4)}}},
			want: key{Kind: AsymmetricOK, NextHop: "192.168.2.10", Interface: "lan0", Rule: &nativeEx.RuleRef}},
		{name: "native exemption in one table, drop in another base chain: the drop wins", conn: Conn{Client: client, Route: ours, Ingress: "lan0",
			Events: syn, Delta: Counters{Packets: 5, Invalid: 4, Drops: []RuleCount{native, hit(native2, 4)}, Exemptions: []RuleCount{hit(nativeEx, 4)}}},
			want: key{Kind: InvalidDrop, NextHop: "192.168.2.10", Interface: "lan0", Rule: &native2.RuleRef}},
		{name: "legacy exemption does not undo a native drop", conn: Conn{Client: client, Route: ours, Ingress: "lan0",
			Events: syn, Delta: Counters{Packets: 5, Invalid: 4, Drops: []RuleCount{hit(native, 4)}, Exemptions: []RuleCount{hit(exempt, 4)}}},
			want: key{Kind: InvalidDrop, NextHop: "192.168.2.10", Interface: "lan0", Rule: &native.RuleRef}},
		{name: "native drop without counter, nothing accepted", conn: Conn{Client: client, Route: ours, Ingress: "lan0",
			Events: syn, Delta: Counters{Packets: 5, Invalid: 4, Drops: []RuleCount{uncounted}}},
			want: key{Kind: InvalidDrop, NextHop: "192.168.2.10", Interface: "lan0", Rule: &uncounted.RuleRef}},
		{name: "native drop without counter behind our counting exemption", conn: Conn{Client: client, Route: ours, Ingress: "lan0",
			Events: syn, Delta: Counters{Packets: 5, Invalid: 4, Drops: []RuleCount{uncounted}, Exemptions: []RuleCount{hit(nativeEx, 4)}}},
			want: key{Kind: AsymmetricOK, NextHop: "192.168.2.10", Interface: "lan0", Rule: &nativeEx.RuleRef}},
		{name: "a counted drop explains the packets before an uncounted one", conn: Conn{Client: client, Route: ours, Ingress: "lan0",
			Events: syn, Delta: Counters{Packets: 5, Invalid: 4, Drops: []RuleCount{uncounted, hit(nftDrop, 4)}}},
			want: key{Kind: InvalidDrop, NextHop: "192.168.2.10", Interface: "lan0", Rule: &nftDrop.RuleRef}},
		{name: "picked up mid-stream and closed: not a RST, the exemption's counters decide", conn: Conn{Client: client, Route: ours, Ingress: "lan0",
			Events: []FlowEvent{ev(0, FlowNew, TCPEstablished, false), ev(300, FlowUpdate, TCPFinWait, false), ev(300, FlowDestroy, TCPClose, false)},
			Delta:  Counters{Packets: 9, Invalid: 5, Drops: []RuleCount{native}, Exemptions: []RuleCount{hit(nativeEx, 5)}}},
			want: key{Kind: AsymmetricOK, NextHop: "192.168.2.10", Interface: "lan0", Rule: &nativeEx.RuleRef}},
		{name: "no drop anywhere", conn: Conn{Client: client, Route: ours, Ingress: "lan0",
			Events: syn, Delta: Counters{Packets: 5, Invalid: 4}},
			want: key{Kind: AsymmetricOK, NextHop: "192.168.2.10", Interface: "lan0"}},
		{name: "RST straight to an on-link client", conn: Conn{Client: client, Route: ours, Ingress: "lan0",
			Events: syn, Delta: Counters{Packets: 1}},
			want: key{Kind: RST, NextHop: "192.168.2.10", Interface: "lan0"}},
		{name: "RST through the router kills the flow", conn: Conn{Client: remote, Route: ours, Ingress: "lan1",
			Events: []FlowEvent{syn[0], ev(1, FlowDestroy, TCPClose, false)}, Delta: Counters{Packets: 1}},
			want: key{Kind: RST, NextHop: "192.168.2.10", Interface: "lan0"}},
		{name: "normal close after a handshake is healthy", conn: Conn{Client: remote, Route: ours, Ingress: "lan1",
			Events: []FlowEvent{syn[0], ev(1, FlowUpdate, TCPSynRecv, true), ev(2, FlowUpdate, TCPEstablished, true), ev(3, FlowDestroy, TCPClose, true)},
			Delta:  Counters{Packets: 6}},
			want: key{Kind: Healthy, NextHop: "192.168.2.10", Interface: "lan0"}},
		{name: "reply through another router", conn: Conn{Client: remote, Route: ours, Ingress: "lan1",
			Events: syn, Delta: Counters{Packets: 4, Invalid: 3, Drops: []RuleCount{hit(drop, 3)}}},
			want: key{Kind: OtherRouter, NextHop: "192.168.2.10", Interface: "lan0"}},
		{name: "SYN retransmitted without an answer", conn: Conn{Client: remote, Route: ours, Ingress: "lan1",
			Events: syn, Delta: Counters{Packets: 3}},
			want: key{Kind: OtherRouter, NextHop: "192.168.2.10", Interface: "lan0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.conn.Service, tt.conn.Start = svc.String(), t0
			v := Classify(tt.conn)
			if diff := cmp.Diff(tt.want, keyOf(v)); diff != "" {
				t.Errorf("verdict (-want +got):\n%s", diff)
			}
			if v.Message == "" || v.Fix == "" || len(v.Timeline) == 0 {
				t.Errorf("verdict without message, fix or timeline: %+v", v)
			}
			if v.Client != tt.conn.Client.Addr() {
				t.Errorf("client = %v, want %v", v.Client, tt.conn.Client.Addr())
			}
		})
	}
}

func TestDelta(t *testing.T) {
	r := func(chain string, n uint64) RuleCount {
		return RuleCount{RuleRef: RuleRef{Backend: "nft", Chain: chain, Number: 1, Spec: "x"}, Packets: n}
	}
	before := Counters{OutRedirects: 5, Packets: 10, Invalid: 2, Drops: []RuleCount{r("FORWARD", 7)}}
	after := Counters{OutRedirects: 6, Packets: 13, Invalid: 4, Drops: []RuleCount{r("FORWARD", 9)}, Exemptions: []RuleCount{r("BGPLB-EXEMPT", 3)}}
	want := Counters{OutRedirects: 1, Packets: 3, Invalid: 2, Drops: []RuleCount{r("FORWARD", 2)}, Exemptions: []RuleCount{r("BGPLB-EXEMPT", 3)}}
	if diff := cmp.Diff(want, Delta(before, after)); diff != "" {
		t.Errorf("Delta (-want +got):\n%s", diff)
	}
	// A reload resets the counters: count from zero, never wrap.
	if got := Delta(Counters{Packets: 10}, Counters{Packets: 2}).Packets; got != 2 {
		t.Errorf("after a reset: %d, want 2", got)
	}
}

// TestInvalidDropFixByMode: an INVALID drop's fix follows the agent's
// firewall.mode: exempt and off point at the agent's exemption, verify (which
// adds none by design) at the return path: the speakers' returnPath:
// symmetric, or exempt mode.
func TestInvalidDropFixByMode(t *testing.T) {
	client := netip.MustParseAddrPort("192.168.2.100:40000")
	svc := netip.MustParseAddrPort("192.168.254.10:80")
	drop := RuleCount{RuleRef: RuleRef{Backend: "legacy", Chain: "FORWARD", Number: 2, Spec: "-m conntrack --ctstate INVALID -j DROP"}, Packets: 4}
	native := RuleCount{RuleRef: RuleRef{Backend: BackendNftables, Table: "inet filter", Chain: "forward", Number: 1, Handle: 4, Spec: "inet filter chain forward handle 4"}, Uncounted: true}
	tests := []struct {
		name         string
		mode         config.FirewallMode
		drop         RuleCount
		want, absent []string
	}{
		{name: "exempt (default, empty)", drop: drop,
			want: []string{"let the agent insert its exemption in backend legacy", "firewall.mode: exempt"}, absent: []string{"returnPath"}},
		{name: "exempt", mode: config.FirewallExempt, drop: drop,
			want: []string{"let the agent insert its exemption"}, absent: []string{"returnPath"}},
		{name: "off", mode: config.FirewallOff, drop: drop,
			want: []string{"let the agent insert its exemption", "firewall.mode: exempt"}, absent: []string{"returnPath"}},
		{name: "verify", mode: config.FirewallVerify, drop: drop,
			want: []string{"firewall.mode is verify", "returnPath: symmetric", "BGPPeer", "firewall.mode: exempt"}, absent: []string{"let the agent insert"}},
		{name: "verify, uncounted native drop", mode: config.FirewallVerify, drop: native,
			want: []string{"returnPath: symmetric", "firewall.mode: exempt"}, absent: []string{"let the agent insert"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Classify(Conn{Service: svc.String(), Client: client, Route: ours, Ingress: "lan0", FirewallMode: tt.mode,
				Events: []FlowEvent{{Type: FlowNew, Client: client, Service: svc, State: TCPSynSent}},
				Delta:  Counters{Packets: 5, Invalid: 4, Drops: []RuleCount{tt.drop}}})
			if v.Kind != InvalidDrop {
				t.Fatalf("kind = %s, want %s", v.Kind, InvalidDrop)
			}
			for _, w := range tt.want {
				if !strings.Contains(v.Fix, w) {
					t.Errorf("fix lacks %q: %s", w, v.Fix)
				}
			}
			for _, n := range tt.absent {
				if strings.Contains(v.Fix, n) {
					t.Errorf("fix has %q: %s", n, v.Fix)
				}
			}
		})
	}
}
