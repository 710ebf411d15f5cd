package firewall

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bgplb/bgplb/routeragent/config"
)

// fakes holds one Fake per backend and family; a missing entry is an
// uninstalled tool.
type fakes map[runnerKey]*Fake

func (f fakes) factory(b Backend, fam Family) (Runner, error) {
	r, ok := f[runnerKey{b, fam}]
	if !ok {
		return nil, ErrUnavailable
	}
	return r, nil
}

func ferm(f *Fake) *Fake {
	f.SetPolicy("FORWARD", "DROP")
	f.AddRule("FORWARD", "-m", "state", "--state", "INVALID", "-j", "DROP")
	f.AddRule("FORWARD", "-m", "state", "--state", "RELATED,ESTABLISHED", "-j", "ACCEPT")
	f.AddRule("FORWARD", "-i", "lan0", "-j", "ACCEPT")
	return f
}

// noNftables: a host where native nftables cannot be read, so that these
// tests see only the iptables backends (and never the test host's ruleset).
var noNftables = WithNftables(func() (NftConn, error) { return nil, ErrUnavailable })

var testCfg = Config{
	Interfaces: []string{"lan0"},
	Subnets:    []netip.Prefix{netip.MustParsePrefix("192.168.254.0/24")},
}

func newTestManager(t *testing.T, cfg Config, fs fakes) *Manager {
	t.Helper()
	m, err := New(cfg, nil, WithRunners(fs.factory), WithSystemDefault(NFT), noNftables)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func wantLines(extra ...string) []string {
	return append([]string{
		"-P INPUT ACCEPT", "-P FORWARD DROP", "-P OUTPUT ACCEPT", "-N BGPLB-EXEMPT",
		`-A FORWARD -m comment --comment "bgplb: conntrack-INVALID exemptions for service subnets" -j BGPLB-EXEMPT`,
		"-A FORWARD -m state --state INVALID -j DROP",
		"-A FORWARD -m state --state RELATED,ESTABLISHED -j ACCEPT",
		"-A FORWARD -i lan0 -j ACCEPT",
		`-A BGPLB-EXEMPT -d 192.168.254.0/24 -i lan0 -p tcp -m conntrack --ctstate INVALID -m comment --comment "bgplb: tcp from lan0 to 192.168.254.0/24, asymmetric return path" -j ACCEPT`,
	}, extra...)
}

func TestEnsureInstallsInTheBackendWithTheDrop(t *testing.T) {
	ctx := context.Background()
	legacy, nft := ferm(NewFake()), NewFake()
	nft.AddRule("FORWARD", "-i", "docker0", "-j", "ACCEPT") // rules, but no INVALID drop
	nftBefore := nft.Lines()
	m := newTestManager(t, testCfg, fakes{{Legacy, IPv4}: legacy, {NFT, IPv4}: nft})

	st, err := m.Ensure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(wantLines(), legacy.Lines()); d != "" {
		t.Errorf("legacy table (-want +got):\n%s", d)
	}
	if d := cmp.Diff(nftBefore, nft.Lines()); d != "" {
		t.Errorf("nft table changed (-want +got):\n%s", d)
	}
	if st.Backend != "legacy" || st.Repairs != 0 || st.LastError != "" || !strings.Contains(st.Reason, "INVALID drop found in legacy") {
		t.Errorf("status: %+v", st)
	}

	// Steady state: lists only.
	legacy.SetCounters(ChainName, 0, 12, 480)
	before := legacy.Mutations
	st, err = m.Ensure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if legacy.Mutations != before {
		t.Errorf("second pass mutated %d times", legacy.Mutations-before)
	}
	wantRules := []RuleStatus{{Interface: "lan0", Subnet: "192.168.254.0/24", Protocol: "tcp", Backend: "legacy", Packets: 12, Bytes: 480}}
	if d := cmp.Diff(wantRules, st.Rules); d != "" {
		t.Errorf("rules (-want +got):\n%s", d)
	}
	if st.Repairs != 0 {
		t.Errorf("repairs %d after a clean pass", st.Repairs)
	}
}

func TestEnsureRepairsAfterFermReload(t *testing.T) {
	ctx := context.Background()
	legacy := ferm(NewFake())
	m := newTestManager(t, testCfg, fakes{{Legacy, IPv4}: legacy, {NFT, IPv4}: NewFake()})
	if _, err := m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	// ferm reload: flush and delete every chain, load its rules again.
	legacy.FlushAll()
	ferm(legacy)
	st, err := m.Ensure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(wantLines(), legacy.Lines()); d != "" {
		t.Errorf("after repair (-want +got):\n%s", d)
	}
	if st.Repairs != 1 || st.LastRepair.IsZero() {
		t.Errorf("repairs = %d, last %v; want 1", st.Repairs, st.LastRepair)
	}
	// Mid-reload (nothing at all visible): stay in legacy, do not jump to nft.
	legacy.FlushAll()
	st, err = m.Ensure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Backend != "legacy" || st.Repairs != 2 || !strings.Contains(st.Reason, "keeping legacy") {
		t.Errorf("status: %+v", st)
	}
	// Someone moves our jump below the drop.
	ferm(legacy)
	legacy.FlushAll()
	ferm(legacy)
	if _, err := m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if err := legacy.Delete("filter", "FORWARD", JumpArgs()...); err != nil {
		t.Fatal(err)
	}
	legacy.AddRule("FORWARD", JumpArgs()...)
	if _, err := m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(wantLines(), legacy.Lines()); d != "" {
		t.Errorf("after moving the jump (-want +got):\n%s", d)
	}
}

func TestEnsureFollowsTheDropToAnotherBackend(t *testing.T) {
	ctx := context.Background()
	legacy, nft := ferm(NewFake()), NewFake()
	m := newTestManager(t, testCfg, fakes{{Legacy, IPv4}: legacy, {NFT, IPv4}: nft})
	if _, err := m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	// The admin migrates the firewall to nft.
	legacy.FlushAll()
	legacy.SetPolicy("FORWARD", "ACCEPT")
	ferm(nft)
	st, err := m.Ensure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Backend != "nft" {
		t.Fatalf("backend %q, want nft", st.Backend)
	}
	if d := cmp.Diff(wantLines(), nft.Lines()); d != "" {
		t.Errorf("nft (-want +got):\n%s", d)
	}
	// Leftovers of ours in legacy (say, restored from an old save) are
	// removed on the next full look at both backends.
	legacy.AddRule(ChainName, "-j", "ACCEPT")
	legacy.AddRule("FORWARD", JumpArgs()...)
	clock := time.Now()
	m.now = func() time.Time { return clock }
	clock = clock.Add(RescanInterval)
	if _, err := m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"-P INPUT ACCEPT", "-P FORWARD ACCEPT", "-P OUTPUT ACCEPT"}, legacy.Lines()); d != "" {
		t.Errorf("legacy after move (-want +got):\n%s", d)
	}
}

