// Package frrtest runs FRR's daemons (Debian's frr package: zebra, bgpd,
// bfdd) inside a test's network namespace, for the interop tests of the
// speaker, the router agent and the BFD package: one folder per test holds
// their configuration files, pid files and vty sockets, and vtysh talks to
// them there.
package frrtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bgplb/bgplb/internal/netnstest"
)

// Require fails the test (it does not skip: the interop tests are part of
// `make test`) unless vtysh and the named daemons (zebra, bgpd, bfdd) are
// installed.
func Require(t testing.TB, daemons ...string) {
	t.Helper()
	bins := []string{"vtysh"}
	for _, d := range daemons {
		bins = append(bins, daemonPath(d))
	}
	for _, bin := range bins {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("FRR is required for this test (apt-get install frr): %v", err)
		}
	}
}

func daemonPath(d string) string { return "/usr/lib/frr/" + d }

// FRR is a set of FRR daemons in one namespace sharing one folder.
type FRR struct {
	t   testing.TB
	NS  *netnstest.NS
	Dir string
}

// New makes the daemons' folder for namespace ns, after Require(daemons).
// The daemons drop to the frr user, so the folder must be reachable by it:
// t.TempDir's parent is 0700, so it is made directly under the temporary
// directory, mode 0777, and removed when the test ends.
func New(t testing.TB, ns *netnstest.NS, daemons ...string) *FRR {
	t.Helper()
	Require(t, daemons...)
	dir, err := os.MkdirTemp("", "bgplb-frr-"+ns.Name+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return &FRR{t: t, NS: ns, Dir: dir}
}

// Path is a file's path in the folder.
func (f *FRR) Path(name string) string { return filepath.Join(f.Dir, name) }

// Write writes a file (a daemon's configuration) into the folder and
// returns its path.
func (f *FRR) Write(name, content string) string {
	f.t.Helper()
	p := f.Path(name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		f.t.Fatal(err)
	}
	return p
}

// Args is the command line of daemon (zebra, bgpd, bfdd) with
// configuration file conf, its pid file, zebra's API socket and the vty
// sockets in the folder, logging to stdout, then extra.
func (f *FRR) Args(daemon, conf string, extra ...string) []string {
	return DaemonArgs(f.Dir, daemon, conf, extra...)
}

// DaemonArgs is FRR.Args for the folder dir: for a child process that
// restarts a daemon.
func DaemonArgs(dir, daemon, conf string, extra ...string) []string {
	p := func(name string) string { return filepath.Join(dir, name) }
	args := []string{daemonPath(daemon), "-u", "frr", "-g", "frr", "-f", conf, "-i", p(daemon + ".pid"),
		"-z", p("zserv.api"), "--vty_socket", dir, "--log", "stdout"}
	if daemon == "bfdd" {
		args = append(args, "--bfdctl", p("bfdd.sock"))
	}
	return append(args, extra...)
}

// Start starts daemon with configuration file conf in the namespace (killed
// when the test ends) and waits until it listens: zebra's API socket, the
// other daemons' vty socket.
func (f *FRR) Start(daemon, conf string, extra ...string) *exec.Cmd {
	f.t.Helper()
	cmd := f.NS.Start(f.Args(daemon, conf, extra...)...)
	ready := f.Path(daemon + ".vty")
	if daemon == "zebra" {
		ready = f.Path("zserv.api")
	}
	WaitFile(f.t, ready)
	return cmd
}

// Vtysh runs vtysh commands (each one -c) against the daemons.
func (f *FRR) Vtysh(cmds ...string) (string, error) { return Vtysh(f.NS.Name, f.Dir, cmds...) }

// Vtysh runs vtysh commands against the daemons of folder dir in namespace
// ns: for a child process that has the names only.
func Vtysh(ns, dir string, cmds ...string) (string, error) {
	args := []string{"netns", "exec", ns, "vtysh", "--vty_socket", dir}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("vtysh %q in %s: %w: %s", cmds, ns, err, out)
	}
	return string(out), nil
}

// KillPidFile kills the process whose pid file p names, if any: a daemon
// a child process started, which the test's cleanup does not know.
func KillPidFile(p string) {
	b, err := os.ReadFile(p)
	if err != nil {
		return
	}
	if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
		if proc, err := os.FindProcess(pid); err == nil {
			_ = proc.Kill()
		}
	}
}

// WaitFile waits up to 10 s for file p to exist.
func WaitFile(t testing.TB, p string) {
	t.Helper()
	for range 200 {
		if _, err := os.Stat(p); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not appear", p)
}
