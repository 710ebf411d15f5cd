package firewall

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// Runner is the side-effect boundary: one iptables binary (backend ×
// family). The real one wraps go-iptables; tests use a fake.
type Runner interface {
	// TableExists reports whether the table exists. For the legacy backend
	// listing a table that does not exist would create it, so the manager
	// asks first and treats a missing table as empty.
	TableExists(table string) (bool, error)
	// ListTable returns `iptables -t TABLE -v -S`: every chain and rule of
	// the table with counters, in one call.
	ListTable(table string) ([]string, error)
	NewChain(table, chain string) error
	ClearChain(table, chain string) error
	DeleteChain(table, chain string) error
	Append(table, chain string, rulespec ...string) error
	Insert(table, chain string, pos int, rulespec ...string) error
	Delete(table, chain string, rulespec ...string) error
}

// RunnerFactory opens the runner for a backend and family. It returns an
// error wrapping ErrUnavailable when that tool is not installed.
type RunnerFactory func(b Backend, f Family) (Runner, error)

// ErrUnavailable says an iptables tool is not installed.
var ErrUnavailable = errors.New("iptables tool not available")

// ErrLocked says the xtables lock stayed held by another process.
var ErrLocked = errors.New("xtables lock held by another process")

// LockWaitSeconds is how long one iptables call waits for the xtables lock
// (`--wait N`) before the manager backs off and retries.
const LockWaitSeconds = 1

// ToolPath returns the path of the tool for a backend and family, e.g.
// /usr/sbin/iptables-legacy.
func ToolPath(b Backend, f Family) string {
	name := "iptables"
	if f == IPv6 {
		name = "ip6tables"
	}
	return "/usr/sbin/" + name + "-" + string(b)
}

// XtablesRunners is the real RunnerFactory: go-iptables with an explicit
// tool path (iptables-legacy, iptables-nft, ip6tables-…) and a bounded lock
// wait.
func XtablesRunners(b Backend, f Family) (Runner, error) {
	path := ToolPath(b, f)
	if _, err := exec.LookPath(path); err != nil {
		return nil, fmt.Errorf("%s: %w", path, ErrUnavailable)
	}
	proto := iptables.ProtocolIPv4
	if f == IPv6 {
		proto = iptables.ProtocolIPv6
	}
	ipt, err := iptables.New(iptables.Path(path), iptables.IPFamily(proto), iptables.Timeout(LockWaitSeconds))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	names := ""
	if b == Legacy {
		// Per network namespace; thread-self, not self, so that a thread
		// switched into another namespace (tests) reads its own.
		names = "/proc/thread-self/net/ip_tables_names"
		if f == IPv6 {
			names = "/proc/thread-self/net/ip6_tables_names"
		}
	}
	return &xtables{IPTables: ipt, path: path, names: names}, nil
}

// xtables adds a whole-table listing to go-iptables, which lists one chain
// at a time; a single `-S` of the table is one exec instead of one per chain.
type xtables struct {
	*iptables.IPTables
	path  string
	names string // legacy: the kernel's list of instantiated tables
}

func (x *xtables) TableExists(table string) (bool, error) {
	if x.names == "" {
		return true, nil // nft: listing a missing table creates nothing
	}
	b, err := os.ReadFile(x.names)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil // ip_tables not loaded: no legacy table at all
	}
	if errors.Is(err, fs.ErrPermission) {
		// The list is root's, mode 0440: the packaged agent (user bgplb,
		// CAP_NET_ADMIN but no CAP_DAC_OVERRIDE) cannot read it. It exists,
		// so ip_tables is loaded and the legacy tables are in use on this
		// host: list the table as `iptables-legacy -S` would (at worst that
		// instantiates an empty, all-ACCEPT one).
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", x.names, err)
	}
	return slices.Contains(strings.Fields(string(b)), table), nil
}

func (x *xtables) ListTable(table string) ([]string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(x.path, "-t", table, "-v", "-S", "--wait", strconv.Itoa(LockWaitSeconds))
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, &listError{args: cmd.Args, status: ee.ExitCode(), msg: strings.TrimSpace(stderr.String())}
		}
		return nil, fmt.Errorf("run %v: %w", cmd.Args, err)
	}
	return strings.Split(strings.TrimRight(stdout.String(), "\n"), "\n"), nil
}

type listError struct {
	args   []string
	status int
	msg    string
}

func (e *listError) Error() string {
	return fmt.Sprintf("running %v: exit status %d: %s", e.args, e.status, e.msg)
}

func (e *listError) ExitStatus() int { return e.status }

// isLockError recognises "Another app is currently holding the xtables
// lock" (exit status 4) from both go-iptables and our own listing.
func isLockError(err error) bool {
	if err == nil {
		return false
	}
	var es interface{ ExitStatus() int }
	if errors.As(err, &es) && es.ExitStatus() == 4 && strings.Contains(err.Error(), "xtables lock") {
		return true
	}
	return errors.Is(err, ErrLocked)
}

// isNotExist recognises "no such chain/rule" errors, which removal treats
// as already done.
func isNotExist(err error) bool {
	var ne interface{ IsNotExist() bool }
	return errors.As(err, &ne) && ne.IsNotExist()
}

// SystemDefault reports which backend the plain `iptables` command uses
// (Debian's alternatives): nft when `iptables --version` says nf_tables.
func SystemDefault() Backend {
	out, err := exec.Command("iptables", "--version").Output()
	if err == nil && strings.Contains(string(out), "legacy") {
		return Legacy
	}
	return NFT
}
