package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
)

// run runs a command and returns its combined output, with the command line
// in the error.
func run(args ...string) (string, error) {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// nsExec runs a command inside the named namespace.
func nsExec(ns string, args ...string) (string, error) {
	return run(append([]string{"ip", "netns", "exec", ns}, args...)...)
}

// nsExists reports whether a named namespace exists.
func nsExists(name string) bool {
	_, err := os.Stat("/run/netns/" + name)
	return err == nil
}

// killNamespace stops every process inside the named namespace (first
// SIGTERM, then SIGKILL) and deletes it. It touches nothing else: the
// processes are found by `ip netns pids NAME`, i.e. by the namespace that
// only the lab created.
func killNamespace(name string, grace time.Duration) error {
	if !nsExists(name) {
		return nil
	}
	pids := func() []int {
		out, err := exec.Command("ip", "netns", "pids", name).Output()
		if err != nil {
			return nil
		}
		var ps []int
		for _, f := range strings.Fields(string(out)) {
			if p, err := strconv.Atoi(f); err == nil && p != os.Getpid() {
				ps = append(ps, p)
			}
		}
		return ps
	}
	for _, p := range pids() {
		_ = syscall.Kill(p, syscall.SIGTERM)
	}
	deadline := time.Now().Add(grace)
	for len(pids()) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	for _, p := range pids() {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	for i := 0; len(pids()) > 0 && i < 40; i++ {
		time.Sleep(50 * time.Millisecond)
	}
	_, err := run("ip", "netns", "delete", name)
	return err
}

// DialIn returns a dial function whose sockets live in the named namespace,
// so a process in the root namespace can talk to the lab's hosts without
// any route or traffic in the root namespace.
func DialIn(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			// This thread is left locked and so dies with the goroutine: it
			// is never reused in the wrong namespace.
			runtime.LockOSThread()
			h, err := netns.GetFromName(ns)
			if err != nil {
				ch <- result{nil, fmt.Errorf("open netns %s: %w", ns, err)}
				return
			}
			defer h.Close()
			if err := netns.Set(h); err != nil {
				ch <- result{nil, fmt.Errorf("enter netns %s: %w", ns, err)}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

// DoIn runs f on a thread inside the named namespace.
func DoIn(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		h, err := netns.GetFromName(ns)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", ns, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", ns, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

var errNotRoot = errors.New("the lab needs root: it creates network namespaces")
