package controller

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"net/netip"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/internal/iprange"
	"github.com/bgplb/bgplb/speaker/bgp"
	"github.com/bgplb/bgplb/speaker/model"
)

func selectors(in []metav1.LabelSelector) []model.LabelSelector {
	if len(in) == 0 {
		return nil
	}
	out := make([]model.LabelSelector, 0, len(in))
	for _, s := range in {
		ms := model.LabelSelector{MatchLabels: s.MatchLabels}
		for _, e := range s.MatchExpressions {
			op := model.Operator(e.Operator)
			switch op {
			case model.OpIn, model.OpNotIn, model.OpExists, model.OpDoesNotExist:
			default:
				ms.Invalid = true
			}
			ms.MatchExpressions = append(ms.MatchExpressions, model.Requirement{Key: e.Key, Operator: op, Values: e.Values})
		}
		out = append(out, ms)
	}
	return out
}

// Taints and texts of the drain signals toNode reads.
const (
	// TaintUnschedulable mirrors spec.unschedulable (the node lifecycle
	// controller sets it on a cordoned node); a tool may also set it alone.
	TaintUnschedulable = "node.kubernetes.io/unschedulable"
	// TaintOutOfService is set by an administrator on a node that is down
	// (non-graceful node shutdown): its pods are deleted at once.
	TaintOutOfService = "node.kubernetes.io/out-of-service"
	// shutdownText is what the kubelet's graceful node shutdown puts in the
	// NodeReady condition: "Once the kubelet is notified of a node
	// shutdown, it sets a NotReady condition on the Node, with the reason
	// set to "node is shutting down"" (https://kubernetes.io/docs/concepts/cluster-administration/node-shutdown/,
	// Kubernetes 1.34). In the kubelet's code the text is the shutdown
	// manager's ShutdownStatus error, which lands in the condition's
	// message (reason KubeletNotReady), so both are searched. The node
	// lifecycle controller then adds the node.kubernetes.io/not-ready
	// taint, as for any NotReady node: the taint alone does not say why.
	shutdownText = "node is shutting down"
)

// toNode reads what the decision needs from a Node, the drain signals
// included: cordoned (spec.unschedulable or the unschedulable taint), in
// graceful shutdown (the kubelet's NotReady condition), out of service.
func toNode(n *corev1.Node) model.Node {
	mn := model.Node{Name: n.Name, Labels: n.Labels, Unschedulable: n.Spec.Unschedulable}
	for _, c := range n.Status.Conditions {
		if c.Type != corev1.NodeReady {
			continue
		}
		mn.Ready = c.Status == corev1.ConditionTrue
		mn.ShuttingDown = c.Status == corev1.ConditionFalse &&
			(strings.Contains(strings.ToLower(c.Reason), shutdownText) || strings.Contains(strings.ToLower(c.Message), shutdownText))
	}
	for _, t := range n.Spec.Taints {
		switch t.Key {
		case TaintUnschedulable:
			mn.Unschedulable = true
		case TaintOutOfService:
			mn.OutOfService = true
		}
	}
	return mn
}

// toPool converts an IPPool. An entry that does not parse (the apiserver's
// validation should have refused it) is left out, so that the pool's
// other entries still count, and returned as an error for the caller to
// report; the controller reports it on the pool too.
func toPool(p *v1.IPPool) (model.Pool, []error) {
	mp := model.Pool{Name: p.Name, Labels: p.Labels}
	var errs []error
	for _, a := range p.Spec.Addresses {
		r, err := iprange.Parse(a)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		mp.Ranges = append(mp.Ranges, r)
	}
	return mp, errs
}

func toPeer(p *v1.BGPPeer) model.Peer {
	mp := model.Peer{Name: p.Name, NodeSelectors: selectors(p.Spec.NodeSelectors)}
	if a, err := netip.ParseAddr(p.Spec.PeerAddress); err == nil {
		mp.Address = a.Unmap()
	}
	if a, err := netip.ParseAddr(p.Spec.SourceAddress); err == nil {
		mp.SourceAddress = a.Unmap()
	}
	return mp
}

func toAdvertisement(a *v1.BGPAdvertisement) model.BGPAdvertisement {
	ma := model.BGPAdvertisement{
		Name:             a.Name,
		Pools:            a.Spec.IPPools,
		PoolSelectors:    selectors(a.Spec.IPPoolSelectors),
		ServiceSelectors: selectors(a.Spec.ServiceSelectors),
		NodeSelectors:    selectors(a.Spec.NodeSelectors),
		Peers:            a.Spec.Peers,
		Communities:      a.Spec.Communities,
		LocalPref:        a.Spec.LocalPref,
	}
	if a.Spec.AggregationLength != nil {
		ma.AggregationLength = int(*a.Spec.AggregationLength)
	}
	if a.Spec.AggregationLengthV6 != nil {
		ma.AggregationLengthV6 = int(*a.Spec.AggregationLengthV6)
	}
	return ma
}

