// Package netnstest creates throwaway network namespaces for tests that need
// the real kernel (routes, sysctls, iptables, BGP between hosts).
//
// Every namespace, link and process a test creates through this package is
// registered with t.Cleanup and removed by its exact name or pid, also when the
// test fails. Nothing in the root namespace is touched other than creating
// and deleting the named namespaces.
package netnstest

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// Prefix starts the name of every namespace made by this package, so that a
// leftover one is recognisable as ours.
const Prefix = "bgplbt-"

// RequireRoot skips the test, saying why, when the process cannot create
// network namespaces. CI runs as root, so these tests run there.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: this test needs root to create network namespaces (CI runs it as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("the ip command (iproute2) is required: %v", err)
	}
}

// RequirePrecondition skips the test when err says a precondition other
// than root is missing (a kernel feature, a Debian tool), saying which. Under
// `make test`, which CI runs as root on a machine hack/install-deps.sh has
// prepared, nothing may be missing: there it fails instead, so that a test
// never turns green in CI without running (`make test` sets
// BGPLB_REQUIRE_ENVTEST=1, the same marker internal/testenv reads).
func RequirePrecondition(t testing.TB, err error, what string) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("BGPLB_REQUIRE_ENVTEST") == "1" {
		t.Fatalf("%s: %v (make test requires it: hack/install-deps.sh prepares the machine)", what, err)
	}
	t.Skipf("skipping: %s: %v", what, err)
}

// NS is a named network namespace created for one test.
type NS struct {
	Name string
	t    testing.TB
}

// New creates a namespace named Prefix+<short>+<random>, brings its loopback
// up, and deletes it when the test ends.
func New(t testing.TB, short string) *NS {
	t.Helper()
	RequireRoot(t)
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	name := Prefix + short + "-" + hex.EncodeToString(b)
	if len(name) > 64 {
		t.Fatalf("namespace name %q too long", name)
	}
	sweepOnce.Do(func() {
		swept, err := Sweep()
		if len(swept) > 0 {
			t.Logf("removed namespaces left by killed test processes: %v", swept)
		}
		if err != nil {
			t.Logf("sweeping namespaces of killed test processes: %v", err)
		}
	})
	if err := register(name); err != nil {
		t.Fatalf("register namespace %s in %s: %v", name, RegistryDir, err)
	}
	Run(t, "ip", "netns", "add", name)
	ns := &NS{Name: name, t: t}
	t.Cleanup(func() {
		// Deleting the namespace removes its links, routes and rules with it.
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			t.Logf("cleanup: ip netns delete %s: %v: %s", name, err, out)
			return
		}
		unregister(name)
	})
	ns.Exec("ip", "link", "set", "lo", "up")
	return ns
}

// Exec runs a command inside the namespace and fails the test on error. It
// returns the combined output.
func (n *NS) Exec(args ...string) string {
	n.t.Helper()
	return Run(n.t, append([]string{"ip", "netns", "exec", n.Name}, args...)...)
}

// Try runs a command inside the namespace and returns its output and error
// without failing the test.
func (n *NS) Try(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...).CombinedOutput()
	return string(out), err
}

// Command returns an unstarted command that runs inside the namespace.
func (n *NS) Command(args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...)
}

// Start starts a long-running command inside the namespace and kills it (by
// its pid) when the test ends.
func (n *NS) Start(args ...string) *exec.Cmd {
	n.t.Helper()
	cmd := n.Command(args...)
	cmd.Stdout = &testWriter{t: n.t, prefix: n.Name + ": "}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		n.t.Fatalf("start %v in %s: %v", args, n.Name, err)
	}
	n.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// Do runs f on an OS thread switched into the namespace. Netlink handles,
// /proc/sys/net and exec'd children created inside f belong to the namespace.
func (n *NS) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The thread is never unlocked: it dies with the goroutine, so a
		// thread left in the wrong namespace is never reused.
		runtime.LockOSThread()
		target, err := netns.GetFromName(n.Name)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", n.Name, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", n.Name, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// Handle returns a netns handle for the namespace, closed at test end.
func (n *NS) Handle() netns.NsHandle {
	n.t.Helper()
	h, err := netns.GetFromName(n.Name)
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { h.Close() })
	return h
}

// Veth connects two namespaces with a veth pair: ifA in a with addrA (CIDR)
// and ifB in b with addrB. Both ends are brought up.
func Veth(t testing.TB, a *NS, ifA, addrA string, b *NS, ifB, addrB string) {
	t.Helper()
	a.Exec("ip", "link", "add", ifA, "type", "veth", "peer", "name", ifB, "netns", b.Name)
	if addrA != "" {
		a.Exec("ip", "addr", "add", addrA, "dev", ifA)
	}
	if addrB != "" {
		b.Exec("ip", "addr", "add", addrB, "dev", ifB)
	}
	a.Exec("ip", "link", "set", ifA, "up")
	b.Exec("ip", "link", "set", ifB, "up")
}

