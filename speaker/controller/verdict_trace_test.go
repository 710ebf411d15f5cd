package controller_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/speaker/bgp"
	"github.com/bgplb/bgplb/speaker/controller"
)

// stageTrace timestamps what the speaker does between a router's verdict
// and the Service's condition (measureRoutedLatency): when its GoBGP watch
// signalled, when a reconcile started, when its status writes were sent and
// returned. Test-only: it wraps the reconciler's Speaker and API client.
type stageTrace struct {
	// done stops the forwarder of the traced speaker.
	done   chan struct{}
	mu     sync.Mutex
	events []stageEvent
	// notFound counts, per Service, the status patches that found it
	// deleted.
	notFound map[string]int
}

type stageEvent struct {
	stage string
	at    time.Time
}

const (
	stageSignal       = "signal"        // the speaker's GoBGP watch told the reconciler
	stageReconcile    = "reconcile"     // a reconcile started (its first Speaker call)
	stagePatchSent    = "patch-sent"    // the Service status patch was sent
	stagePatchDone    = "patch-done"    // and returned
	stageStateSent    = "state-sent"    // a BGPSessionState write was sent
	stageStateDone    = "state-done"    // and returned
	stageVerdictsRead = "verdicts-read" // reportVerdicts read the verdicts
)

func (s *stageTrace) mark(stage string) {
	now := time.Now()
	s.mu.Lock()
	s.events = append(s.events, stageEvent{stage, now})
	s.mu.Unlock()
}

// first returns the first event of stage at or after t.
func (s *stageTrace) first(stage string, t time.Time) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.events {
		if e.stage == stage && !e.at.Before(t) {
			return e.at, true
		}
	}
	return time.Time{}, false
}

// busy reports whether a BGPSessionState write was in flight at t (the
// single reconcile worker then finishes it before it takes the next pass).
func (s *stageTrace) busy(t time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	var sent time.Time
	for _, e := range s.events {
		if e.at.After(t) {
			break
		}
		switch e.stage {
		case stageStateSent:
			sent = e.at
		case stageStateDone:
			sent = time.Time{}
		}
	}
	return !sent.IsZero()
}

func (s *stageTrace) reset() {
	s.mu.Lock()
	s.events = s.events[:0]
	s.mu.Unlock()
}

func (s *stageTrace) hooks() fixtureHooks {
	return fixtureHooks{
		client:  func(c client.Client) client.Client { return tracedClient{c, s} },
		speaker: func(m *bgp.Manager) controller.Speaker { return newTracedSpeaker(m, s) },
	}
}

// tracedSpeaker is the node's bgp.Manager with its signal and the
// reconciler's calls timestamped.
type tracedSpeaker struct {
	*bgp.Manager
	trace   *stageTrace
	changed chan struct{}
}

func newTracedSpeaker(m *bgp.Manager, s *stageTrace) *tracedSpeaker {
	ts := &tracedSpeaker{Manager: m, trace: s, changed: make(chan struct{}, 1)}
	go func() {
		for {
			select {
			case <-s.done:
				return
			case <-m.Changed():
			}
			s.mark(stageSignal)
			select {
			case ts.changed <- struct{}{}:
			default:
			}
		}
	}()
	return ts
}

func (ts *tracedSpeaker) Changed() <-chan struct{} { return ts.changed }

func (ts *tracedSpeaker) SetPeers(ctx context.Context, peers []bgp.PeerConfig) error {
	ts.trace.mark(stageReconcile)
	return ts.Manager.SetPeers(ctx, peers)
}

func (ts *tracedSpeaker) VerdictGeneration() uint64 {
	ts.trace.mark(stageVerdictsRead)
	return ts.Manager.VerdictGeneration()
}

// tracedClient timestamps status writes.
type tracedClient struct {
	client.Client
	trace *stageTrace
}

func (c tracedClient) Status() client.SubResourceWriter {
	return tracedStatus{c.Client.Status(), c.trace}
}

type tracedStatus struct {
	client.SubResourceWriter
	trace *stageTrace
}

func (w tracedStatus) stages(obj client.Object) (string, string) {
	if _, ok := obj.(*v1.BGPSessionState); ok {
		return stageStateSent, stageStateDone
	}
	return stagePatchSent, stagePatchDone
}

