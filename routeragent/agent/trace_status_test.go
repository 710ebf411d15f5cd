package agent

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/bgplb/bgplb/routeragent/trace"
)

// POST /trace keeps the last verdicts and counts them by kind; an unknown
// kind is refused (the metric's label set stays trace.Kinds).
func TestRecordTrace(t *testing.T) {
	a := &Agent{}
	post := func(body string) int {
		w := httptest.NewRecorder()
		a.recordTrace(w, httptest.NewRequest(http.MethodPost, "/trace", strings.NewReader(body)))
		return w.Code
	}
	if got := post(`{"verdict":"healthy","service":"192.168.254.10:80","timeline":[{"ms":1,"what":"x"}]}`); got != http.StatusNoContent {
		t.Fatalf("POST healthy: %d", got)
	}
	for i := 0; i < maxTraceVerdicts+5; i++ {
		post(`{"verdict":"rst","service":"192.168.254.11:80"}`)
	}
	for _, bad := range []string{`{"verdict":"made-up"}`, `{"verdict":""}`, `not json`} {
		if got := post(bad); got != http.StatusBadRequest {
			t.Errorf("POST %s: %d, want 400", bad, got)
		}
	}
	s := a.traces.snapshot()
	if diff := cmp.Diff(map[trace.Kind]int{trace.Healthy: 1, trace.RST: maxTraceVerdicts + 5}, s.Counts); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
	if len(s.Last) != maxTraceVerdicts || s.Last[0].Kind != trace.RST {
		t.Errorf("last: %d verdicts, first %s; want %d, all rst", len(s.Last), s.Last[0].Kind, maxTraceVerdicts)
	}

	// One series per kind, zeros included.
	ch := make(chan prometheus.Metric, 20)
	collectTraces(ch, s)
	close(ch)
	got := map[string]float64{}
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		got[d.GetLabel()[0].GetValue()] = d.GetCounter().GetValue()
	}
	want := map[string]float64{}
	for _, k := range trace.Kinds {
		want[string(k)] = 0
	}
	want["healthy"], want["rst"] = 1, float64(maxTraceVerdicts+5)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("bgplb_routeragent_trace_verdicts_total (-want +got):\n%s", diff)
	}
}
