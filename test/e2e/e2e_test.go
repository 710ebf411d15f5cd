// Package e2e runs the whole product in the lab (test/lab): a real
// kube-apiserver, bgplb-controller, two bgplb-speakers and bgplb-routeragent
// on a router with a ferm firewall, and a client, in network namespaces.
// It needs root (network namespaces) and the envtest binaries; `make test`
// provides both in CI.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/bgplb/bgplb/internal/netnstest"
	"github.com/bgplb/bgplb/internal/testenv"
	"github.com/bgplb/bgplb/test/lab"
)

var (
	theLab  *lab.Lab
	skipWhy string
	node1   = netip.MustParseAddr(lab.NodeIPs[lab.Node1])
	node2   = netip.MustParseAddr(lab.NodeIPs[lab.Node2])
)

func TestMain(m *testing.M) {
	code := func() int {
		switch {
		case os.Geteuid() != 0:
			skipWhy = "the end-to-end lab needs root to create network namespaces (CI runs it as root)"
			return m.Run()
		case os.Getenv("KUBEBUILDER_ASSETS") == "":
			if testenv.Required() {
				fmt.Fprintln(os.Stderr, "e2e: BGPLB_REQUIRE_ENVTEST=1 but KUBEBUILDER_ASSETS is not set")
				return 1
			}
			skipWhy = testenv.ErrNoAssets.Error()
			return m.Run()
		}
		l, cleanup, err := startLab()
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e: lab up:", err)
			cleanup()
			return 1
		}
		theLab = l
		defer cleanup()
		return m.Run()
	}()
	os.Exit(code)
}

// startLab builds the binaries and brings the lab up with the router agent
// fully on.
func startLab() (*lab.Lab, func(), error) {
	dir, err := os.MkdirTemp("", "bgplb-e2e-")
	if err != nil {
		return nil, func() {}, err
	}
	// FRR's daemons (the benchmark's comparison) drop to the frr user, which
	// must reach the lab's state directory.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, func() {}, err
	}
	bin := filepath.Join(dir, "bin")
	labBin = bin
	cmd := exec.Command("go", "build", "-o", bin+"/", "./cmd/bgplb-controller", "./cmd/bgplb-speaker", "./cmd/bgplb-routeragent", "./cmd/bgplb-lab")
	cmd.Dir = testenv.RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, func() {}, fmt.Errorf("build binaries: %w\n%s", err, out)
	}
	prefix := fmt.Sprintf("%se2e%d-", netnstest.Prefix, os.Getpid()%100000)
	ctx := context.Background()
	l, err := lab.Up(ctx, lab.Options{Prefix: prefix, BinDir: bin, StateDir: filepath.Join(dir, "state"),
		CRDDir: filepath.Join(testenv.RepoRoot(), "config", "crd", "bases"),
		Logf:   func(f string, a ...any) { fmt.Fprintf(os.Stderr, "lab: "+f+"\n", a...) }})
	cleanup := func() {
		if l != nil {
			if err := l.Down(); err != nil {
				fmt.Fprintln(os.Stderr, "e2e: lab down:", err)
			}
		} else {
			_ = lab.Down(prefix)
		}
		if os.Getenv("BGPLB_E2E_KEEP_LOGS") == "" {
			os.RemoveAll(dir)
		} else {
			fmt.Fprintln(os.Stderr, "e2e: logs kept in", dir)
		}
	}
	if err != nil {
		return nil, cleanup, err
	}
	if err := l.StartAgent(lab.AgentMode{Firewall: true, Redirects: true}); err != nil {
		return nil, cleanup, err
	}
	// Tests start from a settled lab: both speakers' sessions are up.
	if err := l.WaitAgentPeers(ctx, 2, 60*time.Second); err != nil {
		return nil, cleanup, err
	}
	return l, cleanup, nil
}

