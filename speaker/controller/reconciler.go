// Package controller is the speaker's Kubernetes side: it reads Services and
// EndpointSlices through reflectors into a compact store of its own, and
// this node, Secrets and the bgplb CRs from the informer cache, decides with
// speaker/model, applies the decision through a Speaker
// (speaker/bgp in production, a fake in tests), and reports BGPSessionState
// objects, events and metrics.
//
// Every watched event maps to one key: the work is level-driven (the whole
// desired state is recomputed from the store and the cache), so a burst of events costs one
// reconcile, and the workqueue coalesces events that arrive while one runs.
package controller

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	v1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/internal/kube"
	"github.com/bgplb/bgplb/speaker/bgp"
	"github.com/bgplb/bgplb/speaker/model"
)

// Least privilege: read what the decision needs, write only the session
// states and events. Secrets are readable in bgplb-system only.
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch,namespace=bgplb-system
// +kubebuilder:rbac:groups=bgplb.io,resources=ippools;bgppeers;bgpadvertisements,verbs=get;list;watch
// +kubebuilder:rbac:groups=bgplb.io,resources=bgpsessionstates,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=bgplb.io,resources=bgpsessionstates/status,verbs=get;update;patch

// Speaker is what the reconciler needs from the BGP side. *bgp.Manager
// implements it.
type Speaker interface {
	SetPeers(ctx context.Context, peers []bgp.PeerConfig) error
	Set(ctx context.Context, peer string, desired []model.Advertisement) (bgp.Changes, error)
	SetPrefixes(ctx context.Context, peer string, prefixes []netip.Prefix, desired []model.Advertisement) (bgp.Changes, error)
	Status(ctx context.Context) []bgp.PeerStatus
	// Changed receives (coalesced) when a session changes state.
	Changed() <-chan struct{}
}

// Options configure the reconciler.
type Options struct {
	// NodeName is the node this speaker runs on.
	NodeName string
	// SecretNamespace is where BGPPeers' password Secrets are read: the
	// speaker's own namespace (empty: bgplb-system).
	SecretNamespace string
	// ServeServicesWithoutClass also handles LoadBalancer Services without
	// spec.loadBalancerClass (as bgplb-controller does by default).
	ServeServicesWithoutClass bool
	// GracefulShutdownOnDrain adds GRACEFUL_SHUTDOWN while the node drains
	// (see model.Options).
	GracefulShutdownOnDrain bool
	// WeightClusterServices announces weights for externalTrafficPolicy
	// Cluster Services too (see model.Options).
	WeightClusterServices bool
	// ServiceEvents emits Announced/Withdrawn events on Services.
	ServiceEvents bool
}

// key is the single workqueue key every event maps to.
var key = reconcile.Request{NamespacedName: types.NamespacedName{Name: "speaker"}}

// Reconciler drives one node's announcements.
type Reconciler struct {
	Client client.Client
	// APIReader reads from the apiserver what no cache holds (a Service's
	// conditions, see verdict.go); nil: Client. SetupWithManager sets the
	// manager's.
	APIReader client.Reader
	Speaker   Speaker
	// BFD runs the BFD sessions of BGPPeers that enable BFD; nil: none.
	BFD      BFD
	Recorder record.EventRecorder
	Metrics  *Metrics
	Log      logr.Logger
	Options  Options

	// ReturnPath sets up the symmetric return path of BGPPeers with
	// returnPath: symmetric; nil: not enabled (--symmetric-return-path).
	ReturnPath ReturnPath

	serves func(*corev1.Service) bool
	kick   chan event.GenericEvent
	synced atomic.Bool

	lastUnadvertised string
	lastProblems     string
	lastBadAddresses string
	peerErrs         map[string]string
	store            *serviceStore
	// inc plans incremental passes; lastConfigs are the sessions of the last
	// pass (a changed session, e.g. a new password, needs a full pass).
	inc         *incremental
	lastConfigs []bgp.PeerConfig
	// The session states as last written (see stateSignature).
	lastStateSig, lastStateCounts string
	lastStateWrite                time.Time
	bfd                           bfdReport
	returnPath                    returnPathReport
	// verdicts: the routers' verdicts as last reported (verdict.go).
	verdicts verdictState
}

