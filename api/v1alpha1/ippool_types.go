package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types and reasons reported in IPPool status.
const (
	// IPPoolConditionReady is True when the pool is used to allocate addresses.
	IPPoolConditionReady = "Ready"
	// IPPoolConditionInvalid is True when part of the spec is not accepted as
	// written: a bad range, an overlap with another pool, or addresses still
	// in use that were removed from spec.addresses (those are kept until the
	// Services using them release them).
	IPPoolConditionInvalid = "Invalid"

	// IPPoolReasonValid: the spec is accepted.
	IPPoolReasonValid = "Valid"
	// IPPoolReasonBadAddresses: an entry of spec.addresses cannot be parsed.
	IPPoolReasonBadAddresses = "BadAddresses"
	// IPPoolReasonOverlap: the pool overlaps a pool that was accepted first.
	IPPoolReasonOverlap = "Overlap"
	// IPPoolReasonInUseAddressesRemoved: addresses still assigned to Services
	// are no longer in spec.addresses; they are kept until released.
	IPPoolReasonInUseAddressesRemoved = "InUseAddressesRemoved"
	// IPPoolReasonDeletionBlocked: the pool is being deleted but some of its
	// addresses are still assigned; deletion completes when they are released.
	IPPoolReasonDeletionBlocked = "DeletionBlocked"

	// IPPoolFinalizer keeps a deleted IPPool until none of its addresses is
	// assigned to a Service any more.
	IPPoolFinalizer = "bgplb.io/ippool-in-use"
)

// IPPoolSpec describes a set of addresses that Services of type LoadBalancer
// may receive, and which Services may receive them.
//
// +kubebuilder:validation:XValidation:rule="!has(self.serviceAllocation) || !has(self.serviceAllocation.namespaces) || !has(self.serviceAllocation.namespaceSelectors) || size(self.serviceAllocation.namespaces) == 0 || size(self.serviceAllocation.namespaceSelectors) == 0",message="serviceAllocation: use either namespaces or namespaceSelectors, not both"
type IPPoolSpec struct {
	// Addresses are the addresses of this pool, IPv4 and/or IPv6. Each entry
	// is either a CIDR ("192.168.254.0/24", "fd00:254::/120") or an inclusive
	// range of two addresses of the same family separated by a dash
	// ("192.168.254.10-192.168.254.20"). Entries must not overlap each other
	// or any other IPPool. Addresses removed from this list while a Service
	// still uses them are kept by that Service until it releases them.
	//
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=100
	// +kubebuilder:validation:XValidation:rule="self.all(a, a.contains('-') ? (a.split('-').size() == 2 && isIP(a.split('-')[0].trim()) && isIP(a.split('-')[1].trim()) && ip(a.split('-')[0].trim()).family() == ip(a.split('-')[1].trim()).family()) : (isCIDR(a) && cidr(a) == cidr(a).masked()))",message="each address must be a CIDR without host bits (192.168.254.0/24) or a range of two addresses of one family (192.168.254.10-192.168.254.20)"
	// +listType=atomic
	Addresses []string `json:"addresses"`

	// AutoAssign lets the controller pick addresses from this pool for
	// Services that do not name a pool. When false, only Services that name
	// this pool (annotation bgplb.io/ip-pool) or request one of its addresses
	// (annotation bgplb.io/loadBalancerIPs) get addresses from it.
	//
	// +kubebuilder:default=true
	// +optional
	AutoAssign *bool `json:"autoAssign,omitempty"`

	// AvoidBuggyIPs skips IPv4 addresses ending in .0 or .255, which some
	// old clients and routers treat as network or broadcast addresses, and
	// IPv6 addresses whose last 64 bits are zero (the Subnet-Router anycast
	// address of their /64, RFC 4291 2.6.1).
	//
	// +kubebuilder:default=false
	// +optional
	AvoidBuggyIPs bool `json:"avoidBuggyIPs,omitempty"`

	// ServiceAllocation limits which Services may get addresses from this
	// pool automatically, and how strongly this pool is preferred. Without
	// it, every Service may use the pool and the pool has the lowest
	// preference.
	//
	// +optional
	ServiceAllocation *ServiceAllocation `json:"serviceAllocation,omitempty"`
}

