// The test binary runs the agent (see TestMain): like the real binary, its
// listeners must not be MPTCP, which refuses TCP-MD5 keys.
//
//go:debug multipathtcp=0
package agent

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/bgplb/bgplb/internal/netnstest"
	"github.com/bgplb/bgplb/routeragent/bgp/bgptest"
	"github.com/bgplb/bgplb/routeragent/firewall"
)

// The test binary doubles as the agent, a BGP speaker and a TCP client or
// server, each run inside a namespace with `ip netns exec` (a whole process
// lives in one namespace; goroutines of one process cannot).
const roleEnv = "BGPLB_TEST_ROLE"

func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case "agent":
		if p := os.Getenv("BGPLB_TEST_MEMPROFILE"); p != "" {
			// Write a heap profile once the benchmark has settled.
			after := 6 * time.Second
			if d, err := time.ParseDuration(os.Getenv("BGPLB_TEST_MEMPROFILE_AFTER")); err == nil {
				after = d
			}
			go func() {
				time.Sleep(after)
				if f, err := os.Create(p); err == nil {
					_ = pprof.Lookup("heap").WriteTo(f, 0)
					f.Close()
				}
			}()
		}
		if p := os.Getenv("BGPLB_TEST_CPUPROFILE"); p != "" {
			f, err := os.Create(p)
			if err == nil && pprof.StartCPUProfile(f) == nil {
				code := CLIMain(os.Args[1:], os.Stdout, os.Stderr)
				pprof.StopCPUProfile()
				f.Close()
				os.Exit(code)
			}
		}
		os.Exit(CLIMain(os.Args[1:], os.Stdout, os.Stderr))
	case "speaker":
		os.Exit(speakerRole())
	case "gobgpfloor":
		os.Exit(gobgpFloorRole())
	case "bgplbspeaker":
		os.Exit(bgplbSpeakerRole())
	case "tcploop":
		os.Exit(tcpLoopRole(os.Args[1]))
	case "tcpserver":
		os.Exit(tcpServerRole(os.Args[1]))
	case "tcpclient":
		os.Exit(tcpClientRole(os.Args[1]))
	}
	os.Exit(m.Run())
}

// speakerRole runs an in-process GoBGP speaker and obeys commands on stdin:
// "up" (wait for the session), "announce PREFIX [NEXTHOP]", "withdraw PREFIX".
// Each answers one line: "ok" or "err: ...".
func speakerRole() int {
	ctx := context.Background()
	asn, _ := strconv.Atoi(os.Getenv("SPK_ASN"))
	local := netip.MustParseAddr(os.Getenv("SPK_LOCAL"))
	id := local.String()
	if local.Is6() {
		// A BGP identifier is an IPv4 address.
		id = fmt.Sprintf("192.0.2.%d", local.As16()[15])
	}
	cfg := bgptest.Config{
		ASN: uint32(asn), RouterID: id,
		Local:     netip.MustParseAddr(os.Getenv("SPK_LOCAL")),
		Router:    netip.MustParseAddr(os.Getenv("SPK_ROUTER")),
		RouterASN: 64500, GracefulRestart: os.Getenv("SPK_NO_GR") == "", HoldTime: 9,
		Password: os.Getenv("SPK_PASSWORD"),
	}
	cfg.NoTTLSecurity = os.Getenv("SPK_NO_GTSM") != ""
	cfg.AddPathReceive = os.Getenv("SPK_ADDPATH") != ""
	if h, err := strconv.Atoi(os.Getenv("SPK_HOLD")); err == nil {
		cfg.HoldTime = uint64(h)
	}
	if ttl, err := strconv.Atoi(os.Getenv("SPK_TTL")); err == nil {
		cfg.TTL = uint8(ttl)
	}
	sp, err := bgptest.Start(ctx, cfg)
	if err != nil {
		fmt.Println("err:", err)
		return 1
	}
	defer sp.Stop()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 0 {
			continue
		}
		var err error
		switch f[0] {
		case "up":
			deadline := time.Now().Add(60 * time.Second)
			for !sp.Established(ctx) {
				if time.Now().After(deadline) {
					err = fmt.Errorf("session not established after 60s")
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
		case "announce":
			var nh netip.Addr
			if len(f) > 2 {
				nh = netip.MustParseAddr(f[2])
			}
			err = sp.Announce(ctx, netip.MustParsePrefix(f[1]), nh)
		case "withdraw":
			err = sp.Withdraw(ctx, netip.MustParsePrefix(f[1]))
		case "established": // ok while the session is established
			if !sp.Established(ctx) {
				err = fmt.Errorf("not established")
			}
		case "reset": // close the session (Cease) and connect again
			err = sp.Reset(ctx)
		case "announce-gshut": // announce-gshut PREFIX: with GRACEFUL_SHUTDOWN 65535:0 (RFC 8326)
			err = sp.Announce(ctx, netip.MustParsePrefix(f[1]), netip.Addr{}, 0xFFFF0000)
		case "announce-range": // announce-range FIRST COUNT: COUNT consecutive /32s
			a := netip.MustParseAddr(f[1])
			n, _ := strconv.Atoi(f[2])
			for i := 0; i < n && err == nil; i++ {
				err = sp.Announce(ctx, netip.PrefixFrom(a, 32), netip.Addr{})
				a = a.Next()
			}
		default:
			err = fmt.Errorf("unknown command %q", f[0])
		}
		if err != nil {
			fmt.Println("err:", err)
		} else {
			fmt.Println("ok")
		}
	}
	return 0
}

func tcpServerRole(addr string) int {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("listening")
	for {
		c, err := l.Accept()
		if err != nil {
			return 1
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}

// tcpClientRole connects, sends a line and expects it back within 3 s.
// tcpClientTimeoutEnv sets how long the tcpclient role waits for its echo
// (3 s by default) before it gives up and resets the connection.
const tcpClientTimeoutEnv = "BGPLB_TEST_TCPCLIENT_TIMEOUT"

func tcpClientRole(addr string) int {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		fmt.Println("dial:", err)
		return 1
	}
	defer c.Close()
	// Until the echo is back, closing (also by the test's SIGKILL) resets
	// the connection: with the default close, the kernel would go on
	// retransmitting the unanswered line from an orphaned socket for
	// minutes, and the next case's trace would see that stray flow.
	_ = c.(*net.TCPConn).SetLinger(0)
	timeout := 3 * time.Second
	if d, err := time.ParseDuration(os.Getenv(tcpClientTimeoutEnv)); err == nil {
		timeout = d
	}
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("hello bgplb\n")); err != nil {
		fmt.Println("write:", err)
		return 1
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "hello bgplb\n" {
		fmt.Printf("read: %q %v\n", line, err)
		return 1
	}
	_ = c.(*net.TCPConn).SetLinger(-1) // answered: an orderly close
	fmt.Println("echoed")
	return 0
}

func self(t testing.TB) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// logWriter sends a process's output to the test log.
type logWriter struct {
	t      testing.TB
	prefix string
	mu     sync.Mutex
	done   bool
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		for _, l := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
			w.t.Log(w.prefix + l)
		}
	}
	return len(p), nil
}

