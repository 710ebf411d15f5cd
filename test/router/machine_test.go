package router

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bgplb/bgplb/internal/netnstest"
)

// containerEnv is the whole environment of a command run inside the booted
// router: nothing of the test's own (GOFLAGS, NOTIFY_SOCKET, ...) leaks in.
var containerEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"LANG=C", "HOME=/root", "TERM=dumb", "DEBIAN_FRONTEND=noninteractive",
	"SYSTEMD_PAGER=", "SYSTEMD_COLORS=0",
}

// machine is a Debian booted with systemd-nspawn (systemd as PID 1) in the
// network namespace of the lab's router. Its root is an overlay of the
// cached rootfs (hack/debian-rootfs.sh): the cache is never written.
type machine struct {
	t      testing.TB
	name   string
	dir    string // per-run folder: upper, work, merged, console.log
	root   string // the merged root the machine runs on
	nspawn *exec.Cmd
	pid1   int    // systemd in the machine, as the host sees it
	lock   string // nspawn's lock file for the root
	exited chan struct{}
}

// rootfs returns the cached Debian tree, building it on first use. Without
// it (no debootstrap, no mirror) the test fails under make test.
func rootfs(t testing.TB) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(repoRoot, "hack", "debian-rootfs.sh"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		err = fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	netnstest.RequirePrecondition(t, err, "the Debian rootfs of the booted router (hack/debian-rootfs.sh; .ci/run builds it)")
	return strings.TrimSpace(string(out))
}

// bootMachine mounts an overlay of the cached rootfs, lets prepare write
// files into it (the firewall config), and boots it inside the namespace
// ns. It waits until systemd reports the system running. Everything is
// undone by exact name and pid when the test ends: the machine is powered
// off and waited for, the overlay unmounted, its folder removed.
func bootMachine(t testing.TB, ns *netnstest.NS, prepare func(root string)) *machine {
	t.Helper()
	_, err := exec.LookPath("systemd-nspawn")
	netnstest.RequirePrecondition(t, err, "systemd-nspawn (Debian package systemd-container; hack/install-deps.sh installs it)")
	lower := rootfs(t)

	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	m := &machine{t: t, name: "bgplbt-router-" + hex.EncodeToString(b), exited: make(chan struct{})}
	m.dir = filepath.Join(os.TempDir(), m.name)
	m.root = filepath.Join(m.dir, "merged")
	for _, d := range []string{"upper", "work", "merged"} {
		if err := os.MkdirAll(filepath.Join(m.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(m.dir); err != nil {
			t.Logf("cleanup: remove %s: %v", m.dir, err)
		}
	})
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, filepath.Join(m.dir, "upper"), filepath.Join(m.dir, "work"))
	if err := syscall.Mount("overlay", m.root, "overlay", 0, opts); err != nil {
		t.Fatalf("mount an overlay of the rootfs %s on %s (the test needs overlayfs): %v", lower, m.root, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(m.root, 0); err != nil {
			t.Logf("cleanup: umount %s: %v", m.root, err)
		}
	})
	var st syscall.Stat_t
	if err := syscall.Stat(m.root, &st); err != nil {
		t.Fatal(err)
	}
	// The lock nspawn takes on the root; left behind only if nspawn is killed.
	m.lock = fmt.Sprintf("/run/systemd/nspawn/locks/inode-%d:%d", st.Dev, st.Ino)
	if prepare != nil {
		prepare(m.root)
	}

	console, err := os.Create(filepath.Join(m.dir, "console.log"))
	if err != nil {
		t.Fatal(err)
	}
	// --capability=CAP_NET_ADMIN: nspawn keeps it only for a private
	// network it creates itself; the router's namespace is ours, and ferm
	// and the agent need it there. --register=no --keep-unit: this host's
	// PID 1 is not systemd (no machined, no scope units).
	m.nspawn = exec.Command("systemd-nspawn", "--quiet", "-D", m.root, "--boot",
		"--machine="+m.name, "--register=no", "--keep-unit",
		"--network-namespace-path=/run/netns/"+ns.Name,
		"--capability=CAP_NET_ADMIN", "--kill-signal=SIGRTMIN+4", "--console=read-only")
	m.nspawn.Stdout, m.nspawn.Stderr = console, console
	// /proc/sys/net writable, as on a real router (nspawn mounts all of
	// /proc/sys read-only when the network namespace is not its own): root
	// in the machine sets the namespace's sysctls (the package's prerm
	// restores send_redirects); the rest of /proc/sys stays read-only.
	m.nspawn.Env = []string{"PATH=" + os.Getenv("PATH"), "SYSTEMD_NSPAWN_API_VFS_WRITABLE=network"}
	m.nspawn.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := m.nspawn.Start(); err != nil {
		console.Close()
		t.Fatalf("systemd-nspawn: %v", err)
	}
	go func() {
		_ = m.nspawn.Wait()
		console.Close()
		close(m.exited)
	}()
	t.Cleanup(m.powerOff)

	// PID 1 of the machine is the child of nspawn that runs systemd (an
	// intermediate child comes and goes first).
	deadline := time.Now().Add(60 * time.Second)
	for m.pid1 == 0 {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", m.nspawn.Process.Pid, m.nspawn.Process.Pid)); err == nil {
			for _, f := range strings.Fields(string(b)) {
				if comm, err := os.ReadFile("/proc/" + f + "/comm"); err == nil && strings.TrimSpace(string(comm)) == "systemd" {
					m.pid1, _ = strconv.Atoi(f)
				}
			}
		}
		select {
		case <-m.exited:
			t.Fatalf("systemd-nspawn exited before the machine booted:\n%s", m.console())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no PID 1 in the machine after 60s:\n%s", m.console())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Wait for the boot to finish: running, or degraded with the failed
	// units named.
	var state string
	for {
		out, _ := m.try("systemctl", "is-system-running", "--wait")
		state = strings.TrimSpace(out)
		if state == "running" || state == "degraded" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the machine did not boot within 60s (state %q):\n%s", state, m.console())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if state != "running" {
		failed, _ := m.try("systemctl", "--failed", "--no-legend")
		t.Fatalf("the machine booted %s; failed units:\n%s\n%s", state, failed, m.journal(""))
	}
	return m
}

// powerOff powers the machine off: SIGTERM makes nspawn ask systemd in
// the machine for a clean shutdown (--kill-signal=SIGRTMIN+4, poweroff),
// and nspawn exits when the machine has. After 30 s it kills nspawn's
// process group.
func (m *machine) powerOff() {
	select {
	case <-m.exited:
		return
	default:
	}
	_ = m.nspawn.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
	case <-time.After(30 * time.Second):
		m.t.Logf("cleanup: machine %s did not power off in 30s; killing nspawn (pid %d)", m.name, m.nspawn.Process.Pid)
		_ = syscall.Kill(-m.nspawn.Process.Pid, syscall.SIGKILL)
		<-m.exited
		_ = os.Remove(m.lock)
	}
	// nspawn's bookkeeping for the machine, by its exact name.
	_ = os.Remove("/run/systemd/nspawn/propagate/" + m.name)
}

