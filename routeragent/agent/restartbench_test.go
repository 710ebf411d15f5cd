package agent

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// tcpLoopRole sends short requests (connect, one line, its echo, close)
// to addr until its stdin closes, then prints "ok N failed M".
func tcpLoopRole(addr string) int {
	var ok, failed atomic.Int64
	stop := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()
	for {
		select {
		case <-stop:
			fmt.Printf("ok %d failed %d\n", ok.Load(), failed.Load())
			return 0
		default:
		}
		if err := oneRequest(addr); err != nil {
			failed.Add(1)
			fmt.Fprintln(os.Stderr, "request:", err)
		} else {
			ok.Add(1)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func oneRequest(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("hello bgplb\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "hello bgplb\n" {
		return fmt.Errorf("echo %q", line)
	}
	return nil
}

// BenchmarkAgentRestartRequests: a client on the LAN sends short requests
// through the router to a Service on two nodes (real speakers with a
// default BGPPeer) while the agent is restarted as systemctl restart does
// (SIGTERM, wait, start) BGPLB_BENCH_RESTARTS times (default 5); each
// restart waits until the sessions are back and the stale phase is over.
// It prints the requests and how many failed (the target is none).
func BenchmarkAgentRestartRequests(b *testing.B) {
	if os.Getenv("BGPLB_BENCH_FAILOVER") == "" {
		b.Skip("set BGPLB_BENCH_FAILOVER=1 (make bench-failover): takes a minute or more")
	}
	restarts := 5
	if v, err := strconv.Atoi(os.Getenv("BGPLB_BENCH_RESTARTS")); err == nil && v > 0 {
		restarts = v
	}
	for i := 0; i < b.N; i++ {
		if i > 0 {
			continue
		}
		l := newLab(b)
		l.router.Exec("sysctl", "-qw", "net.ipv4.ip_forward=1")
		client := l.host(b, "cl", "192.168.2.109")
		client.Exec("ip", "route", "add", "192.168.254.0/24", "via", "192.168.2.1")
		cfg := l.writeConfig(b, "firewall: {mode: \"off\"}\n")
		agent := l.startAgent(b, cfg)
		addrs := []string{"192.168.2.20", "192.168.2.21"}
		for j, a := range addrs {
			ns := l.host(b, fmt.Sprintf("rn%d", j), a)
			sp := bgplbSpeakerIn(b, ns, a)
			ns.Exec("ip", "addr", "add", "192.168.254.1/32", "dev", "lo")
			srvOut := &lineWaiter{ch: make(chan string, 4)}
			startRole(b, ns, "tcpserver", nil, nil, srvOut, "192.168.254.1:3142")
			<-srvOut.ch
			sp.do("up")
			sp.do("announce 192.168.254.1/32")
		}
		waitFor(b, "the route over both nodes", func() bool { return l.hasRoute(b, "192.168.254.1/32", addrs...) })
		cmd := client.Command(self(b), "192.168.254.1:3142")
		cmd.Env = append(os.Environ(), roleEnv+"=tcpclient")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("no request gets through before the restarts: %v: %s", err, out)
		}
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		startRole(b, client, "tcploop", nil, inR, outW, "192.168.254.1:3142")
		b.Cleanup(func() { inW.Close(); outW.Close() })
		time.Sleep(2 * time.Second)
		var took []time.Duration
		for r := 0; r < restarts; r++ {
			t0 := time.Now()
			agent.kill(syscall.SIGTERM)
			agent = l.startAgent(b, cfg)
			waitFor(b, "sessions back with End-of-RIB and no stale next hop", func() bool {
				st := l.status(b)
				up := 0
				for _, p := range st.Peers {
					if p.Up && p.EndOfRIB {
						up++
					}
				}
				return up == len(addrs) && st.Routes.Stale == 0
			})
			took = append(took, time.Since(t0))
			time.Sleep(time.Second)
		}
		inW.Close()
		res, err := bufio.NewReader(outR).ReadString('\n')
		if err != nil {
			b.Fatal(err)
		}
		var ok, failed int
		if _, err := fmt.Sscanf(strings.TrimSpace(res), "ok %d failed %d", &ok, &failed); err != nil {
			b.Fatalf("client loop said %q", res)
		}
		b.ReportMetric(float64(failed), "failed")
		b.ReportMetric(float64(ok), "ok")
		fmt.Printf("agent restarts (SIGTERM, start, sessions back with End-of-RIB): %d, each %v; requests through the router: %d ok, %d failed\n",
			restarts, took, ok, failed)
	}
}