// SecretNamespace is the namespace password Secrets are read from: ns, or
// bgplb-system when ns is empty.
func SecretNamespace(ns string) string {
	if ns == "" {
		return v1.Namespace
	}
	return ns
}

// CacheOptions restricts the informers to what the speaker needs: its own
// Node, Secrets in secretNamespace (empty: bgplb-system), its own
// BGPSessionStates. Services and
// EndpointSlices have no informer: reflectors feed them straight into the
// reconciler's compact store (see serviceStore), which keeps memory low with
// thousands of Services.
func CacheOptions(nodeName, secretNamespace string) cache.Options {
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Node{}:   {Field: fields.OneTermEqualSelector("metadata.name", nodeName)},
			&corev1.Secret{}: {Namespaces: map[string]cache.Config{SecretNamespace(secretNamespace): {}}},
			&v1.BGPSessionState{}: {Label: labels.SelectorFromSet(labels.Set{
				v1.LabelSessionNode: nodeName,
			})},
		},
	}
}

// New returns a reconciler; call SetupWithManager to start it.
func New(c client.Client, sp Speaker, rec record.EventRecorder, m *Metrics, log logr.Logger, o Options) *Reconciler {
	return &Reconciler{
		Client: c, Speaker: sp, Recorder: rec, Metrics: m, Log: log, Options: o,
		serves: kube.Serves(o.ServeServicesWithoutClass),
		kick:   make(chan event.GenericEvent, 1),
		store:  newServiceStore(kube.Serves(o.ServeServicesWithoutClass), o.NodeName),
		inc:    newIncremental(),
	}
}

// Kick asks for a reconcile (e.g. when a BGP session changes state). It
// never blocks; kicks that arrive while one is pending are merged.
func (r *Reconciler) Kick() {
	select {
	case r.kick <- event.GenericEvent{Object: &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "kick"}}}:
	default:
	}
}

// Synced reports whether one reconcile has completed (readiness).
func (r *Reconciler) Synced() bool { return r.synced.Load() }

// SetupWithManager registers the watches.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	all := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{key}
	})
	// Services and EndpointSlices feed the store, which kicks a reconcile
	// after each update (a Watches handler could run before the store saw
	// the change).
	refl, err := r.store.reflectors(mgr.GetConfig(), mgr.GetHTTPClient(), r.Kick)
	if err != nil {
		return err
	}
	if err := mgr.Add(refl); err != nil {
		return fmt.Errorf("add Service and EndpointSlice reflectors: %w", err)
	}
	// A session's state change refreshes its BGPSessionState.
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-r.Speaker.Changed():
				r.Kick()
			case <-r.bfdChanged():
				r.Kick()
			case <-r.returnPathChanged():
				r.Kick()
			}
		}
	})); err != nil {
		return fmt.Errorf("add the session-change forwarder: %w", err)
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("bgplb-speaker").
		WithOptions(controller.Options{MaxConcurrentReconciles: 1}).
		Watches(&corev1.Node{}, all).
		Watches(&corev1.Secret{}, all).
		Watches(&v1.IPPool{}, all).
		Watches(&v1.BGPPeer{}, all).
		Watches(&v1.BGPAdvertisement{}, all).
		WatchesRawSource(source.Channel(r.kick, all)).
		Complete(r)
}

