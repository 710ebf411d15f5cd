package agent

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bgplb/bgplb/internal/netnstest"
)

// The failover benchmark of issue 21 (make bench-failover): two nodes
// announce the same /32 to the router; one node's link is cut (ip link set
// down on its end of the LAN, inside its namespace) and the time until the
// router's kernel route has only the other next hop is measured, N times
// per router. The nodes are FRR (bgpd + bfdd + zebra, Debian's frr), one
// per namespace, so that the node side is the same for every router: the
// agent with and without BFD, FRR (bgpd + bfdd) and BIRD 2 (protocol bfd).
// Gated by BGPLB_BENCH_FAILOVER: it takes minutes.

const failoverPrefix = "192.168.254.1/32"

var failoverNodes = []string{"192.168.2.20", "192.168.2.21"}

// failoverCase is one router configuration.
type failoverCase struct {
	name  string
	bfd   bool // the nodes run BFD with the router (300 ms x 3)
	proto int
	// detect is what detects the failure (for the table).
	detect string
	start  func(b *testing.B, l *lab) []int
	// freeze: instead of cutting the node's link, freeze its BGP speaker
	// (bgpd and bfdd) with SIGSTOP: the link and the kernel's TCP stay up,
	// only the speaker stops answering (issue 21's frozen speaker).
	freeze bool
}

const failoverAgentConfig = `asn: 64500
routerID: 192.168.2.1
neighbors:
  - prefix: 192.168.2.0/24
    asn: 64512
    allowUnauthenticated: true # the FRR nodes have no secret
    # FRR 8.4 makes the BFD session of a neighbour with ttl-security a
    # multihop one (RFC 5883), which the agent does not run.
    ttlSecurity: false
    holdTime: 9s
%s
serviceSubnets: [192.168.254.0/24]
lanInterfaces: [lan0]
firewall: {mode: "off"}
metrics: {address: "off"}
log: {level: warn}
`

const failoverBIRDConfig = `router id 192.168.2.1;
protocol device {}
protocol kernel {
  ipv4 { import none; export all; };
  merge paths yes limit 16;
}
%s
protocol bgp nodes {
  local 192.168.2.1 as 64500;
  neighbor range 192.168.2.0/24 as 64512;
  hold time 9;
  # A session that failed waits 60 s (doubling up to 300 s) by default
  # before BIRD accepts the node again: the benchmark cuts every few seconds.
  error wait time 1, 2;
  %s
  ipv4 { import all; export none; };
}
`

const failoverBIRDBFD = `protocol bfd {
  interface "lan0" { min rx interval 300 ms; min tx interval 300 ms; multiplier 3; };
}`

const failoverFRRRouterConfig = `frr defaults traditional
hostname failover-router
log stdout warnings
!
router bgp 64500
 bgp router-id 192.168.2.1
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 neighbor NODES peer-group
 neighbor NODES remote-as 64512
 bgp listen range 192.168.2.0/24 peer-group NODES
 neighbor NODES timers 3 9
%s address-family ipv4 unicast
  neighbor NODES activate
  maximum-paths 16
 exit-address-family
!
`

// failoverNodeConfig is an FRR node: eBGP to the router, the Service's /32
// as a network statement, and BFD at FRR's defaults (300 ms x 3) when asked.
const failoverNodeConfig = `frr defaults traditional
hostname node-%[1]s
log stdout warnings
!
router bgp 64512
 bgp router-id %[1]s
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor 192.168.2.1 remote-as 64500
 neighbor 192.168.2.1 timers 3 9
 neighbor 192.168.2.1 timers connect 1
%[2]s address-family ipv4 unicast
  network 192.168.254.1/32
 exit-address-family
!
`

func failoverCases() []failoverCase {
	agent := func(bfd bool) func(b *testing.B, l *lab) []int {
		return func(b *testing.B, l *lab) []int {
			extra := ""
			if bfd {
				extra = "    bfd: {enabled: true, receiveInterval: 300ms, transmitInterval: 300ms, detectMultiplier: 3}"
			}
			p := l.startAgent(b, l.writeConfigFrom(b, fmt.Sprintf(failoverAgentConfig, extra), ""))
			return []int{p.cmd.Process.Pid}
		}
	}
	return []failoverCase{
		{name: "bgplb-routeragent BFD 300ms x3", bfd: true, proto: 220, detect: "BFD", start: agent(true)},
		{name: "FRR bgpd+bfdd BFD 300ms x3", bfd: true, proto: 186, detect: "BFD", start: startFailoverFRR(true)},
		{name: "BIRD 2 BFD 300ms x3", bfd: true, proto: unix.RTPROT_BIRD, detect: "BFD", start: startFailoverBIRD(true)},
		{name: "bgplb-routeragent hold 9s", proto: 220, detect: "hold timer", start: agent(false)},
		{name: "FRR bgpd hold 9s", proto: 186, detect: "hold timer", start: startFailoverFRR(false)},
		{name: "bgplb-routeragent BFD 300ms x3, speaker SIGSTOP", bfd: true, proto: 220, detect: "BFD", start: agent(true), freeze: true},
		{name: "FRR bgpd+bfdd BFD 300ms x3, speaker SIGSTOP", bfd: true, proto: 186, detect: "BFD", start: startFailoverFRR(true), freeze: true},
		{name: "bgplb-routeragent hold 9s, speaker SIGSTOP", proto: 220, detect: "hold timer", start: agent(false), freeze: true},
	}
}

