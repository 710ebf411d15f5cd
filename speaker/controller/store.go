package controller

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/bgplb/bgplb/speaker/model"
)

// serviceStore is the speaker's only copy of Services and EndpointSlices.
// Two client-go reflectors (one per kind, see reflectors.go) write into it
// through its ReflectorStore adapters; no informer cache or indexer holds the
// objects, and the store keeps only what the decision reads, in compact form:
//
//   - per handled Service (ours, with an address): the model.Service (key,
//     labels, traffic policy, ingress IPs) and its UID for events; Services
//     that are not ours or have no address yet are not kept at all (the
//     reflector's next Update brings them in);
//   - per EndpointSlice: its name, whether it has a usable endpoint on
//     another node, and this node's endpoints with their conditions.
//
// model.Desired reads a Service's endpoints only to ask "is there a usable
// endpoint anywhere" (Cluster) and "is there one on this node" (Local), so
// the store hands it this node's endpoints as they are plus, when some other
// node has a usable endpoint, one usable endpoint with an empty node name
// standing for all of them. The decision is the same as over the full list.
//
// Writers (the reflectors) only stage changes: pending Service records and
// the dirty set. snapshot, called by the reconcile one pass at a time,
// applies them to the list it returns, so a pass after one EndpointSlice
// change converts one Service, not 10,000, and the list Desired reads is
// never written while Desired runs.
type serviceStore struct {
	serves func(*corev1.Service) bool
	node   string

	mu sync.Mutex
	// pending holds the Services changed since the last snapshot: the new
	// record, one marked unhandled when the Service exists but is no longer
	// ours or lost its address, or nil when it was deleted.
	pending map[string]*svcRecord
	// slices are the EndpointSlice summaries by Service key (namespace/name).
	// A Service almost always has one or two, so a slice rather than a map.
	slices map[string][]sliceSummary
	// dirty are the Service keys changed since the last snapshot (the
	// Service or one of its EndpointSlices).
	dirty map[string]struct{}
	// synced records that each kind's reflector delivered its first full
	// list (Replace): before both have, the store is a partial view.
	servicesSynced, slicesSynced bool

	// Owned by snapshot (under mu): the handled Services.
	list  []model.Service // Endpoints filled from slices
	uids  []compactUID    // parallel to list, for events
	index map[string]int  // Service key -> position in list
	// oddUIDs holds the UIDs that are not canonical UUIDs (never seen from
	// a real apiserver), by Service key.
	oddUIDs map[string]types.UID
	// dropped are the Services the last snapshot removed although they
	// still exist (no longer ours, or no address): their Withdrawn events
	// still need an object.
	dropped map[string]*corev1.Service
}

// svcRecord is what the store keeps of a handled Service.
type svcRecord struct {
	svc model.Service // without Endpoints
	uid types.UID
	// unhandled: the Service exists but the speaker no longer announces it
	// (only svc.Namespace, svc.Name and uid are set).
	unhandled bool
}

// sliceSummary is what the store keeps of one EndpointSlice.
type sliceSummary struct {
	name string
	// remote: some endpoint on another node (or on none) is usable.
	remote bool
	// local are this node's endpoints, NodeName set.
	local []model.Endpoint
}

// remoteUsable is the endpoint list of a Service with usable endpoints only
// on other nodes, shared (read-only) by every such Service.
var remoteUsable = []model.Endpoint{{Ready: true, Serving: true}}

func newServiceStore(serves func(*corev1.Service) bool, node string) *serviceStore {
	return &serviceStore{
		serves:  serves,
		node:    node,
		pending: map[string]*svcRecord{},
		slices:  map[string][]sliceSummary{},
		dirty:   map[string]struct{}{},
		index:   map[string]int{},
		dropped: map[string]*corev1.Service{},
		oddUIDs: map[string]types.UID{},
	}
}