func (w tracedStatus) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
	sent, done := w.stages(obj)
	w.trace.mark(sent)
	defer w.trace.mark(done)
	err := w.SubResourceWriter.Patch(ctx, obj, patch, opts...)
	if apierrors.IsNotFound(err) {
		w.trace.mu.Lock()
		if w.trace.notFound == nil {
			w.trace.notFound = map[string]int{}
		}
		w.trace.notFound[obj.GetNamespace()+"/"+obj.GetName()]++
		w.trace.mu.Unlock()
	}
	return err
}

// notFoundPatches is how many status patches of Service key found it
// deleted.
func (s *stageTrace) notFoundPatches(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.notFound[key]
}

func (w tracedStatus) Update(ctx context.Context, obj client.Object, opts ...client.SubResourceUpdateOption) error {
	sent, done := w.stages(obj)
	w.trace.mark(sent)
	defer w.trace.mark(done)
	return w.SubResourceWriter.Update(ctx, obj, opts...)
}

// runqueueWait sums the time pid's threads waited for a CPU (the second
// field of /proc/<pid>/task/*/schedstat), and the threads' running time.
func runqueueWait(pid int) (wait, run time.Duration) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0
	}
	for _, task := range tasks {
		b, err := os.ReadFile(filepath.Join(dir, task.Name(), "schedstat"))
		if err != nil {
			continue // the thread ended
		}
		f := strings.Fields(string(b))
		if len(f) < 2 {
			continue
		}
		r, _ := strconv.ParseInt(f[0], 10, 64)
		w, _ := strconv.ParseInt(f[1], 10, 64)
		run += time.Duration(r)
		wait += time.Duration(w)
	}
	return wait, run
}

// childPID finds this process's child whose command is name (envtest's
// kube-apiserver), 0 when there is none.
func childPID(name string) int {
	entries, _ := os.ReadDir("/proc")
	self := strconv.Itoa(os.Getpid())
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 || !strings.HasPrefix(string(b), e.Name()+" ("+name+")") {
			continue
		}
		if f := strings.Fields(string(b[i+1:])); len(f) > 1 && f[1] == self {
			return pid
		}
	}
	return 0
}

// cpuWaits are the CPU waits of the processes a round runs in: this one
// (the router agent, both GoBGPs, the speaker, the test) and envtest's
// kube-apiserver and etcd.
type cpuWaits struct {
	self, apiserver, etcd time.Duration
	// The time their threads ran.
	selfRun, apiserverRun, etcdRun time.Duration
}

// controlPlane are the pids of envtest's kube-apiserver and etcd.
type controlPlane struct{ apiserver, etcd int }

func findControlPlane() controlPlane {
	return controlPlane{childPID("kube-apiserver"), childPID("etcd")}
}

func readCPUWaits(cp controlPlane) cpuWaits {
	var w cpuWaits
	w.self, w.selfRun = runqueueWait(os.Getpid())
	w.apiserver, w.apiserverRun = runqueueWait(cp.apiserver)
	w.etcd, w.etcdRun = runqueueWait(cp.etcd)
	return w
}

func (w cpuWaits) sub(o cpuWaits) cpuWaits {
	return cpuWaits{w.self - o.self, w.apiserver - o.apiserver, w.etcd - o.etcd,
		w.selfRun - o.selfRun, w.apiserverRun - o.apiserverRun, w.etcdRun - o.etcdRun}
}

// roundStages is one round's breakdown: from the route's install to each
// stage (zero: not seen).
type roundStages struct {
	total, signal, reconcile, patchSent, patchDone time.Duration
	// busy: a BGPSessionState write was in flight when the signal came.
	busy bool
	// waited: how long the threads of this process and of the apiserver
	// waited for a CPU during the round (summed over threads).
	waited cpuWaits
}

// The patch may return after the test's watch saw its result.
func (s *stageTrace) round(installed, seen time.Time) roundStages {
	r := roundStages{total: seen.Sub(installed)}
	since := func(stage string, after time.Time) (time.Time, time.Duration) {
		t, ok := s.first(stage, after)
		if !ok {
			return after, 0
		}
		return t, t.Sub(installed)
	}
	var sig, rec, sent time.Time
	sig, r.signal = since(stageSignal, installed)
	r.busy = r.signal > 0 && s.busy(sig)
	rec, r.reconcile = since(stageReconcile, sig)
	sent, r.patchSent = since(stagePatchSent, rec)
	_, r.patchDone = since(stagePatchDone, sent)
	return r
}

