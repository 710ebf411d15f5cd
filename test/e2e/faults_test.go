package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/test/lab"
)

// hopWatch samples the router's kernel route for a prefix every 10 ms and
// remembers when a next hop was first seen missing.
type hopWatch struct {
	mu      sync.Mutex
	missing time.Time // first sample without hop
	samples int
	stop    chan struct{}
	done    chan struct{}
}

func watchHop(l *lab.Lab, pfx netip.Prefix, hop netip.Addr) *hopWatch {
	w := &hopWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			hops, _, err := l.RouterRoute(pfx)
			w.mu.Lock()
			w.samples++
			if err == nil && !slices.Contains(hops, hop) && w.missing.IsZero() {
				w.missing = time.Now()
			}
			w.mu.Unlock()
			select {
			case <-w.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *hopWatch) end() (missing time.Time, samples int) {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.missing, w.samples
}

// sessionsSince waits until the nodes' sessions with the lab router are
// established with an uptime that began at or after since (whole seconds:
// the resolution of BGPSessionState times).
func sessionsSince(ctx context.Context, t *testing.T, l *lab.Lab, since time.Time, nodes ...string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		var err error
		for _, n := range nodes {
			s := &v1.BGPSessionState{}
			if e := l.Kube.Get(ctx, client.ObjectKey{Name: n + "-" + lab.PeerName}, s); e != nil {
				err = e
			} else if s.Status.State != v1.SessionStateEstablished || s.Status.EstablishedTime == nil || s.Status.EstablishedTime.Time.Before(since) {
				err = fmt.Errorf("session %s: %s since %v, want established after %v", s.Name, s.Status.State, s.Status.EstablishedTime, since)
			}
		}
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// setGracefulRestart sets the lab BGPPeer's graceful restart (nil: off) and
// waits for both speakers to re-open their sessions with it.
func setGracefulRestart(ctx context.Context, t *testing.T, l *lab.Lab, gr *v1.GracefulRestart) {
	t.Helper()
	// BGPSessionState times have a resolution of a second.
	since := time.Now().Truncate(time.Second).Add(time.Second)
	time.Sleep(time.Until(since))
	p := &v1.BGPPeer{}
	if err := l.Kube.Get(ctx, client.ObjectKey{Name: lab.PeerName}, p); err != nil {
		t.Fatal(err)
	}
	p.Spec.GracefulRestart = gr
	if err := l.Kube.Update(ctx, p); err != nil {
		t.Fatal(err)
	}
	sessionsSince(ctx, t, l, since, lab.Node1, lab.Node2)
}

// TestGracefulRestartKeepsKilledSpeakersRoutes configures graceful restart
// (restartTime 10 s) on the BGPPeer; the router agent is a GR helper.
//   - A speaker is killed (SIGKILL: socket closed, no NOTIFICATION): the
//     router keeps its next hop until the restart time has passed, then
//     removes it (without GR, TestKilledSpeakerIsRemovedOtherNodeKeepsServing
//     shows it goes at once).
//   - A speaker is killed and started again at once: its next hop never
//     leaves the router's route, also after the restart time (the new
//     session's routes and End-of-RIB replace the stale ones).
func TestGracefulRestartKeepsKilledSpeakersRoutes(t *testing.T) {
	l, _ := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	const restartTime = 10 * time.Second
	pfx := createService(t, ctx, l, lab.ServiceSpec{Name: "e2e-gr", EndpointsOn: []string{lab.Node1, lab.Node2}})
	if err := l.WaitRoute(ctx, pfx, []netip.Addr{node1, node2}, 30*time.Second); err != nil {
		t.Fatal(err)
	}

	setGracefulRestart(ctx, t, l, &v1.GracefulRestart{Enabled: true, RestartTime: &metav1.Duration{Duration: restartTime}})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if !l.Running("speaker-" + lab.Node1) {
			if err := l.StartSpeaker(lab.Node1); err != nil {
				t.Errorf("restart speaker: %v", err)
			}
		}
		setGracefulRestart(ctx, t, l, nil)
		if err := l.WaitRoute(ctx, pfx, []netip.Addr{node1, node2}, time.Minute); err != nil {
			t.Errorf("after turning graceful restart off: %v", err)
		}
	})
	if err := l.WaitRoute(ctx, pfx, []netip.Addr{node1, node2}, 30*time.Second); err != nil {
		t.Fatal(err)
	}

	// 1. Killed, not coming back: kept for the restart time, then removed.
	w := watchHop(l, pfx, node1)
	killed := time.Now()
	if err := l.Stop("speaker-"+lab.Node1, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitRoute(ctx, pfx, []netip.Addr{node2}, restartTime+time.Minute); err != nil {
		t.Fatalf("the killed speaker's next hop is not removed after the restart time: %v", err)
	}
	gone := time.Now()
	missing, samples := w.end()
	if missing.IsZero() || missing.After(gone) {
		missing = gone // WaitRoute saw it before the sampler did
	}
	held := missing.Sub(killed)
	t.Logf("killed speaker's next hop kept %v (restartTime %v, %d samples)", held.Round(10*time.Millisecond), restartTime, samples)
	// The helper's timer starts when the router sees the session drop,
	// after the kill: the hop cannot go earlier unless GR was not honoured.
	if held < restartTime-500*time.Millisecond {
		t.Errorf("the killed speaker's next hop went %v after the kill, before the %v restart time: graceful restart not honoured", held, restartTime)
	}

	// 2. Killed and back at once: never removed.
	if err := l.StartSpeaker(lab.Node1); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitRoute(ctx, pfx, []netip.Addr{node1, node2}, time.Minute); err != nil {
		t.Fatal(err)
	}
	sessionsSince(ctx, t, l, killed.Truncate(time.Second), lab.Node1)
	w = watchHop(l, pfx, node1)
	since := time.Now().Truncate(time.Second).Add(time.Second)
	time.Sleep(time.Until(since))
	if err := l.Stop("speaker-"+lab.Node1, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := l.StartSpeaker(lab.Node1); err != nil {
		t.Fatal(err)
	}
	sessionsSince(ctx, t, l, since, lab.Node1)
	// Past the restart time: the stale copy would have been swept by now
	// had the new session not replaced it.
	time.Sleep(restartTime + 2*time.Second)
	missing, samples = w.end()
	if !missing.IsZero() {
		t.Errorf("the restarted speaker's next hop left the router's route %v after the kill (%d samples)", missing.Sub(since), samples)
	}
	if err := l.WaitRoute(ctx, pfx, []netip.Addr{node1, node2}, time.Second); err != nil {
		t.Error(err)
	}
}
