package agent

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bgplb/bgplb/internal/netnstest"
)

// The side-by-side harness of issue 20 (make bench-routers): the same
// namespaces (a switch, the router, one namespace per speaker), the same
// GoBGP speakers (speakerRole), and on the router either the agent, BIRD 2.0
// or FRR 8.x (bgpd + zebra) from Debian. It is gated by BGPLB_BENCH_ROUTERS
// so that make bench (./...) does not run it: it takes minutes.

const routersAgentConfig = `asn: 64500
routerID: 192.168.2.1
neighbors:
  - prefix: 192.168.2.0/24
    asn: 64512
    allowUnauthenticated: true # the benchmark's speakers have no secret
    maxPrefixes: 150000
serviceSubnets: [10.0.0.0/8]
lanInterfaces: [lan0]
firewall: {mode: "off"}
metrics: {address: "off"}
log: {level: warn}
`

// BIRD as the router: dynamic neighbours from the LAN, every path into the
// kernel, ECMP (merge paths) for the 10-speaker case.
const routersBIRDConfig = `router id 192.168.2.1;
protocol device {}
protocol kernel {
  ipv4 { import none; export all; };
  merge paths yes limit 16;
}
protocol bgp speakers {
  local 192.168.2.1 as 64500;
  neighbor range 192.168.2.0/24 as 64512;
  hold time 9;
  ttl security yes; # GTSM, as the speakers (and the agent) use it
  ipv4 { import all; export none; };
}
`

// FRR as the router: what test/lab's frrConfig is, a user's hand-written
// configuration with dynamic neighbours and ECMP.
const routersFRRConfig = `frr defaults traditional
hostname bench-router
log stdout warnings
!
router bgp 64500
 bgp router-id 192.168.2.1
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 neighbor SPEAKERS peer-group
 neighbor SPEAKERS remote-as 64512
 bgp listen range 192.168.2.0/24 peer-group SPEAKERS
 bgp listen limit 100
 neighbor SPEAKERS timers 3 9
 address-family ipv4 unicast
  neighbor SPEAKERS activate
  maximum-paths 16
 exit-address-family
!
`

// benchRouter starts one router implementation in the lab's router
// namespace and returns the pids whose RSS counts, and the route protocol
// its kernel routes carry.
type benchRouter struct {
	name  string
	proto int
	start func(b *testing.B, l *lab) []int
	// floor: GoBGP v3 alone (benchfloor_test.go) instead of start; it
	// installs nothing and reports when its watch has every path.
	floor, floorAgentConf, floorNoWatch, floorBest bool
}

var benchRouters = []benchRouter{
	{name: "bgplb-routeragent", proto: 220, start: func(b *testing.B, l *lab) []int {
		p := l.startAgent(b, l.writeConfigFrom(b, routersAgentConfig, ""))
		return []int{p.cmd.Process.Pid}
	}},
	{name: "BIRD", proto: unix.RTPROT_BIRD, start: startBenchBIRD},
	{name: "FRR", proto: 186, start: startBenchFRR},
	{name: "GoBGP-floor", floor: true},
	{name: "GoBGP-floor+verdicts", floor: true, floorAgentConf: true},
	{name: "GoBGP-floor-bestpath", floor: true, floorBest: true},
	{name: "GoBGP-floor-nowatch", floor: true, floorNoWatch: true},
}

// routerDir is a folder the daemons (which may drop to their own user) can
// reach, removed at the end.
func routerDir(b *testing.B, owner string) string {
	dir, err := os.MkdirTemp("", "bgplb-bench-routers-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	if owner != "" {
		if out, err := exec.Command("chown", owner, dir).CombinedOutput(); err != nil {
			b.Fatalf("chown %s: %v: %s", dir, err, out)
		}
	}
	return dir
}

func startDaemon(b *testing.B, ns *netnstest.NS, name string, args ...string) *exec.Cmd {
	cmd := ns.Command(args...)
	lw := &logWriter{t: b, prefix: name + ": "}
	cmd.Stdout, cmd.Stderr = lw, lw
	if err := cmd.Start(); err != nil {
		b.Fatalf("start %s: %v", name, err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		lw.mu.Lock()
		lw.done = true
		lw.mu.Unlock()
	})
	return cmd
}

