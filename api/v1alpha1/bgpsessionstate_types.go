package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// LabelSessionNode and LabelSessionPeer are set on every BGPSessionState so that
// `kubectl get bgpsessionstates -l bgplb.io/node=worker-1` works.
const (
	LabelSessionNode = "bgplb.io/node"
	LabelSessionPeer = "bgplb.io/peer"
)

// Session states reported in BGPSessionStateStatus.State. They follow the BGP
// finite state machine of RFC 4271, plus Unknown before the first report.
const (
	SessionStateUnknown     = "Unknown"
	SessionStateIdle        = "Idle"
	SessionStateConnect     = "Connect"
	SessionStateActive      = "Active"
	SessionStateOpenSent    = "OpenSent"
	SessionStateOpenConfirm = "OpenConfirm"
	SessionStateEstablished = "Established"
)

// BGPSessionStateSpec identifies the session. It is written by the speaker of
// the node and never by users.
type BGPSessionStateSpec struct {
	// Node is the name of the node that runs the session.
	Node string `json:"node"`
	// Peer is the name of the BGPPeer.
	Peer string `json:"peer"`
	// PeerAddress is the router's address, copied from the BGPPeer.
	// +optional
	PeerAddress string `json:"peerAddress,omitempty"`
}

// BGPSessionStateStatus is the running state of one node's session to one
// peer, as observed by that node's speaker.
type BGPSessionStateStatus struct {
	// State of the BGP session: Idle, Connect, Active, OpenSent, OpenConfirm
	// or Established.
	// +optional
	State string `json:"state,omitempty"`

	// LocalAddress is the node's address on the session, the next hop of
	// the routes it announces there.
	// +optional
	LocalAddress string `json:"localAddress,omitempty"`

	// PrefixesSent is the number of prefixes the speaker announces to the
	// peer on this session.
	// +optional
	PrefixesSent int32 `json:"prefixesSent,omitempty"`

	// EstablishedTime is when the session last reached Established; unset
	// while it is not established.
	// +optional
	EstablishedTime *metav1.Time `json:"establishedTime,omitempty"`

	// LastError is the most recent error of the session (configuration,
	// connection or announcement), empty when there is none.
	// +optional
	LastError string `json:"lastError,omitempty"`

	// LastUpdateTime is when the speaker last wrote this status.
	// +optional
	LastUpdateTime *metav1.Time `json:"lastUpdateTime,omitempty"`
}

// BGPSessionState reports one node's BGP session to one BGPPeer. The speaker
// of each node creates one per selected peer, named <node>-<peer>, keeps its
// status current and deletes it when the peer no longer applies. It is
// garbage-collected with its Node.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=bgpss
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.spec.node`
// +kubebuilder:printcolumn:name="Peer",type=string,JSONPath=`.spec.peer`
// +kubebuilder:printcolumn:name="State",type=string,JSONPath=`.status.state`
// +kubebuilder:printcolumn:name="Prefixes Sent",type=integer,JSONPath=`.status.prefixesSent`
// +kubebuilder:printcolumn:name="Last Error",type=string,JSONPath=`.status.lastError`
// +kubebuilder:printcolumn:name="Uptime",type=date,JSONPath=`.status.establishedTime`
type BGPSessionState struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec identifies the node and the peer.
	Spec BGPSessionStateSpec `json:"spec"`
	// Status is the observed state of the session.
	// +optional
	Status BGPSessionStateStatus `json:"status,omitempty"`
}

// BGPSessionStateList is a list of BGPSessionStates.
//
// +kubebuilder:object:root=true
type BGPSessionStateList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPSessionState `json:"items"`
}

func init() {
	SchemeBuilder.Register(&BGPSessionState{}, &BGPSessionStateList{})
}
