package agent

import (
	"bytes"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bgplb/bgplb/internal/netnstest"
	"github.com/bgplb/bgplb/routeragent/pinning"
	"github.com/bgplb/bgplb/routeragent/policy"
)

// TestECMPPolicyConflicts: two speakers announce one prefix and get an ECMP
// route; withdrawals shrink and remove it; rejected announcements are not
// installed and are counted; a foreign route is left alone and reported.
func TestECMPPolicyConflicts(t *testing.T) {
	l := newLab(t)
	s1ns := l.host(t, "s1", "192.168.2.20")
	s2ns := l.host(t, "s2", "192.168.2.21")
	// maxPrefixesAction reject (keep the earliest); teardown is TestHostilePeers'.
	cfg := l.writeConfigFrom(t, strings.Replace(baseConfig, "maxPrefixes: 2", "maxPrefixes: 2\n    maxPrefixesAction: reject", 1), "firewall: {mode: \"off\"}\n")
	l.startAgent(t, cfg)
	s1 := startSpeaker(t, s1ns, "192.168.2.20")
	s2 := startSpeaker(t, s2ns, "192.168.2.21")
	s1.do("up")
	s2.do("up")

	s1.do("announce 192.168.254.1/32")
	s2.do("announce 192.168.254.1/32")
	waitFor(t, "an ECMP route via both speakers", func() bool {
		return l.hasRoute(t, "192.168.254.1/32", "192.168.2.20", "192.168.2.21")
	})

	// Rejected: outside the service subnets, another peer's next hop, the
	// LAN itself, a default route, and over s2's maxPrefixes (2).
	s1.do("announce 10.1.1.1/32")
	s1.do("announce 192.168.254.5/32 192.168.2.21")
	s1.do("announce 192.168.2.0/24")
	s1.do("announce 0.0.0.0/0")
	s2.do("announce 192.168.254.10/32")
	waitFor(t, "254.10 installed", func() bool { return l.hasRoute(t, "192.168.254.10/32", "192.168.2.21") })
	s2.do("announce 192.168.254.11/32")
	s2.do("announce 192.168.254.12/32")
	wantReasons := map[policy.Reason]int{
		policy.RejectOutsideSubnets: 1, policy.RejectNextHopNotPeer: 1, policy.RejectNotHostRoute: 1,
		policy.RejectDefaultRoute: 1, policy.RejectMaxPrefixes: 2,
	}
	var st Status
	waitFor(t, "six rejections counted", func() bool { st = l.status(t); return st.Prefix.Rejected == 6 })
	if d := cmp.Diff(wantReasons, st.Prefix.ByReason); d != "" {
		t.Errorf("rejections by reason (-want +got):\n%s", d)
	}
	for _, p := range []string{"10.1.1.1/32", "192.168.254.5/32", "192.168.254.11/32", "192.168.254.12/32"} {
		if !l.hasRoute(t, p) {
			t.Errorf("rejected %s is in the kernel", p)
		}
	}
	if proto, _ := l.kernelRoute(t, "0.0.0.0/0"); proto != -1 {
		t.Errorf("a default route was installed (proto %d)", proto)
	}
	for _, p := range st.Peers {
		if p.Address == netip.MustParseAddr("192.168.2.21") && (p.Accepted != 2 || p.Rejected[policy.RejectMaxPrefixes] != 2) {
			t.Errorf("peer .21: accepted %d, rejected %v; want 2 and 2 over max-prefixes", p.Accepted, p.Rejected)
		}
	}

	// A foreign static route for a service prefix is left alone and reported.
	l.router.Exec("ip", "route", "add", "192.168.254.2/32", "via", "192.168.2.30", "proto", "static")
	s1.do("announce 192.168.254.2/32")
	waitFor(t, "a conflict reported", func() bool { return len(l.status(t).Routes.Conflicts) == 1 })
	if proto, nhs := l.kernelRoute(t, "192.168.254.2/32"); proto != unix.RTPROT_STATIC || !slices.Equal(nhs, []string{"192.168.2.30"}) {
		t.Errorf("foreign route changed: proto %d via %v", proto, nhs)
	}

	// The operator's view.
	var out, errb bytes.Buffer
	if code := CLIMain([]string{"status", "--socket", l.socket()}, &out, &errb); code != 0 {
		t.Fatalf("status exit %d: %s", code, errb.String())
	}
	t.Logf("status:\n%s", out.String())
	for _, want := range []string{"192.168.2.20", "established", "CONFLICT 192.168.254.2/32", "max-prefixes: 2",
		"2 next hop(s): 1", "send_redirects: all=0 default=0 lan0=0 (effective 0)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status output lacks %q", want)
		}
	}
	out.Reset()
	if code := CLIMain([]string{"status", "--json", "--socket", l.socket()}, &out, &errb); code != 0 {
		t.Fatalf("status --json exit %d", code)
	}
	var js map[string]any
	if err := json.Unmarshal(out.Bytes(), &js); err != nil || js["routes"] == nil {
		t.Errorf("status --json: %v\n%s", err, out.String())
	}

	// Withdrawals: one path left, then none.
	s1.do("withdraw 192.168.254.1/32")
	waitFor(t, "one path via .21", func() bool { return l.hasRoute(t, "192.168.254.1/32", "192.168.2.21") })
	s2.do("withdraw 192.168.254.1/32")
	waitFor(t, "route gone", func() bool { return l.hasRoute(t, "192.168.254.1/32") })
	// With .1 gone, s2 is under its limit: 254.11 (earliest rejected) gets in.
	waitFor(t, "254.11 installed once under the limit", func() bool { return l.hasRoute(t, "192.168.254.11/32", "192.168.2.21") })
	if !l.hasRoute(t, "192.168.254.12/32") {
		t.Error("254.12 installed although s2 is at its limit")
	}
}

