// Package controllers holds the reconcilers of bgplb-controller: Services of
// type LoadBalancer get addresses from IPPools (the decisions are made by the
// pure package controllers/allocator), and IPPools get their status.
package controllers

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	bgplbv1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/controllers/allocator"
)

// IPAM is the one allocator of the process, guarded by a mutex so that
// concurrent reconciles never hand out one address twice. Leader election
// makes sure only one process allocates.
//
// Before the first allocation it reads every existing assignment back from
// the Services' status (warm-up), so a restart never moves an address.
type IPAM struct {
	reader      client.Reader
	serves      func(*corev1.Service) bool
	log         logr.Logger
	mu          sync.Mutex
	alloc       *allocator.Allocator
	warm        bool
	fingerprint string
	poolGen     map[string]int64 // generation applied to the allocator, per pool
}

// NewIPAM returns an IPAM that reads Services and IPPools through reader
// (the manager's cache) and treats the Services for which serves is true as
// its own.
func NewIPAM(reader client.Reader, serves func(*corev1.Service) bool, log logr.Logger) *IPAM {
	return &IPAM{reader: reader, serves: serves, log: log, alloc: allocator.New()}
}

// ready syncs the pools and, the first time, restores assignments. Callers
// hold mu.
func (m *IPAM) ready(ctx context.Context) error {
	if err := m.syncPools(ctx); err != nil {
		return err
	}
	if m.warm {
		return nil
	}
	var svcs corev1.ServiceList
	// Read-only use of the cached objects: skip the deep copies.
	if err := m.reader.List(ctx, &svcs, client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("list services for warm-up: %w", err)
	}
	items := svcs.Items // sorting moves the list's elements, not the cached objects'
	sort.SliceStable(items, func(i, j int) bool {
		ti, tj := items[i].CreationTimestamp, items[j].CreationTimestamp
		if !ti.Equal(&tj) {
			return ti.Before(&tj)
		}
		return items[i].Namespace+"/"+items[i].Name < items[j].Namespace+"/"+items[j].Name
	})
	restored := 0
	for i := range items {
		s := &items[i]
		if !m.serves(s) || s.DeletionTimestamp != nil {
			continue
		}
		addrs := ingressAddrs(s)
		if len(addrs) == 0 {
			continue
		}
		req, _ := buildRequest(s, nil)
		if err := m.alloc.Restore(req, addrs); err != nil {
			// It will be treated as a new Service by its reconcile.
			m.log.Info("cannot restore assignment", "service", req.Service, "addresses", addrs, "reason", err.Error())
			continue
		}
		restored++
	}
	m.warm = true
	m.log.Info("restored existing assignments", "services", restored)
	return nil
}

// syncPools hands the pools from the cache to the allocator when any of
// them changed. Callers hold mu.
func (m *IPAM) syncPools(ctx context.Context) error {
	var pools bgplbv1.IPPoolList
	// Called on every allocation: read the cached pools without copying
	// them; nothing here or in the allocator modifies them.
	if err := m.reader.List(ctx, &pools, client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("list ippools: %w", err)
	}
	items := pools.Items
	sort.SliceStable(items, func(i, j int) bool {
		ti, tj := items[i].CreationTimestamp, items[j].CreationTimestamp
		if !ti.Equal(&tj) {
			return ti.Before(&tj)
		}
		return items[i].Name < items[j].Name
	})
	var fp strings.Builder
	for i := range items {
		p := &items[i]
		fmt.Fprintf(&fp, "%s/%s/%d/%t;", p.Name, p.UID, p.Generation, p.DeletionTimestamp != nil)
	}
	if fp.String() == m.fingerprint {
		return nil
	}
	specs := make([]allocator.PoolSpec, 0, len(items))
	gens := make(map[string]int64, len(items))
	for i := range items {
		specs = append(specs, poolSpec(&items[i]))
		gens[items[i].Name] = items[i].Generation
	}
	m.alloc.SetPools(specs)
	m.fingerprint = fp.String()
	m.poolGen = gens
	m.log.V(1).Info("pools applied", "pools", len(specs))
	return nil
}