// ServiceAllocation scopes a pool to some Services and sets its preference.
type ServiceAllocation struct {
	// Priority orders the pools a Service may use: the pool with the lowest
	// number is tried first (1 before 2). 0 or unset means lowest priority.
	// Pools of equal priority are tried in name order.
	//
	// +kubebuilder:validation:Minimum=0
	// +optional
	Priority int32 `json:"priority,omitempty"`

	// Namespaces lists the namespaces whose Services may use this pool.
	// Empty means any namespace (subject to namespaceSelectors).
	//
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=63
	// +listType=set
	// +optional
	Namespaces []string `json:"namespaces,omitempty"`

	// NamespaceSelectors selects, by namespace labels, the namespaces whose
	// Services may use this pool. A namespace matching any selector is
	// allowed. Empty means any namespace (subject to namespaces).
	//
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	// +optional
	NamespaceSelectors []metav1.LabelSelector `json:"namespaceSelectors,omitempty"`

	// ServiceSelectors selects, by Service labels, the Services that may use
	// this pool. A Service matching any selector is allowed. Empty means any
	// Service.
	//
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	// +optional
	ServiceSelectors []metav1.LabelSelector `json:"serviceSelectors,omitempty"`
}

// IPPoolStatus is the observed state of an IPPool, written by
// bgplb-controller.
type IPPoolStatus struct {
	// ObservedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// AssignedIPv4 is the number of IPv4 addresses of this pool assigned to
	// at least one Service (a shared address counts once).
	// +optional
	AssignedIPv4 int64 `json:"assignedIPv4"`

	// AvailableIPv4 is the number of IPv4 addresses of this pool that can
	// still be assigned (buggy addresses excluded when avoidBuggyIPs is set).
	// +optional
	AvailableIPv4 int64 `json:"availableIPv4"`

	// AssignedIPv6 is the number of IPv6 addresses of this pool assigned to
	// at least one Service.
	// +optional
	AssignedIPv6 int64 `json:"assignedIPv6"`

	// AvailableIPv6 is the number of IPv6 addresses of this pool that can
	// still be assigned, capped at 9223372036854775807 for very large ranges.
	// +optional
	AvailableIPv6 int64 `json:"availableIPv6"`

	// Conditions: Ready (the pool is used for allocation) and Invalid (part
	// of the spec is not accepted; the message says which part and why).
	//
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// IPPool is a cluster-wide pool of addresses for Services of type
// LoadBalancer handled by bgplb (loadBalancerClass bgplb.io/bgp).
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=ipp,categories=bgplb
// +kubebuilder:printcolumn:name="Addresses",type=string,JSONPath=`.spec.addresses`
// +kubebuilder:printcolumn:name="Auto",type=boolean,JSONPath=`.spec.autoAssign`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Invalid",type=string,JSONPath=`.status.conditions[?(@.type=="Invalid")].status`
// +kubebuilder:printcolumn:name="V4 Assigned",type=integer,JSONPath=`.status.assignedIPv4`
// +kubebuilder:printcolumn:name="V4 Free",type=integer,JSONPath=`.status.availableIPv4`
// +kubebuilder:printcolumn:name="V6 Assigned",type=integer,JSONPath=`.status.assignedIPv6`,priority=1
// +kubebuilder:printcolumn:name="V6 Free",type=integer,JSONPath=`.status.availableIPv6`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type IPPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the desired pool.
	Spec IPPoolSpec `json:"spec"`

	// Status is the observed state of the pool.
	// +optional
	Status IPPoolStatus `json:"status,omitempty"`
}

// IPPoolList is a list of IPPools.
//
// +kubebuilder:object:root=true
type IPPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the pools.
	Items []IPPool `json:"items"`
}

func init() {
	SchemeBuilder.Register(&IPPool{}, &IPPoolList{})
}

// AutoAssignEnabled reports spec.autoAssign with its default (true).
func (p *IPPool) AutoAssignEnabled() bool {
	return p.Spec.AutoAssign == nil || *p.Spec.AutoAssign
}
