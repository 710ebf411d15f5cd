package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bgplb/bgplb/routeragent/trace"
)

// maxTraceVerdicts is how many verdicts of `trace` the status keeps.
const maxTraceVerdicts = 20

// TraceStatus is what `trace` found lately: its last verdicts (newest
// last, without their timelines) and how many of each kind since start.
type TraceStatus struct {
	Last   []trace.Verdict    `json:"last"`
	Counts map[trace.Kind]int `json:"counts"`
}

// traceLog holds the verdicts `trace` hands to the agent (POST /trace).
type traceLog struct {
	mu     sync.Mutex
	last   []trace.Verdict
	counts map[trace.Kind]int
}

func (l *traceLog) add(v trace.Verdict) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.counts == nil {
		l.counts = map[trace.Kind]int{}
	}
	l.counts[v.Kind]++
	v.Timeline = nil
	l.last = append(l.last, v)
	if len(l.last) > maxTraceVerdicts {
		l.last = append(l.last[:0:0], l.last[len(l.last)-maxTraceVerdicts:]...)
	}
}

// snapshot is nil until the first verdict.
func (l *traceLog) snapshot() *TraceStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.counts) == 0 {
		return nil
	}
	s := &TraceStatus{Last: append([]trace.Verdict(nil), l.last...), Counts: map[trace.Kind]int{}}
	for k, n := range l.counts {
		s.Counts[k] = n
	}
	return s
}

// recordTrace is POST /trace: one verdict of a `trace` run. Unknown kinds
// are refused, so the metric's label stays within trace.Kinds.
func (a *Agent) recordTrace(w http.ResponseWriter, r *http.Request) {
	var v trace.Verdict
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&v); err != nil {
		http.Error(w, "decode verdict: "+err.Error(), http.StatusBadRequest)
		return
	}
	if !v.Kind.Valid() {
		http.Error(w, fmt.Sprintf("unknown verdict %q", v.Kind), http.StatusBadRequest)
		return
	}
	a.traces.add(v)
	w.WriteHeader(http.StatusNoContent)
}

// PostVerdict hands one verdict of `trace` to the agent listening on path.
func PostVerdict(ctx context.Context, path string, v trace.Verdict) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://agent/trace", bytes.NewReader(b))
	if err != nil {
		return err
	}
	resp, err := unixClient(path).Do(req)
	if err != nil {
		return fmt.Errorf("is the agent running? %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("post verdict: %s", resp.Status)
	}
	return nil
}

var mTraceVerdicts = prometheus.NewDesc("bgplb_routeragent_trace_verdicts_total",
	"Verdicts of `bgplb-routeragent trace` since start, by kind (every kind is exported).", []string{"verdict"}, nil)

// collectTraces exports one series per kind of trace.Kinds, zeros
// included: a fixed label set.
func collectTraces(ch chan<- prometheus.Metric, s *TraceStatus) {
	for _, k := range trace.Kinds {
		n := 0
		if s != nil {
			n = s.Counts[k]
		}
		ch <- prometheus.MustNewConstMetric(mTraceVerdicts, prometheus.CounterValue, float64(n), string(k))
	}
}
