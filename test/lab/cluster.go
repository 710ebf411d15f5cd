package lab

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	bgplbv1 "github.com/bgplb/bgplb/api/v1alpha1"
)

// PoolName, PeerName and AdvertisementName name the lab's bgplb objects.
const (
	PoolName = "lab-pool"
	PeerName = "lab-router"
	// PeerName6 is the BGPPeer of the router's IPv6 address, created by
	// EnableIPv6Peering.
	PeerName6         = "lab-router-v6"
	AdvertisementName = "lab-all"
	Namespace         = "default"
)

// createClusterObjects creates what kubelets and the user would: Ready
// Nodes with their addresses, and the IPPool, BGPPeer and BGPAdvertisement.
func (l *Lab) createClusterObjects(ctx context.Context) error {
	for _, n := range []string{Node1, Node2} {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{"kubernetes.io/hostname": n}}}
		if err := l.Kube.Create(ctx, node); err != nil {
			return fmt.Errorf("create node %s: %w", n, err)
		}
		node.Status = corev1.NodeStatus{
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: NodeIPs[n]}, {Type: corev1.NodeInternalIP, Address: NodeIPs6[n]},
				{Type: corev1.NodeHostName, Address: n}},
			Conditions: []corev1.NodeCondition{{
				Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
				Message: "lab node (no kubelet)", LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(),
			}},
		}
		if err := l.Kube.Status().Update(ctx, node); err != nil {
			return fmt.Errorf("set node %s ready: %w", n, err)
		}
	}
	objs := []client.Object{
		&bgplbv1.IPPool{
			ObjectMeta: metav1.ObjectMeta{Name: PoolName},
			Spec:       bgplbv1.IPPoolSpec{Addresses: []string{ServiceSubnet, ServiceSubnet6}, AvoidBuggyIPs: true},
		},
		&bgplbv1.BGPPeer{
			ObjectMeta: metav1.ObjectMeta{Name: PeerName},
			Spec: bgplbv1.BGPPeerSpec{
				PeerAddress: RouterIP, PeerASN: RouterASN, MyASN: NodeASN,
				HoldTime: &metav1.Duration{Duration: 9 * time.Second},
			},
		},
		&bgplbv1.BGPAdvertisement{
			ObjectMeta: metav1.ObjectMeta{Name: AdvertisementName},
			Spec:       bgplbv1.BGPAdvertisementSpec{IPPools: []string{PoolName}},
		},
	}
	for _, o := range objs {
		if err := l.Kube.Create(ctx, o); err != nil {
			return fmt.Errorf("create %T %s: %w", o, o.GetName(), err)
		}
	}
	return nil
}

// EnableIPv6Peering creates the BGPPeer of the router's IPv6 address: each
// speaker opens an IPv6 session next to its IPv4 one and announces the
// IPv6 service addresses (/128) there. The returned function deletes it
// again. The lab starts without it so that the IPv4 story keeps exactly
// its two sessions.
func (l *Lab) EnableIPv6Peering(ctx context.Context) (func(context.Context) error, error) {
	peer := &bgplbv1.BGPPeer{
		ObjectMeta: metav1.ObjectMeta{Name: PeerName6},
		Spec: bgplbv1.BGPPeerSpec{
			PeerAddress: RouterIP6, PeerASN: RouterASN, MyASN: NodeASN,
			HoldTime: &metav1.Duration{Duration: 9 * time.Second},
		},
	}
	if err := l.Kube.Create(ctx, peer); err != nil {
		return nil, fmt.Errorf("create BGPPeer %s: %w", PeerName6, err)
	}
	return func(ctx context.Context) error { return client.IgnoreNotFound(l.Kube.Delete(ctx, peer)) }, nil
}

// ServiceSpec describes a lab Service.
type ServiceSpec struct {
	Name string
	// DualStack asks for an IPv4 and an IPv6 address (ipFamilyPolicy
	// RequireDualStack).
	DualStack bool
	// Local selects externalTrafficPolicy: Local.
	Local bool
	// EndpointsOn lists the nodes with a ready endpoint.
	EndpointsOn []string
}