func setup(t *testing.T) (*lab.Lab, context.Context) {
	t.Helper()
	if theLab == nil {
		t.Skip("skipping: " + skipWhy)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	t.Cleanup(func() {
		if t.Failed() {
			for _, name := range []string{"controller", "speaker-node1", "speaker-node2", lab.AgentName} {
				if b, err := os.ReadFile(theLab.LogPath(name)); err == nil {
					lines := strings.Split(string(b), "\n")
					if len(lines) > 40 {
						lines = lines[len(lines)-40:]
					}
					t.Logf("--- last lines of %s:\n%s", name, strings.Join(lines, "\n"))
				}
			}
		}
	})
	return theLab, ctx
}

// createService creates a Service, waits for its address and returns its /32.
func createService(t *testing.T, ctx context.Context, l *lab.Lab, s lab.ServiceSpec) netip.Prefix {
	t.Helper()
	if err := l.CreateService(ctx, s); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.DeleteService(context.Background(), s.Name) })
	ip, err := l.WaitServiceIP(ctx, s.Name, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return netip.PrefixFrom(ip, 32)
}

// getEventually retries a client request until it succeeds or timeout.
func getEventually(ctx context.Context, l *lab.Lab, ip netip.Addr, timeout time.Duration) (string, time.Duration, error) {
	start := time.Now()
	for {
		body, err := l.ClientGet(ctx, ip.String(), 500*time.Millisecond)
		if err == nil {
			return body, time.Since(start), nil
		}
		if time.Since(start) > timeout {
			return "", time.Since(start), err
		}
	}
}