func startFailoverBIRD(bfd bool) func(b *testing.B, l *lab) []int {
	return func(b *testing.B, l *lab) []int {
		if _, err := os.Stat("/usr/sbin/bird"); err != nil {
			b.Fatal("bird is required (Debian package bird2)")
		}
		dir := routerDir(b, "")
		proto, on := "", ""
		if bfd {
			proto, on = failoverBIRDBFD, "bfd on;"
		}
		conf := filepath.Join(dir, "bird.conf")
		if err := os.WriteFile(conf, []byte(fmt.Sprintf(failoverBIRDConfig, proto, on)), 0o644); err != nil {
			b.Fatal(err)
		}
		cmd := startDaemon(b, l.router, "bird", "bird", "-f", "-c", conf, "-s", filepath.Join(dir, "bird.ctl"), "-P", filepath.Join(dir, "bird.pid"))
		return []int{cmd.Process.Pid}
	}
}

func startFailoverFRR(bfd bool) func(b *testing.B, l *lab) []int {
	return func(b *testing.B, l *lab) []int {
		extra := ""
		if bfd {
			extra = " neighbor NODES bfd\n"
		}
		pids, _ := startFRR(b, l.router, fmt.Sprintf(failoverFRRRouterConfig, extra), bfd, true)
		return pids
	}
}

// startFRR runs zebra, bgpd and (with bfd) bfdd in ns with one integrated
// configuration and returns their pids and vty folder; listen says whether
// bgpd listens.
func startFRR(b *testing.B, ns *netnstest.NS, conf string, bfd, listen bool) ([]int, string) {
	for _, bin := range []string{"/usr/lib/frr/zebra", "/usr/lib/frr/bgpd", "/usr/lib/frr/bfdd"} {
		if _, err := os.Stat(bin); err != nil {
			b.Fatalf("FRR is required (Debian package frr): %v", err)
		}
	}
	dir := routerDir(b, "frr:frr")
	p := filepath.Join(dir, "frr.conf")
	if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
		b.Fatal(err)
	}
	zsock := filepath.Join(dir, "zserv.api")
	common := []string{"-u", "frr", "-g", "frr", "--vty_socket", dir, "-z", zsock}
	zebra := startDaemon(b, ns, "zebra@"+ns.Name, append([]string{"/usr/lib/frr/zebra", "-f", p, "-i", filepath.Join(dir, "zebra.pid")}, common...)...)
	waitPathB(b, zsock)
	pids := []int{zebra.Process.Pid}
	if bfd {
		bfdd := startDaemon(b, ns, "bfdd@"+ns.Name, append([]string{"/usr/lib/frr/bfdd", "-f", p, "-i", filepath.Join(dir, "bfdd.pid"),
			"--bfdctl", filepath.Join(dir, "bfdd.sock")}, common...)...)
		waitPathB(b, filepath.Join(dir, "bfdd.vty"))
		pids = append(pids, bfdd.Process.Pid)
	}
	port := "179"
	if !listen {
		port = "0"
	}
	bgpd := startDaemon(b, ns, "bgpd@"+ns.Name, append([]string{"/usr/lib/frr/bgpd", "-f", p, "-i", filepath.Join(dir, "bgpd.pid"), "-p", port}, common...)...)
	waitPathB(b, filepath.Join(dir, "bgpd.vty"))
	return append(pids, bgpd.Process.Pid), dir
}