func (m *machine) console() string {
	b, _ := os.ReadFile(filepath.Join(m.dir, "console.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// command returns a command that runs inside the machine: in all of its
// namespaces and its root, with a clean environment.
func (m *machine) command(args ...string) *exec.Cmd {
	cmd := exec.Command("nsenter", append([]string{"--target", strconv.Itoa(m.pid1), "--all", "--"}, args...)...)
	cmd.Env = containerEnv
	return cmd
}

func (m *machine) try(args ...string) (string, error) {
	var out bytes.Buffer
	cmd := m.command(args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-done
		return out.String(), fmt.Errorf("%s: timed out after 3m", strings.Join(args, " "))
	}
}

// run runs a command in the machine and fails the test on error.
func (m *machine) run(args ...string) string {
	m.t.Helper()
	out, err := m.try(args...)
	if err != nil {
		m.t.Fatalf("in the router: %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// show returns systemctl show's value of one property of a unit (of
// the manager when unit is "").
func (m *machine) show(unit, prop string) string {
	m.t.Helper()
	args := []string{"systemctl", "show", "--value", "-p", prop}
	if unit != "" {
		args = append(args, unit)
	}
	return strings.TrimSpace(m.run(args...))
}

// journal returns the machine's journal of one unit (all units when "").
func (m *machine) journal(unit string) string {
	args := []string{"journalctl", "--no-pager", "-o", "short-precise", "-n", "200"}
	if unit != "" {
		args = append(args, "-u", unit)
	}
	out, err := m.try(args...)
	if err != nil {
		return fmt.Sprintf("(journalctl: %v) %s", err, out)
	}
	return out
}

// path is a path inside the machine's root, as the host sees it.
func (m *machine) path(p string) string { return filepath.Join(m.root, p) }

// waitActive waits until a unit is active, and fails with its journal
// when it fails instead.
func (m *machine) waitActive(unit string) {
	m.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st := m.show(unit, "ActiveState")
		switch st {
		case "active":
			return
		case "failed":
			m.t.Fatalf("%s failed:\n%s", unit, m.journal(unit))
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("%s is %s after 60s:\n%s", unit, st, m.journal(unit))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var errTimeout = errors.New("timed out")

// waitFor polls cond every 20 ms for up to 60 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v after 60s", what, errTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