func startBenchBIRD(b *testing.B, l *lab) []int {
	if _, err := exec.LookPath("bird"); err != nil {
		b.Fatal("bird is required (Debian package bird2)")
	}
	dir := routerDir(b, "")
	conf := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(conf, []byte(routersBIRDConfig), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := startDaemon(b, l.router, "bird", "bird", "-f", "-c", conf, "-s", filepath.Join(dir, "bird.ctl"), "-P", filepath.Join(dir, "bird.pid"))
	return []int{cmd.Process.Pid}
}

func startBenchFRR(b *testing.B, l *lab) []int {
	if _, err := os.Stat("/usr/lib/frr/bgpd"); err != nil {
		b.Fatal("FRR is required (Debian package frr)")
	}
	dir := routerDir(b, "frr:frr")
	conf := filepath.Join(dir, "frr.conf")
	if err := os.WriteFile(conf, []byte(routersFRRConfig), 0o644); err != nil {
		b.Fatal(err)
	}
	zsock := filepath.Join(dir, "zserv.api")
	common := []string{"-u", "frr", "-g", "frr", "--vty_socket", dir, "-z", zsock}
	zebra := startDaemon(b, l.router, "zebra", append([]string{"/usr/lib/frr/zebra", "-f", conf, "-i", filepath.Join(dir, "zebra.pid")}, common...)...)
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(zsock); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	bgpd := startDaemon(b, l.router, "bgpd", append([]string{"/usr/lib/frr/bgpd", "-f", conf, "-i", filepath.Join(dir, "bgpd.pid"), "-p", "179"}, common...)...)
	return []int{zebra.Process.Pid, bgpd.Process.Pid}
}

// bulkCase is one row group of the table: speakers each announce the same
// routes /32s (so with several speakers every route is ECMP over all of
// them).
type bulkCase struct {
	name     string
	speakers int
	routes   int
}

// bulkResult is one row.
type bulkResult struct {
	bulk   bulkCase
	router string
	took   time.Duration // first AddPath to all routes (with all next hops) in the kernel
	rssKB  int           // two seconds later, summed over the router's processes
	probe  time.Duration // one more route from another speaker, sent a quarter into the bulk
	// probeWire: the same from its UPDATE leaving the speaker (the
	// kernel's timestamp), without the speaker's own delay; 0 if missed.
	probeWire time.Duration
	load      string // /proc/loadavg before the run
	// probeSeen: a poll found the probe's route (polling only).
	probeSeen bool
	polled    bool
}

// benchRouteEvents delivers the route events of the router's namespace with a
// forced 16 MB socket buffer; the channel closes if the kernel still drops
// some (then runBulk polls).
func benchRouteEvents(b *testing.B, l *lab) <-chan netlink.RouteUpdate {
	ch := make(chan netlink.RouteUpdate, 65536)
	done := make(chan struct{})
	b.Cleanup(func() { close(done) })
	ns := l.router.Handle()
	if err := netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{Namespace: &ns,
		ReceiveBufferSize: 1 << 24, ReceiveBufferForceSize: true, ErrorCallback: func(err error) { b.Logf("route events: %v", err) }}); err != nil {
		b.Fatal(err)
	}
	return ch
}

// pollRoutes counts the routes of proto with at least width next hops from
// a dump of the router's main table.
func pollRoutes(b *testing.B, l *lab, proto, width int, complete map[string]bool, probe string, res *bulkResult) {
	res.polled = true
	rts, err := l.h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		b.Logf("poll: %v", err)
		return
	}
	for _, rt := range rts {
		if rt.Dst == nil {
			continue
		}
		dst := rt.Dst.String()
		if dst == probe {
			res.probeSeen = true
			continue
		}
		if int(rt.Protocol) == proto && nextHops(rt) >= width {
			complete[dst] = true
		}
	}
}

