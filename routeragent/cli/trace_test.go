package cli

import (
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/bgplb/bgplb/routeragent/agent"
	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/trace"
)

func TestTraceParse(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		want   *call
		code   int
		stderr string
	}{
		{args: []string{"trace", "192.168.254.10:80"},
			want: &call{"trace", options{config: def, target: "192.168.254.10:80", timeout: 30 * time.Second}}},
		{args: []string{"trace", "192.168.254.10", "--client", "192.168.2.100", "--timeout", "5s", "--json"},
			want: &call{"trace", options{config: def, target: "192.168.254.10", client: "192.168.2.100", timeout: 5 * time.Second, json: true}}},
		{args: []string{"trace"}, code: 2, stderr: "accepts 1 arg(s), received 0"},
		{args: []string{"trace", "a", "b"}, code: 2, stderr: "accepts 1 arg(s), received 2"},
		{args: []string{"trace", "192.168.254.10", "--timeout", "soon"}, code: 2, stderr: `invalid argument "soon" for "--timeout"`},
		{args: []string{"trace", "192.168.254.10", "--all"}, code: 2, stderr: "unknown flag: --all"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			calls, code, _, stderr := runFake(tc.args, 0)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tc.code, stderr)
			}
			var want []call
			if tc.want != nil {
				want = []call{*tc.want}
			}
			if diff := cmp.Diff(want, calls, cmp.AllowUnexported(call{}, options{})); diff != "" {
				t.Errorf("actions (-want +got):\n%s", diff)
			}
			if !strings.Contains(stderr, tc.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.stderr, stderr)
			}
		})
	}
}

func TestTraceConfig(t *testing.T) {
	for _, tc := range []struct {
		o    options
		want trace.Config
		err  string
	}{
		{o: options{target: "192.168.254.10:443", timeout: time.Second},
			want: trace.Config{Service: netip.MustParseAddrPort("192.168.254.10:443"), Settle: traceSettle}},
		{o: options{target: "192.168.254.10", client: "192.168.2.100", timeout: time.Second},
			want: trace.Config{Service: netip.MustParseAddrPort("192.168.254.10:0"), Client: netip.MustParseAddr("192.168.2.100"), Settle: traceSettle}},
		{o: options{target: "[2001:db8::10]:80", timeout: time.Second},
			want: trace.Config{Service: netip.MustParseAddrPort("[2001:db8::10]:80"), Settle: traceSettle}},
		{o: options{target: "2001:db8::10", timeout: time.Second},
			want: trace.Config{Service: netip.MustParseAddrPort("[2001:db8::10]:0"), Settle: traceSettle}},
		{o: options{target: "svc.example:80", timeout: time.Second}, err: "is not ADDRESS[:PORT]"},
		{o: options{target: "192.168.254.10", client: "me", timeout: time.Second}, err: "--client"},
		{o: options{target: "192.168.254.10", timeout: 0}, err: "--timeout"},
	} {
		t.Run(tc.o.target+" "+tc.o.client, func(t *testing.T) {
			got, err := traceConfig(tc.o)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPrintTraces(t *testing.T) {
	at := time.Date(2026, 12, 5, 3, 4, 5, 0, time.UTC)
	st := &agent.TraceStatus{Counts: map[trace.Kind]int{trace.Healthy: 2, trace.InvalidDrop: 1},
		Last: []trace.Verdict{
			{Kind: trace.Healthy, Service: "192.168.254.10:80", At: at},
			{Kind: trace.Healthy, Service: "192.168.254.10:80", Client: netip.MustParseAddr("10.9.0.2"), At: at},
			{Kind: trace.InvalidDrop, Service: "192.168.254.10:80", Client: netip.MustParseAddr("192.168.2.100"), At: at},
		}}
	var b strings.Builder
	printTraces(&b, st)
	want := `
trace verdicts: invalid-drop: 1, healthy: 2
  03:04:05  healthy  192.168.254.10:80
  03:04:05  healthy  10.9.0.2 -> 192.168.254.10:80
  03:04:05  invalid-drop  192.168.2.100 -> 192.168.254.10:80
`
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("status trace section (-want +got):\n%s", diff)
	}
	b.Reset()
	printTraces(&b, nil)
	if b.Len() != 0 {
		t.Errorf("no verdicts yet: %q", b.String())
	}
}

// TestTraceFirewallMode: trace takes the running agent's firewall.mode (a
// reload may have changed it), else the config's.
func TestTraceFirewallMode(t *testing.T) {
	running := &agentSocket{st: &agent.Status{Config: agent.StatusConfig{FirewallMode: config.FirewallVerify}}}
	if got := running.FirewallMode(t.Context(), config.FirewallExempt); got != config.FirewallVerify {
		t.Errorf("running agent in verify: mode %q", got)
	}
	gone := &agentSocket{path: filepath.Join(t.TempDir(), "no-agent.sock")}
	if got := gone.FirewallMode(t.Context(), config.FirewallVerify); got != config.FirewallVerify {
		t.Errorf("no agent, config verify: mode %q", got)
	}
}