// Reconcile recomputes everything this node announces and applies the
// difference.
func (r *Reconciler) Reconcile(ctx context.Context, _ reconcile.Request) (res reconcile.Result, err error) {
	start := time.Now()
	defer func() { r.observeReconcile(start, err) }()
	log := r.Log.WithValues("node", r.Options.NodeName)
	// Never decide on a partial view: before the store has every existing
	// Service and EndpointSlice, it would withdraw what it has not seen.
	if !r.store.synced() {
		return reconcile.Result{RequeueAfter: 100 * time.Millisecond}, nil
	}

	in, objs, changed, err := r.input(ctx)
	if err != nil {
		// The Services that changed are in the store's list now but were
		// not decided: the next pass must be full.
		r.inc.done(passPlan{}, model.Input{}, nil, nil, false, start)
		return reconcile.Result{}, err
	}
	cfg := configOf(in)
	plan, desired := r.decide(in, cfg, changed, start)
	r.reportPools(desired, objs, log)
	configs := r.sessionConfigs(ctx, desired, objs, log)
	if !plan.full && !slices.Equal(configs, r.lastConfigs) {
		// A new or restarted session starts empty: give it everything.
		plan = passPlan{full: true, reason: "sessions changed", changed: plan.changed}
		desired = model.Desired(in)
	}
	r.countPass(plan, len(in.Services), log)

	errs := r.apply(ctx, plan, configs, desired, log)
	bfdRetry := r.applyBFD(ctx, configs, objs, log)
	r.applyReturnPath(configs, objs, in.Pools)
	r.lastConfigs = configs
	r.inc.done(plan, cfg, in.Services, r.store.service, len(errs) == 0, start)
	if r.Metrics != nil {
		r.Metrics.ApplyTime.Observe(time.Since(start).Seconds())
	}
	// The Services' conditions first: they are what users wait for
	// (docs/verdict.md), the session states' counts can follow.
	if plan.full {
		r.verdicts.dirty = true
	}
	verdictsAgain, err := r.reportVerdicts(ctx, configs, log)
	if err != nil {
		errs = append(errs, err)
	}
	res.RequeueAfter, err = r.updateStates(ctx, plan.full, desired, objs)
	if err != nil {
		errs = append(errs, err)
	}
	if verdictsAgain > 0 && (res.RequeueAfter == 0 || verdictsAgain < res.RequeueAfter) {
		res.RequeueAfter = verdictsAgain
	}
	if err := errors.Join(errs...); err != nil {
		// Transient (GoBGP or apiserver): retried with backoff.
		return reconcile.Result{}, err
	}
	r.synced.Store(true)
	if bfdRetry > 0 && (res.RequeueAfter == 0 || bfdRetry < res.RequeueAfter) {
		res.RequeueAfter = bfdRetry
	}
	return res, nil
}

// observeReconcile counts one reconcile by result and records its time.
func (r *Reconciler) observeReconcile(start time.Time, err error) {
	if r.Metrics == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	r.Metrics.Reconciles.WithLabelValues(result).Inc()
	r.Metrics.ReconcileTime.Observe(time.Since(start).Seconds())
}

// decide plans the pass and computes the desired state. While the
// configuration is unchanged, it decides only the Services that changed
// and those sharing their addresses (see incremental); a full pass at least
// every fullPassEvery re-asserts everything.
func (r *Reconciler) decide(in model.Input, cfg model.Input, changed []string, now time.Time) (passPlan, model.Result) {
	plan := r.inc.plan(cfg, changed, r.store.service, len(in.Services), now)
	decide := in
	if !plan.full {
		decide.Services = plan.services
	}
	return plan, model.Desired(decide)
}

// sessionConfigs returns one session per selected peer, unless its
// configuration cannot be resolved (e.g. the password Secret is missing),
// which is reported (r.peerErrs, the log) and retried when the Secret
// appears (it is watched), not in a loop.
func (r *Reconciler) sessionConfigs(ctx context.Context, desired model.Result, objs objects, log logr.Logger) []bgp.PeerConfig {
	r.peerErrs = map[string]string{}
	var configs []bgp.PeerConfig
	for _, name := range slices.Sorted(maps.Keys(desired.Peers)) {
		p := objs.peers[name]
		cfg, err := r.peerConfig(ctx, p, objs.routerID)
		if err != nil {
			r.peerErrs[name] = err.Error()
			log.Error(err, "BGP session not configured", "peer", name)
			continue
		}
		configs = append(configs, cfg)
	}
	return configs
}

// countPass counts the pass by kind and logs why a full one was needed.
func (r *Reconciler) countPass(plan passPlan, services int, log logr.Logger) {
	if r.Metrics != nil {
		kind := "incremental"
		if plan.full {
			kind = "full"
		}
		r.Metrics.Passes.WithLabelValues(kind).Inc()
	}
	if plan.full {
		log.V(1).Info("full pass", "reason", plan.reason, "services", services)
	}
}