// BenchmarkRouters prints, for the agent, BIRD and FRR side by side, the
// time from the speakers' first AddPath until all routes are in the
// router's kernel and the router's RSS two seconds later, with ratios to
// BIRD and FRR, and the load average. Run it with make bench-routers.
func BenchmarkRouters(b *testing.B) {
	if os.Getenv("BGPLB_BENCH_ROUTERS") == "" {
		b.Skip("set BGPLB_BENCH_ROUTERS=1 (make bench-routers): needs FRR and BIRD and takes minutes")
	}
	cases := []bulkCase{{"10k", 1, 10000}, {"100k", 1, 100000}, {"10x10k-ECMP", 10, 10000}}
	if only := os.Getenv("BGPLB_BENCH_ROUTERS_CASES"); only != "" {
		cases = slicesFilter(cases, func(c bulkCase) bool { return strings.Contains(","+only+",", ","+c.name+",") })
	}
	routers := benchRouters
	if only := os.Getenv("BGPLB_BENCH_ROUTERS_ONLY"); only != "" {
		routers = slicesFilter(routers, func(r benchRouter) bool { return strings.Contains(","+only+",", ","+r.name+",") })
	}
	var rows []bulkResult
	for _, c := range cases {
		for _, r := range routers {
			b.Run(c.name+"/"+r.name, func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					if i > 0 {
						continue // one run per lab; each needs its own namespaces
					}
					res := runBulk(b, c, r)
					rows = append(rows, res)
					b.ReportMetric(res.took.Seconds(), "s-to-kernel")
					b.ReportMetric(float64(res.rssKB)/1024, "RSS-MB")
					b.ReportMetric(float64(res.probe.Microseconds())/1000, "probe-ms")
					b.ReportMetric(float64(res.probeWire.Microseconds())/1000, "probe-wire-ms")
				}
			})
		}
	}
	if os.Getenv("BGPLB_BENCH_ROUTERS_PIN") != "" {
		fmt.Println("(BGPLB_BENCH_ROUTERS_PIN: the router's processes on CPU 0, the speakers' on CPU 1)")
	}
	fmt.Print(routersTable(rows))
}

func slicesFilter[T any](s []T, keep func(T) bool) []T {
	var out []T
	for _, x := range s {
		if keep(x) {
			out = append(out, x)
		}
	}
	return out
}

func loadAvg() string {
	bs, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(bs))
	return strings.Join(f[:3], " ")
}

// runBulk runs one router with one bulk case in a fresh lab.
func runBulk(b *testing.B, c bulkCase, r benchRouter) bulkResult {
	res := bulkResult{bulk: c, router: r.name, load: loadAvg()}
	l := newLab(b)
	var hosts []*netnstest.NS
	for i := 0; i < c.speakers; i++ {
		hosts = append(hosts, l.host(b, fmt.Sprintf("s%d", i), fmt.Sprintf("192.168.2.%d", 20+i)))
	}
	probeNS := l.host(b, "probe", "192.168.2.40")
	const probePrefix = "10.99.0.1/32"
	var pids []int
	var floor floorRun
	routerCPU, speakerCPU := -1, -1
	if os.Getenv("BGPLB_BENCH_ROUTERS_PIN") != "" {
		// The router on CPU 0, the speakers on CPU 1: as if the speakers
		// were other machines (on this 2-core machine they otherwise
		// take the router's CPU during a bulk).
		routerCPU, speakerCPU = 0, 1
	}
	onCPU(b, routerCPU, func() {
		if r.floor {
			floor = startBenchFloor(b, l, c, "10.128.0.1", probePrefix, r.floorAgentConf, r.floorNoWatch, r.floorBest)
			pids = []int{floor.pid}
		} else {
			pids = r.start(b, l)
		}
	})
	var sps []*speaker
	var probe *speaker
	onCPU(b, speakerCPU, func() {
		for i, h := range hosts {
			sps = append(sps, startSpeaker(b, h, fmt.Sprintf("192.168.2.%d", 20+i)))
		}
		probe = startSpeaker(b, probeNS, "192.168.2.40")
	})
	for _, sp := range sps {
		sp.do("up")
	}
	probe.do("up")
	updates := sentUpdates(b, probeNS, "eth0")
	var ch <-chan netlink.RouteUpdate
	if !r.floor {
		ch = benchRouteEvents(b, l)
	}

	var wg sync.WaitGroup
	t0 := time.Now()
	for _, sp := range sps {
		fmt.Fprintf(sp.in, "announce-range 10.128.0.1 %d\n", c.routes)
		wg.Go(func() {
			if r, err := sp.out.ReadString('\n'); err != nil || strings.TrimSpace(r) != "ok" {
				b.Errorf("speaker: %q %v", r, err)
			}
		})
	}
	complete := map[string]bool{}
	var probeSent time.Time
	var poll <-chan time.Time
	deadline := time.After(10 * time.Minute)
	for r.floor && (res.took == 0 || res.probe == 0) {
		select {
		case <-floor.quarter:
			probeSent = time.Now()
			fmt.Fprintln(probe.in, "announce "+probePrefix)
		case t := <-floor.complete:
			res.took = t.Sub(t0)
		case seen := <-floor.probe:
			res.probe = seen.Sub(probeSent)
			res.probeWire = fromUpdate(updates, probeSent, seen)
		case <-deadline:
			b.Fatalf("%s: not complete after 10 minutes (probe %v)", r.name, res.probe)
		}
	}
	for !r.floor && (len(complete) < c.routes || res.probe == 0) {
		select {
		case u, ok := <-ch:
			if !ok {
				// The kernel dropped events (ENOBUFS) and the
				// subscription ended: count from dumps instead.
				b.Logf("%s: route events lost after %d complete routes; polling the table", r.name, len(complete))
				ch, poll = nil, time.Tick(20*time.Millisecond)
				continue
			}
			if u.Type != unix.RTM_NEWROUTE || u.Dst == nil {
				continue
			}
			dst := u.Dst.String()
			if dst == probePrefix {
				if !probeSent.IsZero() && res.probe == 0 {
					seen := time.Now()
					res.probe = seen.Sub(probeSent)
					res.probeWire = fromUpdate(updates, probeSent, seen)
				}
				continue
			}
			if int(u.Protocol) != r.proto {
				continue
			}
			if nextHops(u.Route) >= c.speakers {
				complete[dst] = true
			} else {
				delete(complete, dst)
			}
			if len(complete) == c.routes && res.took == 0 {
				res.took = time.Since(t0)
			}
			if probeSent.IsZero() && len(complete) >= c.routes/4 {
				probeSent = time.Now()
				fmt.Fprintln(probe.in, "announce "+probePrefix)
			}
		case <-poll:
			pollRoutes(b, l, r.proto, c.speakers, complete, probePrefix, &res)
			if len(complete) >= c.routes && res.took == 0 {
				res.took = time.Since(t0)
			}
			if probeSent.IsZero() && len(complete) >= c.routes/4 {
				probeSent = time.Now()
				fmt.Fprintln(probe.in, "announce "+probePrefix)
			} else if !probeSent.IsZero() && res.probe == 0 && res.probeSeen {
				seen := time.Now()
				res.probe = seen.Sub(probeSent)
				res.probeWire = fromUpdate(updates, probeSent, seen)
			}
		case <-deadline:
			b.Fatalf("%s: only %d of %d routes after 10 minutes (probe %v)", r.name, len(complete), c.routes, res.probe)
		}
	}
	wg.Wait()
	readOK(b, probe)
	time.Sleep(2 * time.Second)
	for _, pid := range pids {
		res.rssKB += rssKB(b, pid)
	}
	if os.Getenv("BGPLB_TEST_CPUPROFILE") != "" {
		// The agent writes its CPU profile when it stops (SIGTERM), not
		// when the cleanup kills it.
		_ = unix.Kill(pids[0], unix.SIGTERM)
		exited(pids[0], 30*time.Second) // stopping GoBGP with 100,000 paths takes seconds
	}
	return res
}

