package netnstest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A test binary killed before its cleanups ran (SIGKILL, or the panic of
// `go test -timeout`) leaves its namespaces behind, and the processes it
// started in them. Every namespace New creates is therefore registered in
// RegistryDir under its name, with its owner's pid and start time; the
// first New of each test process removes the namespaces whose owner is
// gone: by their exact names, killing only the processes inside them.
// RegistryDir is on /run, a tmpfs that a reboot empties along with the
// namespaces.

// RegistryDir holds one file per namespace New created and has not yet
// deleted.
var RegistryDir = "/run/bgplb-netnstest"

var sweepOnce sync.Once

// owner identifies a process across pid reuse: its pid and its start time
// in clock ticks since boot (/proc/PID/stat field 22).
type owner struct {
	pid   int
	start uint64
}

func (o owner) String() string { return fmt.Sprintf("%d %d", o.pid, o.start) }

func parseOwner(s string) (owner, error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return owner{}, fmt.Errorf("want \"PID START\", got %q", s)
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil {
		return owner{}, err
	}
	start, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return owner{}, err
	}
	return owner{pid, start}, nil
}

// startTime reads a process's start time; an error means it is gone.
func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and parentheses: the
	// fields after it start after the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(b)[i+1:])
	// f[0] is field 3 (state); field 22 is f[19].
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// alive reports whether the process o still runs (the same one, not a
// later process that reuses its pid).
func (o owner) alive() bool {
	st, err := startTime(o.pid)
	return err == nil && st == o.start
}

func self() (owner, error) {
	st, err := startTime(os.Getpid())
	return owner{os.Getpid(), st}, err
}

// register records name as owned by this process.
func register(name string) error {
	me, err := self()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(RegistryDir, 0o700); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(RegistryDir, name), []byte(me.String()+"\n"), 0o600)
}

func unregister(name string) { _ = os.Remove(filepath.Join(RegistryDir, name)) }

// Sweep removes the registered namespaces whose owner process is gone:
// it kills the processes in each (by `ip netns pids NAME`), deletes the
// namespace by name and forgets it. It returns the names removed. Entries
// of live owners, and namespaces not in the registry, are never touched.
func Sweep() ([]string, error) {
	ents, err := os.ReadDir(RegistryDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var (
		swept []string
		errs  []error
	)
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, Prefix) || e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(RegistryDir, name))
		if err != nil {
			continue // another sweeper took it
		}
		o, err := parseOwner(strings.TrimSpace(string(b)))
		if err != nil {
			errs = append(errs, fmt.Errorf("registry entry %s: %w", name, err))
			continue
		}
		if o.alive() {
			continue
		}
		if err := removeNamespace(name); err != nil {
			errs = append(errs, err)
			continue
		}
		unregister(name)
		swept = append(swept, name)
	}
	return swept, errors.Join(errs...)
}

// removeNamespace kills the processes inside the namespace name and
// deletes it; a namespace already gone is not an error.
func removeNamespace(name string) error {
	if _, err := os.Stat(filepath.Join("/run/netns", name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	for attempt := 0; ; attempt++ {
		out, err := exec.Command("ip", "netns", "pids", name).Output()
		if err != nil {
			return fmt.Errorf("ip netns pids %s: %w", name, err)
		}
		pids := strings.Fields(string(out))
		if len(pids) == 0 {
			break
		}
		if attempt == 50 {
			return fmt.Errorf("namespace %s: processes %v survive SIGKILL", name, pids)
		}
		for _, p := range pids {
			if pid, err := strconv.Atoi(p); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns delete %s: %w: %s", name, err, out)
	}
	return nil
}
