package metallb

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The MetalLB specs this package reads, written out here so that bgplb does
// not depend on MetalLB's Go module. The JSON names are MetalLB's
// (go.universe.tf/metallb api/v1beta1 and api/v1beta2, Apache-2.0).

// poolSpec is metallb.io/v1beta1 IPAddressPool's spec.
type poolSpec struct {
	Addresses         []string           `json:"addresses"`
	AutoAssign        *bool              `json:"autoAssign,omitempty"`
	AvoidBuggyIPs     bool               `json:"avoidBuggyIPs,omitempty"`
	ServiceAllocation *serviceAllocation `json:"serviceAllocation,omitempty"`
}

type serviceAllocation struct {
	Priority           int                    `json:"priority,omitempty"`
	Namespaces         []string               `json:"namespaces,omitempty"`
	NamespaceSelectors []metav1.LabelSelector `json:"namespaceSelectors,omitempty"`
	ServiceSelectors   []metav1.LabelSelector `json:"serviceSelectors,omitempty"`
}

var poolFields = []string{"addresses", "autoAssign", "avoidBuggyIPs", "serviceAllocation"}

// peerSpec is metallb.io/v1beta2 BGPPeer's spec, which is a superset of
// v1beta1's. v1beta1's nodeSelectors have their own type with the same JSON
// shape as a LabelSelector; its holdTime and keepaliveTime are not pointers,
// which JSON does not see.
type peerSpec struct {
	MyASN                  uint32                 `json:"myASN"`
	PeerASN                uint32                 `json:"peerASN,omitempty"`
	LocalASN               uint32                 `json:"localASN,omitempty"`
	DynamicASN             string                 `json:"dynamicASN,omitempty"`
	PeerAddress            string                 `json:"peerAddress,omitempty"`
	Interface              string                 `json:"interface,omitempty"`
	SourceAddress          string                 `json:"sourceAddress,omitempty"`
	PeerPort               int32                  `json:"peerPort,omitempty"`
	HoldTime               *metav1.Duration       `json:"holdTime,omitempty"`
	KeepaliveTime          *metav1.Duration       `json:"keepaliveTime,omitempty"`
	ConnectTime            *metav1.Duration       `json:"connectTime,omitempty"`
	RouterID               string                 `json:"routerID,omitempty"`
	NodeSelectors          []metav1.LabelSelector `json:"nodeSelectors,omitempty"`
	Password               string                 `json:"password,omitempty"`
	PasswordSecret         *secretReference       `json:"passwordSecret,omitempty"`
	BFDProfile             string                 `json:"bfdProfile,omitempty"`
	EnableGracefulRestart  bool                   `json:"enableGracefulRestart,omitempty"`
	EBGPMultiHop           bool                   `json:"ebgpMultiHop,omitempty"`
	VRF                    string                 `json:"vrf,omitempty"`
	DisableMP              bool                   `json:"disableMP,omitempty"`
	DualStackAddressFamily bool                   `json:"dualStackAddressFamily,omitempty"`
}

type secretReference struct {
	Name      string `json:"name,omitempty"`
	Namespace string `json:"namespace,omitempty"`
}

var peerFields = []string{
	"myASN", "peerASN", "localASN", "dynamicASN", "peerAddress", "interface",
	"sourceAddress", "peerPort", "holdTime", "keepaliveTime", "connectTime",
	"routerID", "nodeSelectors", "password", "passwordSecret", "bfdProfile",
	"enableGracefulRestart", "ebgpMultiHop", "vrf", "disableMP", "dualStackAddressFamily",
}

// advSpec is metallb.io/v1beta1 BGPAdvertisement's spec.
type advSpec struct {
	AggregationLength      *int32                 `json:"aggregationLength,omitempty"`
	AggregationLengthV6    *int32                 `json:"aggregationLengthV6,omitempty"`
	LocalPref              uint32                 `json:"localPref,omitempty"`
	Communities            []string               `json:"communities,omitempty"`
	IPAddressPools         []string               `json:"ipAddressPools,omitempty"`
	IPAddressPoolSelectors []metav1.LabelSelector `json:"ipAddressPoolSelectors,omitempty"`
	NodeSelectors          []metav1.LabelSelector `json:"nodeSelectors,omitempty"`
	Peers                  []string               `json:"peers,omitempty"`
	ServiceSelectors       []metav1.LabelSelector `json:"serviceSelectors,omitempty"`
}

var advFields = []string{
	"aggregationLength", "aggregationLengthV6", "localPref", "communities",
	"ipAddressPools", "ipAddressPoolSelectors", "nodeSelectors", "peers", "serviceSelectors",
}

// communitySpec is metallb.io/v1beta1 Community's spec: named aliases that
// BGPAdvertisements may use instead of community values.
type communitySpec struct {
	Communities []struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	} `json:"communities,omitempty"`
}