// record converts a Service whose key is id; the record is marked
// unhandled when the speaker does not announce it (not ours, or no address
// yet).
func (s *serviceStore) record(svc *corev1.Service, id string) *svcRecord {
	r := &svcRecord{uid: svc.UID, svc: model.Service{
		// Namespace and Name share the key's bytes.
		Namespace: id[:len(svc.Namespace)], Name: id[len(svc.Namespace)+1:], ID: id,
	}}
	if !s.serves(svc) || len(svc.Status.LoadBalancer.Ingress) == 0 {
		r.unhandled = true
		return r
	}
	r.svc.Labels, r.svc.TrafficPolicy = svc.Labels, model.TrafficPolicyCluster
	if svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal {
		r.svc.TrafficPolicy = model.TrafficPolicyLocal
	}
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(ing.IP); err == nil {
			if r.svc.IPs == nil {
				r.svc.IPs = make([]netip.Addr, 0, len(svc.Status.LoadBalancer.Ingress))
			}
			r.svc.IPs = append(r.svc.IPs, a.Unmap())
		}
	}
	return r
}

// summarize reduces an EndpointSlice to what the decision needs. Unset
// conditions read as ready/serving and not terminating, as the
// EndpointSlice API documents (serving defaults to ready).
func (s *serviceStore) summarize(es *discoveryv1.EndpointSlice) sliceSummary {
	sum := sliceSummary{name: es.Name}
	for _, e := range es.Endpoints {
		ep := model.Endpoint{Ready: true, Serving: true}
		if e.Conditions.Ready != nil {
			ep.Ready = *e.Conditions.Ready
		}
		if e.Conditions.Serving != nil {
			ep.Serving = *e.Conditions.Serving
		} else {
			ep.Serving = ep.Ready
		}
		if e.Conditions.Terminating != nil {
			ep.Terminating = *e.Conditions.Terminating
		}
		if e.NodeName != nil && *e.NodeName == s.node {
			ep.NodeName = s.node
			sum.local = append(sum.local, ep)
		} else if ep.Usable() {
			sum.remote = true
		}
	}
	return sum
}

// sliceOwner is the key of the Service an EndpointSlice belongs to, "" if
// it names none.
func sliceOwner(es *discoveryv1.EndpointSlice) string {
	name := es.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		return ""
	}
	return es.Namespace + "/" + name
}

// setService stages a Service add/update (deleted: removal). Under mu.
func (s *serviceStore) setService(svc *corev1.Service, deleted bool) {
	k := svc.Namespace + "/" + svc.Name
	var r *svcRecord
	if !deleted {
		r = s.record(svc, k)
	}
	if (r == nil || r.unhandled) && !s.handled(k) {
		if _, ok := s.pending[k]; ok {
			// Staged as gone before this snapshot: keep the newer state.
			s.pending[k] = r
		}
		return // not handled before nor now: nothing to keep
	}
	s.pending[k] = r
	s.dirty[k] = struct{}{}
}

// handled reports whether Service k is in the handled set (as staged, or as
// the last snapshot left it). Under mu.
func (s *serviceStore) handled(k string) bool {
	if r, ok := s.pending[k]; ok {
		return r != nil && !r.unhandled
	}
	_, ok := s.index[k]
	return ok
}

// setSlice stores, replaces or (deleted) removes one EndpointSlice; added
// says the reflector reports it as new. Under mu.
func (s *serviceStore) setSlice(es *discoveryv1.EndpointSlice, added, deleted bool) {
	owner := sliceOwner(es)
	if !s.removeSlice(owner, es.Name) && !added {
		// An update or delete of a slice that is not filed under the
		// Service its label names: its label changed (or went away, which
		// the label-selected watch reports as a delete). Rare, so a scan.
		prefix := es.Namespace + "/"
		for k, l := range s.slices {
			if strings.HasPrefix(k, prefix) && indexSlice(l, es.Name) >= 0 {
				s.removeSlice(k, es.Name)
			}
		}
	}
	if deleted || owner == "" {
		return
	}
	s.slices[owner] = append(s.slices[owner], s.summarize(es))
	s.dirty[owner] = struct{}{}
}

// removeSlice drops slice name from Service k's list and reports whether it
// was there. Under mu.
func (s *serviceStore) removeSlice(k, name string) bool {
	l := s.slices[k]
	i := indexSlice(l, name)
	if i < 0 {
		return false
	}
	if len(l) == 1 {
		delete(s.slices, k)
	} else {
		l[i] = l[len(l)-1]
		s.slices[k] = l[:len(l)-1]
	}
	s.dirty[k] = struct{}{}
	return true
}

func indexSlice(l []sliceSummary, name string) int {
	for i := range l {
		if l[i].name == name {
			return i
		}
	}
	return -1
}