// routeEvents records every change to our routes in the router namespace.
type routeEvents struct {
	mu  sync.Mutex
	evs []string
}

func (r *routeEvents) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.evs)
}

// listAfter waits until the watcher has recorded ev, then returns every
// event recorded. Netlink delivers route events asynchronously: the kernel
// may already show a change (a sweep seen through RouteList) that the
// watcher has not read yet, and reading the list at once then misses it.
func (r *routeEvents) listAfter(t testing.TB, ev string) []string {
	t.Helper()
	waitFor(t, "route event "+ev, func() bool { return slices.Contains(r.list(), ev) })
	return r.list()
}

func watchRoutes(t *testing.T, l *lab) *routeEvents {
	t.Helper()
	ch := make(chan netlink.RouteUpdate, 1024)
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	ns := l.router.Handle()
	if err := netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{Namespace: &ns}); err != nil {
		t.Fatal(err)
	}
	r := &routeEvents{}
	go func() {
		for u := range ch {
			if u.Dst == nil || !strings.HasPrefix(u.Dst.String(), "192.168.254.") {
				continue
			}
			kind := "new"
			if u.Type == unix.RTM_DELROUTE {
				kind = "del"
			}
			r.mu.Lock()
			r.evs = append(r.evs, kind+" "+u.Dst.String())
			r.mu.Unlock()
		}
	}()
	return r
}