// apply sets the sessions and then each session's paths: all of them on a
// full pass, only plan.prefixes on an incremental one. It reports every
// peer's changes and returns the errors.
func (r *Reconciler) apply(ctx context.Context, plan passPlan, configs []bgp.PeerConfig, desired model.Result, log logr.Logger) []error {
	var errs []error
	if err := r.Speaker.SetPeers(ctx, configs); err != nil {
		errs = append(errs, err)
	}
	for _, pc := range configs {
		var ch bgp.Changes
		var err error
		if plan.full {
			ch, err = r.Speaker.Set(ctx, pc.Name, desired.Peers[pc.Name])
		} else {
			ch, err = r.Speaker.SetPrefixes(ctx, pc.Name, plan.prefixes, desired.Peers[pc.Name])
		}
		if err != nil {
			errs = append(errs, err)
		}
		r.report(pc, ch, log)
	}
	return errs
}

// updateStates writes the session states when due and otherwise says when
// to come back. A change of state, error or peer set is written at once; a
// change of counts only (prefixes sent) at most every stateWriteInterval,
// so a stream of EndpointSlice changes does not put a status write
// (rate-limited by the client) behind every UPDATE.
func (r *Reconciler) updateStates(ctx context.Context, full bool, desired model.Result, objs objects) (requeueAfter time.Duration, err error) {
	status := r.Speaker.Status(ctx)
	sig, counts := stateSignature(desired, status, r.peerErrs)
	sig += r.bfdSignature()
	sig += r.returnPathSignature()
	switch {
	case full || sig != r.lastStateSig || (counts != r.lastStateCounts && time.Since(r.lastStateWrite) >= stateWriteInterval):
		if err := r.writeStates(ctx, desired, objs, status); err != nil {
			r.lastStateSig = "" // retry
			return 0, err
		}
		r.lastStateSig, r.lastStateCounts, r.lastStateWrite = sig, counts, time.Now()
	case counts != r.lastStateCounts:
		return stateWriteInterval - time.Since(r.lastStateWrite), nil
	}
	return 0, nil
}

// stateWriteInterval bounds how often BGPSessionState statuses are written
// when only their counts changed.
const stateWriteInterval = time.Second

// stateSignature sums up what the session states would show: sig the
// selected peers, their states, addresses and errors; counts the numbers
// (prefixes and UPDATEs sent).
func stateSignature(d model.Result, status []bgp.PeerStatus, peerErrs map[string]string) (sig, counts string) {
	var b, c strings.Builder
	for _, p := range slices.Sorted(maps.Keys(d.Peers)) {
		fmt.Fprintf(&b, "%s|%s;", p, peerErrs[p])
	}
	for _, st := range status {
		fmt.Fprintf(&b, "%s|%s|%s|%v|%s;", st.Name, st.State, st.LastError, st.LocalAddress, st.EstablishedSince)
		fmt.Fprintf(&c, "%s|%d|%d|%v|%d|%d;", st.Name, st.Announced, st.UpdatesSent, st.VerdictsReported, st.RoutesInstalled, st.RoutesRejected)
	}
	return b.String(), c.String()
}

// objects keeps what the reconcile needs beyond the model input.
type objects struct {
	node     *corev1.Node
	routerID netip.Addr
	peers    map[string]*v1.BGPPeer
	pools    map[string]*v1.IPPool
	// badAddresses are the IPPool address entries that do not parse; they
	// are left out of the pools (nothing in them is announced).
	badAddresses []poolError
}

// poolError is an IPPool entry that does not parse.
type poolError struct {
	pool string
	err  error
}

