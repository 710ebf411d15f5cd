package controller

import (
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/bgplb/bgplb/speaker/model"
)

// serviceStore keeps the decision's view of Services and their
// EndpointSlices, updated by informer event handlers. A reconcile then costs
// O(changed Services) of conversion instead of listing and converting every
// Service and EndpointSlice each time, which dominated the pass at 10,000
// Services. The store is a cache of the informer cache: the reconcile stays
// level-triggered over the whole set.
type serviceStore struct {
	serves func(*corev1.Service) bool

	mu       sync.Mutex
	services map[types.NamespacedName]*corev1.Service
	// slices are a Service's EndpointSlices; a small slice rather than a
	// map by name (almost every Service has one or two, and 10,000 one-entry
	// maps cost about 3 MB).
	slices map[types.NamespacedName][]*discoveryv1.EndpointSlice
	dirty  map[types.NamespacedName]struct{}
	list   []model.Service              // the handled Services
	index  map[types.NamespacedName]int // position in list
}

func newServiceStore(serves func(*corev1.Service) bool) *serviceStore {
	return &serviceStore{
		serves:   serves,
		services: map[types.NamespacedName]*corev1.Service{},
		slices:   map[types.NamespacedName][]*discoveryv1.EndpointSlice{},
		dirty:    map[types.NamespacedName]struct{}{},
		index:    map[types.NamespacedName]int{},
	}
}

func unwrap(obj any) any {
	if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		return d.Obj
	}
	return obj
}

// handler returns informer callbacks that update the store and then call
// kick, in that order, so any reconcile started after the kick sees the
// change.
func (s *serviceStore) handler(kick func()) toolscache.ResourceEventHandler {
	apply := func(obj any, deleted bool) {
		switch o := unwrap(obj).(type) {
		case *corev1.Service:
			k := types.NamespacedName{Namespace: o.Namespace, Name: o.Name}
			s.mu.Lock()
			if deleted {
				delete(s.services, k)
			} else {
				s.services[k] = o
			}
			s.dirty[k] = struct{}{}
			s.mu.Unlock()
		case *discoveryv1.EndpointSlice:
			name := o.Labels[discoveryv1.LabelServiceName]
			if name == "" {
				return
			}
			k := types.NamespacedName{Namespace: o.Namespace, Name: name}
			s.mu.Lock()
			l := s.slices[k]
			i := slices.IndexFunc(l, func(e *discoveryv1.EndpointSlice) bool { return e.Name == o.Name })
			switch {
			case deleted && i >= 0:
				// A fresh slice: snapshot may still hold the old one.
				l = slices.Delete(slices.Clone(l), i, i+1)
				if len(l) == 0 {
					delete(s.slices, k)
				} else {
					s.slices[k] = l
				}
			case deleted:
			case i >= 0:
				l = slices.Clone(l)
				l[i] = o
				s.slices[k] = l
			default:
				s.slices[k] = append(l[:len(l):len(l)], o)
			}
			s.dirty[k] = struct{}{}
			s.mu.Unlock()
		default:
			return
		}
		kick()
	}
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { apply(obj, false) },
		UpdateFunc: func(_, obj any) { apply(obj, false) },
		DeleteFunc: func(obj any) { apply(obj, true) },
	}
}

// snapshot converts what changed and returns every handled Service. The
// slice is patched in place, so a pass after one EndpointSlice change costs
// one conversion, not 10,000 copies. It is valid until the next call; only
// the reconciler calls it, one pass at a time.
func (s *serviceStore) snapshot() []model.Service {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.dirty {
		svc := s.services[k]
		i, had := s.index[k]
		if svc == nil || !s.serves(svc) || len(svc.Status.LoadBalancer.Ingress) == 0 {
			if had {
				// Swap-remove.
				last := len(s.list) - 1
				s.list[i] = s.list[last]
				s.index[types.NamespacedName{Namespace: s.list[i].Namespace, Name: s.list[i].Name}] = i
				s.list = s.list[:last]
				delete(s.index, k)
			}
			continue
		}
		m := toService(svc, s.slices[k])
		if had {
			s.list[i] = m
		} else {
			s.index[k] = len(s.list)
			s.list = append(s.list, m)
		}
	}
	if len(s.dirty) > 64 {
		// clear keeps the buckets of a burst (10,000 entries after the
		// initial list) for the life of the process.
		s.dirty = map[types.NamespacedName]struct{}{}
	} else {
		clear(s.dirty)
	}
	return s.list
}

// lookup returns the Service object for events.
func (s *serviceStore) lookup(k types.NamespacedName) *corev1.Service {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.services[k]
}