// TestRestartKeepsRoutes kills the agent and starts it again: while it is
// down and starting no route is deleted or changed, and a route whose
// announcement went away meanwhile is swept only after End-of-RIB.
func TestRestartKeepsRoutes(t *testing.T) {
	l := newLab(t)
	s1ns := l.host(t, "s1", "192.168.2.20")
	s2ns := l.host(t, "s2", "192.168.2.21")
	cfg := l.writeConfig(t, "firewall: {mode: \"off\"}\n")
	agent := l.startAgent(t, cfg)
	s1 := startSpeaker(t, s1ns, "192.168.2.20")
	s2 := startSpeaker(t, s2ns, "192.168.2.21")
	s1.do("up")
	s2.do("up")
	s1.do("announce 192.168.254.1/32")
	s2.do("announce 192.168.254.1/32")
	s1.do("announce 192.168.254.2/32")
	waitFor(t, "routes installed", func() bool {
		return l.hasRoute(t, "192.168.254.1/32", "192.168.2.20", "192.168.2.21") && l.hasRoute(t, "192.168.254.2/32", "192.168.2.20")
	})

	evs := watchRoutes(t, l)
	agent.kill(syscall.SIGKILL)
	// While the agent is down, s1 stops announcing 254.2.
	s1.do("withdraw 192.168.254.2/32")
	time.Sleep(time.Second) // let any (wrong) deletion surface
	if got := evs.list(); len(got) != 0 {
		t.Fatalf("routes changed while the agent was down: %v", got)
	}
	l.startAgent(t, cfg)
	s1.do("up")
	s2.do("up")
	waitFor(t, "254.2 swept after End-of-RIB", func() bool { return l.hasRoute(t, "192.168.254.2/32") })
	// 254.2 was announced only by .20: its stale copy goes once .20 has
	// sent End-of-RIB (.21's may still be pending; its routes stay).
	for _, p := range l.status(t).Peers {
		if p.Address == netip.MustParseAddr("192.168.2.20") && !p.EndOfRIB {
			t.Error("254.2 swept before 192.168.2.20 sent End-of-RIB")
		}
	}
	if !l.hasRoute(t, "192.168.254.1/32", "192.168.2.20", "192.168.2.21") {
		t.Error("254.1 lost its ECMP route over the restart")
	}
	if d := cmp.Diff([]string{"del 192.168.254.2/32"}, evs.listAfter(t, "del 192.168.254.2/32")); d != "" {
		t.Errorf("route changes over the restart (-want +got):\n%s", d)
	}
}

