package monitoring

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/bgplb/bgplb/internal/testenv"
)

func TestRefs(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []Ref
	}{
		{`bgplb_speaker_session_up == 0`, []Ref{{Name: "bgplb_speaker_session_up"}}},
		{`sum by (op) (rate(bgplb_speaker_path_changes_total[5m]))`, []Ref{{Name: "bgplb_speaker_path_changes_total", Rate: true}}},
		{`histogram_quantile(0.99, sum by (le) (rate( bgplb_speaker_reconcile_seconds_bucket[5m])))`, []Ref{{Name: "bgplb_speaker_reconcile_seconds_bucket", Rate: true}}},
		{`bgplb_ippool_addresses_in_use / (bgplb_ippool_addresses_capacity > 0)`, []Ref{{Name: "bgplb_ippool_addresses_in_use"}, {Name: "bgplb_ippool_addresses_capacity"}}},
		{`up{job="node"}`, nil},
	} {
		if diff := cmp.Diff(tc.want, Refs(tc.expr, "")); diff != "" {
			t.Errorf("Refs(%q) (-want +got):\n%s", tc.expr, diff)
		}
	}
}

func family(name string, typ dto.MetricType) *dto.MetricFamily {
	return &dto.MetricFamily{Name: proto.String(name), Type: typ.Enum()}
}

func TestCheck(t *testing.T) {
	fams := Families([]*dto.MetricFamily{
		family("bgplb_speaker_session_up", dto.MetricType_GAUGE),
		family("bgplb_speaker_path_changes_total", dto.MetricType_COUNTER),
		family("bgplb_speaker_reconcile_seconds", dto.MetricType_HISTOGRAM),
		family("bgplb_speaker_unadvertised_pools", dto.MetricType_GAUGE),
		family("bgplb_build_info", dto.MetricType_GAUGE),
	})
	for _, tc := range []struct {
		ref     Ref
		program string
		wantErr string
	}{
		{Ref{Name: "bgplb_speaker_session_up"}, Speaker, ""},
		{Ref{Name: "bgplb_speaker_path_changes_total", Rate: true}, Speaker, ""},
		{Ref{Name: "bgplb_speaker_reconcile_seconds_bucket", Rate: true}, Speaker, ""},
		{Ref{Name: "bgplb_speaker_reconcile_seconds_count"}, Speaker, ""},
		{Ref{Name: "bgplb_build_info"}, Speaker, ""},
		{Ref{Name: "bgplb_speaker_session_up", Rate: true}, Speaker, "rate/increase of a GAUGE"},
		{Ref{Name: "bgplb_speaker_unadvertised_pools_count"}, Speaker, "is a GAUGE, want a histogram"},
		{Ref{Name: "bgplb_speaker_updates_sent_total"}, Speaker, "not served"},
		// Another program's metric is not this program's business.
		{Ref{Name: "bgplb_routeragent_peer_up"}, Speaker, ""},
		{Ref{Name: "bgplb_ippool_addresses_in_use"}, Controller, "not served"},
	} {
		errs := Check([]Ref{tc.ref}, tc.program, fams)
		got := errors.Join(errs...)
		switch {
		case tc.wantErr == "" && got != nil:
			t.Errorf("%+v for %s: %v", tc.ref, tc.program, got)
		case tc.wantErr != "" && (got == nil || !strings.Contains(got.Error(), tc.wantErr)):
			t.Errorf("%+v for %s: error %v, want %q", tc.ref, tc.program, got, tc.wantErr)
		}
	}
}

// TestFiles: the dashboard and the rules parse, name only bgplb metrics of
// the three programs, and cover what the issue asks for: sessions,
// prefixes, routes, ECMP, firewall repairs, exemption traffic, allocations
// in the dashboard; session down, pool nearly exhausted, routes desired !=
// installed, firewall not ok, redirects on in the alerts. The programs'
// tests check that each name is served (see Check's callers).
func TestFiles(t *testing.T) {
	root := testenv.RepoRoot()
	refs, err := Load(root)
	if err != nil {
		t.Fatal(err)
	}
	byFile := map[string]map[string]bool{}
	programs := map[string]bool{}
	for _, r := range refs {
		if byFile[r.Where] == nil {
			byFile[r.Where] = map[string]bool{}
		}
		byFile[r.Where][r.Name] = true
		programs[Program(r.Name)] = true
	}
	for _, p := range []string{Controller, Speaker, RouterAgent, All} {
		if !programs[p] {
			t.Errorf("no metric of %s in the dashboard or the rules", p)
		}
	}
	for file, want := range map[string][]string{
		DashboardFile: {"bgplb_speaker_session_up", "bgplb_routeragent_peer_up", "bgplb_speaker_prefixes_announced",
			"bgplb_routeragent_prefixes_accepted", "bgplb_routeragent_routes_installed", "bgplb_routeragent_routes_ecmp_width",
			"bgplb_routeragent_firewall_repairs_total", "bgplb_routeragent_exemption_packets_total",
			"bgplb_ippool_addresses_in_use", "bgplb_service_allocations_total", "bgplb_build_info"},
		RulesFile: {"bgplb_speaker_session_up", "bgplb_routeragent_peer_up", "bgplb_ippool_addresses_capacity",
			"bgplb_routeragent_routes_desired", "bgplb_routeragent_routes_installed", "bgplb_routeragent_firewall_ok",
			"bgplb_routeragent_send_redirects_effective"},
	} {
		for _, n := range want {
			if !byFile[file][n] {
				t.Errorf("%s does not use %s", file, n)
			}
		}
	}
}

// TestChartCopies: the chart ships byte-identical copies (make chart-sync
// writes them; check-generated fails on drift).
func TestChartCopies(t *testing.T) {
	root := testenv.RepoRoot()
	for _, f := range []string{DashboardFile, RulesFile} {
		src, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		cp, err := os.ReadFile(filepath.Join(root, "charts/bgplb/files/monitoring", filepath.Base(f)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(src, cp) {
			t.Errorf("charts/bgplb/files/monitoring/%s differs from %s: run make chart-sync", filepath.Base(f), f)
		}
	}
}

// TestRulesPromtool: `promtool check rules` accepts the rules (syntax,
// PromQL, templates in annotations). promtool is built from the Go module
// proxy by hack/promtool.sh (cached outside the checkout); BGPLB_PROMTOOL
// names a binary to use instead. A missing promtool fails the test: it is
// never skipped.
func TestRulesPromtool(t *testing.T) {
	root := testenv.RepoRoot()
	bin := os.Getenv("BGPLB_PROMTOOL")
	if bin == "" {
		out, err := exec.Command(filepath.Join(root, "hack", "promtool.sh")).Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				t.Logf("%s", ee.Stderr)
			}
			t.Fatalf("hack/promtool.sh: %v (set BGPLB_PROMTOOL to a promtool binary)", err)
		}
		bin = strings.TrimSpace(string(out))
	}
	out, err := exec.Command(bin, "check", "rules", filepath.Join(root, RulesFile)).CombinedOutput()
	t.Logf("promtool check rules:\n%s", out)
	if err != nil {
		t.Fatalf("promtool check rules: %v", err)
	}
	if !strings.Contains(string(out), "SUCCESS: 8 rules found") {
		t.Errorf("promtool did not report the 8 rules")
	}
}