// proc is a helper process in a namespace, killed by pid at test end.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startRole(t testing.TB, ns *netnstest.NS, role string, env []string, stdin io.Reader, stdout io.Writer, args ...string) *proc {
	t.Helper()
	cmd := ns.Command(append([]string{self(t)}, args...)...)
	cmd.Env = append(append(os.Environ(), roleEnv+"="+role), env...)
	lw := &logWriter{t: t, prefix: role + "@" + ns.Name + ": "}
	cmd.Stderr = lw
	cmd.Stdout = lw
	if stdout != nil {
		cmd.Stdout = stdout
	}
	cmd.Stdin = stdin
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", role, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill(syscall.SIGKILL)
		lw.mu.Lock()
		lw.done = true
		lw.mu.Unlock()
	})
	return p
}

func startBinary(t testing.TB, ns *netnstest.NS, bin string, args ...string) *proc {
	t.Helper()
	cmd := ns.Command(append([]string{bin}, args...)...)
	lw := &logWriter{t: t, prefix: "agent@" + ns.Name + ": "}
	cmd.Stdout, cmd.Stderr = lw, lw
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill(syscall.SIGKILL)
		lw.mu.Lock()
		lw.done = true
		lw.mu.Unlock()
	})
	return p
}

// kill signals the process (ip netns exec execs it, so the pid is the
// helper's own) and waits for it to exit.
func (p *proc) kill(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	<-p.done
}

// speaker is a speakerRole process driven over its stdin/stdout.
type speaker struct {
	t    testing.TB
	proc *proc
	in   io.WriteCloser
	out  *bufio.Reader
}

func startSpeaker(t testing.TB, ns *netnstest.NS, local string) *speaker {
	t.Helper()
	return startSpeakerTo(t, ns, local, "192.168.2.1")
}

func startSpeakerTo(t testing.TB, ns *netnstest.NS, local, router string, env ...string) *speaker {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	p := startRole(t, ns, "speaker", append([]string{"SPK_ASN=64512", "SPK_LOCAL=" + local, "SPK_ROUTER=" + router}, env...), inR, outW)
	t.Cleanup(func() { inW.Close(); outW.Close() })
	return &speaker{t: t, proc: p, in: inW, out: bufio.NewReader(outR)}
}