func (r *Reconciler) input(ctx context.Context) (model.Input, objects, []string, error) {
	in := model.Input{Node: r.Options.NodeName, Options: model.Options{GracefulShutdownOnDrain: r.Options.GracefulShutdownOnDrain,
		WeightClusterServices: r.Options.WeightClusterServices}}
	objs := objects{peers: map[string]*v1.BGPPeer{}, pools: map[string]*v1.IPPool{}}
	var changed []string

	node := &corev1.Node{}
	switch err := r.Client.Get(ctx, client.ObjectKey{Name: r.Options.NodeName}, node); {
	case apierrors.IsNotFound(err):
		// Unknown node: no sessions, everything withdrawn.
	case err != nil:
		return in, objs, changed, fmt.Errorf("get node %s: %w", r.Options.NodeName, err)
	default:
		objs.node = node
		objs.routerID = RouterID(node)
		in.Nodes = []model.Node{toNode(node)}
	}

	// Services and EndpointSlices come from the event-maintained store.
	in.Services, changed = r.store.snapshot()

	var pools v1.IPPoolList
	if err := r.Client.List(ctx, &pools); err != nil {
		return in, objs, changed, fmt.Errorf("list ippools: %w", err)
	}
	for i := range pools.Items {
		p := &pools.Items[i]
		objs.pools[p.Name] = p
		mp, errs := toPool(p)
		in.Pools = append(in.Pools, mp)
		for _, err := range errs {
			objs.badAddresses = append(objs.badAddresses, poolError{pool: p.Name, err: err})
		}
	}
	var peers v1.BGPPeerList
	if err := r.Client.List(ctx, &peers); err != nil {
		return in, objs, changed, fmt.Errorf("list bgppeers: %w", err)
	}
	for i := range peers.Items {
		p := &peers.Items[i]
		objs.peers[p.Name] = p
		in.Peers = append(in.Peers, toPeer(p))
	}
	var advs v1.BGPAdvertisementList
	if err := r.Client.List(ctx, &advs); err != nil {
		return in, objs, changed, fmt.Errorf("list bgpadvertisements: %w", err)
	}
	for i := range advs.Items {
		in.Advertisements = append(in.Advertisements, toAdvertisement(&advs.Items[i]))
	}
	return in, objs, changed, nil
}

func (r *Reconciler) peerConfig(ctx context.Context, p *v1.BGPPeer, routerID netip.Addr) (bgp.PeerConfig, error) {
	password := ""
	if ref := p.Spec.PasswordSecret; ref != nil {
		sec := &corev1.Secret{}
		ns := SecretNamespace(r.Options.SecretNamespace)
		if err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: ref.Name}, sec); err != nil {
			return bgp.PeerConfig{}, fmt.Errorf("password Secret %s/%s: %w", ns, ref.Name, err)
		}
		k := ref.Key
		if k == "" {
			k = "password"
		}
		v, ok := sec.Data[k]
		if !ok || len(v) == 0 {
			return bgp.PeerConfig{}, fmt.Errorf("password Secret %s/%s has no key %q", ns, ref.Name, k)
		}
		password = string(v)
	}
	return peerConfig(p, routerID, password)
}

// reportPools makes unannounced pools and user errors visible, once per
// change rather than on every reconcile.
func (r *Reconciler) reportPools(d model.Result, objs objects, log logr.Logger) {
	if r.Metrics != nil {
		r.Metrics.UnadvertisedIPs.Set(float64(len(d.UnadvertisedPools)))
	}
	if s := strings.Join(d.UnadvertisedPools, ","); s != r.lastUnadvertised {
		r.lastUnadvertised = s
		for _, name := range d.UnadvertisedPools {
			log.Info("IPPool is not selected by any BGPAdvertisement; its addresses are not announced", "pool", name)
			if p := objs.pools[name]; p != nil && r.Recorder != nil {
				r.Recorder.Eventf(p, corev1.EventTypeWarning, "NotAdvertised",
					"no BGPAdvertisement selects pool %s: its addresses are not announced by node %s", name, r.Options.NodeName)
			}
		}
	}
	r.reportBadAddresses(objs.badAddresses, log)
	if s := strings.Join(d.Problems, "\n"); s != r.lastProblems {
		r.lastProblems = s
		for _, p := range d.Problems {
			log.Info("configuration problem", "problem", p)
		}
	}
}

// reportBadAddresses logs each IPPool address entry that does not parse,
// with the pool's name and the error, once: again only after the set of
// such entries changed, not on every pass.
func (r *Reconciler) reportBadAddresses(bad []poolError, log logr.Logger) {
	var b strings.Builder
	for _, e := range bad {
		fmt.Fprintf(&b, "%s\x00%v\n", e.pool, e.err)
	}
	if b.String() == r.lastBadAddresses {
		return
	}
	r.lastBadAddresses = b.String()
	for _, e := range bad {
		log.Error(e.err, "IPPool address entry does not parse; its addresses are not announced", "pool", e.pool)
	}
}