// endpoints is the decision's view of Service k's endpoints. Under mu.
func (s *serviceStore) endpoints(k string) []model.Endpoint {
	l := s.slices[k]
	var out []model.Endpoint
	remote := false
	for i := range l {
		remote = remote || l[i].remote
		out = append(out, l[i].local...)
	}
	switch {
	case !remote:
		return out
	case out == nil:
		return remoteUsable
	}
	return append(out, remoteUsable...)
}

// synced reports whether both reflectors have delivered their first list.
func (s *serviceStore) synced() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.servicesSynced && s.slicesSynced
}

// snapshot applies what changed and returns every handled Service, and the
// keys of the Services that changed since the previous snapshot (added,
// updated, removed, or their endpoints changed). The list is patched in
// place and valid until the next call; only the reconciler calls it, one
// pass at a time.
func (s *serviceStore) snapshot() (all []model.Service, changed []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed = make([]string, 0, len(s.dirty))
	clear(s.dropped)
	for k := range s.dirty {
		changed = append(changed, k)
		r, staged := s.pending[k]
		i, had := s.index[k]
		switch {
		case staged && (r == nil || r.unhandled):
			if had && r != nil {
				s.dropped[k] = &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: r.svc.Namespace, Name: r.svc.Name, UID: r.uid}}
			}
			if had {
				// Swap-remove.
				last := len(s.list) - 1
				s.list[i], s.uids[i] = s.list[last], s.uids[last]
				s.index[s.list[i].Key()] = i
				s.list[last], s.uids[last] = model.Service{}, compactUID{}
				s.list, s.uids = s.list[:last], s.uids[:last]
				delete(s.index, k)
				delete(s.oddUIDs, k)
			}
			continue
		case staged && had:
			s.list[i], s.uids[i] = r.svc, s.compactUID(k, r.uid)
		case staged:
			i = len(s.list)
			// The key shares the list entry's bytes.
			s.index[r.svc.ID] = i
			s.list, s.uids = append(s.list, r.svc), append(s.uids, s.compactUID(k, r.uid))
		case !had:
			continue // endpoints of a Service we do not handle
		}
		s.list[i].Endpoints = s.endpoints(k)
	}
	// Fresh maps after a burst (10,000 entries after the initial list):
	// clear would keep their buckets for the life of the process.
	if len(s.dirty) > 64 {
		s.dirty = map[string]struct{}{}
	} else {
		clear(s.dirty)
	}
	if len(s.pending) > 64 {
		s.pending = map[string]*svcRecord{}
	} else {
		clear(s.pending)
	}
	return s.list, changed
}

// eventObject returns a minimal Service for events about Service k (name,
// namespace, UID: what the recorder's object reference needs), nil if the
// Service is gone. It answers for the Services of the last snapshot and
// those it dropped although they still exist.
func (s *serviceStore) eventObject(k string) *corev1.Service {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.index[k]
	if !ok {
		return s.dropped[k]
	}
	svc := &s.list[i]
	uid, ok := s.uids[i].uid()
	if !ok {
		uid = s.oddUIDs[k]
	}
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: svc.Namespace, Name: svc.Name, UID: uid}}
}

// compactUID is a UID in 16 bytes instead of a 36-character string;
// valid is false for one that is not a canonical UUID.
type compactUID struct {
	b     [16]byte
	valid bool
}

// compactUID packs uid, keeping a non-canonical one in oddUIDs. Under mu.
func (s *serviceStore) compactUID(k string, uid types.UID) compactUID {
	var c compactUID
	if len(uid) == 36 {
		c.valid = true
		j := 0
		for i := 0; i < 36 && c.valid; {
			if i == 8 || i == 13 || i == 18 || i == 23 {
				c.valid = uid[i] == '-'
				i++
				continue
			}
			hi, ok1 := unhex(uid[i])
			lo, ok2 := unhex(uid[i+1])
			c.b[j], c.valid = hi<<4|lo, ok1 && ok2
			i, j = i+2, j+1
		}
	}
	if c.valid {
		delete(s.oddUIDs, k)
	} else {
		s.oddUIDs[k] = uid
	}
	return c
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// uid formats the UID back, as the apiserver wrote it.
func (c compactUID) uid() (types.UID, bool) {
	if !c.valid {
		return "", false
	}
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 36)
	for j, b := range c.b {
		if j == 4 || j == 6 || j == 8 || j == 10 {
			out = append(out, '-')
		}
		out = append(out, digits[b>>4], digits[b&0xf])
	}
	return types.UID(out), true
}