// onCPU runs start, which starts processes, on an OS thread bound to cpu, so
// that those processes (and theirs: affinity is inherited over fork and
// exec) run on that CPU only; cpu < 0 runs start as it is.
func onCPU(b *testing.B, cpu int, start func()) {
	if cpu < 0 {
		start()
		return
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		b.Fatalf("sched_getaffinity: %v", err)
	}
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		b.Fatalf("sched_setaffinity CPU %d: %v", cpu, err)
	}
	// Restored before the thread goes back to the runtime (defers run
	// last in, first out).
	defer func() { _ = unix.SchedSetaffinity(0, &old) }()
	start()
}

// exited waits until process pid has exited (a zombie until its parent
// reaps it) or the time is up.
func exited(pid int, within time.Duration) {
	for end := time.Now().Add(within); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		bs, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return
		}
		// pid (comm) state ...: the state follows the last ')'.
		if i := strings.LastIndexByte(string(bs), ')'); i > 0 && i+2 < len(bs) && bs[i+2] == 'Z' {
			return
		}
	}
}

// sentUpdates reports the kernel's timestamp of every BGP UPDATE host
// sends on dev (a packet socket in its namespace, outgoing packets only:
// the probe host carries nothing else), until the benchmark ends.
func sentUpdates(b *testing.B, host *netnstest.NS, dev string) <-chan time.Time {
	out := make(chan time.Time, 16)
	var fd int
	err := host.Do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		// ETH_P_ALL: only those taps see outgoing packets; SOCK_DGRAM:
		// without the link-layer header.
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(htons(unix.ETH_P_ALL))); err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
			return err
		}
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200000})
	})
	if err != nil {
		b.Fatalf("packet socket in %s: %v", host.Name, err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	b.Cleanup(func() {
		close(done)
		wg.Wait()
		unix.Close(fd)
	})
	wg.Go(func() {
		buf, oob := make([]byte, 65536), make([]byte, 256)
		for {
			select {
			case <-done:
				return
			default:
			}
			n, oobn, _, from, err := unix.Recvmsg(fd, buf, oob, 0)
			if err != nil {
				continue // the receive timeout: look at done again
			}
			ll, ok := from.(*unix.SockaddrLinklayer)
			if !ok || ll.Pkttype != unix.PACKET_OUTGOING || ll.Protocol != htons(unix.ETH_P_IP) || !isBGPUpdate(buf[:n]) {
				continue
			}
			if at, ok := packetTime(oob[:oobn]); ok {
				select {
				case out <- at:
				default:
				}
			}
		}
	})
	return out
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// isBGPUpdate: an IPv4 TCP packet whose payload starts with a BGP UPDATE.
func isBGPUpdate(p []byte) bool {
	if len(p) < 20 || p[0]>>4 != 4 || p[9] != unix.IPPROTO_TCP {
		return false
	}
	ihl := int(p[0]&0x0f) * 4
	if len(p) < ihl+20 {
		return false
	}
	tcp := p[ihl:]
	if binary.BigEndian.Uint16(tcp[0:2]) != 179 && binary.BigEndian.Uint16(tcp[2:4]) != 179 {
		return false
	}
	payload := tcp[int(tcp[12]>>4)*4:]
	return len(payload) >= 19 && payload[18] == 2 // the type after the 16-byte marker and the length
}

// packetTime reads the SO_TIMESTAMPNS control message.
func packetTime(oob []byte) (time.Time, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return time.Time{}, false
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SO_TIMESTAMPNS && len(m.Data) >= 16 {
			sec := int64(binary.NativeEndian.Uint64(m.Data[0:8]))
			nsec := int64(binary.NativeEndian.Uint64(m.Data[8:16]))
			return time.Unix(sec, nsec), true
		}
	}
	return time.Time{}, false
}

// fromUpdate is the time from the probe's UPDATE (the first sent after
// probeSent) to seen; 0 when none was captured.
func fromUpdate(updates <-chan time.Time, probeSent, seen time.Time) time.Duration {
	for {
		select {
		case at := <-updates:
			if at.Before(probeSent) {
				continue
			}
			return seen.Sub(at)
		case <-time.After(time.Second):
			return 0
		}
	}
}

func nextHops(rt netlink.Route) int {
	if len(rt.MultiPath) > 0 {
		return len(rt.MultiPath)
	}
	if rt.Gw != nil {
		return 1
	}
	return 0
}

// routersTable renders the results with ratios to BIRD and FRR of the same
// case (measured in the same run).
func routersTable(rows []bulkResult) string {
	ref := map[string]bulkResult{}
	for _, r := range rows {
		ref[r.bulk.name+"/"+r.router] = r
	}
	ratio := func(x, y float64) string {
		if y == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", x/y)
	}
	var sb strings.Builder
	sb.WriteString("(* counted from 20 ms table dumps: the kernel dropped route events; GoBGP-floor rows: GoBGP v3 alone,\n")
	sb.WriteString("to its watch having every path, no kernel route; +verdicts: with the agent's ADD-PATH send; -bestpath: GoBGP's best-path\n")
	sb.WriteString("watch with multipath instead of the agent's per-path one; -nowatch: no watch, the RIB looked up every 2 ms)\n\n")
	sb.WriteString("| case | router | to kernel | ×BIRD | ×FRR | RSS +2 s | ×BIRD | ×FRR | one more route during the bulk | from its UPDATE | load average |\n")
	sb.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		bird, frr := ref[r.bulk.name+"/BIRD"], ref[r.bulk.name+"/FRR"]
		polled := ""
		if r.polled {
			polled = "*"
		}
		fmt.Fprintf(&sb, "| %s | %s | %.2f s%s | %s | %s | %.1f MB | %s | %s | %.1f ms | %.1f ms | %s |\n",
			r.bulk.name, r.router, r.took.Seconds(), polled,
			ratio(r.took.Seconds(), bird.took.Seconds()), ratio(r.took.Seconds(), frr.took.Seconds()),
			float64(r.rssKB)/1024, ratio(float64(r.rssKB), float64(bird.rssKB)), ratio(float64(r.rssKB), float64(frr.rssKB)),
			float64(r.probe.Microseconds())/1000, float64(r.probeWire.Microseconds())/1000, r.load)
	}
	return sb.String()
}
