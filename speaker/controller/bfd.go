package controller

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/speaker/bfd"
	"github.com/bgplb/bgplb/speaker/bgp"
)

// BFD is what the reconciler needs of the BFD side; *speaker/bfd.Sessions
// implements it. The BFD side resets a BGP session itself when its BFD
// session goes down (at once, not at the next reconcile); the reconciler
// tells it which sessions to run and reports what it did.
type BFD interface {
	Set(ctx context.Context, peers []bfd.Peer) error
	Status() []bfd.Status
	// Changed receives (coalesced) when a session changed state.
	Changed() <-chan struct{}
}

// bfdRetry is when a reconcile with a BFD session that could not start
// (e.g. UDP 3784 taken by another BFD daemon on the node) comes back. It is
// not an error of the reconcile: BGP runs regardless, and the reason is in
// the BGPSessionState.
const bfdRetry = 10 * time.Second

// bfdReport is the reconciler's memory of what it reported about BFD.
type bfdReport struct {
	// status is the BFD side's status read for this pass, by peer.
	status map[string]bfd.Status
	// configErrs are BGPPeers whose bfd block is invalid.
	configErrs map[string]string
	// downs is the DownEvents count of each peer already reported by an
	// event; lastErr the logged Set error.
	downs   map[string]uint64
	lastErr string
}

func (r *Reconciler) bfdChanged() <-chan struct{} {
	if r.BFD == nil {
		return nil // never ready
	}
	return r.BFD.Changed()
}

// bfdPeer renders p's bfd block for the session cfg; false when BFD is off.
// The apiserver's validation refuses the same values; this catches objects
// stored before it existed or written around it.
func bfdPeer(p *v1.BGPPeer, cfg bgp.PeerConfig) (bfd.Peer, bool, error) {
	b := p.Spec.BFD
	if b == nil || !b.Enabled {
		return bfd.Peer{}, false, nil
	}
	out := bfd.Peer{Name: cfg.Name, Address: cfg.Address, Local: cfg.SourceAddress,
		TransmitInterval: 300 * time.Millisecond, ReceiveInterval: 300 * time.Millisecond, DetectMultiplier: 3}
	interval := func(key string, d *metav1.Duration, dst *time.Duration) error {
		if d == nil {
			return nil
		}
		if d.Duration < 10*time.Millisecond || d.Duration > 60*time.Second {
			return fmt.Errorf("BGPPeer %s: bfd.%s %v must be between 10ms and 60s", p.Name, key, d.Duration)
		}
		*dst = d.Duration
		return nil
	}
	if err := interval("transmitInterval", b.TransmitInterval, &out.TransmitInterval); err != nil {
		return bfd.Peer{}, true, err
	}
	if err := interval("receiveInterval", b.ReceiveInterval, &out.ReceiveInterval); err != nil {
		return bfd.Peer{}, true, err
	}
	if m := b.DetectMultiplier; m != nil {
		if *m < 1 || *m > 255 {
			return bfd.Peer{}, true, fmt.Errorf("BGPPeer %s: bfd.detectMultiplier %d must be between 1 and 255", p.Name, *m)
		}
		out.DetectMultiplier = uint8(*m)
	}
	return out, true, nil
}

// applyBFD runs a BFD session for exactly the configured sessions whose
// BGPPeer enables BFD, and reads the status back. It returns when to come
// back for a session that could not start (0: no need).
func (r *Reconciler) applyBFD(ctx context.Context, configs []bgp.PeerConfig, objs objects, log logr.Logger) time.Duration {
	if r.BFD == nil {
		return 0
	}
	r.bfd.configErrs = map[string]string{}
	var peers []bfd.Peer
	for _, cfg := range configs {
		p := objs.peers[cfg.Name]
		if p == nil {
			continue
		}
		bp, on, err := bfdPeer(p, cfg)
		if err != nil {
			r.bfd.configErrs[cfg.Name] = err.Error()
			continue
		}
		if on {
			peers = append(peers, bp)
		}
	}
	var retry time.Duration
	err := r.BFD.Set(ctx, peers)
	msg := ""
	if err != nil {
		msg = err.Error()
		retry = bfdRetry
	}
	if len(r.bfd.configErrs) > 0 {
		msg += fmt.Sprint(r.bfd.configErrs)
	}
	if msg != r.bfd.lastErr {
		r.bfd.lastErr = msg
		for name, e := range r.bfd.configErrs {
			log.Error(nil, "invalid bfd block; no BFD session", "peer", name, "reason", e)
		}
	}
	r.readBFD(objs)
	return retry
}