func TestUninstallRemovesExactlyOurs(t *testing.T) {
	ctx := context.Background()
	legacy, nft := ferm(NewFake()), NewFake()
	legacy.AddRule("INPUT", "-i", "lo", "-j", "ACCEPT")
	before := legacy.Lines()
	cfg := testCfg
	cfg.Subnets = append(slices.Clone(cfg.Subnets), netip.MustParsePrefix("2001:db8:254::/64"))
	legacy6 := ferm(NewFake())
	before6 := legacy6.Lines()
	m := newTestManager(t, cfg, fakes{{Legacy, IPv4}: legacy, {NFT, IPv4}: nft, {Legacy, IPv6}: legacy6})
	st, err := m.Ensure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Rules) != 2 {
		t.Errorf("rules: %+v", st.Rules)
	}
	if !slices.ContainsFunc(legacy6.Lines(), func(l string) bool { return strings.Contains(l, "-d 2001:db8:254::/64") }) {
		t.Errorf("no IPv6 exemption: %v", legacy6.Lines())
	}
	if err := m.Uninstall(ctx); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(before, legacy.Lines()); d != "" {
		t.Errorf("ipv4 after uninstall (-want +got):\n%s", d)
	}
	if d := cmp.Diff(before6, legacy6.Lines()); d != "" {
		t.Errorf("ipv6 after uninstall (-want +got):\n%s", d)
	}
	// Uninstall twice is fine.
	if err := m.Uninstall(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestModeOffRemovesOnce(t *testing.T) {
	ctx := context.Background()
	legacy := ferm(NewFake())
	before := legacy.Lines()
	fs := fakes{{Legacy, IPv4}: legacy}
	on := newTestManager(t, testCfg, fs)
	if _, err := on.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	off := newTestManager(t, Config{Mode: config.FirewallOff}, fs)
	st, err := off.Ensure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(before, legacy.Lines()); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	calls := legacy.Calls
	if _, err := off.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if legacy.Calls != calls {
		t.Errorf("mode off keeps touching iptables")
	}
	if st.Mode != config.FirewallOff || st.Backend != "" {
		t.Errorf("status: %+v", st)
	}
}

func TestExplicitBackend(t *testing.T) {
	legacy, nft := ferm(NewFake()), NewFake()
	cfg := testCfg
	cfg.Backend = "nft"
	m := newTestManager(t, cfg, fakes{{Legacy, IPv4}: legacy, {NFT, IPv4}: nft})
	st, err := m.Ensure(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// The first pass looks into legacy once for our leftovers (a switch
	// from legacy); finding none, it changes nothing there.
	if st.Backend != "nft" || legacy.Mutations != 0 {
		t.Errorf("explicit nft changed legacy: %+v, legacy mutations %d", st, legacy.Mutations)
	}
	if !nft.exists(ChainName) {
		t.Error("no chain in nft")
	}
	calls := legacy.Calls
	for range 3 {
		if _, err := m.Ensure(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if legacy.Calls != calls || legacy.Mutations != 0 {
		t.Errorf("explicit nft keeps touching legacy: %d calls after the first pass, %d mutations", legacy.Calls-calls, legacy.Mutations)
	}
	// A missing tool for the configured backend is an error, not a panic.
	m = newTestManager(t, cfg, fakes{{Legacy, IPv4}: legacy})
	if _, err := m.Ensure(context.Background()); !errors.Is(err, ErrUnavailable) {
		t.Errorf("error %v, want ErrUnavailable", err)
	}
}

func TestLockContention(t *testing.T) {
	ctx := context.Background()
	legacy := ferm(NewFake())
	m := newTestManager(t, testCfg, fakes{{Legacy, IPv4}: legacy, {NFT, IPv4}: NewFake()})

	// Briefly busy: backs off and succeeds within the pass.
	legacy.LockedCalls = 2
	st, err := m.Ensure(ctx)
	if err != nil {
		t.Fatalf("transient lock: %v", err)
	}
	if st.Backend != "legacy" || len(st.Rules) != 1 {
		t.Errorf("status: %+v", st)
	}

	// Held for good: a wrapped ErrLocked, the status says so, nothing panics.
	legacy.FlushAll()
	ferm(legacy)
	legacy.LockedCalls = 100
	st, err = m.Ensure(ctx)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("error %v, want ErrLocked", err)
	}
	if !strings.Contains(st.LastError, "xtables lock") {
		t.Errorf("LastError %q", st.LastError)
	}
	// Cancelled while backing off.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	legacy.LockedCalls = 100
	if _, err := m.Ensure(cctx); !errors.Is(err, ErrLocked) || !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want ErrLocked and context.Canceled", err)
	}
	// Lock released: the next pass repairs.
	legacy.LockedCalls = 0
	st, err = m.Ensure(ctx)
	if err != nil || st.LastError != "" || st.Repairs != 1 {
		t.Errorf("after release: %v %+v", err, st)
	}
}

func mustPrefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestAutoListsTheOtherBackendOnlyNowAndThen(t *testing.T) {
	ctx := context.Background()
	legacy, nft := ferm(NewFake()), NewFake()
	m := newTestManager(t, testCfg, fakes{{Legacy, IPv4}: legacy, {NFT, IPv4}: nft})
	clock := time.Unix(1000, 0)
	m.now = func() time.Time { return clock }
	if _, err := m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	nftCalls := nft.Calls
	for i := 0; i < 5; i++ {
		clock = clock.Add(time.Second)
		if _, err := m.Ensure(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if nft.Calls != nftCalls {
		t.Errorf("nft listed %d times in steady state", nft.Calls-nftCalls)
	}
	clock = clock.Add(RescanInterval)
	if _, err := m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if nft.Calls != nftCalls+1 {
		t.Errorf("nft calls %d after the rescan interval, want %d", nft.Calls, nftCalls+1)
	}
	// The drop disappears from legacy and shows up in nft: found at once.
	nftCalls = nft.Calls
	legacy.FlushAll()
	legacy.SetPolicy("FORWARD", "ACCEPT")
	ferm(nft)
	clock = clock.Add(time.Second)
	st, err := m.Ensure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Backend != "nft" || nft.Calls == nftCalls {
		t.Errorf("status %+v, nft calls %d", st, nft.Calls-nftCalls)
	}
}

// brokenLister is a tool that is installed but cannot list (iptables-nft on
// a kernel without nf_tables).
type brokenLister struct{ *Fake }

func (brokenLister) ListTable(string) ([]string, error) {
	return nil, &FakeError{Status: 1, Msg: "iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Invalid argument"}
}

func TestAutoWithAnUnlistableBackend(t *testing.T) {
	legacy := ferm(NewFake())
	m, err := New(testCfg, nil, WithSystemDefault(NFT), noNftables, WithRunners(func(b Backend, f Family) (Runner, error) {
		switch {
		case f != IPv4:
			return nil, ErrUnavailable
		case b == Legacy:
			return legacy, nil
		}
		return brokenLister{NewFake()}, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	st, err := m.Ensure(context.Background())
	if err != nil || st.Backend != "legacy" {
		t.Fatalf("drop visible in legacy, nft unlistable: %v %+v", err, st)
	}
	// Without a drop anywhere visible, the unlistable backend might be the
	// one holding it: refuse to guess.
	legacy2 := NewFake()
	m, err = New(testCfg, nil, WithSystemDefault(NFT), noNftables, WithRunners(func(b Backend, f Family) (Runner, error) {
		switch {
		case f != IPv4:
			return nil, ErrUnavailable
		case b == Legacy:
			return legacy2, nil
		}
		return brokenLister{NewFake()}, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Ensure(context.Background()); err == nil || !strings.Contains(err.Error(), "rule set generation") {
		t.Errorf("error %v", err)
	}
	if legacy2.Mutations != 0 {
		t.Errorf("guessed and changed legacy")
	}
}

// TestConcurrentEnsure: the ticker and a poke may call Ensure at once, and
// status readers run alongside; passes are serialised (run with -race).
func TestConcurrentEnsure(t *testing.T) {
	legacy := ferm(NewFake())
	m := newTestManager(t, testCfg, fakes{{Legacy, IPv4}: legacy, {NFT, IPv4}: NewFake()})
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				if _, err := m.Ensure(context.Background()); err != nil {
					t.Error(err)
				}
				_ = m.Status()
			}
		}()
	}
	wg.Wait()
	if d := cmp.Diff(wantLines(), legacy.Lines()); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	if st := m.Status(); st.Repairs != 0 {
		t.Errorf("repairs %d", st.Repairs)
	}
}