// CreateService creates a LoadBalancer Service of class bgplb.io/bgp and the
// EndpointSlice that the endpoint controller would make for it.
func (l *Lab) CreateService(ctx context.Context, s ServiceSpec) error {
	policy := corev1.ServiceExternalTrafficPolicyCluster
	if s.Local {
		policy = corev1.ServiceExternalTrafficPolicyLocal
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: Namespace},
		Spec: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeLoadBalancer,
			LoadBalancerClass:     ptr.To(bgplbv1.LoadBalancerClass),
			ExternalTrafficPolicy: policy,
			Selector:              map[string]string{"app": s.Name},
			Ports:                 []corev1.ServicePort{{Name: "http", Port: ServicePort, TargetPort: intstr.FromInt32(ServicePort), Protocol: corev1.ProtocolTCP}},
		},
	}
	if s.DualStack {
		svc.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicyRequireDualStack)
		svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
	}
	if err := l.Kube.Create(ctx, svc); err != nil {
		return fmt.Errorf("create service %s: %w", s.Name, err)
	}
	return l.SetEndpoints(ctx, s.Name, s.EndpointsOn)
}

// SetEndpoints replaces the Service's EndpointSlice with one ready endpoint
// on each named node.
func (l *Lab) SetEndpoints(ctx context.Context, service string, nodes []string) error {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: service + "-lab", Namespace: Namespace,
			Labels: map[string]string{discoveryv1.LabelServiceName: service, discoveryv1.LabelManagedBy: "bgplb-lab"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](ServicePort), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for i, n := range nodes {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			// Pod addresses are notional: the lab has no pods, the node's
			// backend answers for them.
			Addresses:  []string{fmt.Sprintf("10.244.%d.%d", nodeIndex(n), 10+i)},
			NodeName:   ptr.To(n),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
		})
	}
	existing := &discoveryv1.EndpointSlice{}
	err := l.Kube.Get(ctx, client.ObjectKeyFromObject(es), existing)
	if err == nil {
		existing.Endpoints = es.Endpoints
		return l.Kube.Update(ctx, existing)
	}
	if client.IgnoreNotFound(err) != nil {
		return err
	}
	return l.Kube.Create(ctx, es)
}

func nodeIndex(n string) int {
	if n == Node2 {
		return 2
	}
	return 1
}

// DeleteService deletes a Service and its EndpointSlice.
func (l *Lab) DeleteService(ctx context.Context, name string) error {
	if err := l.Kube.Delete(ctx, &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: name + "-lab", Namespace: Namespace}}); client.IgnoreNotFound(err) != nil {
		return err
	}
	return client.IgnoreNotFound(l.Kube.Delete(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace}}))
}

// WaitServiceIPs waits until the controller wrote n addresses for the
// Service (2 for a dual-stack one) and returns them.
func (l *Lab) WaitServiceIPs(ctx context.Context, name string, n int, timeout time.Duration) ([]netip.Addr, error) {
	deadline := time.Now().Add(timeout)
	for {
		svc := &corev1.Service{}
		err := l.Kube.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: name}, svc)
		var out []netip.Addr
		for _, in := range svc.Status.LoadBalancer.Ingress {
			if a, perr := netip.ParseAddr(in.IP); perr == nil {
				out = append(out, a)
			}
		}
		if err == nil && len(out) >= n {
			return out, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("service %s has %d of %d addresses after %v (last error: %v; see %s)", name, len(out), n, timeout, err, l.LogPath("controller")) //nolint:errorlint // err is often nil: shown, not wrapped
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// WaitServiceIP waits until the controller wrote the Service's address.
func (l *Lab) WaitServiceIP(ctx context.Context, name string, timeout time.Duration) (netip.Addr, error) {
	deadline := time.Now().Add(timeout)
	for {
		svc := &corev1.Service{}
		err := l.Kube.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: name}, svc)
		if err == nil {
			for _, in := range svc.Status.LoadBalancer.Ingress {
				if a, perr := netip.ParseAddr(in.IP); perr == nil {
					return a, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return netip.Addr{}, fmt.Errorf("service %s has no address after %v (last error: %w; see %s)", name, timeout, err, l.LogPath("controller"))
		}
		select {
		case <-ctx.Done():
			return netip.Addr{}, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