// RouterID picks the node's BGP identifier: its first IPv4 InternalIP, else
// its first IPv4 address of any type, else a stable hash of its name in
// 240.0.0.0/4 (reserved, so it never collides with a real address).
func RouterID(n *corev1.Node) netip.Addr {
	for _, want := range []corev1.NodeAddressType{corev1.NodeInternalIP, ""} {
		for _, a := range n.Status.Addresses {
			if want != "" && a.Type != want {
				continue
			}
			if ip, err := netip.ParseAddr(a.Address); err == nil && ip.Unmap().Is4() {
				return ip.Unmap()
			}
		}
	}
	h := fnv.New32a()
	h.Write([]byte(n.Name))
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], h.Sum32()|0xF0000000)
	return netip.AddrFrom4(b)
}

// PeerConfig is peerConfig for a speaker run outside the cluster: the router
// agent's kernel tests open a real session with the defaults a BGPPeer gets.
func PeerConfig(p *v1.BGPPeer, routerID netip.Addr, password string) (bgp.PeerConfig, error) {
	return peerConfig(p, routerID, password)
}

// peerConfig renders a BGPPeer as this node's session configuration.
// password is the resolved TCP-MD5 password ("" for none).
func peerConfig(p *v1.BGPPeer, routerID netip.Addr, password string) (bgp.PeerConfig, error) {
	addr, err := netip.ParseAddr(p.Spec.PeerAddress)
	if err != nil {
		return bgp.PeerConfig{}, fmt.Errorf("BGPPeer %s: peerAddress %q: %w", p.Name, p.Spec.PeerAddress, err)
	}
	c := bgp.PeerConfig{
		Name:     p.Name,
		Address:  addr.Unmap(),
		Port:     179,
		PeerASN:  p.Spec.PeerASN,
		MyASN:    p.Spec.MyASN,
		RouterID: routerID,
		Password: password,
	}
	if p.Spec.PeerPort != nil {
		c.Port = uint16(*p.Spec.PeerPort)
	}
	if p.Spec.SourceAddress != "" {
		src, err := netip.ParseAddr(p.Spec.SourceAddress)
		if err != nil {
			return bgp.PeerConfig{}, fmt.Errorf("BGPPeer %s: sourceAddress %q: %w", p.Name, p.Spec.SourceAddress, err)
		}
		c.SourceAddress = src.Unmap()
	}
	if p.Spec.HoldTime != nil {
		c.HoldTime = p.Spec.HoldTime.Duration.Truncate(time.Second)
	}
	if p.Spec.KeepaliveTime != nil {
		c.KeepaliveTime = p.Spec.KeepaliveTime.Duration.Truncate(time.Second)
	} else if c.HoldTime > 0 {
		c.KeepaliveTime = (c.HoldTime / 3).Truncate(time.Second)
	}
	if p.Spec.EBGPMultiHop != nil {
		c.MultiHopTTL = uint8(*p.Spec.EBGPMultiHop)
	}
	// GTSM is on by default for a directly connected router only: a
	// multi-hop router's packets arrive with less than 255.
	c.TTLSecurity = p.Spec.EBGPMultiHop == nil
	if p.Spec.TTLSecurity != nil {
		c.TTLSecurity = *p.Spec.TTLSecurity
	}
	// Without a gracefulRestart block the session still advertises the
	// capability, without address families: End-of-RIB both ways, and no
	// routes kept for a speaker that went away. An explicit block decides.
	c.EndOfRIB = p.Spec.GracefulRestart == nil
	if gr := p.Spec.GracefulRestart; gr != nil && gr.Enabled {
		c.GracefulRestart = true
		c.RestartTime = 120 * time.Second
		if gr.RestartTime != nil {
			c.RestartTime = gr.RestartTime.Duration
		}
	}
	return c, nil
}

// sessionStateName is the BGPSessionState object name for node and peer.
func sessionStateName(node, peer string) string {
	name := node + "-" + peer
	if len(name) <= 253 {
		return name
	}
	h := fnv.New64a()
	h.Write([]byte(name))
	return fmt.Sprintf("%s-%x", strings.TrimRight(name[:236], "-."), h.Sum64())
}