func (s *speaker) do(line string) {
	s.t.Helper()
	if _, err := fmt.Fprintln(s.in, line); err != nil {
		s.t.Fatalf("speaker %q: %v", line, err)
	}
	resp, err := s.out.ReadString('\n')
	if err != nil || strings.TrimSpace(resp) != "ok" {
		s.t.Fatalf("speaker %q: %q %v", line, resp, err)
	}
}

// lab is the seed's L2: a switch namespace with a bridge, the router on
// 192.168.2.1/24 (lan0) and hosts plugged in on demand.
type lab struct {
	router *netnstest.NS
	plug   func(host *netnstest.NS, ifname, addr string)
	h      *netlink.Handle
	dir    string
}

func newLab(t testing.TB) *lab {
	t.Helper()
	sw := netnstest.New(t, "sw")
	r := netnstest.New(t, "rtr")
	plug := netnstest.Bridge(t, sw, "br0")
	plug(r, "lan0", "192.168.2.1/24")
	h, err := netlink.NewHandleAt(r.Handle())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return &lab{router: r, plug: plug, h: h, dir: t.TempDir()}
}

func (l *lab) host(t testing.TB, short, addr string) *netnstest.NS {
	t.Helper()
	ns := netnstest.New(t, short)
	l.plug(ns, "eth0", addr+"/24")
	return ns
}

const baseConfig = `asn: 64500
routerID: 192.168.2.1
neighbors:
  - prefix: 192.168.2.0/24
    asn: 64512
    # The lab's speakers have no TCP-MD5 secret (tests that need one add
    # an address: entry with passwordFile).
    allowUnauthenticated: true
    maxPrefixes: 2
serviceSubnets: [192.168.254.0/24]
lanInterfaces: [lan0]
routes: {resyncInterval: 2s, staleTimeout: 60s}
metrics: {address: "off"}
log: {level: debug}
`

func (l *lab) writeConfig(t testing.TB, extra string) string {
	return l.writeConfigFrom(t, baseConfig, extra)
}

func (l *lab) writeConfigFrom(t testing.TB, base, extra string) string {
	t.Helper()
	p := filepath.Join(l.dir, "routeragent.yaml")
	cfg := base + fmt.Sprintf("statusSocket: %s\nstateDir: %s\n", l.socket(), l.dir) + extra
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func (l *lab) socket() string { return filepath.Join(l.dir, "agent.sock") }

func (l *lab) startAgent(t testing.TB, cfgPath string) *proc {
	t.Helper()
	return l.startAgentEnv(t, cfgPath, nil)
}

func (l *lab) startAgentEnv(t testing.TB, cfgPath string, env []string) *proc {
	t.Helper()
	if bin := os.Getenv("BGPLB_TEST_AGENT_BIN"); bin != "" {
		// The built binary (for RSS figures without the test binary's extras).
		return startBinary(t, l.router, bin, "run", "--config", cfgPath)
	}
	return startRole(t, l.router, "agent", env, nil, nil, "run", "--config", cfgPath)
}

// status reads the agent's status, waiting for the socket.
func (l *lab) status(t testing.TB) Status {
	t.Helper()
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		s, _, err := FetchStatus(ctx, l.socket())
		cancel()
		if err == nil {
			return s
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("status: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// firewallStatus is the status's firewall section, waiting for the agent's
// first firewall pass to publish it: the rules reach the kernel before the
// status does, so a test that has just seen them may still read none.
func (l *lab) firewallStatus(t testing.TB) *firewall.Status {
	t.Helper()
	var f *firewall.Status
	waitFor(t, "the firewall section in the status", func() bool {
		f = l.status(t).Firewall
		return f != nil
	})
	return f
}

// waitFor polls cond until it holds; the test binary's -timeout bounds it.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after 90s waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kernelRoute returns the protocol and next hops of the route for prefix in
// the router's main table (metric 0), or -1 when there is none.
func (l *lab) kernelRoute(t testing.TB, prefix string) (int, []string) {
	t.Helper()
	p := netip.MustParsePrefix(prefix)
	rts, err := l.h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}}, netlink.RT_FILTER_DST)
	if err != nil {
		t.Fatal(err)
	}
	for _, rt := range rts {
		if rt.Priority != 0 {
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
		return int(rt.Protocol), nhs
	}
	return -1, nil
}

func (l *lab) hasRoute(t testing.TB, prefix string, nhs ...string) bool {
	proto, got := l.kernelRoute(t, prefix)
	if len(nhs) == 0 {
		return proto == -1
	}
	return proto == 220 && slices.Equal(got, nhs)
}