// MaxServiceEventsPerPass bounds the Announced/Withdrawn events of one pass
// for one peer. A larger change (the first pass after a start with 10,000
// Services, a session coming up, a changed BGPAdvertisement) is logged once
// instead: 10,000 events would take the event client (20 requests/s)
// minutes, client-go's broadcaster keeps at most 1000 queued and drops the
// rest at random, and a node that restarts would repeat them all. The
// session's BGPSessionState shows the prefix count either way.
const MaxServiceEventsPerPass = 100

// report records metrics and Service events for one peer's changes.
func (r *Reconciler) report(cfg bgp.PeerConfig, ch bgp.Changes, log logr.Logger) {
	if r.Metrics != nil {
		r.Metrics.PathChanges.WithLabelValues(cfg.Name, "announce").Add(float64(len(ch.Added)))
		r.Metrics.PathChanges.WithLabelValues(cfg.Name, "withdraw").Add(float64(len(ch.Withdrawn)))
	}
	if len(ch.Added)+len(ch.Withdrawn) > 0 {
		r.verdicts.dirty = true // the Services' conditions follow their paths
		log.V(1).Info("paths changed", "peer", cfg.Name, "announced", len(ch.Added), "withdrawn", len(ch.Withdrawn))
	}
	if !r.Options.ServiceEvents || r.Recorder == nil {
		return
	}
	if n := len(ch.Added) + len(ch.Withdrawn); n > MaxServiceEventsPerPass {
		log.Info("many paths changed at once; no per-Service events for them", "peer", cfg.Name,
			"announced", len(ch.Added), "withdrawn", len(ch.Withdrawn), "maxServiceEventsPerPass", MaxServiceEventsPerPass)
		return
	}
	emit := func(advs []model.Advertisement, reason, verb string) {
		for _, a := range advs {
			for _, k := range a.Services {
				if s := r.store.eventObject(k); s != nil {
					r.Recorder.Eventf(s, corev1.EventTypeNormal, reason, "%s %s from node %s to peer %s (%s)",
						verb, a.Prefix, r.Options.NodeName, cfg.Name, cfg.Address)
				}
			}
		}
	}
	emit(ch.Added, "Announced", "announced")
	emit(ch.Withdrawn, "Withdrawn", "withdrew")
}

// writeStates creates/updates the BGPSessionState of every selected peer and
// deletes this node's states of peers no longer selected. Unchanged statuses
// are not written.
func (r *Reconciler) writeStates(ctx context.Context, d model.Result, objs objects, statuses []bgp.PeerStatus) error {
	status := map[string]bgp.PeerStatus{}
	for _, st := range statuses {
		status[st.Name] = st
	}
	var errs []error
	node := r.Options.NodeName
	for _, peer := range slices.Sorted(maps.Keys(d.Peers)) {
		p := objs.peers[peer]
		want := v1.BGPSessionStateStatus{State: v1.SessionStateIdle}
		if st, ok := status[peer]; ok {
			want.State = st.State
			want.PrefixesSent = int32(st.Announced)
			want.LastError = st.LastError
			if st.LocalAddress.IsValid() {
				want.LocalAddress = st.LocalAddress.String()
			}
			if !st.EstablishedSince.IsZero() {
				t := metav1.NewTime(st.EstablishedSince.Truncate(time.Second))
				want.EstablishedTime = &t
			}
			if st.VerdictsReported {
				want.RoutesInstalled, want.RoutesRejected = ptrInt32(st.RoutesInstalled), ptrInt32(st.RoutesRejected)
			}
		}
		if e := r.peerErrs[peer]; e != "" {
			want.LastError = e
		}
		want.BFD = r.bfdStatus(peer)
		r.returnPathStatus(peer, &want)
		if err := r.writeState(ctx, node, p, objs.node, want); err != nil {
			errs = append(errs, err)
		}
		if r.Metrics != nil {
			up := 0.0
			if want.State == v1.SessionStateEstablished {
				up = 1
			}
			r.Metrics.SessionUp.WithLabelValues(peer).Set(up)
			r.Metrics.Prefixes.WithLabelValues(peer).Set(float64(want.PrefixesSent))
			r.Metrics.UpdatesSent.WithLabelValues(peer).Set(float64(status[peer].UpdatesSent))
			if !status[peer].VerdictsReported {
				r.Metrics.forgetVerdicts(peer)
			}
		}
	}
	var list v1.BGPSessionStateList
	if err := r.Client.List(ctx, &list, client.MatchingLabels{v1.LabelSessionNode: node}); err != nil {
		return errors.Join(append(errs, fmt.Errorf("list bgpsessionstates: %w", err))...)
	}
	for i := range list.Items {
		s := &list.Items[i]
		if _, ok := d.Peers[s.Spec.Peer]; ok && s.Spec.Node == node {
			continue
		}
		if err := r.Client.Delete(ctx, s); client.IgnoreNotFound(err) != nil {
			errs = append(errs, fmt.Errorf("delete bgpsessionstate %s: %w", s.Name, err))
		}
		if r.Metrics != nil {
			r.Metrics.ForgetPeer(s.Spec.Peer)
		}
	}
	return errors.Join(errs...)
}

