package buildinfo

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// gather returns the one family of reg as name, type, labels and value.
func gather(t *testing.T, reg *prometheus.Registry) []string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var l []string
			for _, lp := range m.GetLabel() {
				l = append(l, lp.GetName()+"="+lp.GetValue())
			}
			out = append(out, mf.GetName()+" "+mf.GetType().String()+" {"+strings.Join(l, ",")+"} "+
				strings.TrimRight(strings.TrimRight(m.GetGauge().String(), " "), "\n"))
		}
	}
	return out
}

func TestCollector(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(Info{Program: "bgplb-speaker", Version: "v1.2.3", Revision: "abc",
		GoVersion: "go1.26.8", GOOS: "linux", GOARCH: "arm64"}))
	want := []string{"bgplb_build_info " + dto.MetricType_GAUGE.String() +
		" {goarch=arm64,goos=linux,goversion=go1.26.8,program=bgplb-speaker,revision=abc,version=v1.2.3} value:1"}
	if diff := cmp.Diff(want, gather(t, reg)); diff != "" {
		t.Errorf("gathered (-want +got):\n%s", diff)
	}
}

func TestCurrent(t *testing.T) {
	got := Current("bgplb-controller")
	if got.Program != "bgplb-controller" || got.Version == "" || got.Revision == "" || !strings.HasPrefix(got.GoVersion, "go") {
		t.Errorf("Current = %+v", got)
	}
	// Registering twice fails: one series per binary.
	reg := prometheus.NewRegistry()
	if err := Register(reg, "x"); err != nil {
		t.Fatal(err)
	}
	if err := Register(reg, "x"); err == nil {
		t.Error("second Register succeeded")
	}
	if n := len(gather(t, reg)); n != 1 {
		t.Errorf("%d series, want 1", n)
	}
}
