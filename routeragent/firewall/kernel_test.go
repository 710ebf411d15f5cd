package firewall

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/bgplb/bgplb/internal/netnstest"
	"github.com/google/go-cmp/cmp"
)

// fermRuleset is what a ferm/DebOps stateful router loads: FORWARD policy
// DROP, established traffic accepted, INVALID dropped, new connections from
// the LAN accepted.
const fermRuleset = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -m state --state INVALID -j DROP
-A FORWARD -m state --state RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -i lan0 -m state --state NEW -j ACCEPT
COMMIT
`

var kernelCfg = Config{Interfaces: []string{"lan0"}, Subnets: mustPrefixes("192.168.254.0/24")}

// save returns `TOOL-save` of the namespace without the timestamped
// comment lines and with counters zeroed, for byte-for-byte comparison.
func save(t testing.TB, ns *netnstest.NS, tool string) string {
	t.Helper()
	out := stdout(t, ns, tool+"-save")
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		keep = append(keep, l)
	}
	return regexp.MustCompile(`\[\d+:\d+\]`).ReplaceAllString(strings.Join(keep, "\n"), "[0:0]")
}

func restore(t testing.TB, ns *netnstest.NS, tool, ruleset string) {
	t.Helper()
	cmd := ns.Command(tool + "-restore")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s-restore: %v\n%s", tool, err, out)
	}
}

// ensureIn runs one pass with the manager's iptables commands inside ns.
func ensureIn(t *testing.T, ns *netnstest.NS, m *Manager) Status {
	t.Helper()
	var st Status
	if err := ns.Do(func() error {
		var err error
		st, err = m.Ensure(context.Background())
		return err
	}); err != nil {
		t.Fatalf("Ensure in %s: %v", ns.Name, err)
	}
	return st
}

func uninstallIn(t *testing.T, ns *netnstest.NS, m *Manager) {
	t.Helper()
	if err := ns.Do(func() error { return m.Uninstall(context.Background()) }); err != nil {
		t.Fatalf("Uninstall in %s: %v", ns.Name, err)
	}
}

func forwardRules(t *testing.T, ns *netnstest.NS, tool string) []string {
	t.Helper()
	return strings.Split(strings.TrimSpace(stdout(t, ns, tool, "-S", "FORWARD")), "\n")
}

// stdout runs a command in ns and returns its standard output only
// (iptables-nft warns about legacy tables on stderr).
func stdout(t testing.TB, ns *netnstest.NS, args ...string) string {
	t.Helper()
	out, err := ns.Command(args...).Output()
	if err != nil {
		t.Fatalf("%v in %s: %v", args, ns.Name, err)
	}
	return string(out)
}

func TestKernelBackends(t *testing.T) {
	for _, tc := range []struct{ holder, other Backend }{{Legacy, NFT}, {NFT, Legacy}} {
		t.Run("drop in "+string(tc.holder), func(t *testing.T) {
			ns := netnstest.New(t, "fw"+string(tc.holder))
			holder, other := "iptables-"+string(tc.holder), "iptables-"+string(tc.other)
			restore(t, ns, holder, fermRuleset)
			origHolder, origOther := save(t, ns, holder), save(t, ns, other)

			m, err := New(kernelCfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			st := ensureIn(t, ns, m)
			if st.Backend != string(tc.holder) || st.LastError != "" {
				t.Fatalf("status %+v, want backend %s", st, tc.holder)
			}
			fwd := forwardRules(t, ns, holder)
			wantFwd := []string{
				"-P FORWARD DROP",
				`-A FORWARD -m comment --comment "bgplb: conntrack-INVALID exemptions for service subnets" -j BGPLB-EXEMPT`,
				"-A FORWARD -m state --state INVALID -j DROP",
				"-A FORWARD -m state --state RELATED,ESTABLISHED -j ACCEPT",
				"-A FORWARD -i lan0 -m state --state NEW -j ACCEPT",
			}
			if d := cmp.Diff(wantFwd, fwd); d != "" {
				t.Errorf("%s FORWARD (-want +got):\n%s", holder, d)
			}
			chain := strings.TrimSpace(stdout(t, ns, holder, "-S", ChainName))
			wantChain := "-N BGPLB-EXEMPT\n" +
				`-A BGPLB-EXEMPT -d 192.168.254.0/24 -i lan0 -p tcp -m conntrack --ctstate INVALID -m comment --comment "bgplb: tcp from lan0 to 192.168.254.0/24, asymmetric return path" -j ACCEPT`
			if d := cmp.Diff(wantChain, chain); d != "" {
				t.Errorf("our chain (-want +got):\n%s", d)
			}
			if got := save(t, ns, other); got != origOther {
				t.Errorf("%s changed:\n%s", other, cmp.Diff(origOther, got))
			}

			// Steady state: the listing matches, nothing is rewritten.
			st = ensureIn(t, ns, m)
			if st.Repairs != 0 {
				t.Errorf("repairs %d on an unchanged ruleset", st.Repairs)
			}

			// External flush, as `iptables -F; iptables -X` or a ferm reload.
			ns.Exec(holder, "-F")
			ns.Exec(holder, "-X")
			restore(t, ns, holder, fermRuleset)
			st = ensureIn(t, ns, m)
			if st.Repairs != 1 {
				t.Errorf("repairs %d after a flush, want 1", st.Repairs)
			}
			if d := cmp.Diff(wantFwd, forwardRules(t, ns, holder)); d != "" {
				t.Errorf("after repair (-want +got):\n%s", d)
			}

			// Uninstall leaves the original ruleset byte for byte.
			uninstallIn(t, ns, m)
			if got := save(t, ns, holder); got != origHolder {
				t.Errorf("%s after uninstall differs:\n%s", holder, cmp.Diff(origHolder, got))
			}
			if got := save(t, ns, other); got != origOther {
				t.Errorf("%s after uninstall differs:\n%s", other, cmp.Diff(origOther, got))
			}
		})
	}
}

// TestKernelIPv6 checks the ip6tables side with an IPv6 service subnet.
func TestKernelIPv6(t *testing.T) {
	ns := netnstest.New(t, "fw6")
	restore(t, ns, "ip6tables-legacy", fermRuleset)
	orig := save(t, ns, "ip6tables-legacy")
	m, err := New(Config{Interfaces: []string{"lan0"}, Subnets: mustPrefixes("2001:db8:254::/64")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := ensureIn(t, ns, m)
	if st.Backend != "legacy" {
		t.Fatalf("status %+v", st)
	}
	st = ensureIn(t, ns, m)
	if st.Repairs != 0 {
		t.Errorf("steady state rewrote the chain: %+v", st)
	}
	if got := ns.Exec("ip6tables-legacy", "-S", ChainName); !strings.Contains(got, "-d 2001:db8:254::/64 -i lan0 -p tcp") {
		t.Errorf("chain: %s", got)
	}
	uninstallIn(t, ns, m)
	if got := save(t, ns, "ip6tables-legacy"); got != orig {
		t.Errorf("after uninstall:\n%s", cmp.Diff(orig, got))
	}
}

// TestKernelFermReload loads the firewall with the real ferm, reloads it
// (which deletes every chain) and checks the next pass restores ours. It
// also checks that ferm accepts our hook file.
func TestKernelFermReload(t *testing.T) {
	if _, err := os.Stat("/usr/sbin/ferm"); err != nil {
		t.Fatalf("ferm is required (apt-get install ferm): %v", err)
	}
	ns := netnstest.New(t, "fwferm")
	dir := t.TempDir()
	conf := filepath.Join(dir, "ferm.conf")
	hook, err := os.ReadFile("ferm-hook.conf")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bgplb.conf"), hook, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte(`domain ip table filter {
    chain FORWARD {
        policy DROP;
        mod state state INVALID DROP;
        mod state state (ESTABLISHED RELATED) ACCEPT;
        interface lan0 mod state state NEW ACCEPT;
    }
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	// The hook file parses and yields the poke command (not run: --noexec).
	lines := ns.Exec("ferm", "--noexec", "--lines", filepath.Join(dir, "bgplb.conf"))
	if !strings.Contains(lines, "bgplb-routeragent") {
		t.Errorf("ferm --lines of the hook file: %s", lines)
	}

	ns.Exec("ferm", conf)
	m, err := New(kernelCfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st := ensureIn(t, ns, m); st.Backend != "legacy" {
		t.Fatalf("ferm's rules are in legacy, status %+v", st)
	}
	ns.Exec("ferm", conf) // reload
	if got := ns.Exec("iptables-legacy", "-S"); strings.Contains(got, ChainName) {
		t.Fatalf("ferm reload kept our chain? %s", got)
	}
	st := ensureIn(t, ns, m)
	if st.Repairs != 1 || st.Backend != "legacy" {
		t.Errorf("status after ferm reload: %+v", st)
	}
	if fwd := forwardRules(t, ns, "iptables-legacy"); len(fwd) < 2 || !strings.Contains(fwd[1], "-j "+ChainName) {
		t.Errorf("FORWARD after repair: %q", fwd)
	}
}

// TestKernelLockHeld holds the xtables lock (a private lock file via
// XTABLES_LOCKFILE, so no other iptables user on the machine waits) and
// checks Ensure returns a wrapped ErrLocked, then succeeds once released.
func TestKernelLockHeld(t *testing.T) {
	ns := netnstest.New(t, "fwlock")
	restore(t, ns, "iptables-legacy", fermRuleset)
	lock := filepath.Join(t.TempDir(), "xtables.lock")
	t.Setenv("XTABLES_LOCKFILE", lock)
	// Hold it in this process, as another iptables or ferm run would.
	f, err := os.OpenFile(lock, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{Interfaces: []string{"lan0"}, Subnets: mustPrefixes("192.168.254.0/24"), Backend: "legacy"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = ns.Do(func() error { _, err := m.Ensure(context.Background()); return err })
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("Ensure with the lock held: %v, want ErrLocked", err)
	}
	if got := m.Status().LastError; !strings.Contains(got, "xtables lock") {
		t.Errorf("LastError %q", got)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	if st := ensureIn(t, ns, m); st.LastError != "" || !slices.ContainsFunc(forwardRules(t, ns, "iptables-legacy"), func(s string) bool { return strings.Contains(s, ChainName) }) {
		t.Errorf("after release: %+v", st)
	}
}
