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

	// BFD is the state of the BFD session to the peer; unset when the
	// BGPPeer does not enable BFD.
	// +optional
	BFD *BFDSessionStatus `json:"bfd,omitempty"`

	// ReturnPath is the BGPPeer's returnPath mode as this speaker applies
	// it ("direct" or "symmetric"); the ReturnPathSymmetric condition
	// says whether the symmetric return path is in place.
	// +optional
	ReturnPath ReturnPath `json:"returnPath,omitempty"`

	// Conditions: ReturnPathSymmetric (returnPath: symmetric only) is True
	// when the node's connmark rule, policy rule and route for this router
	// are installed, False with the reason (NotEnabled, RouterUnresolved,
	// ApplyFailed) otherwise.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// RoutesInstalled counts the prefixes announced on this session that
	// the router reports installed in its kernel (its verdicts, see
	// docs/verdict.md); unset while the router reports nothing (FRR, BIRD,
	// or a session that just came up).
	// +optional
	RoutesInstalled *int32 `json:"routesInstalled,omitempty"`

	// RoutesRejected counts the prefixes announced on this session that
	// the router reports it rejected; the Services' bgplb.io/Routed
	// condition and events say which and why. Unset like RoutesInstalled.
	// +optional
	RoutesRejected *int32 `json:"routesRejected,omitempty"`

	// LastUpdateTime is when the speaker last wrote this status.
	// +optional
	LastUpdateTime *metav1.Time `json:"lastUpdateTime,omitempty"`
}

// BFD session states reported in BFDSessionStatus.State (RFC 5880 4.1).
const (
	BFDStateAdminDown = "AdminDown"
	BFDStateDown      = "Down"
	BFDStateInit      = "Init"
	BFDStateUp        = "Up"
)

// ConditionReturnPathSymmetric is the BGPSessionState condition of a
// BGPPeer with returnPath: symmetric, and its reasons.
const (
	ConditionReturnPathSymmetric = "ReturnPathSymmetric"
	// ReasonReturnPathApplied: the mark rules, policy rule and route are in
	// place.
	ReasonReturnPathApplied = "Applied"
	// ReasonReturnPathNotEnabled: the speaker runs without
	// --symmetric-return-path.
	ReasonReturnPathNotEnabled = "NotEnabled"
	// ReasonReturnPathRouterUnresolved: the router's interface or MAC
	// address is not known yet (no neighbour entry).
	ReasonReturnPathRouterUnresolved = "RouterUnresolved"
	// ReasonReturnPathApplyFailed: the kernel refused the rules or routes.
	ReasonReturnPathApplyFailed = "ApplyFailed"
)

// BFDSessionStatus is the running state of one node's BFD session to a
// peer.
type BFDSessionStatus struct {
	// State is the session's state: Up, Down, Init or AdminDown; empty while
	// the session could not be started (lastError says why).
	// +optional
	State string `json:"state,omitempty"`

	// Diagnostic is this node's reason for the last change of state (RFC
	// 5880 4.1), e.g. "control detection time expired".
	// +optional
	Diagnostic string `json:"diagnostic,omitempty"`

	// RemoteDiagnostic is the peer's reason for its last change of state.
	// +optional
	RemoteDiagnostic string `json:"remoteDiagnostic,omitempty"`

	// TransmitInterval is the interval at which this node sends control
	// packets now (before jitter): the larger of its transmitInterval and
	// the peer's receive interval while up, 1s otherwise.
	// +optional
	TransmitInterval *metav1.Duration `json:"transmitInterval,omitempty"`

	// ReceiveInterval is the configured receiveInterval.
	// +optional
	ReceiveInterval *metav1.Duration `json:"receiveInterval,omitempty"`

	// DetectMultiplier is the configured detectMultiplier.
	// +optional
	DetectMultiplier int32 `json:"detectMultiplier,omitempty"`

	// DetectionTime is how long the peer may stay silent before the session
	// goes down; unset until the peer was heard.
	// +optional
	DetectionTime *metav1.Duration `json:"detectionTime,omitempty"`

	// DownEvents counts the failures of the path since the speaker
	// started: the times the session went down from Up because this node's
	// detection time expired or the peer reported a failure (each resets
	// the BGP session when it is established). The peer taking BFD down
	// administratively, or re-creating its session, is not counted.
	// +optional
	DownEvents int64 `json:"downEvents,omitempty"`

	// LastTransition is when the session last changed state.
	// +optional
	LastTransition *metav1.Time `json:"lastTransition,omitempty"`

	// LastError is why the session could not be started (e.g. the BFD port
	// is in use on the node), empty when it runs.
	// +optional
	LastError string `json:"lastError,omitempty"`
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
// +kubebuilder:printcolumn:name="BFD",type=string,JSONPath=`.status.bfd.state`
// +kubebuilder:printcolumn:name="Prefixes Sent",type=integer,JSONPath=`.status.prefixesSent`
// +kubebuilder:printcolumn:name="Installed",type=integer,JSONPath=`.status.routesInstalled`
// +kubebuilder:printcolumn:name="Rejected",type=integer,JSONPath=`.status.routesRejected`
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