func (r roundStages) String() string {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000) }
	return fmt.Sprintf("total %s: signal %s, reconcile start %s, patch sent %s, patch returned %s (apiserver %s), seen %s later, state write in flight %v; threads waited for a CPU: test process %s, apiserver %s, etcd %s; and ran: %s, %s, %s",
		ms(r.total), ms(r.signal), ms(r.reconcile), ms(r.patchSent), ms(r.patchDone), ms(r.patchDone-r.patchSent), ms(r.total-r.patchDone), r.busy,
		ms(r.waited.self), ms(r.waited.apiserver), ms(r.waited.etcd), ms(r.waited.selfRun), ms(r.waited.apiserverRun), ms(r.waited.etcdRun))
}

// summarize gives the percentiles of each stage's share and the slowest
// rounds in full.
func summarize(rounds []roundStages) string {
	if len(rounds) == 0 {
		return "no rounds"
	}
	pct := func(name string, f func(roundStages) time.Duration) string {
		d := make([]time.Duration, len(rounds))
		for i, r := range rounds {
			d[i] = f(r)
		}
		slices.Sort(d)
		return fmt.Sprintf("%s p50 %v p99 %v max %v", name, d[len(d)/2].Round(10*time.Microsecond),
			d[len(d)*99/100].Round(10*time.Microsecond), d[len(d)-1].Round(10*time.Microsecond))
	}
	var b strings.Builder
	busy := 0
	for _, r := range rounds {
		if r.busy {
			busy++
		}
	}
	fmt.Fprintf(&b, "stages over the rounds: %s; %s; %s; %s; %s; %s; %s; %s; rounds whose signal found a session state write in flight: %d",
		pct("install->signal", func(r roundStages) time.Duration { return r.signal }),
		pct("signal->reconcile", func(r roundStages) time.Duration { return r.reconcile - r.signal }),
		pct("reconcile->patch sent", func(r roundStages) time.Duration { return r.patchSent - r.reconcile }),
		pct("patch (apiserver+etcd)", func(r roundStages) time.Duration { return r.patchDone - r.patchSent }),
		pct("patch returned->test's watch", func(r roundStages) time.Duration { return r.total - r.patchDone }),
		pct("CPU wait of the test process's threads", func(r roundStages) time.Duration { return r.waited.self }),
		pct("CPU wait of the apiserver's threads", func(r roundStages) time.Duration { return r.waited.apiserver }),
		pct("CPU wait of etcd's threads", func(r roundStages) time.Duration { return r.waited.etcd }),
		busy)
	slow := slices.Clone(rounds)
	slices.SortFunc(slow, func(a, b roundStages) int { return int(b.total - a.total) })
	for _, r := range slow[:min(3, len(slow))] {
		fmt.Fprintf(&b, "\n\tone of the slowest rounds: %v", r)
	}
	return b.String()
}

// apiserverHistograms reads the envtest kube-apiserver's histograms named
// name whose labels include want, summed over the matching series.
func apiserverHistograms(t testing.TB, name string, want map[string]string) *dto.Histogram {
	t.Helper()
	hc, err := rest.HTTPClientFor(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Get(strings.TrimSuffix(env.Config.Host, "/") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var sum *dto.Histogram
	for _, m := range fams[name].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			match = match && labels[k] == v
		}
		h := m.GetHistogram()
		if !match || h == nil {
			continue
		}
		if sum == nil {
			sum = proto.Clone(h).(*dto.Histogram)
			continue
		}
		sum.SampleCount = proto.Uint64(sum.GetSampleCount() + h.GetSampleCount())
		sum.SampleSum = proto.Float64(sum.GetSampleSum() + h.GetSampleSum())
		for i, b := range h.Bucket {
			sum.Bucket[i].CumulativeCount = proto.Uint64(sum.Bucket[i].GetCumulativeCount() + b.GetCumulativeCount())
		}
	}
	if sum == nil {
		t.Logf("apiserver metric %s%v not found", name, want)
		return &dto.Histogram{}
	}
	return sum
}

// slowShare says how many of the observations between two scrapes took
// longer than each bound.
func slowShare(before, after *dto.Histogram, bounds ...float64) string {
	n := after.GetSampleCount() - before.GetSampleCount()
	parts := []string{fmt.Sprintf("%d", n)}
	for _, bound := range bounds {
		for i, b := range after.Bucket {
			if b.GetUpperBound() < bound || i >= len(before.Bucket) {
				continue
			}
			under := b.GetCumulativeCount() - before.Bucket[i].GetCumulativeCount()
			parts = append(parts, fmt.Sprintf("%d over %gs", n-under, b.GetUpperBound()))
			break
		}
	}
	return strings.Join(parts, ", ")
}