func poolSpec(p *bgplbv1.IPPool) allocator.PoolSpec {
	s := allocator.PoolSpec{
		Name:          p.Name,
		Addresses:     p.Spec.Addresses,
		AutoAssign:    p.AutoAssignEnabled(),
		AvoidBuggyIPs: p.Spec.AvoidBuggyIPs,
		Deleting:      p.DeletionTimestamp != nil,
	}
	if sa := p.Spec.ServiceAllocation; sa != nil {
		s.Priority = sa.Priority
		s.Namespaces = sa.Namespaces
		var problems []string
		conv := func(field string, sels []metav1.LabelSelector) []allocator.Selector {
			var out []allocator.Selector
			for i := range sels {
				sel, err := metav1.LabelSelectorAsSelector(&sels[i])
				if err != nil {
					problems = append(problems, fmt.Sprintf("serviceAllocation.%s[%d]: %v", field, i, err))
					continue
				}
				out = append(out, func(l map[string]string) bool { return sel.Matches(labels.Set(l)) })
			}
			return out
		}
		s.NamespaceSelectors = conv("namespaceSelectors", sa.NamespaceSelectors)
		s.ServiceSelectors = conv("serviceSelectors", sa.ServiceSelectors)
		s.Problem = strings.Join(problems, "; ")
	}
	return s
}

// Assign allocates (or confirms) the addresses of one Service.
func (m *IPAM) Assign(ctx context.Context, req allocator.Request) ([]netip.Addr, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.ready(ctx); err != nil {
		return nil, false, err
	}
	return m.alloc.Assign(req)
}

// Release frees the addresses of a Service; it reports whether it had any.
func (m *IPAM) Release(ctx context.Context, service string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	// Warm up first: releasing before the restore would be undone by it.
	if err := m.ready(ctx); err != nil {
		return false, err
	}
	return m.alloc.Release(service), nil
}

// Lookup returns the addresses a Service holds.
func (m *IPAM) Lookup(service string) []netip.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.alloc.Lookup(service)
}

// PoolOf names the pool an assigned address is attributed to.
func (m *IPAM) PoolOf(addr netip.Addr) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.alloc.PoolOf(addr)
}

// States returns the pools' states after syncing them, with the generation
// each state describes.
func (m *IPAM) States(ctx context.Context) ([]allocator.PoolState, map[string]int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.ready(ctx); err != nil {
		return nil, nil, err
	}
	gens := make(map[string]int64, len(m.poolGen))
	for k, v := range m.poolGen {
		gens[k] = v
	}
	return m.alloc.States(), gens, nil
}

// ingressAddrs returns the addresses in a Service's status.
func ingressAddrs(s *corev1.Service) []netip.Addr {
	var out []netip.Addr
	for _, in := range s.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(in.IP); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// buildRequest translates a Service into an allocation request. The error
// describes an unusable annotation; the request is still filled in as far
// as possible.
func buildRequest(s *corev1.Service, nsLabels map[string]string) (allocator.Request, error) {
	req := allocator.Request{
		Service:         s.Namespace + "/" + s.Name,
		Namespace:       s.Namespace,
		Labels:          s.Labels,
		NamespaceLabels: nsLabels,
		Pool:            strings.TrimSpace(s.Annotations[bgplbv1.AnnotationIPPool]),
		SharingKey:      strings.TrimSpace(s.Annotations[bgplbv1.AnnotationAllowSharedIP]),
	}
	for _, f := range s.Spec.IPFamilies {
		if f == corev1.IPv6Protocol {
			req.Families = append(req.Families, allocator.IPv6)
		} else {
			req.Families = append(req.Families, allocator.IPv4)
		}
	}
	if p := s.Spec.IPFamilyPolicy; p == nil || *p != corev1.IPFamilyPolicyRequireDualStack {
		req.OptionalSecond = true
	}
	for _, p := range s.Spec.Ports {
		proto := string(p.Protocol)
		if proto == "" {
			proto = string(corev1.ProtocolTCP)
		}
		req.Ports = append(req.Ports, allocator.Port{Protocol: proto, Port: p.Port})
	}
	var err error
	if v, ok := s.Annotations[bgplbv1.AnnotationLoadBalancerIPs]; ok && strings.TrimSpace(v) != "" {
		for _, part := range strings.Split(v, ",") {
			a, perr := netip.ParseAddr(strings.TrimSpace(part))
			if perr != nil || a.Zone() != "" {
				err = fmt.Errorf("annotation %s: %q is not an IP address without zone", bgplbv1.AnnotationLoadBalancerIPs, strings.TrimSpace(part))
				break
			}
			req.Requested = append(req.Requested, a.Unmap())
		}
	} else if s.Spec.LoadBalancerIP != "" {
		a, perr := netip.ParseAddr(s.Spec.LoadBalancerIP)
		if perr != nil || a.Zone() != "" {
			err = fmt.Errorf("spec.loadBalancerIP %q is not an IP address", s.Spec.LoadBalancerIP)
		} else {
			req.Requested = []netip.Addr{a.Unmap()}
		}
	}
	return req, err
}
