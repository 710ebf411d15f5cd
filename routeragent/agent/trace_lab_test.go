package agent

import (
	"bufio"
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bgplb/bgplb/internal/netnstest"
	"github.com/bgplb/bgplb/routeragent/trace"
)

// traceLab is the seed's LAN plus what the other seeds need: the router
// (lan0 192.168.2.1, lan1 10.9.0.1), an on-link client c1 (192.168.2.100),
// a routed client c2 (10.9.0.2, behind lan1), two nodes n1 (192.168.2.10)
// and n2 (192.168.2.11), and a second router r2 (192.168.2.3 and
// 10.9.0.3) through which n2 sends its replies to c2 (seed 003).
//
// The LANs are dual-stack (lan0 2001:db8:2::/64: router ::1, c1 ::100,
// n1 ::10; lan1 2001:db8:9::/64: router ::1, c2 ::2), and n1 also speaks
// BGP over IPv6 (an IPv6 route needs an IPv6 session: the import policy
// refuses IPv6 over IPv4, next-hop-not-peer).
//
// Service addresses, one per failure mode (all on port 80):
//
//	2001:db8:254::10  n1, listening   (healthy from c2; invalid-drop, asymmetric-ok from c1, ip6tables-legacy)
//	192.168.254.10  n1, listening       (healthy from c2; invalid-drop, asymmetric-ok, redirect from c1)
//	192.168.254.11  n1, no listener     (rst)
//	192.168.254.12  n1 and n2 (ECMP), a listener only on the node c1's flows do not hash to (Local policy without endpoint)
//	192.168.254.13  n2, listening       (other-router from c2)
//	192.168.254.20  not announced       (no-route)
//	192.168.254.21  a static route      (foreign-route)
//	10.200.0.1      announced by n1, outside serviceSubnets (rejected)
type traceLab struct {
	*lab
	c1, c2, n1, n2, r2 *netnstest.NS
	cfg                string
	agent              *proc
}

const traceLabConfig = `asn: 64500
routerID: 192.168.2.1
neighbors:
  - prefix: 192.168.2.0/24
    asn: 64512
    allowUnauthenticated: true # the lab's speakers have no secret
    maxPrefixes: 10
  - prefix: 2001:db8:2::/64
    asn: 64512
    allowUnauthenticated: true
    maxPrefixes: 10
serviceSubnets: [192.168.254.0/24, "2001:db8:254::/64"]
lanInterfaces: [lan0]
routes: {resyncInterval: 2s, staleTimeout: 60s}
metrics: {address: "off"}
log: {level: info}
`

