package agent

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const benchConfig = `asn: 64500
routerID: 192.168.2.1
neighbors:
  - prefix: 192.168.2.0/24
    asn: 64512
    allowUnauthenticated: true # the benchmark's speakers have no secret
    maxPrefixes: 20000
serviceSubnets: [10.200.0.0/16]
lanInterfaces: [lan0]
firewall: {mode: "off"}
metrics: {address: "off"}
log: {level: warn}
`

// routeWatch delivers our route additions and deletions in the router namespace.
func routeWatch(b testing.TB, l *lab) <-chan netlink.RouteUpdate {
	ch := make(chan netlink.RouteUpdate, 65536)
	done := make(chan struct{})
	b.Cleanup(func() { close(done) })
	ns := l.router.Handle()
	if err := netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{Namespace: &ns, ReceiveBufferSize: 1 << 24}); err != nil {
		b.Fatal(err)
	}
	return ch
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*p)]
}

// BenchmarkUpdateToKernel measures one /32 from the speaker's AddPath (in
// its own namespace and process) to the route in the router's kernel FIB
// (netlink notification), through the real agent binary: BGP UPDATE over
// veth, GoBGP, policy, reconcile, netlink. Withdrawals are measured too.
func BenchmarkUpdateToKernel(b *testing.B) {
	l := newLab(b)
	s1ns := l.host(b, "s1", "192.168.2.20")
	l.startAgent(b, l.writeConfigFrom(b, benchConfig, ""))
	sp := startSpeaker(b, s1ns, "192.168.2.20")
	sp.do("up")
	ch := routeWatch(b, l)
	wait := func(dst string, typ uint16) {
		for {
			select {
			case u := <-ch:
				if u.Type == typ && u.Dst != nil && u.Dst.String() == dst {
					return
				}
			case <-time.After(30 * time.Second):
				b.Fatalf("no route event for %s", dst)
			}
		}
	}
	var add, del []time.Duration
	base := netip.MustParseAddr("10.200.0.0")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		base = base.Next()
		p := netip.PrefixFrom(base, 32).String()
		t0 := time.Now()
		fmt.Fprintln(sp.in, "announce "+p)
		wait(p, unix.RTM_NEWROUTE)
		add = append(add, time.Since(t0))
		readOK(b, sp)
		t0 = time.Now()
		fmt.Fprintln(sp.in, "withdraw "+p)
		wait(p, unix.RTM_DELROUTE)
		del = append(del, time.Since(t0))
		readOK(b, sp)
	}
	b.StopTimer()
	b.ReportMetric(float64(percentile(add, 0.5).Microseconds())/1000, "add-median-ms")
	b.ReportMetric(float64(percentile(add, 0.99).Microseconds())/1000, "add-p99-ms")
	b.ReportMetric(float64(percentile(del, 0.5).Microseconds())/1000, "withdraw-median-ms")
	b.ReportMetric(float64(percentile(del, 0.99).Microseconds())/1000, "withdraw-p99-ms")
}

func readOK(b testing.TB, s *speaker) {
	if r, err := s.out.ReadString('\n'); err != nil || strings.TrimSpace(r) != "ok" {
		b.Fatalf("speaker: %q %v", r, err)
	}
}

// BenchmarkScale10k announces 10,000 /32s from one speaker and measures the
// time until all are in the kernel, then the agent's RSS and its CPU use
// over 5 idle seconds. It measures once, whatever b.N is (one run takes
// several seconds; each would need its own namespaces). With
// BGPLB_SCALE10K_VERDICTS=1 the speaker negotiates ADD-PATH receive, as
// bgplb-speaker does, so the agent also sends it the 10,000 verdicts
// (docs/verdict.md), and the measurement waits until it has.
func BenchmarkScale10k(b *testing.B) {
	verdicts := os.Getenv("BGPLB_SCALE10K_VERDICTS") != ""
	var speakerEnv []string
	if verdicts {
		speakerEnv = append(speakerEnv, "SPK_ADDPATH=1")
	}
	for i := 0; i < b.N; i++ {
		if i > 0 {
			continue
		}
		l := newLab(b)
		s1ns := l.host(b, "s1", "192.168.2.20")
		agent := l.startAgent(b, l.writeConfigFrom(b, benchConfig, ""))
		sp := startSpeakerTo(b, s1ns, "192.168.2.20", "192.168.2.1", speakerEnv...)
		sp.do("up")
		ch := routeWatch(b, l)
		t0 := time.Now()
		fmt.Fprintln(sp.in, "announce-range 10.200.0.1 10000")
		announced := make(chan time.Duration, 1)
		go func() {
			r, err := sp.out.ReadString('\n')
			if err != nil || strings.TrimSpace(r) != "ok" {
				b.Errorf("speaker: %q %v", r, err)
			}
			announced <- time.Since(t0)
		}()
		seen := map[string]bool{}
		for len(seen) < 10000 {
			select {
			case u := <-ch:
				if u.Type == unix.RTM_NEWROUTE && int(u.Protocol) == 220 {
					seen[u.Dst.String()] = true
				}
			case <-time.After(60 * time.Second):
				b.Fatalf("only %d routes after 60s without progress", len(seen))
			}
		}
		took := time.Since(t0)
		b.ReportMetric((<-announced).Seconds(), "s-speaker-announced")
		if verdicts {
			for sent := 0; sent < 10000; {
				sent = 0
				for _, p := range l.status(b).Peers {
					if p.Verdicts != nil {
						sent += p.Verdicts.Sent
					}
				}
				if time.Since(t0) > 2*time.Minute {
					b.Fatalf("only %d verdicts sent after 2 minutes", sent)
				}
				time.Sleep(100 * time.Millisecond)
			}
			b.ReportMetric(time.Since(t0).Seconds(), "s-to-10k-verdicts")
		}
		pid := agent.cmd.Process.Pid
		time.Sleep(4 * time.Second) // settle (the agent releases its heap 1 s after a burst)
		cpu0 := cpuTicks(b, pid)
		time.Sleep(5 * time.Second)
		cpu1 := cpuTicks(b, pid)
		b.ReportMetric(took.Seconds(), "s-to-10k-routes")
		b.ReportMetric(float64(rssKB(b, pid))/1024, "agent-RSS-MB")
		b.ReportMetric(float64(cpu1-cpu0)/100/5*100, "idle-CPU-%")
		agent.kill(unix.SIGTERM)
	}
}

func rssKB(b testing.TB, pid int) int {
	bs, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(bs), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			n, _ := strconv.Atoi(strings.Fields(line)[1])
			return n
		}
	}
	return 0
}

// cpuTicks is utime+stime of pid in clock ticks (USER_HZ = 100).
func cpuTicks(b testing.TB, pid int) int {
	bs, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	s := string(bs)
	f := strings.Fields(s[strings.LastIndex(s, ")")+2:])
	u, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return u + st
}