func waitPathB(b *testing.B, p string) {
	b.Helper()
	for i := 0; i < 400; i++ {
		if _, err := os.Stat(p); err == nil {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	b.Fatalf("%s did not appear", p)
}

// frrNode is one FRR node: its namespace, its vty folder and a netlink
// handle for its LAN link.
type frrNode struct {
	addr string
	ns   *netnstest.NS
	dir  string
	h    *netlink.Handle
	// speaker are the pids of bgpd and bfdd.
	speaker []int
}

func startFRRNode(b *testing.B, l *lab, short, addr string, bfd bool) *frrNode {
	ns := l.host(b, short, addr)
	extra := ""
	if bfd {
		extra = " neighbor 192.168.2.1 bfd\n"
	}
	pids, dir := startFRR(b, ns, fmt.Sprintf(failoverNodeConfig, addr, extra), bfd, false)
	h, err := netlink.NewHandleAt(ns.Handle())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(h.Close)
	// zebra (pids[0]) installs nothing the router sees: the speaker is
	// bgpd and, with BFD, bfdd.
	return &frrNode{addr: addr, ns: ns, h: h, dir: dir, speaker: pids[1:]}
}

// freeze stops (SIGSTOP) or continues (SIGCONT) the node's speaker
// processes, by pid.
func (n *frrNode) freeze(b *testing.B, stop bool) {
	sig := syscall.SIGCONT
	if stop {
		sig = syscall.SIGSTOP
	}
	for _, pid := range n.speaker {
		if err := syscall.Kill(pid, sig); err != nil {
			b.Fatalf("%v to %d: %v", sig, pid, err)
		}
	}
}

// bfdUp says whether the node's bfdd has its session with the router Up.
func (n *frrNode) bfdUp() bool {
	out, err := n.ns.Try("vtysh", "--vty_socket", n.dir, "-c", "show bfd peers json")
	if err != nil {
		return false
	}
	var ps []struct {
		Peer   string `json:"peer"`
		Status string `json:"status"`
	}
	if json.Unmarshal([]byte(out), &ps) != nil {
		return false
	}
	for _, p := range ps {
		if p.Peer == "192.168.2.1" && p.Status == "up" {
			return true
		}
	}
	return false
}

func (n *frrNode) setLink(b *testing.B, up bool) {
	link, err := n.h.LinkByName("eth0")
	if err != nil {
		b.Fatal(err)
	}
	if up {
		err = n.h.LinkSetUp(link)
	} else {
		err = n.h.LinkSetDown(link)
	}
	if err != nil {
		b.Fatalf("link of %s up=%v: %v", n.addr, up, err)
	}
}

// routeNextHops returns the next hops of failoverPrefix in the router's
// main table that carry proto (any metric: FRR and BIRD use their own).
func routeNextHops(h *netlink.Handle, proto int) []string {
	p := netip.MustParsePrefix(failoverPrefix)
	rts, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN,
		Dst: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(32, 32)}}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil
	}
	for _, rt := range rts {
		if int(rt.Protocol) != proto {
			continue
		}
		var nhs []string
		if rt.Gw != nil {
			nhs = append(nhs, rt.Gw.String())
		}
		for _, nh := range rt.MultiPath {
			nhs = append(nhs, nh.Gw.String())
		}
		slices.Sort(nhs)
		return nhs
	}
	return nil
}

// failoverResult is one row.
type failoverResult struct {
	c          failoverCase
	took       []time.Duration
	cpuPerSess time.Duration // router CPU per session and second, steady state
	skipped    string
}

// BenchmarkFailover prints, side by side, link cut -> next hop gone from the
// router's kernel route, p50/p99/max over BGPLB_BENCH_FAILOVER_N cuts (20 by
// default; hold-timer cases 5 unless BGPLB_BENCH_FAILOVER_N is set).
func BenchmarkFailover(b *testing.B) {
	if os.Getenv("BGPLB_BENCH_FAILOVER") == "" {
		b.Skip("set BGPLB_BENCH_FAILOVER=1 (make bench-failover): needs FRR and BIRD and takes minutes")
	}
	cases := failoverCases()
	if only := os.Getenv("BGPLB_BENCH_FAILOVER_ONLY"); only != "" {
		cases = slicesFilter(cases, func(c failoverCase) bool { return strings.Contains(c.name, only) })
	}
	var rows []failoverResult
	for _, c := range cases {
		b.Run(strings.ReplaceAll(c.name, " ", "_"), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if i > 0 {
					continue
				}
				res := runFailover(b, c)
				rows = append(rows, res)
				if len(res.took) > 0 {
					b.ReportMetric(float64(pct(res.took, 50).Microseconds())/1000, "p50-ms")
					b.ReportMetric(float64(pct(res.took, 99).Microseconds())/1000, "p99-ms")
				}
			}
		})
	}
	fmt.Print(failoverTable(rows))
}