// TestSIGHUPReload: a bad config is refused and the running state kept; a
// good one is applied (here: a narrower service subnet).
func TestSIGHUPReload(t *testing.T) {
	l := newLab(t)
	s1ns := l.host(t, "s1", "192.168.2.20")
	cfg := l.writeConfig(t, "firewall: {mode: \"off\"}\n")
	notify := listenNotify(t, filepath.Join(l.dir, "notify.sock"))
	agent := l.startAgentEnv(t, cfg, []string{"NOTIFY_SOCKET=" + filepath.Join(l.dir, "notify.sock")})
	notify.expect(t, "READY=1")
	s1 := startSpeaker(t, s1ns, "192.168.2.20")
	s1.do("up")
	s1.do("announce 192.168.254.1/32")
	s1.do("announce 192.168.254.200/32")
	waitFor(t, "routes", func() bool {
		return l.hasRoute(t, "192.168.254.1/32", "192.168.2.20") && l.hasRoute(t, "192.168.254.200/32", "192.168.2.20")
	})
	good, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte(strings.Replace(string(good), "192.168.2.0/24", "192.168.2.0/33", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = agent.cmd.Process.Signal(syscall.SIGHUP)
	time.Sleep(500 * time.Millisecond)
	if !l.hasRoute(t, "192.168.254.1/32", "192.168.2.20") || l.status(t).Routes.Installed != 2 {
		t.Fatal("bad reload changed the running state")
	}
	narrower := strings.Replace(string(good), "serviceSubnets: [192.168.254.0/24]", "serviceSubnets: [192.168.254.0/25]", 1)
	if err := os.WriteFile(cfg, []byte(narrower), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = agent.cmd.Process.Signal(syscall.SIGHUP)
	notify.expect(t, "RELOADING=1")
	notify.expect(t, "READY=1")
	waitFor(t, "254.200 removed by the narrower subnet", func() bool { return l.hasRoute(t, "192.168.254.200/32") })
	if !l.hasRoute(t, "192.168.254.1/32", "192.168.2.20") {
		t.Error("254.1 lost on reload")
	}
	// SIGTERM leaves the routes in place.
	agent.kill(syscall.SIGTERM)
	notify.expect(t, "STOPPING=1")
	if code := agent.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code after SIGTERM: %d", code)
	}
	if !l.hasRoute(t, "192.168.254.1/32", "192.168.2.20") {
		t.Error("SIGTERM removed our route")
	}
	// flush removes them (run inside the router namespace).
	cmd := l.router.Command(self(t), "flush", "--config", cfg)
	cmd.Env = append(os.Environ(), roleEnv+"=agent")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("flush: %v\n%s", err, out)
	}
	if !l.hasRoute(t, "192.168.254.1/32") {
		t.Error("flush left our route")
	}
}

// TestSeedNetwork is the story of the seed: client, router and node on one
// L2, the service address on the node, the router with a ferm-like stateful
// iptables-legacy firewall that drops INVALID. The node answers the client
// directly, so the router sees half the connection. With the route alone
// the connection fails; with the agent's exemption it works, and the router
// sends no ICMP redirect.
func TestSeedNetwork(t *testing.T) {
	if _, err := os.Stat("/usr/sbin/iptables-legacy"); err != nil {
		t.Fatal("iptables-legacy is required (Debian package iptables; make deps installs it)")
	}
	l := newLab(t)
	client := l.host(t, "cl", "192.168.2.109")
	node := l.host(t, "nd", "192.168.2.20")
	client.Exec("ip", "route", "add", "default", "via", "192.168.2.1")
	node.Exec("ip", "addr", "add", "192.168.254.1/32", "dev", "lo")
	l.router.Exec("sysctl", "-qw", "net.ipv4.ip_forward=1")
	restore := l.router.Command("iptables-legacy-restore")
	restore.Stdin = strings.NewReader(fermRules)
	if out, err := restore.CombinedOutput(); err != nil {
		t.Fatalf("iptables-legacy-restore: %v\n%s", err, out)
	}
	srvOut := &lineWaiter{ch: make(chan string, 4)}
	startRole(t, node, "tcpserver", nil, nil, srvOut, "192.168.254.1:3142")
	<-srvOut.ch
	connect := func() (bool, string) {
		cmd := client.Command(self(t), "192.168.254.1:3142")
		cmd.Env = append(os.Environ(), roleEnv+"=tcpclient")
		out, err := cmd.CombinedOutput()
		return err == nil, string(out)
	}
	if ok, out := connect(); ok {
		t.Fatalf("connected before the agent runs (no route): %s", out)
	}

	// Phase 1: the agent with the firewall off: the route is there, the
	// firewall still drops the client's half of the connection.
	cfg := l.writeConfig(t, "firewall: {mode: \"off\"}\n")
	agent := l.startAgent(t, cfg)
	sp := startSpeaker(t, node, "192.168.2.20")
	sp.do("up")
	sp.do("announce 192.168.254.1/32")
	waitFor(t, "route to the service", func() bool { return l.hasRoute(t, "192.168.254.1/32", "192.168.2.20") })
	if ok, out := connect(); ok {
		t.Fatalf("connected through a firewall that drops INVALID without our exemption: %s", out)
	} else {
		t.Logf("without the exemption: %s", strings.TrimSpace(out))
	}

	// Phase 2: the exemption on (by reload).
	if err := os.WriteFile(cfg, []byte(strings.Replace(mustRead(t, cfg), "firewall: {mode: \"off\"}", "firewall: {mode: exempt, backend: auto}", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = agent.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "exemption in the legacy backend", func() bool {
		f := l.status(t).Firewall
		return f != nil && f.Backend == "legacy" && len(f.Rules) == 1 && f.LastError == ""
	})
	if ok, out := connect(); !ok {
		t.Fatalf("connection failed with the exemption: %s\n%s", out, l.router.Exec("iptables-legacy", "-v", "-S", "FORWARD"))
	}
	if n := outRedirects(t, l); n != 0 {
		t.Errorf("router sent %d ICMP redirects", n)
	}
	// A ferm-style reload replaces the whole table (our chain goes); the
	// ferm hook pokes the agent, which puts the exemption back.
	reload := l.router.Command("iptables-legacy-restore")
	reload.Stdin = strings.NewReader(fermRules)
	if out, err := reload.CombinedOutput(); err != nil {
		t.Fatalf("iptables-legacy-restore: %v\n%s", err, out)
	}
	var out2, errb bytes.Buffer
	if code := CLIMain([]string{"poke", "--socket", l.socket()}, &out2, &errb); code != 0 {
		t.Fatalf("poke: exit %d: %s", code, errb.String())
	}
	waitFor(t, "the exemption back after the reload", func() bool {
		return strings.Contains(l.router.Exec("iptables-legacy", "-S", "FORWARD"), "BGPLB-EXEMPT")
	})
	if ok, out := connect(); !ok {
		t.Fatalf("connection failed after the firewall reload: %s", out)
	}

	// doctor, run inside the router, finds nothing failing.
	doc := l.router.Command(self(t), "doctor", "--config", cfg)
	doc.Env = append(os.Environ(), roleEnv+"=agent")
	out, err := doc.CombinedOutput()
	t.Logf("doctor:\n%s", out)
	if err != nil {
		t.Errorf("doctor failed: %v", err)
	}
	for _, want := range []string{"ip_forward", "send_redirects", "firewall", "routes", "bgp"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("doctor output lacks the %s check", want)
		}
	}
	// The counters are read on the firewall's next pass (every second).
	waitFor(t, "the exemption counting the client's packets", func() bool {
		f := l.status(t).Firewall
		return f != nil && len(f.Rules) == 1 && f.Rules[0].Packets > 0
	})

	// Removing the package: stop (routes and rules stay), then uninstall
	// takes away exactly what the agent added and restores send_redirects.
	agent.kill(syscall.SIGTERM)
	if !l.hasRoute(t, "192.168.254.1/32", "192.168.2.20") || !strings.Contains(l.router.Exec("iptables-legacy", "-S"), "BGPLB-EXEMPT") {
		t.Fatal("stopping the agent removed its route or rules")
	}
	un := l.router.Command(self(t), "uninstall", "--config", cfg)
	un.Env = append(os.Environ(), roleEnv+"=agent")
	if out, err := un.CombinedOutput(); err != nil {
		t.Fatalf("uninstall: %v\n%s", err, out)
	}
	if !l.hasRoute(t, "192.168.254.1/32") {
		t.Error("uninstall left our route")
	}
	if out, err := l.router.Try("nft", "list", "table", "inet", pinning.NftTable); err == nil {
		t.Errorf("uninstall left the connection pins' table:\n%s", out)
	}
	if out := l.router.Exec("ip", "rule", "list"); strings.Contains(out, "fwmark") {
		t.Errorf("uninstall left the connection pins' rules:\n%s", out)
	}
	if got := save(t, l.router); got != save(t, fermOnly(t)) {
		t.Errorf("uninstall did not restore the firewall:\n%s\nwant:\n%s", got, save(t, fermOnly(t)))
	}
	for _, k := range []string{"all", "default", "lan0"} {
		if v := strings.TrimSpace(l.router.Exec("cat", "/proc/sys/net/ipv4/conf/"+k+"/send_redirects")); v != "1" {
			t.Errorf("send_redirects of %s after uninstall = %s, want the original 1", k, v)
		}
	}
}

// save is iptables-legacy-save of the filter table without comments and
// counters, for comparison.
func save(t *testing.T, ns *netnstest.NS) string {
	t.Helper()
	var keep []string
	for _, line := range strings.Split(ns.Exec("iptables-legacy-save", "-t", "filter"), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.Index(line, " ["); i > 0 && strings.HasPrefix(line, ":") {
			line = line[:i]
		}
		keep = append(keep, line)
	}
	return strings.Join(keep, "\n")
}

// fermOnly is a namespace holding just fermRules, the reference for what
// uninstall must leave.
func fermOnly(t *testing.T) *netnstest.NS {
	t.Helper()
	ns := netnstest.New(t, "ref")
	r := ns.Command("iptables-legacy-restore")
	r.Stdin = strings.NewReader(fermRules)
	if out, err := r.CombinedOutput(); err != nil {
		t.Fatalf("iptables-legacy-restore: %v\n%s", err, out)
	}
	return ns
}

// notifySocket plays systemd's NOTIFY_SOCKET.
type notifySocket struct{ ch chan string }

func listenNotify(t *testing.T, path string) *notifySocket {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	n := &notifySocket{ch: make(chan string, 16)}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				close(n.ch)
				return
			}
			n.ch <- string(buf[:k])
		}
	}()
	return n
}

