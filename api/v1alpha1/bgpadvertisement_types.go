package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BGPAdvertisementSpec says which service addresses are announced, from which
// nodes, to which peers and with which attributes. Each matching
// advertisement announces the address with its own aggregation length; when
// several produce the same prefix for the same peer, their attributes are
// merged (communities are united, the highest local preference wins).
type BGPAdvertisementSpec struct {
	// IPPools names the IPPools whose addresses this advertisement announces.
	// When both ipPools and ipPoolSelectors are empty, every pool is selected.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=253
	IPPools []string `json:"ipPools,omitempty"`

	// IPPoolSelectors selects IPPools by label, in addition to ipPools.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	IPPoolSelectors []metav1.LabelSelector `json:"ipPoolSelectors,omitempty"`

	// ServiceSelectors limits the advertisement to Services whose labels match
	// any of the selectors. Empty selects every Service of the selected pools.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	ServiceSelectors []metav1.LabelSelector `json:"serviceSelectors,omitempty"`

	// NodeSelectors limits the nodes that announce. A node is selected when
	// any selector matches its labels. Empty selects every node.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	NodeSelectors []metav1.LabelSelector `json:"nodeSelectors,omitempty"`

	// Peers names the BGPPeers to announce to. Empty means every peer.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=253
	Peers []string `json:"peers,omitempty"`

	// Communities attached to the announced routes. Each entry is a standard
	// community "65000:100" (two numbers up to 65535), a large community
	// "65000:1:2" (three numbers up to 4294967295), or a well-known name:
	// no-export, no-advertise, no-export-subconfed (local-as), no-peer,
	// blackhole, graceful-shutdown, accept-own, llgr-stale, no-llgr.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=32
	// +kubebuilder:validation:items:Pattern=`^([0-9]{1,5}:[0-9]{1,5}|[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,10}|no-export|no-advertise|no-export-subconfed|local-as|no-peer|blackhole|graceful-shutdown|accept-own|llgr-stale|no-llgr)$`
	// +kubebuilder:validation:items:XValidation:rule="self.split(':').all(n, !n.matches('^[0-9]+$') || (self.split(':').size() == 2 ? int(n) <= 65535 : int(n) <= 4294967295))",message="community numbers out of range: standard communities take two numbers up to 65535, large communities three numbers up to 4294967295"
	Communities []string `json:"communities,omitempty"`

	// LocalPref is the LOCAL_PREF attribute, sent on iBGP sessions only
	// (it is not part of eBGP UPDATEs).
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=4294967295
	LocalPref *uint32 `json:"localPref,omitempty"`

	// AggregationLength is the prefix length IPv4 addresses are announced
	// with: 32 announces each address as a host route; shorter lengths
	// announce the covering prefix once (useful to keep router tables small,
	// but it attracts traffic for the whole prefix).
	// +optional
	// +kubebuilder:default=32
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=32
	AggregationLength *int32 `json:"aggregationLength,omitempty"`

	// AggregationLengthV6 is the prefix length for IPv6 addresses (see
	// aggregationLength).
	// +optional
	// +kubebuilder:default=128
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=128
	AggregationLengthV6 *int32 `json:"aggregationLengthV6,omitempty"`
}

// BGPAdvertisementStatus is reserved.
type BGPAdvertisementStatus struct{}

// BGPAdvertisement selects service addresses to announce over BGP. An IPPool
// that no advertisement selects is not announced at all; the speakers say so
// with a NotAdvertised event on the pool.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=bgpadv
// +kubebuilder:printcolumn:name="Pools",type=string,JSONPath=`.spec.ipPools`
// +kubebuilder:printcolumn:name="Peers",type=string,JSONPath=`.spec.peers`
// +kubebuilder:printcolumn:name="Communities",type=string,JSONPath=`.spec.communities`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BGPAdvertisement struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec says what is announced, from where, to whom.
	Spec BGPAdvertisementSpec `json:"spec,omitempty"`
	// Status is reserved.
	// +optional
	Status BGPAdvertisementStatus `json:"status,omitempty"`
}

// BGPAdvertisementList is a list of BGPAdvertisements.
//
// +kubebuilder:object:root=true
type BGPAdvertisementList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPAdvertisement `json:"items"`
}

func init() {
	SchemeBuilder.Register(&BGPAdvertisement{}, &BGPAdvertisementList{})
}
