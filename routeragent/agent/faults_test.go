package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fermConf is a ferm/DebOps-like stateful firewall: ferm writes it with
// iptables-legacy and flushes every chain on each reload.
const fermConf = `domain ip table filter {
    chain FORWARD {
        policy DROP;
        mod state state INVALID DROP;
        mod state state (ESTABLISHED RELATED) ACCEPT;
        interface lan0 mod state state NEW ACCEPT;
    }
}
`

// exemptionInPlace reports whether the router's legacy FORWARD chain jumps
// to our chain before the INVALID drop and our chain holds the exemption.
func (l *lab) exemptionInPlace(t testing.TB) bool {
	t.Helper()
	fwd := strings.Split(l.router.Exec("iptables-legacy", "-S", "FORWARD"), "\n")
	jump, drop := -1, -1
	for i, r := range fwd {
		switch {
		case strings.Contains(r, "-j BGPLB-"):
			if jump < 0 {
				jump = i
			}
		case strings.Contains(r, "INVALID") && strings.HasSuffix(r, "-j DROP"):
			if drop < 0 {
				drop = i
			}
		}
	}
	if jump < 0 || drop < 0 || jump > drop {
		return false
	}
	for _, r := range strings.Split(l.router.Exec("iptables-legacy", "-S"), "\n") {
		if strings.HasPrefix(r, "-A BGPLB-") && strings.Contains(r, "-d 192.168.254.0/24") &&
			strings.Contains(r, "--ctstate INVALID") && strings.HasSuffix(r, "-j ACCEPT") {
			return true
		}
	}
	return false
}

// TestFermReloadsInARow: the real ferm reloads the router's firewall ten
// times in a row (each reload deletes our chain and jump); after each the
// agent counts a repair and puts the exemption back before the INVALID
// drop, by itself (no ferm hook here, so it is the agent's own drift check
// that repairs). The time from ferm's exit to the exemption being back is
// logged (0 when the agent was faster than ferm's exit; the target is 2 s;
// timing is not asserted).
func TestFermReloadsInARow(t *testing.T) {
	if _, err := os.Stat("/usr/sbin/ferm"); err != nil {
		t.Fatalf("ferm is required (apt-get install ferm): %v", err)
	}
	l := newLab(t)
	conf := filepath.Join(l.dir, "ferm.conf")
	if err := os.WriteFile(conf, []byte(fermConf), 0o644); err != nil {
		t.Fatal(err)
	}
	l.router.Exec("ferm", conf)
	cfg := l.writeConfig(t, "firewall: {mode: exempt, backend: auto}\n")
	l.startAgent(t, cfg)
	waitFor(t, "the exemption", func() bool { return l.exemptionInPlace(t) })
	repairs := l.firewallStatus(t).Repairs

	var took []time.Duration
	for i := 0; i < 10; i++ {
		before := l.firewallStatus(t).Repairs
		l.router.Exec("ferm", conf)
		start := time.Now()
		// The agent may repair before ferm has even exited (its commit is
		// one iptables-restore): the repair counter, not a look between
		// the two, proves the reload removed our chain.
		waitFor(t, fmt.Sprintf("a repair after reload %d and the exemption back", i+1), func() bool {
			return l.firewallStatus(t).Repairs > before && l.exemptionInPlace(t)
		})
		took = append(took, time.Since(start))
	}
	st := l.firewallStatus(t)
	if st.LastError != "" || st.Backend != "legacy" {
		t.Errorf("firewall status after the reloads: %+v", st)
	}
	if st.Repairs-repairs < 10 {
		t.Errorf("%d repairs counted for 10 reloads", st.Repairs-repairs)
	}
	sorted := slices.Clone(took)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	t.Logf("exemption back after each of 10 ferm reloads: %v (median %v, max %v)", took, sorted[len(sorted)/2], sorted[len(sorted)-1])
}

// TestXtablesLockHeld: another process holds the xtables lock (a private
// XTABLES_LOCKFILE for the agent, so nothing else on the machine waits):
// the agent keeps running, reports the lock in its status, and installs
// the exemption once the lock is released.
func TestXtablesLockHeld(t *testing.T) {
	l := newLab(t)
	conf := filepath.Join(l.dir, "ferm.conf")
	if err := os.WriteFile(conf, []byte(fermConf), 0o644); err != nil {
		t.Fatal(err)
	}
	l.router.Exec("ferm", conf)
	lock := filepath.Join(l.dir, "xtables.lock")
	f, err := os.OpenFile(lock, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	cfg := l.writeConfig(t, "firewall: {mode: exempt, backend: auto}\n")
	agent := startRole(t, l.router, "agent", []string{"XTABLES_LOCKFILE=" + lock}, nil, nil, "run", "--config", cfg)
	waitFor(t, "the lock reported in status", func() bool {
		f := l.status(t).Firewall
		return f != nil && strings.Contains(f.LastError, "xtables lock")
	})
	t.Logf("status while locked: %+v", *l.firewallStatus(t))
	// Several passes fail meanwhile; the agent stays up and serves status.
	time.Sleep(3 * time.Second)
	select {
	case <-agent.done:
		t.Fatalf("the agent exited while the lock was held: %v", agent.cmd.ProcessState)
	default:
	}
	if l.exemptionInPlace(t) {
		t.Fatal("rules changed while the lock was held")
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the exemption after the lock was released", func() bool {
		f := l.status(t).Firewall
		return f != nil && f.LastError == "" && l.exemptionInPlace(t)
	})
}