// expect waits for the next notification and checks it.
func (n *notifySocket) expect(t *testing.T, want string) {
	t.Helper()
	select {
	case got := <-n.ch:
		if got != want {
			t.Fatalf("sd_notify: got %q, want %q", got, want)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("sd_notify: no %q", want)
	}
}

// fermRules is a ferm/DebOps-like stateful router firewall.
const fermRules = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -m conntrack --ctstate INVALID -j DROP
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -i lan0 -m conntrack --ctstate NEW -j ACCEPT
COMMIT
`

type lineWaiter struct{ ch chan string }

func (w *lineWaiter) Write(p []byte) (int, error) {
	select {
	case w.ch <- string(p):
	default:
	}
	return len(p), nil
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// outRedirects reads Icmp OutRedirects from /proc/net/snmp inside the router.
func outRedirects(t *testing.T, l *lab) int {
	t.Helper()
	out := l.router.Exec("cat", "/proc/net/snmp")
	var hdr, val []string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "Icmp: ") {
			if hdr == nil {
				hdr = strings.Fields(line)
			} else {
				val = strings.Fields(line)
			}
		}
	}
	for i, h := range hdr {
		if h == "OutRedirects" && i < len(val) {
			n, _ := strconv.Atoi(val[i])
			return n
		}
	}
	t.Fatalf("no Icmp OutRedirects in /proc/net/snmp:\n%s", out)
	return 0
}

// TestLinkFlapRestoresRoutes: the kernel drops routes without a netlink
// delete when their link goes down; the agent's link watcher resyncs when
// it comes back (the periodic resync is set to an hour here, so it is the
// link event that brings the route back).
func TestLinkFlapRestoresRoutes(t *testing.T) {
	l := newLab(t)
	s1ns := l.host(t, "s1", "192.168.2.20")
	cfg := l.writeConfigFrom(t, strings.Replace(baseConfig, "resyncInterval: 2s", "resyncInterval: 1h", 1), "firewall: {mode: \"off\"}\n")
	l.startAgent(t, cfg)
	s1 := startSpeaker(t, s1ns, "192.168.2.20")
	s1.do("up")
	s1.do("announce 192.168.254.1/32")
	waitFor(t, "route", func() bool { return l.hasRoute(t, "192.168.254.1/32", "192.168.2.20") })
	l.router.Exec("ip", "link", "set", "lan0", "down")
	if !l.hasRoute(t, "192.168.254.1/32") {
		t.Fatal("the kernel kept the route on a down link; the test premise does not hold")
	}
	l.router.Exec("ip", "link", "set", "lan0", "up")
	waitFor(t, "route back after the link came up", func() bool { return l.hasRoute(t, "192.168.254.1/32", "192.168.2.20") })
}

// TestIPv6ECMP: the same over IPv6 sessions: two speakers announce one
// /128 with their own addresses as next hops; the router installs one ECMP
// route (the kernel stores IPv6 metric 0 as 1024); a /64 is rejected.
func TestIPv6ECMP(t *testing.T) {
	l := newLab(t)
	l.router.Exec("ip", "addr", "add", "2001:db8:2::1/64", "dev", "lan0", "nodad")
	s1ns := l.host(t, "s1", "192.168.2.20")
	s2ns := l.host(t, "s2", "192.168.2.21")
	s1ns.Exec("ip", "addr", "add", "2001:db8:2::20/64", "dev", "eth0", "nodad")
	s2ns.Exec("ip", "addr", "add", "2001:db8:2::21/64", "dev", "eth0", "nodad")
	base := strings.Replace(baseConfig, "serviceSubnets: [192.168.254.0/24]", "serviceSubnets: [192.168.254.0/24, \"2001:db8:254::/64\"]", 1)
	base = strings.Replace(base, "serviceSubnets", "  - prefix: 2001:db8:2::/64\n    asn: 64512\n    allowUnauthenticated: true\nserviceSubnets", 1)
	l.startAgent(t, l.writeConfigFrom(t, base, "firewall: {mode: \"off\"}\n"))
	s1 := startSpeakerTo(t, s1ns, "2001:db8:2::20", "2001:db8:2::1")
	s2 := startSpeakerTo(t, s2ns, "2001:db8:2::21", "2001:db8:2::1")
	s1.do("up")
	s2.do("up")
	s1.do("announce 2001:db8:254::1/128")
	s2.do("announce 2001:db8:254::1/128")
	s1.do("announce 2001:db8:254::/64")
	show := func() string { return l.router.Exec("ip", "-6", "route", "show", "2001:db8:254::1/128") }
	waitFor(t, "an IPv6 ECMP route", func() bool {
		out := show()
		return strings.Contains(out, "proto 220") && strings.Contains(out, "via 2001:db8:2::20") && strings.Contains(out, "via 2001:db8:2::21")
	})
	waitFor(t, "the /64 rejected", func() bool { return l.status(t).Prefix.ByReason[policy.RejectNotHostRoute] == 1 })
	if out := l.router.Exec("ip", "-6", "route", "show", "2001:db8:254::/64"); strings.TrimSpace(out) != "" {
		t.Errorf("the /64 was installed: %s", out)
	}
	s2.do("withdraw 2001:db8:254::1/128")
	waitFor(t, "one IPv6 next hop left", func() bool {
		out := show()
		return strings.Contains(out, "via 2001:db8:2::20") && !strings.Contains(out, "2001:db8:2::21")
	})
}

// TestBIRDSpeaker: a real third-party speaker (BIRD 2) announces a /32 with
// itself as next hop; the agent installs it, sees BIRD's End-of-RIB, and
// removes the route when BIRD withdraws it.
func TestBIRDSpeaker(t *testing.T) {
	if _, err := exec.LookPath("bird"); err != nil {
		t.Fatal("bird is required (Debian package bird2; make deps installs it)")
	}
	l := newLab(t)
	bns := l.host(t, "bird", "192.168.2.30")
	cfg := l.writeConfig(t, "firewall: {mode: \"off\"}\n")
	l.startAgent(t, cfg)
	dir := t.TempDir()
	conf := filepath.Join(dir, "bird.conf")
	sock := filepath.Join(dir, "bird.ctl")
	if err := os.WriteFile(conf, []byte(`router id 192.168.2.30;
protocol device {}
protocol static svc {
  ipv4;
  route 192.168.254.7/32 blackhole;
}
protocol bgp rtr {
  local 192.168.2.30 as 64512;
  neighbor 192.168.2.1 as 64500;
  hold time 9;
  ttl security on; # GTSM, as the agent demands by default
  ipv4 { import none; export where proto = "svc"; next hop self; };
}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	bird := bns.Command("bird", "-f", "-c", conf, "-s", sock, "-P", filepath.Join(dir, "bird.pid"))
	lw := &logWriter{t: t, prefix: "bird: "}
	bird.Stdout, bird.Stderr = lw, lw
	if err := bird.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = bird.Process.Kill()
		_ = bird.Wait()
		lw.mu.Lock()
		lw.done = true
		lw.mu.Unlock()
	})
	waitFor(t, "BIRD's route installed", func() bool { return l.hasRoute(t, "192.168.254.7/32", "192.168.2.30") })
	waitFor(t, "BIRD's End-of-RIB", func() bool {
		for _, p := range l.status(t).Peers {
			if p.Address == netip.MustParseAddr("192.168.2.30") {
				return p.EndOfRIB
			}
		}
		return false
	})
	bns.Exec("birdc", "-s", sock, "disable", "svc")
	waitFor(t, "route gone after BIRD withdrew it", func() bool { return l.hasRoute(t, "192.168.254.7/32") })
}