func (r *Reconciler) writeState(ctx context.Context, node string, p *v1.BGPPeer, nodeObj *corev1.Node, want v1.BGPSessionStateStatus) error {
	name := sessionStateName(node, p.Name)
	cur := &v1.BGPSessionState{}
	err := r.Client.Get(ctx, client.ObjectKey{Name: name}, cur)
	if apierrors.IsNotFound(err) {
		cur = &v1.BGPSessionState{
			ObjectMeta: metav1.ObjectMeta{
				Name:   name,
				Labels: map[string]string{v1.LabelSessionNode: node, v1.LabelSessionPeer: p.Name},
			},
			Spec: v1.BGPSessionStateSpec{Node: node, Peer: p.Name, PeerAddress: p.Spec.PeerAddress},
		}
		// Garbage-collected with the Node and with the BGPPeer.
		refs := []metav1.OwnerReference{{APIVersion: v1.GroupVersion.String(), Kind: "BGPPeer", Name: p.Name, UID: p.UID}}
		if nodeObj != nil {
			refs = append(refs, metav1.OwnerReference{APIVersion: "v1", Kind: "Node", Name: nodeObj.Name, UID: nodeObj.UID})
		}
		cur.OwnerReferences = refs
		if err := r.Client.Create(ctx, cur); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create bgpsessionstate %s: %w", name, err)
		}
	} else if err != nil {
		return fmt.Errorf("get bgpsessionstate %s: %w", name, err)
	}
	old := cur.Status
	old.LastUpdateTime = nil
	now := metav1.Now()
	keepTransitionTimes(old.Conditions, want.Conditions, now)
	if equality.Semantic.DeepEqual(old, want) {
		return nil
	}
	want.LastUpdateTime = &now
	upd := cur.DeepCopy()
	upd.Status = want
	// This speaker is the only writer of its states, so a merge patch
	// without resourceVersion is safe and does not conflict with a cache
	// that has not seen our previous write yet.
	if err := r.Client.Status().Patch(ctx, upd, client.MergeFrom(cur)); err != nil {
		return fmt.Errorf("update bgpsessionstate %s status: %w", name, err)
	}
	return nil
}

// MarkStopped is called on exit, after the sessions are closed: it reports
// this node's sessions as Idle so `kubectl get bgpsessionstates` does not
// show stale Established rows. Best effort.
func MarkStopped(ctx context.Context, c client.Client, reader client.Reader, node string) error {
	var list v1.BGPSessionStateList
	if err := reader.List(ctx, &list, client.MatchingLabels{v1.LabelSessionNode: node}); err != nil {
		return fmt.Errorf("list bgpsessionstates: %w", err)
	}
	var errs []error
	for i := range list.Items {
		s := &list.Items[i]
		now := metav1.Now()
		s.Status = v1.BGPSessionStateStatus{State: v1.SessionStateIdle, LastError: "speaker stopped", LastUpdateTime: &now}
		if err := c.Status().Update(ctx, s); err != nil {
			errs = append(errs, fmt.Errorf("update bgpsessionstate %s: %w", s.Name, err))
		}
	}
	return errors.Join(errs...)
}