func TestServiceReachableThroughRouterWithECMP(t *testing.T) {
	l, ctx := setup(t)
	pfx := createService(t, ctx, l, lab.ServiceSpec{Name: "e2e-basic", EndpointsOn: []string{lab.Node1, lab.Node2}})
	body, took, err := getEventually(ctx, l, pfx.Addr(), 10*time.Second)
	if err != nil {
		t.Fatalf("client could not reach %s through the router: %v", pfx, err)
	}
	t.Logf("client reached %s %v after the status write: %q", pfx, took, strings.TrimSpace(body))
	if !strings.HasPrefix(body, "hello from node") {
		t.Errorf("unexpected body %q", body)
	}
	if err := l.WaitRoute(ctx, pfx, []netip.Addr{node1, node2}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// The lab's config sets no routes.protocol: the agent marks its routes
	// with its default, 220 (named bgplb in rt_protos.d), and deletes only
	// routes that carry it.
	if _, proto, err := l.RouterRoute(pfx); err != nil || proto != agentRouteProtocol {
		t.Errorf("the router's route %s has protocol %d (err %v), want the agent's %d", pfx, proto, err, agentRouteProtocol)
	}
}

// agentRouteProtocol is the agent's default route protocol
// (routeragent/config.DefaultProtocol), written out so that a changed
// default fails here.
const agentRouteProtocol = 220

func TestLocalTrafficPolicyOnlyFromNodeWithEndpoint(t *testing.T) {
	l, ctx := setup(t)
	pfx := createService(t, ctx, l, lab.ServiceSpec{Name: "e2e-local", Local: true, EndpointsOn: []string{lab.Node2}})
	if err := l.WaitRoute(ctx, pfx, []netip.Addr{node2}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	body, _, err := getEventually(ctx, l, pfx.Addr(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(body, "hello from node2") {
		t.Errorf("Local service answered by the wrong node: %q", body)
	}
	// The endpoint moves to node1: the route follows.
	if err := l.SetEndpoints(ctx, "e2e-local", []string{lab.Node1}); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitRoute(ctx, pfx, []netip.Addr{node1}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestDeleteServiceRemovesRoute(t *testing.T) {
	l, ctx := setup(t)
	pfx := createService(t, ctx, l, lab.ServiceSpec{Name: "e2e-delete", EndpointsOn: []string{lab.Node1, lab.Node2}})
	if err := l.WaitRoute(ctx, pfx, []netip.Addr{node1, node2}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := l.DeleteService(ctx, "e2e-delete"); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitRoute(ctx, pfx, nil, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if body, err := l.ClientGet(ctx, pfx.Addr().String(), time.Second); err == nil {
		t.Fatalf("client still reaches the deleted service: %q", body)
	}
}

func TestKilledSpeakerIsRemovedOtherNodeKeepsServing(t *testing.T) {
	l, ctx := setup(t)
	pfx := createService(t, ctx, l, lab.ServiceSpec{Name: "e2e-kill", EndpointsOn: []string{lab.Node1, lab.Node2}})
	if err := l.WaitRoute(ctx, pfx, []netip.Addr{node1, node2}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := l.Stop("speaker-"+lab.Node1, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.StartSpeaker(lab.Node1); err != nil {
			t.Errorf("restart speaker: %v", err)
		}
	})
	if err := l.WaitRoute(ctx, pfx, []netip.Addr{node2}, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	body, _, err := getEventually(ctx, l, pfx.Addr(), 5*time.Second)
	if err != nil || !strings.HasPrefix(body, "hello from node2") {
		t.Fatalf("node2 does not keep serving: %q, %v", body, err)
	}
}

func TestAgentRestartDropsNoRequestAndNoRoute(t *testing.T) {
	l, ctx := setup(t)
	pfx := createService(t, ctx, l, lab.ServiceSpec{Name: "e2e-restart", EndpointsOn: []string{lab.Node1, lab.Node2}})
	if err := l.WaitRoute(ctx, pfx, []netip.Addr{node1, node2}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, _, err := getEventually(ctx, l, pfx.Addr(), 10*time.Second); err != nil {
		t.Fatal(err)
	}

	// Watch the router's kernel for any deletion of the service route.
	updates := make(chan netlink.RouteUpdate, 1024)
	done := make(chan struct{})
	if err := l.RouterSubscribe(updates, done); err != nil {
		t.Fatal(err)
	}
	var deleted atomic.Int32
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for u := range updates {
			if u.Type == syscall.RTM_DELROUTE && u.Dst != nil && u.Dst.String() == pfx.String() {
				deleted.Add(1)
			}
		}
	}()

	// A client loops requests while the agent restarts.
	var ok, failed atomic.Int32
	var firstErr atomic.Value
	stop := make(chan struct{})
	var cwg sync.WaitGroup
	cwg.Add(1)
	go func() {
		defer cwg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := l.ClientGet(ctx, pfx.Addr().String(), 2*time.Second); err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			} else {
				ok.Add(1)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	time.Sleep(300 * time.Millisecond)
	if err := l.StopAgent(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // the agent is down: traffic must keep flowing
	if err := l.StartAgent(lab.AgentMode{Firewall: true, Redirects: true}); err != nil {
		t.Fatal(err)
	}
	// Until the speakers are back and their End-of-RIB swept nothing.
	if err := l.WaitRoute(ctx, pfx, []netip.Addr{node1, node2}, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	waitAgentPeers(t, l, 2, 30*time.Second)
	time.Sleep(500 * time.Millisecond)
	close(stop)
	cwg.Wait()
	close(done)
	wg.Wait()

	t.Logf("requests during the restart: %d ok, %d failed", ok.Load(), failed.Load())
	if failed.Load() > 0 {
		t.Errorf("%d requests failed during the agent restart (first: %v)", failed.Load(), firstErr.Load())
	}
	if ok.Load() == 0 {
		t.Errorf("no request was made during the restart")
	}
	if n := deleted.Load(); n > 0 {
		t.Errorf("the router's route %s was deleted %d times during the agent restart", pfx, n)
	}
}

// waitAgentPeers waits until the agent reports n established peers.
func waitAgentPeers(t *testing.T, l *lab.Lab, n int, timeout time.Duration) {
	t.Helper()
	if err := l.WaitAgentPeers(context.Background(), n, timeout); err != nil {
		t.Fatal(err)
	}
}

func TestDoctorHealthyThenReportsManualDamage(t *testing.T) {
	l, ctx := setup(t)
	// externalTrafficPolicy Cluster: every Ready node announces it, even
	// with the only endpoint on node1.
	pfx := createService(t, ctx, l, lab.ServiceSpec{Name: "e2e-doctor", EndpointsOn: []string{lab.Node1}})
	if err := l.WaitRoute(ctx, pfx, []netip.Addr{node1, node2}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, _, err := getEventually(ctx, l, pfx.Addr(), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	findings, err := doctorFindings(l)
	if err != nil {
		t.Fatalf("doctor on a healthy router: %v\n%v", err, findings)
	}
	t.Logf("doctor (healthy): %v", findings)
	for _, check := range []string{"send_redirects", "firewall"} {
		if got := statusesOf(findings, check); len(got) == 0 || slices.ContainsFunc(got, func(s string) bool { return s != "ok" }) {
			t.Errorf("doctor on a healthy router: %s findings %v, want only ok", check, got)
		}
	}

	// Stop the agent so that it cannot repair, then break things by hand.
	if err := l.StopAgent(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.StartAgent(lab.AgentMode{Firewall: true, Redirects: true}); err != nil {
			t.Errorf("restart agent: %v", err)
		}
		waitAgentPeers(t, l, 2, 30*time.Second)
	})
	if err := l.ReloadFerm(); err != nil { // a ferm reload flushes our chain and jump
		t.Fatal(err)
	}
	if _, err := exec.Command("ip", "netns", "exec", l.NS(lab.Router), "sysctl", "-qw", "net.ipv4.conf.all.send_redirects=1").CombinedOutput(); err != nil {
		t.Fatal(err)
	}
	findings, err = doctorFindings(l)
	if err == nil {
		t.Errorf("doctor exited 0 on a damaged router: %v", findings)
	}
	t.Logf("doctor (damaged): %v", findings)
	// Each damage is reported as a failure of its own check, and that
	// check no longer says ok.
	for _, check := range []string{"send_redirects", "firewall"} {
		if got := statusesOf(findings, check); !slices.Contains(got, "fail") || slices.Contains(got, "ok") {
			t.Errorf("doctor on a damaged router: %s findings %v, want a fail and no ok", check, got)
		}
	}
}

// finding is one line of `bgplb-routeragent doctor --json`.
type finding struct {
	Check   string `json:"check"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func (f finding) String() string { return f.Status + " " + f.Check + ": " + f.Message }

// doctorFindings runs `doctor --json` on the router; err is its exit error
// (doctor exits 1 when a check fails) or a parse error.
func doctorFindings(l *lab.Lab) ([]finding, error) {
	out, runErr := l.AgentCommand("doctor", "--json", "--config", l.AgentConfigPath())
	var fs []finding
	if err := json.Unmarshal([]byte(out), &fs); err != nil {
		return nil, fmt.Errorf("parse doctor --json: %w (exit: %v)\n%s", err, runErr, out) //nolint:errorlint // runErr is often nil: shown, not wrapped
	}
	return fs, runErr
}

// statusesOf lists the statuses of check's findings, in order.
func statusesOf(fs []finding, check string) []string {
	var out []string
	for _, f := range fs {
		if f.Check == check {
			out = append(out, f.Status)
		}
	}
	return out
}

// TestFermReloadIsRepairedByHook: a ferm reload deletes our chain and jump;
// the ferm post hook bgplb ships pokes the agent, which puts them back at
// once instead of at its next 1 s firewall check.
//
// What the agent shows cannot tell a poke's firewall pass from the timer's
// (both count one repair), so the test proves the causal chain through the
// poke's other effect: a poke also makes the agent re-read the kernel's
// routes. With routes.resyncInterval at 1 h, nothing else does in this test
// (no link changes, no reload, no route errors), so a route of ours deleted
// by hand right before the reload is back only if the hook poked the agent.
// Removing the hook makes that wait fail; a slow timer cannot mask it.
func TestFermReloadIsRepairedByHook(t *testing.T) {
	l, ctx := setup(t)
	// The lab's hook runs the shipped hook's command with the lab's paths.
	shipped, err := os.ReadFile("../../routeragent/firewall/ferm-hook.conf") // what the .deb installs
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(shipped), `@hook post "bgplb-routeragent poke`) {
		t.Fatalf("the shipped ferm hook no longer runs `bgplb-routeragent poke`; update the lab's FermHook:\n%s", shipped)
	}
	pfx := createService(t, ctx, l, lab.ServiceSpec{Name: "e2e-ferm", EndpointsOn: []string{lab.Node1, lab.Node2}})
	if err := l.WaitRoute(ctx, pfx, []netip.Addr{node1, node2}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, _, err := getEventually(ctx, l, pfx.Addr(), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := l.ReloadAgent(lab.AgentMode{Firewall: true, Redirects: true, ResyncInterval: time.Hour}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.ReloadAgent(lab.AgentMode{Firewall: true, Redirects: true}); err != nil {
			t.Errorf("restore the agent's config: %v", err)
		}
	})
	for i := 1; i <= 3; i++ {
		before, err := firewallRepairs(l)
		if err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("ip", "netns", "exec", l.NS(lab.Router), "ip", "route", "del", pfx.String(),
			"proto", fmt.Sprint(agentRouteProtocol)).CombinedOutput(); err != nil {
			t.Fatalf("delete our route by hand: %v: %s", err, out)
		}
		start := time.Now()
		if err := l.ReloadFermWithHook(); err != nil {
			t.Fatal(err)
		}
		if err := l.WaitRoute(ctx, pfx, []netip.Addr{node1, node2}, 10*time.Second); err != nil {
			t.Fatalf("after ferm reload %d the hook did not poke the agent: the route deleted by hand, which only a poke restores here, is not back: %v", i, err)
		}
		routeBack := time.Since(start)
		// The same poke asked for a firewall pass: exactly one repair.
		var after int
		deadline := time.Now().Add(10 * time.Second)
		for after, err = firewallRepairs(l); err == nil && after == before && time.Now().Before(deadline); after, err = firewallRepairs(l) {
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil || after != before+1 {
			t.Fatalf("after ferm reload %d the agent counts %d firewall repairs (err %v), want %d", i, after, err, before+1)
		}
		listing, err := l.FirewallListing()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(listing, "BGPLB-EXEMPT") {
			t.Fatalf("after ferm reload %d our jump is missing:\n%s", i, listing)
		}
		// New connections work again.
		if _, _, err := getEventually(ctx, l, pfx.Addr(), 10*time.Second); err != nil {
			t.Fatalf("after ferm reload %d the service stays unreachable: %v", i, err)
		}
		t.Logf("ferm reload %d (with hook): our route back %v after ferm started, one repair counted", i, routeBack.Round(time.Millisecond))
	}
}

// firewallRepairs reads the agent's firewall repair counter from `status --json`.
func firewallRepairs(l *lab.Lab) (int, error) {
	out, err := l.AgentCommand("status", "--json", "--config", l.AgentConfigPath())
	if err != nil {
		return 0, fmt.Errorf("status: %w\n%s", err, out)
	}
	var st struct {
		Firewall *struct {
			Repairs int `json:"repairs"`
		} `json:"firewall"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return 0, fmt.Errorf("parse status --json: %w\n%s", err, out)
	}
	if st.Firewall == nil {
		return 0, fmt.Errorf("status --json has no firewall section:\n%s", out)
	}
	return st.Firewall.Repairs, nil
}