// traceFerm is fermRules with lan1 allowed to open connections too.
const traceFerm = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -m conntrack --ctstate INVALID -j DROP
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -i lan0 -m conntrack --ctstate NEW -j ACCEPT
-A FORWARD -i lan1 -m conntrack --ctstate NEW -j ACCEPT
COMMIT
`

func newTraceLab(t *testing.T) *traceLab {
	t.Helper()
	for _, tool := range []string{"/usr/sbin/iptables-legacy", "/usr/sbin/iptables-nft"} {
		if _, err := os.Stat(tool); err != nil {
			t.Fatalf("%s is required (Debian package iptables; make deps installs it)", tool)
		}
	}
	l := &traceLab{lab: newLab(t)}
	sw2 := netnstest.New(t, "sw2")
	plug2 := netnstest.Bridge(t, sw2, "br1")
	plug2(l.router, "lan1", "10.9.0.1/24")
	l.c1 = l.host(t, "c1", "192.168.2.100")
	l.n1 = l.host(t, "n1", "192.168.2.10")
	l.n2 = l.host(t, "n2", "192.168.2.11")
	l.r2 = l.host(t, "r2", "192.168.2.3")
	plug2(l.r2, "eth1", "10.9.0.3/24")
	l.c2 = netnstest.New(t, "c2")
	plug2(l.c2, "eth0", "10.9.0.2/24")

	l.router.Exec("sysctl", "-qw", "net.ipv4.ip_forward=1")
	l.r2.Exec("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.eth0.rp_filter=0", "net.ipv4.conf.eth1.rp_filter=0")
	l.r2.Exec("ip", "route", "add", "192.168.254.0/24", "via", "192.168.2.1")
	l.c1.Exec("ip", "route", "add", "default", "via", "192.168.2.1")
	l.c2.Exec("ip", "route", "add", "192.168.254.0/24", "via", "10.9.0.1")
	l.n1.Exec("ip", "route", "add", "10.9.0.0/24", "via", "192.168.2.1")
	l.n2.Exec("ip", "route", "add", "10.9.0.0/24", "via", "192.168.2.3") // seed 003: the reply takes r2
	for _, a := range []string{"192.168.254.10", "192.168.254.11", "192.168.254.12"} {
		l.n1.Exec("ip", "addr", "add", a+"/32", "dev", "lo")
	}
	for _, a := range []string{"192.168.254.12", "192.168.254.13"} {
		l.n2.Exec("ip", "addr", "add", a+"/32", "dev", "lo")
	}
	l.restore(t, "iptables-legacy-restore", traceFerm)
	l.restore(t, "ip6tables-legacy-restore", traceFerm)
	l.dualStack(t)
	l.router.Exec("ip", "route", "add", "192.168.254.21/32", "via", "192.168.2.50", "dev", "lan0", "proto", "static")

	l.cfg = l.writeConfigFrom(t, traceLabConfig, "firewall: {mode: \"off\"}\n")
	l.agent = l.startAgent(t, l.cfg)
	s1 := startSpeaker(t, l.n1, "192.168.2.10")
	s2 := startSpeaker(t, l.n2, "192.168.2.11")
	s6 := startSpeakerTo(t, l.n1, "2001:db8:2::10", "2001:db8:2::1")
	s1.do("up")
	s2.do("up")
	s6.do("up")
	s6.do("announce 2001:db8:254::10/128")
	for _, p := range []string{"192.168.254.10/32", "192.168.254.11/32", "192.168.254.12/32", "10.200.0.1/32"} {
		s1.do("announce " + p)
	}
	for _, p := range []string{"192.168.254.12/32", "192.168.254.13/32"} {
		s2.do("announce " + p)
	}
	waitFor(t, "the service routes", func() bool {
		return l.hasRoute(t, "192.168.254.10/32", "192.168.2.10") && l.hasRoute(t, "192.168.254.13/32", "192.168.2.11") &&
			l.hasRoute(t, "192.168.254.12/32", "192.168.2.10", "192.168.2.11") && l.status(t).Prefix.Rejected == 1 &&
			strings.Contains(l.router.Exec("ip", "-6", "route", "show", "2001:db8:254::10/128"), "via 2001:db8:2::10")
	})
	l.serve(t, l.n1, "192.168.254.10:80")
	l.serve(t, l.n1, "[2001:db8:254::10]:80")
	l.serve(t, l.n2, "192.168.254.13:80")
	return l
}

// dualStack adds the IPv6 addresses and routes (no DAD: the addresses
// are usable at once).
func (l *traceLab) dualStack(t *testing.T) {
	t.Helper()
	l.router.Exec("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	for _, a := range []struct {
		ns        *netnstest.NS
		dev, addr string
	}{{l.router, "lan0", "2001:db8:2::1/64"}, {l.router, "lan1", "2001:db8:9::1/64"}, {l.c1, "eth0", "2001:db8:2::100/64"},
		{l.n1, "eth0", "2001:db8:2::10/64"}, {l.c2, "eth0", "2001:db8:9::2/64"}, {l.n1, "lo", "2001:db8:254::10/128"}} {
		a.ns.Exec("ip", "addr", "add", a.addr, "dev", a.dev, "nodad")
	}
	l.c1.Exec("ip", "-6", "route", "add", "default", "via", "2001:db8:2::1")
	l.c2.Exec("ip", "-6", "route", "add", "2001:db8:254::/64", "via", "2001:db8:9::1")
	l.n1.Exec("ip", "-6", "route", "add", "2001:db8:9::/64", "via", "2001:db8:2::1")
}

func (l *traceLab) restore(t *testing.T, tool, rules string) {
	t.Helper()
	cmd := l.router.Command(tool)
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", tool, err, out)
	}
}

func (l *traceLab) serve(t *testing.T, ns *netnstest.NS, addr string) {
	t.Helper()
	w := &lineWaiter{ch: make(chan string, 4)}
	startRole(t, ns, "tcpserver", nil, nil, w, addr)
	<-w.ch
}

// connect starts one client connection (connect, send a line, expect it
// back; at most 6 s) in the background; env is added to the client's
// environment (tcpClientTimeoutEnv).
func connect(t *testing.T, ns *netnstest.NS, addr string, env ...string) {
	t.Helper()
	cmd := ns.Command(self(t), addr)
	cmd.Env = append(append(os.Environ(), roleEnv+"=tcpclient"), env...)
	cmd.Stdout = &logWriter{t: t, prefix: "client@" + ns.Name + ": "}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
}

// traceRun is one `trace --json` process on the router.
type traceRun struct {
	cmd      *exec.Cmd
	verdicts chan trace.Verdict
	ready    chan struct{}
	done     chan struct{}
}

func (l *traceLab) startTrace(t *testing.T, args ...string) *traceRun {
	t.Helper()
	cmd := l.router.Command(append([]string{self(t), "trace", "--json", "--config", l.cfg}, args...)...)
	cmd.Env = append(os.Environ(), roleEnv+"=agent")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &traceRun{cmd: cmd, verdicts: make(chan trace.Verdict, 8), ready: make(chan struct{}), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			t.Log("trace: " + sc.Text())
			if !once && strings.HasPrefix(sc.Text(), "watching") {
				once = true
				close(r.ready)
			}
		}
	}()
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var v trace.Verdict
			if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
				t.Errorf("trace printed %q: %v", sc.Text(), err)
				continue
			}
			t.Logf("verdict: %s", sc.Text())
			r.verdicts <- v
		}
		_ = cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-r.done
	})
	return r
}

func (r *traceRun) waitReady(t *testing.T) {
	t.Helper()
	select {
	case <-r.ready:
	case v := <-r.verdicts:
		t.Fatalf("trace gave a verdict before watching: %+v", v)
	case <-r.done:
		t.Fatal("trace ended before watching")
	case <-time.After(20 * time.Second):
		t.Fatal("trace not watching after 20s")
	}
}

func (r *traceRun) verdict(t *testing.T) (trace.Verdict, bool) {
	t.Helper()
	select {
	case v := <-r.verdicts:
		return v, true
	case <-time.After(30 * time.Second):
		t.Error("no verdict after 30s")
	}
	return trace.Verdict{}, false
}

// stop ends the trace as Ctrl-C does and waits for it.
func (r *traceRun) stop(t *testing.T) {
	t.Helper()
	_ = r.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-r.done:
	case <-time.After(20 * time.Second):
		t.Fatal("trace did not end on SIGINT")
	}
}

// traceRules returns the marked counting rules in both backends (mangle
// FORWARD; filter FORWARD for good measure).
func (l *traceLab) traceRules(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, args := range [][]string{{"iptables-legacy", "-t", "mangle"}, {"iptables-nft", "-t", "mangle"}, {"iptables-legacy"}, {"iptables-nft"}} {
		s, _ := l.router.Try(append(args, "-S", "FORWARD")...) // no table yet: nothing of ours either
		for _, line := range strings.Split(s, "\n") {
			if strings.Contains(line, trace.Mark) {
				out = append(out, strings.Join(args, " ")+": "+line)
			}
		}
	}
	return append(out, l.traceTables(t)...)
}

// traceTables returns trace's native nftables tables.
func (l *traceLab) traceTables(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(l.router.Exec("nft", "list", "tables"), "\n") {
		if strings.Contains(line, trace.NftTablePrefix) {
			out = append(out, "nft: "+line)
		}
	}
	return out
}

// nativeFilter is a router's own nftables firewall (no iptables): the
// INVALID drop in a native inet filter forward chain, with a counter.
const nativeFilter = `table inet filter {
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state invalid counter drop
		ct state established,related accept
		iifname { "lan0", "lan1" } ct state new accept
	}
}
`

// nftHandle is the handle of the first rule of chain (in table inet
// filter) whose listing contains what.
func (l *traceLab) nftHandle(t *testing.T, chain, what string) uint64 {
	t.Helper()
	out := l.router.Exec("nft", "-a", "list", "chain", "inet", "filter", chain)
	for _, line := range strings.Split(out, "\n") {
		if m := regexp.MustCompile(`# handle (\d+)`).FindStringSubmatch(line); m != nil && strings.Contains(line, what) {
			h, _ := strconv.ParseUint(m[1], 10, 64)
			return h
		}
	}
	t.Fatalf("no rule with %q in inet filter %s:\n%s", what, chain, out)
	return 0
}

