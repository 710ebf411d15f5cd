package netnstest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// victimEnv makes the test binary a test process that creates a namespace
// with New, starts a process in it with Start, prints both and waits to be
// killed (see TestMain).
const victimEnv = "BGPLB_NETNSTEST_VICTIM"

func TestMain(m *testing.M) {
	if os.Getenv(victimEnv) != "" {
		victim()
		return
	}
	os.Exit(m.Run())
}

// victimTB is the testing.TB of the victim process: it logs to stderr and
// exits on failure (the victim runs no test of its own).
type victimTB struct{ testing.TB }

func (victimTB) Helper()                    {}
func (victimTB) Cleanup(func())             {}
func (victimTB) Log(args ...any)            { fmt.Fprintln(os.Stderr, args...) }
func (victimTB) Logf(f string, args ...any) { fmt.Fprintf(os.Stderr, f+"\n", args...) }
func (victimTB) Fatal(args ...any)          { fmt.Fprintln(os.Stderr, args...); os.Exit(2) }
func (victimTB) Fatalf(f string, args ...any) {
	fmt.Fprintf(os.Stderr, f+"\n", args...)
	os.Exit(2)
}
func (victimTB) Skip(args ...any) { fmt.Fprintln(os.Stderr, args...); os.Exit(3) }

func victim() {
	ns := New(victimTB{}, "victim")
	sleep := ns.Start("sleep", "600")
	// Report once the process is inside (ip netns exec has entered the
	// namespace), as a killed test's processes long are.
	for {
		out, _ := exec.Command("ip", "netns", "pids", ns.Name).Output()
		if slices.Contains(strings.Fields(string(out)), strconv.Itoa(sleep.Process.Pid)) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Printf("%s %d\n", ns.Name, sleep.Process.Pid)
	time.Sleep(10 * time.Minute)
}

// TestSweepAfterSIGKILL: a test process that is SIGKILLed leaves its
// namespace and the process it started there; the next sweep removes both,
// by that name and that namespace's pids, and leaves a live owner's
// namespace alone.
func TestSweepAfterSIGKILL(t *testing.T) {
	mine := New(t, "owner")

	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), victimEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		t.Fatalf("victim: %v", err)
	}
	f := strings.Fields(line)
	if len(f) != 2 || !strings.HasPrefix(f[0], Prefix+"victim-") {
		_ = cmd.Process.Kill()
		t.Fatalf("victim said %q", line)
	}
	name := f[0]
	sleepPid, _ := strconv.Atoi(f[1])
	// Whatever happens below, the victim's leftovers go.
	t.Cleanup(func() {
		if err := removeNamespace(name); err != nil {
			t.Logf("cleanup: %v", err)
		}
		unregister(name)
	})

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if _, err := os.Stat(filepath.Join("/run/netns", name)); err != nil {
		t.Fatalf("the killed victim's namespace is already gone (%v): the test premise does not hold", err)
	}
	if syscall.Kill(sleepPid, 0) != nil {
		t.Fatalf("the process in the victim's namespace is already gone: the test premise does not hold")
	}

	swept, err := Sweep()
	if err != nil {
		t.Errorf("sweep: %v", err)
	}
	t.Logf("swept %v", swept)
	if _, err := os.Stat(filepath.Join("/run/netns", name)); err == nil {
		t.Errorf("namespace %s of the killed process is still there", name)
	}
	if _, err := os.Stat(filepath.Join(RegistryDir, name)); err == nil {
		t.Errorf("registry entry %s is still there", name)
	}
	// Reaped by init once killed; /proc tells whether it is gone.
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(sleepPid) + "/stat")
		if err != nil || strings.Contains(string(b), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("the process %d in the killed victim's namespace still runs", sleepPid)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if slices.Contains(swept, mine.Name) {
		t.Errorf("sweep removed %s, whose owner (this process) is alive", mine.Name)
	}
	if _, err := os.Stat(filepath.Join("/run/netns", mine.Name)); err != nil {
		t.Errorf("this process's namespace %s: %v", mine.Name, err)
	}
}

func TestOwnerAlive(t *testing.T) {
	me, err := self()
	if err != nil {
		t.Fatal(err)
	}
	if !me.alive() {
		t.Error("this process is not alive by its own start time")
	}
	if (owner{me.pid, me.start + 1}).alive() {
		t.Error("a different start time (a reused pid) counts as alive")
	}
	o, err := parseOwner(me.String())
	if err != nil || o != me {
		t.Errorf("parseOwner(%q) = %v, %v", me.String(), o, err)
	}
	for _, bad := range []string{"", "1", "x 2", "1 y", "1 2 3"} {
		if _, err := parseOwner(bad); err == nil {
			t.Errorf("parseOwner(%q) accepted", bad)
		}
	}
}