// readBFD takes the BFD side's status for this pass and reports each new
// down (an event on the BGPPeer; the BFD side already logged it and reset
// the BGP session).
func (r *Reconciler) readBFD(objs objects) {
	r.bfd.status = map[string]bfd.Status{}
	if r.bfd.downs == nil {
		r.bfd.downs = map[string]uint64{}
	}
	for _, st := range r.BFD.Status() {
		r.bfd.status[st.Name] = st
		if st.DownEvents > r.bfd.downs[st.Name] {
			if p := objs.peers[st.Name]; p != nil && r.Recorder != nil {
				r.Recorder.Eventf(p, corev1.EventTypeWarning, "BFDDown",
					"BFD session from node %s to %s went down (%s, peer: %s)",
					r.Options.NodeName, p.Spec.PeerAddress, st.LastDownDiag, st.LastDownRemoteDiag)
			}
			if r.Metrics != nil {
				r.Metrics.BFDDownEvents.WithLabelValues(st.Name).Add(float64(st.DownEvents - r.bfd.downs[st.Name]))
			}
		}
		r.bfd.downs[st.Name] = st.DownEvents
	}
	for name := range r.bfd.downs {
		if _, ok := r.bfd.status[name]; !ok {
			delete(r.bfd.downs, name)
			if r.Metrics != nil {
				r.Metrics.forgetBFD(name)
			}
		}
	}
}

// bfdStatus is peer's status.bfd: nil when the BGPPeer does not enable BFD.
func (r *Reconciler) bfdStatus(peer string) *v1.BFDSessionStatus {
	if e := r.bfd.configErrs[peer]; e != "" {
		return &v1.BFDSessionStatus{LastError: e}
	}
	st, ok := r.bfd.status[peer]
	if !ok {
		return nil
	}
	out := &v1.BFDSessionStatus{
		State: st.State, Diagnostic: st.Diag, RemoteDiagnostic: st.RemoteDiag,
		DetectMultiplier: int32(st.DetectMultiplier), DownEvents: int64(st.DownEvents), LastError: st.LastError,
	}
	d := func(v time.Duration) *metav1.Duration {
		if v == 0 {
			return nil
		}
		return &metav1.Duration{Duration: v}
	}
	out.TransmitInterval, out.ReceiveInterval, out.DetectionTime = d(st.TransmitInterval), d(st.ReceiveInterval), d(st.DetectionTime)
	if !st.LastChange.IsZero() {
		t := metav1.NewTime(st.LastChange.Truncate(time.Second))
		out.LastTransition = &t
	}
	if r.Metrics != nil {
		up := 0.0
		if st.State == v1.BFDStateUp {
			up = 1
		}
		r.Metrics.BFDUp.WithLabelValues(peer).Set(up)
	}
	return out
}

// bfdSignature sums up the BFD part of the session states (see
// stateSignature): a change is written at once.
func (r *Reconciler) bfdSignature() string {
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(r.bfd.status)) {
		st := r.bfd.status[name]
		fmt.Fprintf(&b, "%s|%s|%s|%s|%v|%v|%d|%s|%s;", name, st.State, st.Diag, st.RemoteDiag,
			st.TransmitInterval, st.DetectionTime, st.DownEvents, st.LastError, st.LastChange)
	}
	for _, name := range slices.Sorted(maps.Keys(r.bfd.configErrs)) {
		fmt.Fprintf(&b, "%s|%s;", name, r.bfd.configErrs[name])
	}
	return b.String()
}