// replaceServices makes the handled set exactly the handled Services of
// list (a relist: deletions during a watch gap arrive only this way). Under mu.
func (s *serviceStore) replaceServices(items []any) error {
	seen := make(map[string]struct{}, len(items))
	for _, obj := range items {
		svc, ok := obj.(*corev1.Service)
		if !ok {
			return fmt.Errorf("service store: unexpected %T in list", obj)
		}
		k := svc.Namespace + "/" + svc.Name
		seen[k] = struct{}{}
		s.setService(svc, false)
	}
	for k := range s.index {
		if _, ok := seen[k]; !ok {
			s.pending[k], s.dirty[k] = nil, struct{}{}
		}
	}
	for k := range s.pending {
		if _, ok := seen[k]; !ok {
			s.pending[k], s.dirty[k] = nil, struct{}{}
		}
	}
	s.servicesSynced = true
	return nil
}

// replaceSlices rebuilds every EndpointSlice summary from list. Under mu.
func (s *serviceStore) replaceSlices(items []any) error {
	for k := range s.slices {
		s.dirty[k] = struct{}{}
	}
	s.slices = map[string][]sliceSummary{}
	for _, obj := range items {
		es, ok := obj.(*discoveryv1.EndpointSlice)
		if !ok {
			return fmt.Errorf("endpointslice store: unexpected %T in list", obj)
		}
		if owner := sliceOwner(es); owner != "" {
			s.slices[owner] = append(s.slices[owner], s.summarize(es))
			s.dirty[owner] = struct{}{}
		}
	}
	s.slicesSynced = true
	return nil
}

// reflectorStore adapts the serviceStore to one kind's reflector. Every
// write updates the store and then calls kick, in that order, so a
// reconcile started after the kick sees the change.
type reflectorStore struct {
	s       *serviceStore
	kick    func()
	set     func(obj any, added, deleted bool) error
	replace func(items []any) error
}

var _ toolscache.ReflectorStore = (*reflectorStore)(nil)

func (s *serviceStore) serviceWriter(kick func()) *reflectorStore {
	return &reflectorStore{s: s, kick: kick, replace: s.replaceServices, set: func(obj any, _, deleted bool) error {
		svc, ok := obj.(*corev1.Service)
		if !ok {
			return fmt.Errorf("service store: unexpected %T", obj)
		}
		s.setService(svc, deleted)
		return nil
	}}
}

func (s *serviceStore) sliceWriter(kick func()) *reflectorStore {
	return &reflectorStore{s: s, kick: kick, replace: s.replaceSlices, set: func(obj any, added, deleted bool) error {
		es, ok := obj.(*discoveryv1.EndpointSlice)
		if !ok {
			return fmt.Errorf("endpointslice store: unexpected %T", obj)
		}
		s.setSlice(es, added, deleted)
		return nil
	}}
}

func (w *reflectorStore) write(f func() error) error {
	w.s.mu.Lock()
	err := f()
	w.s.mu.Unlock()
	if err == nil {
		w.kick()
	}
	return err
}

// Add implements toolscache.ReflectorStore.
func (w *reflectorStore) Add(obj any) error {
	return w.write(func() error { return w.set(obj, true, false) })
}

// Update implements toolscache.ReflectorStore.
func (w *reflectorStore) Update(obj any) error {
	return w.write(func() error { return w.set(obj, false, false) })
}

// Delete implements toolscache.ReflectorStore.
func (w *reflectorStore) Delete(obj any) error {
	if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	return w.write(func() error { return w.set(obj, false, true) })
}

// Replace implements toolscache.ReflectorStore: the reflector's full list,
// on start and after a watch could not resume.
func (w *reflectorStore) Replace(items []any, _ string) error {
	return w.write(func() error { return w.replace(items) })
}

// Resync implements toolscache.ReflectorStore; the store has nothing to
// resync (the reflectors run without a resync period).
func (w *reflectorStore) Resync() error { return nil }

// service returns handled Service k as the last snapshot left it (for an
// incremental pass: the Services of touched addresses).
func (s *serviceStore) service(k string) (model.Service, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.index[k]
	if !ok {
		return model.Service{}, false
	}
	return s.list[i], true
}