// want is what a lab case pins of a verdict: kind and key facts.
type want struct {
	Kind      trace.Kind
	Client    string
	NextHop   string
	Interface string
	Rule      *trace.RuleRef // Spec not compared
	Reason    string
	Peer      string
}

func wantOf(v trace.Verdict) want {
	w := want{Kind: v.Kind, Interface: v.Interface, Reason: v.Reason}
	if v.Client.IsValid() {
		w.Client = v.Client.String()
	}
	if v.NextHop.IsValid() {
		w.NextHop = v.NextHop.String()
	}
	if v.Peer.IsValid() {
		w.Peer = v.Peer.String()
	}
	if v.Rule != nil {
		r := *v.Rule
		r.Spec = ""
		w.Rule = &r
	}
	return w
}

// TestTrace reproduces each failure mode in one lab and checks that trace
// names it, with its key facts (node, rule, backend), and that its
// counting rules are gone afterwards, also after SIGKILL.
func TestTrace(t *testing.T) {
	l := newTraceLab(t)

	// run traces one case: start trace, make the connection (if any),
	// check the verdict, stop trace, check that nothing of it is left.
	run := func(t *testing.T, target string, client *netnstest.NS, w want, extra ...string) trace.Verdict {
		t.Helper()
		if client != nil {
			// c1 connects to the same address several times within
			// conntrack's SYN_SENT timeout (2 min): a reused source port
			// would find the earlier, never answered entry and open no new
			// flow, which trace cannot see. Forget the earlier ones.
			host := netip.MustParseAddrPort(target).Addr().String()
			_, _ = l.router.Try("conntrack", "-D", "-f", family(host), "-d", host) // exits 1 when there is none
		}
		r := l.startTrace(t, append([]string{target}, extra...)...)
		if client != nil {
			r.waitReady(t)
			connect(t, client, target)
		}
		v, ok := r.verdict(t)
		if !ok {
			for _, c := range [][]string{{"ip", "route"}, {"conntrack", "-L"}, {"iptables-legacy", "-v", "-S"}, {"iptables-nft", "-v", "-S"}, {"cat", "/proc/net/snmp"}} {
				out, _ := l.router.Try(c...)
				t.Logf("%v:\n%s", c, out)
			}
			t.FailNow()
		}
		if diff := cmp.Diff(w, wantOf(v)); diff != "" {
			t.Errorf("verdict (-want +got):\n%s\nmessage: %s", diff, v.Message)
		}
		if v.Fix == "" || v.Message == "" {
			t.Errorf("verdict without message or fix: %+v", v)
		}
		r.stop(t)
		if left := l.traceRules(t); len(left) > 0 {
			t.Errorf("counting rules left after trace ended:\n%s", strings.Join(left, "\n"))
		}
		return v
	}
	legacyDrop := &trace.RuleRef{Backend: "legacy", Chain: "FORWARD", Number: 1}

	// Route verdicts come at once, without a connection.
	t.Run("no-route", func(t *testing.T) {
		run(t, "192.168.254.20:80", nil, want{Kind: trace.NoRoute})
	})
	t.Run("rejected", func(t *testing.T) {
		run(t, "10.200.0.1:80", nil, want{Kind: trace.Rejected, NextHop: "192.168.2.10", Reason: "outside-service-subnets", Peer: "192.168.2.10"})
	})
	t.Run("foreign-route", func(t *testing.T) {
		v := run(t, "192.168.254.21:80", nil, want{Kind: trace.ForeignRoute, NextHop: "192.168.2.50"})
		if !strings.Contains(v.Route, "proto 4") {
			t.Errorf("route %q does not name the static protocol", v.Route)
		}
	})

	// Connections, the firewall off: ferm's INVALID drop in legacy.
	t.Run("invalid-drop legacy", func(t *testing.T) {
		run(t, "192.168.254.10:80", l.c1, want{Kind: trace.InvalidDrop, Client: "192.168.2.100", NextHop: "192.168.2.10", Interface: "lan0", Rule: legacyDrop}, "--client", "192.168.2.100")
	})
	t.Run("healthy", func(t *testing.T) {
		run(t, "192.168.254.10:80", l.c2, want{Kind: trace.Healthy, Client: "10.9.0.2", NextHop: "192.168.2.10", Interface: "lan0"})
	})
	t.Run("rst no listener", func(t *testing.T) {
		run(t, "192.168.254.11:80", l.c1, want{Kind: trace.RST, Client: "192.168.2.100", NextHop: "192.168.2.10", Interface: "lan0"})
	})
	t.Run("rst local policy node without endpoint", func(t *testing.T) {
		// The node c1's flows hash to announces without an endpoint; the
		// other one has it.
		out := l.router.Exec("ip", "route", "get", "192.168.254.12", "from", "192.168.2.100", "iif", "lan0")
		m := regexp.MustCompile(`via (\S+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("ip route get: %s", out)
		}
		other := l.n2
		if m[1] == "192.168.2.11" {
			other = l.n1
		}
		l.serve(t, other, "192.168.254.12:80")
		run(t, "192.168.254.12:80", l.c1, want{Kind: trace.RST, Client: "192.168.2.100", NextHop: m[1], Interface: "lan0"})
	})
	t.Run("other-router", func(t *testing.T) {
		run(t, "192.168.254.13:80", l.c2, want{Kind: trace.OtherRouter, Client: "10.9.0.2", NextHop: "192.168.2.11", Interface: "lan0"})
	})

	// The agent's exemption on (reload): the same connection works.
	t.Run("asymmetric-ok", func(t *testing.T) {
		l.reloadFirewall(t, "firewall: {mode: exempt, backend: auto}", func(s Status) bool {
			return s.Firewall != nil && s.Firewall.Backend == "legacy" && len(s.Firewall.Rules) == 2 && s.Firewall.LastError == ""
		})
		before := l.status(t).Firewall.Repairs
		run(t, "192.168.254.10:80", l.c1, want{Kind: trace.AsymmetricOK, Client: "192.168.2.100", NextHop: "192.168.2.10", Interface: "lan0",
			Rule: &trace.RuleRef{Backend: "legacy", Chain: "BGPLB-EXEMPT", Number: 1}})
		// The counting rules live in mangle: the agent's jump at the top
		// of filter FORWARD never moved.
		if after := l.status(t).Firewall.Repairs; after != before {
			t.Errorf("the agent repaired its firewall rules %d times during the trace", after-before)
		}
	})

	// The drop in nf_tables instead (Debian's default iptables) and the
	// exemption forced into legacy: an ACCEPT in one backend does not undo
	// a DROP in the other.
	t.Run("invalid-drop nft", func(t *testing.T) {
		l.router.Exec("iptables-legacy", "-D", "FORWARD", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP")
		l.router.Exec("iptables-legacy", "-P", "FORWARD", "ACCEPT")
		l.restore(t, "iptables-nft-restore", traceFerm)
		l.reloadFirewall(t, "firewall: {mode: exempt, backend: legacy}", func(s Status) bool {
			return s.Firewall != nil && s.Firewall.Backend == "legacy" && len(s.Firewall.Rules) == 2 && s.Firewall.LastError == ""
		})
		run(t, "192.168.254.10:80", l.c1, want{Kind: trace.InvalidDrop, Client: "192.168.2.100", NextHop: "192.168.2.10", Interface: "lan0",
			Rule: &trace.RuleRef{Backend: "nft", Chain: "FORWARD", Number: 1}})
	})

	t.Run("status and metrics", func(t *testing.T) {
		s := l.status(t)
		if s.Trace == nil {
			t.Fatal("status has no trace verdicts")
		}
		want := map[trace.Kind]int{trace.NoRoute: 1, trace.Rejected: 1, trace.ForeignRoute: 1, trace.InvalidDrop: 2, trace.Healthy: 1,
			trace.RST: 2, trace.OtherRouter: 1, trace.AsymmetricOK: 1}
		if diff := cmp.Diff(want, s.Trace.Counts); diff != "" {
			t.Errorf("verdict counts (-want +got):\n%s", diff)
		}
		if n := len(s.Trace.Last); n != 10 || s.Trace.Last[n-1].Kind != trace.InvalidDrop {
			t.Errorf("last verdicts: %+v", s.Trace.Last)
		}
	})

	// SIGKILL leaves the rules; the next trace removes them.
	t.Run("killed trace: next trace sweeps", func(t *testing.T) {
		pid := l.killTrace(t)
		run(t, "192.168.254.10:80", l.c1, want{Kind: trace.InvalidDrop, Client: "192.168.2.100", NextHop: "192.168.2.10", Interface: "lan0",
			Rule: &trace.RuleRef{Backend: "nft", Chain: "FORWARD", Number: 1}})
		t.Logf("rules of killed trace %d removed by the next trace", pid)
	})
	// Native nftables instead of iptables: the drop in a native inet
	// filter forward chain, the counting rules in a table of trace's own.
	t.Run("invalid-drop nftables", func(t *testing.T) {
		l.router.Exec("iptables-nft", "-F", "FORWARD")
		l.router.Exec("iptables-nft", "-P", "FORWARD", "ACCEPT")
		l.nftRestore(t, nativeFilter)
		// The agent's exemption still sits in legacy, which the native
		// drop ignores.
		drop := l.nftHandle(t, "forward", "invalid")
		run(t, "192.168.254.10:80", l.c1, want{Kind: trace.InvalidDrop, Client: "192.168.2.100", NextHop: "192.168.2.10", Interface: "lan0",
			Rule: &trace.RuleRef{Backend: "nftables", Table: "inet filter", Chain: "forward", Number: 1, Handle: drop}}, "--client", "192.168.2.100")
	})
	t.Run("killed trace: nftables table left, next trace sweeps", func(t *testing.T) {
		r := l.startTrace(t, "192.168.254.10:80", "--client", "192.168.2.100")
		r.waitReady(t)
		pid := r.cmd.Process.Pid
		_ = r.cmd.Process.Kill()
		<-r.done
		if left := l.traceTables(t); len(left) != 1 || !strings.Contains(left[0], trace.NftTablePrefix+strconv.Itoa(pid)) {
			t.Fatalf("after SIGKILL, want the table of pid %d, got:\n%s", pid, strings.Join(left, "\n"))
		}
		// The next case's trace removes it; run checks nothing is left.
	})
	t.Run("asymmetric-ok nftables", func(t *testing.T) {
		l.reloadFirewall(t, "firewall: {mode: exempt, backend: nftables}", func(s Status) bool {
			return s.Firewall != nil && s.Firewall.Backend == "nftables" && len(s.Firewall.Rules) == 2 && s.Firewall.LastError == ""
		})
		ex := l.nftHandle(t, "bgplb_exempt", "192.168.254.0/24")
		before := l.status(t).Firewall.Repairs
		run(t, "192.168.254.10:80", l.c1, want{Kind: trace.AsymmetricOK, Client: "192.168.2.100", NextHop: "192.168.2.10", Interface: "lan0",
			Rule: &trace.RuleRef{Backend: "nftables", Table: "inet filter", Chain: "bgplb_exempt", Number: 1, Handle: ex}})
		// trace's own table is not the agent's business.
		if after := l.status(t).Firewall.Repairs; after != before {
			t.Errorf("the agent repaired its firewall rules %d times during the trace", after-before)
		}
		if out := l.router.Exec("nft", "list", "ruleset"); strings.Contains(out, trace.NftTablePrefix) || strings.Contains(out, trace.Mark) {
			t.Errorf("nft list ruleset after the trace still has trace's rules:\n%s", out)
		}
		// Back to the drop in iptables-nft for the cases below.
		l.reloadFirewall(t, "firewall: {mode: exempt, backend: legacy}", func(s Status) bool {
			return s.Firewall != nil && s.Firewall.Backend == "legacy" && len(s.Firewall.Rules) == 2 && s.Firewall.LastError == ""
		})
		l.router.Exec("nft", "delete", "table", "inet", "filter")
		l.restore(t, "iptables-nft-restore", traceFerm)
	})

	// IPv6, with ip6tables-legacy's INVALID drop (traceFerm) and the
	// exemptions in legacy.
	t.Run("healthy ipv6", func(t *testing.T) {
		run(t, "[2001:db8:254::10]:80", l.c2, want{Kind: trace.Healthy, Client: "2001:db8:9::2", NextHop: "2001:db8:2::10", Interface: "lan0"})
	})
	t.Run("invalid-drop ipv6", func(t *testing.T) {
		// The exemptions forced into nf_tables: ip6tables-legacy's drop
		// still drops.
		l.reloadFirewall(t, "firewall: {mode: exempt, backend: nft}", func(s Status) bool {
			return s.Firewall != nil && s.Firewall.Backend == "nft" && len(s.Firewall.Rules) == 2 && s.Firewall.LastError == ""
		})
		// The agent took its chain and jump out of the backend it no
		// longer uses: the drop is rule 1 of ip6tables-legacy again.
		waitFor(t, "the agent's chain gone from ip6tables-legacy", func() bool {
			out, _ := l.router.Try("ip6tables-legacy", "-S")
			return !strings.Contains(out, "BGPLB-EXEMPT")
		})
		run(t, "[2001:db8:254::10]:80", l.c1, want{Kind: trace.InvalidDrop, Client: "2001:db8:2::100", NextHop: "2001:db8:2::10", Interface: "lan0",
			Rule: &trace.RuleRef{Backend: "legacy", Chain: "FORWARD", Number: 1}},
			"--client", "2001:db8:2::100")
	})
	t.Run("asymmetric-ok ipv6", func(t *testing.T) {
		l.reloadFirewall(t, "firewall: {mode: exempt, backend: legacy}", func(s Status) bool {
			return s.Firewall != nil && s.Firewall.Backend == "legacy" && len(s.Firewall.Rules) == 2 && s.Firewall.LastError == ""
		})
		run(t, "[2001:db8:254::10]:80", l.c1, want{Kind: trace.AsymmetricOK, Client: "2001:db8:2::100", NextHop: "2001:db8:2::10", Interface: "lan0",
			Rule: &trace.RuleRef{Backend: "legacy", Chain: "BGPLB-EXEMPT", Number: 1}})
	})

	// ... and so does the agent's start.
	t.Run("killed trace: agent start sweeps", func(t *testing.T) {
		l.killTrace(t)
		l.agent.kill(syscall.SIGTERM)
		l.agent = l.startAgent(t, l.cfg)
		l.status(t) // the sweep comes before the socket
		if left := l.traceRules(t); len(left) > 0 {
			t.Errorf("counting rules left after the agent started:\n%s", strings.Join(left, "\n"))
		}
	})

	// Last, as c1 keeps the redirect's route exception: send_redirects
	// back on (as before the agent). The agent stops first: it would turn
	// them off again; its routes stay.
	t.Run("redirect", func(t *testing.T) {
		l.agent.kill(syscall.SIGTERM)
		l.router.Exec("sysctl", "-qw", "net.ipv4.conf.all.send_redirects=1", "net.ipv4.conf.lan0.send_redirects=1")
		run(t, "192.168.254.10:80", l.c1, want{Kind: trace.Redirect, Client: "192.168.2.100", NextHop: "192.168.2.10", Interface: "lan0"})
	})
}

// family is conntrack's -f for addr.
func family(addr string) string {
	if strings.Contains(addr, ":") {
		return "ipv6"
	}
	return "ipv4"
}

// nftRestore loads a native ruleset with nft -f.
func (l *traceLab) nftRestore(t *testing.T, rules string) {
	t.Helper()
	cmd := l.router.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft -f: %v\n%s", err, out)
	}
}

// reloadFirewall rewrites the firewall line of the config, sends SIGHUP
// and waits for ok.
func (l *traceLab) reloadFirewall(t *testing.T, line string, ok func(Status) bool) {
	t.Helper()
	cfg := regexp.MustCompile(`(?m)^firewall: .*$`).ReplaceAllString(mustRead(t, l.cfg), line)
	if err := os.WriteFile(l.cfg, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = l.agent.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, line, func() bool { return ok(l.status(t)) })
}

// killTrace starts a trace, kills it with SIGKILL once it watches, and
// checks that its counting rules are left behind (what the sweeps are for).
func (l *traceLab) killTrace(t *testing.T) int {
	t.Helper()
	r := l.startTrace(t, "192.168.254.10:80", "--client", "192.168.2.100")
	r.waitReady(t)
	pid := r.cmd.Process.Pid
	_ = r.cmd.Process.Kill()
	<-r.done
	left := l.traceRules(t)
	if len(left) != 2 || !strings.Contains(left[0], "pid="+strconv.Itoa(pid)) {
		t.Fatalf("after SIGKILL, want the two rules of pid %d, got:\n%s", pid, strings.Join(left, "\n"))
	}
	return pid
}