func runFailover(b *testing.B, c failoverCase) failoverResult {
	res := failoverResult{c: c}
	n := 20
	if !c.bfd {
		n = 5
	}
	if v, err := strconv.Atoi(os.Getenv("BGPLB_BENCH_FAILOVER_N")); err == nil && v > 0 {
		n = v
	}
	l := newLab(b)
	l.router.Exec("sysctl", "-qw", "net.ipv4.ip_forward=1")
	pids := c.start(b, l)
	var nodes []*frrNode
	for i, a := range failoverNodes {
		nodes = append(nodes, startFRRNode(b, l, fmt.Sprintf("fn%d", i), a, c.bfd))
	}
	if c.freeze {
		// A frozen speaker must go on before the daemons' cleanup stops
		// them, also when the benchmark fails midway.
		b.Cleanup(func() {
			for _, n := range nodes {
				for _, pid := range n.speaker {
					_ = syscall.Kill(pid, syscall.SIGCONT)
				}
			}
		})
	}
	both := func() bool { return slices.Equal(routeNextHops(l.h, c.proto), failoverNodes) }
	waitFor(b, "the route over both nodes", both)
	if c.bfd {
		deadline := time.Now().Add(20 * time.Second)
		for !nodes[0].bfdUp() || !nodes[1].bfdUp() {
			if time.Now().After(deadline) {
				if strings.HasPrefix(c.name, "bgplb") {
					res.skipped = "the nodes' BFD sessions with the agent never came Up (agent BFD not wired?)"
					b.Log(res.skipped)
					return res
				}
				b.Fatalf("%s: the nodes' BFD sessions never came Up", c.name)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// Router CPU in the steady state: both sessions Up (BFD at 300 ms when
	// on), nothing else happening.
	time.Sleep(2 * time.Second)
	cpu0 := cpuTime(pids)
	const window = 10 * time.Second
	time.Sleep(window)
	res.cpuPerSess = (cpuTime(pids) - cpu0) / time.Duration(len(nodes)) / time.Duration(window/time.Second)

	ch := make(chan netlink.RouteUpdate, 256)
	done := make(chan struct{})
	defer close(done)
	ns := l.router.Handle()
	if err := netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{Namespace: &ns}); err != nil {
		b.Fatal(err)
	}
	other := failoverNodes[1:]
	for i := 0; i < n; i++ {
		waitFor(b, "the route over both nodes", both)
		if c.bfd {
			waitFor(b, "BFD Up on the cut node", nodes[0].bfdUp)
		}
		time.Sleep(time.Second) // let the session settle (BFD's slow start, BGP updates)
		for len(ch) > 0 {
			<-ch
		}
		t0 := time.Now()
		if c.freeze {
			nodes[0].freeze(b, true)
		} else {
			nodes[0].setLink(b, false)
		}
		poll := time.NewTicker(5 * time.Millisecond)
		deadline := time.After(60 * time.Second)
		var took time.Duration
		for took == 0 {
			select {
			case <-ch:
			case <-poll.C:
			case <-deadline:
				b.Fatalf("%s: the cut node's next hop still in the route 60 s after the cut: %v", c.name, routeNextHops(l.h, c.proto))
			}
			if slices.Equal(routeNextHops(l.h, c.proto), other) {
				took = time.Since(t0)
			}
		}
		poll.Stop()
		res.took = append(res.took, took)
		b.Logf("%s: cut %d: %v", c.name, i+1, took.Round(time.Millisecond))
		if c.freeze {
			nodes[0].freeze(b, false)
		} else {
			nodes[0].setLink(b, true)
		}
	}
	return res
}

// cpuTime sums the CPU time of the processes' threads (schedstat: ns).
func cpuTime(pids []int) time.Duration {
	var sum time.Duration
	for _, pid := range pids {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
		for _, t := range tasks {
			bs, err := os.ReadFile(t)
			if err != nil {
				continue
			}
			if f := strings.Fields(string(bs)); len(f) > 0 {
				ns, _ := strconv.ParseInt(f[0], 10, 64)
				sum += time.Duration(ns)
			}
		}
	}
	return sum
}

func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p + 99) / 100
	if i < 1 {
		i = 1
	}
	return s[i-1]
}

func failoverTable(rows []failoverResult) string {
	var sb strings.Builder
	sb.WriteString("| router | detection | cuts | p50 | p99 | max | router CPU per session (steady) |\n|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		if r.skipped != "" {
			fmt.Fprintf(&sb, "| %s | %s | skipped: %s | | | | |\n", r.c.name, r.c.detect, r.skipped)
			continue
		}
		ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }
		fmt.Fprintf(&sb, "| %s | %s | %d | %s | %s | %s | %.0f µs/s |\n", r.c.name, r.c.detect, len(r.took),
			ms(pct(r.took, 50)), ms(pct(r.took, 99)), ms(slices.Max(r.took)), float64(r.cpuPerSess.Nanoseconds())/1000)
	}
	sb.WriteString("load average: " + loadAvg() + "\n")
	return sb.String()
}