// TestRestartWithoutEndOfRIB: speakers that do not negotiate graceful
// restart never send End-of-RIB (GoBGP sends it only to GR peers). Over an
// agent restart their routes are kept; a route they no longer announce is
// kept until routes.staleTimeout (15 s here) and then swept, and routes
// they still announce are never deleted. (The timeout must outlast the
// speakers' reconnection: a GoBGP speaker waits 5 s idle after its session
// failed, then dials; with a 5 s timeout this test saw the still-announced
// route deleted and added again 1.2 s later.)
func TestRestartWithoutEndOfRIB(t *testing.T) {
	l := newLab(t)
	s1ns := l.host(t, "s1", "192.168.2.20")
	cfg := l.writeConfigFrom(t, strings.Replace(baseConfig, "staleTimeout: 60s", "staleTimeout: 15s", 1), "firewall: {mode: \"off\"}\n")
	agent := l.startAgent(t, cfg)
	s1 := startSpeakerEnv(t, s1ns, "192.168.2.20", "SPK_NO_GR=1")
	s1.do("up")
	s1.do("announce 192.168.254.1/32")
	s1.do("announce 192.168.254.2/32")
	waitFor(t, "routes", func() bool {
		return l.hasRoute(t, "192.168.254.1/32", "192.168.2.20") && l.hasRoute(t, "192.168.254.2/32", "192.168.2.20")
	})
	evs := watchRoutes(t, l)
	agent.kill(syscall.SIGKILL)
	s1.do("withdraw 192.168.254.2/32")
	start := time.Now()
	l.startAgent(t, cfg)
	s1.do("up")
	// Established, but no End-of-RIB will come: 254.2 stays until the timeout.
	waitFor(t, "the session back", func() bool { p, ok := l.peer(t, "192.168.2.20"); return ok && p.Up })
	if p, _ := l.peer(t, "192.168.2.20"); p.EndOfRIB {
		t.Fatal("a peer without graceful restart sent End-of-RIB; the test premise does not hold")
	}
	if st := l.status(t); st.Routes.Stale == 0 || !l.hasRoute(t, "192.168.254.2/32", "192.168.2.20") {
		t.Errorf("stale route not kept before the timeout: staleKept %d", st.Routes.Stale)
	}
	waitFor(t, "254.2 swept at the stale timeout", func() bool { return l.hasRoute(t, "192.168.254.2/32") })
	if since := time.Since(start); since < 15*time.Second {
		t.Errorf("swept after %v, before the 15 s stale timeout", since)
	}
	if !l.hasRoute(t, "192.168.254.1/32", "192.168.2.20") {
		t.Error("254.1, still announced, was lost")
	}
	if d := cmp.Diff([]string{"del 192.168.254.2/32"}, evs.listAfter(t, "del 192.168.254.2/32")); d != "" {
		t.Errorf("route changes over the restart (-want +got):\n%s", d)
	}
}

// BenchmarkFermReloadRepair: how long after a real ferm reload (which
// deletes our chain and jump) the agent's exemption is back, with no ferm
// hook (the agent's own 1 s drift check does it). ns/op is the mean;
// p50-ms and max-ms are reported too.
func BenchmarkFermReloadRepair(b *testing.B) {
	if _, err := os.Stat("/usr/sbin/ferm"); err != nil {
		b.Fatalf("ferm is required (Debian package ferm; make deps installs it): %v", err)
	}
	l := newLab(b)
	conf := filepath.Join(l.dir, "ferm.conf")
	if err := os.WriteFile(conf, []byte(fermConf), 0o644); err != nil {
		b.Fatal(err)
	}
	l.router.Exec("ferm", conf)
	l.startAgent(b, l.writeConfig(b, "firewall: {mode: exempt, backend: auto}\n"))
	waitFor(b, "the exemption", func() bool { return l.exemptionInPlace(b) })
	var took []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		l.router.Exec("ferm", conf)
		b.StartTimer()
		start := time.Now()
		waitFor(b, "the exemption back", func() bool { return l.exemptionInPlace(b) })
		took = append(took, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(took[len(took)-1].Microseconds())/1000, "max-ms")
}