// Bridge creates a bridge named br inside ns (a "switch" namespace) and
// returns a function that plugs a new host namespace into it with a veth
// pair: the host side is named hostIf and gets addr (CIDR).
func Bridge(t testing.TB, sw *NS, br string) func(host *NS, hostIf, addr string) {
	t.Helper()
	sw.Exec("ip", "link", "add", br, "type", "bridge")
	sw.Exec("ip", "link", "set", br, "up")
	n := 0
	return func(host *NS, hostIf, addr string) {
		t.Helper()
		n++
		port := fmt.Sprintf("p%d", n)
		Veth(t, sw, port, "", host, hostIf, addr)
		sw.Exec("ip", "link", "set", port, "master", br)
	}
}

// Run runs a command in the root namespace and fails the test on error.
func Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

type testWriter struct {
	t      testing.TB
	prefix string
}

func (w *testWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		w.t.Log(w.prefix + line)
	}
	return len(p), nil
}

// NoDAD switches IPv6 duplicate address detection off in ns for the
// interfaces created after it (and those that exist), so that addresses,
// link-local ones included, are usable at once instead of staying
// tentative for a second or more. A router sends no ICMPv6 Redirect while
// its link-local address is tentative.
func NoDAD(ns *NS) {
	ns.t.Helper()
	ns.Exec("sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
}

// LinkLocal returns the link-local IPv6 address of dev in ns (without the
// prefix length), waiting up to 5 s for the kernel to assign it.
func LinkLocal(ns *NS, dev string) string {
	ns.t.Helper()
	for i := 0; i < 50; i++ {
		for _, l := range strings.Split(ns.Exec("ip", "-6", "-o", "addr", "show", "dev", dev, "scope", "link"), "\n") {
			f := strings.Fields(l)
			for j := 0; j+1 < len(f); j++ {
				if f[j] == "inet6" && !strings.Contains(l, "tentative") {
					addr, _, _ := strings.Cut(f[j+1], "/")
					return addr
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	ns.t.Fatalf("no link-local address on %s in %s", dev, ns.Name)
	return ""
}

// serveTCP listens on addr (TCP) in ns until the test ends and runs handle
// on each connection in a goroutine of its own, closing it after.
func serveTCP(t testing.TB, ns *NS, addr string, handle func(c net.Conn)) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				handle(c)
			}()
		}
	}()
}

// ServeName listens on addr (TCP) in ns and answers every line on every
// connection with name and a newline, until the test ends: which host
// served a connection, for tests that follow where connections go.
func ServeName(t testing.TB, ns *NS, addr, name string) {
	t.Helper()
	serveTCP(t, ns, addr, func(c net.Conn) {
		r := bufio.NewReader(c)
		for {
			if _, err := r.ReadString('\n'); err != nil {
				return
			}
			if _, err := c.Write([]byte(name + "\n")); err != nil {
				return
			}
		}
	})
}

// ServePing listens on addr (TCP) in ns until the test ends and answers a
// connection's first line "ping" with "pong"; other, when not nil, gets
// the connection and any other first line (a benchmark's bulk request).
func ServePing(t testing.TB, ns *NS, addr string, other func(c net.Conn, line string)) {
	t.Helper()
	serveTCP(t, ns, addr, func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		l, err := bufio.NewReader(c).ReadString('\n')
		switch {
		case err != nil:
		case l == "ping\n":
			_, _ = c.Write([]byte("pong\n"))
		case other != nil:
			other(c, l)
		}
	})
}

// Ping connects from ns to dst (from source address src unless empty),
// sends "ping" and waits for ServePing's "pong", 2 s each. Only the reply
// proves the path: a client whose ACKs are dropped still "connects" when
// the SYN-ACK reaches it directly from the node.
func Ping(ns *NS, src, dst string) error {
	return ns.Do(func() error {
		d := net.Dialer{Timeout: 2 * time.Second}
		if src != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
		}
		c, err := d.Dial("tcp", dst)
		if err != nil {
			return fmt.Errorf("dial: %w", err)
		}
		defer func() { _ = c.Close() }()
		if err := c.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
			return err
		}
		if _, err := c.Write([]byte("ping\n")); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		reply, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return fmt.Errorf("read reply: %w", err)
		}
		if reply != "pong\n" {
			return fmt.Errorf("reply %q", reply)
		}
		return nil
	})
}
