package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BGPPeerSpec describes one BGP session that the speakers open to a router.
//
// +kubebuilder:validation:XValidation:rule="!has(self.keepaliveTime) || duration(self.keepaliveTime) < duration(has(self.holdTime) ? self.holdTime : '90s')",message="keepaliveTime must be shorter than holdTime"
// +kubebuilder:validation:XValidation:rule="!has(self.sourceAddress) || isIP(self.sourceAddress) && isIP(self.peerAddress) && ip(self.sourceAddress).family() == ip(self.peerAddress).family()",message="sourceAddress must be an IP address of the same family as peerAddress"
type BGPPeerSpec struct {
	// PeerAddress is the router's IPv4 or IPv6 address. Each selected node
	// dials it from its own address; the node's address on that session is the
	// next hop of every route it announces there.
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="peerAddress must be an IPv4 or IPv6 address"
	PeerAddress string `json:"peerAddress"`

	// PeerASN is the router's autonomous system number (1-4294967295).
	// When it equals myASN the session is iBGP, otherwise eBGP.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967295
	PeerASN uint32 `json:"peerASN"`

	// MyASN is the autonomous system number the nodes use on this session
	// (1-4294967295).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967295
	MyASN uint32 `json:"myASN"`

	// PeerPort is the router's TCP port.
	// +optional
	// +kubebuilder:default=179
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	PeerPort *int32 `json:"peerPort,omitempty"`

	// SourceAddress is the local address the speaker binds the session to.
	// Leave it empty to let the kernel choose the node's address towards the
	// router. When set, it must exist on the node (nodes that lack it fail
	// the session and report it in their BGPSessionState).
	// +optional
	// +kubebuilder:validation:MaxLength=45
	SourceAddress string `json:"sourceAddress,omitempty"`

	// HoldTime is the BGP hold time proposed to the router, e.g. "90s".
	// The shortest accepted value is 3s; GoBGP has no BFD, so short hold
	// times are the way to detect a dead node quickly.
	// +optional
	// +kubebuilder:default="90s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('3s')",message="holdTime must be at least 3s"
	// +kubebuilder:validation:XValidation:rule="duration(self) <= duration('65535s')",message="holdTime must be at most 65535s"
	HoldTime *metav1.Duration `json:"holdTime,omitempty"`

	// KeepaliveTime is the interval between KEEPALIVE messages. It defaults to
	// a third of holdTime and must be shorter than holdTime.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s')",message="keepaliveTime must be at least 1s"
	KeepaliveTime *metav1.Duration `json:"keepaliveTime,omitempty"`

	// EBGPMultiHop is the IP TTL of the session's packets, for routers that
	// are not directly connected (2-255). Unset means directly connected
	// (TTL 1 for eBGP).
	// +optional
	// +kubebuilder:validation:Minimum=2
	// +kubebuilder:validation:Maximum=255
	EBGPMultiHop *int32 `json:"ebgpMultiHop,omitempty"`

	// TTLSecurity is GTSM (RFC 5082): the speaker sends the session's
	// packets with TTL 255 and its kernel drops the router's packets that
	// arrive with less, so a host further away cannot reach or spoof the
	// session. The router must do the same (bgplb-routeragent does by
	// default; FRR "neighbor X ttl-security hops 1", BIRD "ttl security
	// on"), else the session never comes up. Unset means on for a directly
	// connected router (no ebgpMultiHop) and off with ebgpMultiHop; with
	// both set, the router's packets must arrive with at least 256 minus
	// ebgpMultiHop.
	// +optional
	TTLSecurity *bool `json:"ttlSecurity,omitempty"`

	// PasswordSecret names a Secret in the speaker's namespace (bgplb-system
	// with dist/install.yaml, the release's namespace with Helm) holding the
	// TCP-MD5 (RFC 2385) password of the session.
	// +optional
	PasswordSecret *SecretKeyReference `json:"passwordSecret,omitempty"`

	// NodeSelectors limits the nodes that open this session. A node is
	// selected when any selector matches its labels. Empty selects every node.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	NodeSelectors []metav1.LabelSelector `json:"nodeSelectors,omitempty"`

	// GracefulRestart configures BGP graceful restart (RFC 4724). Unset
	// (the default), the speaker advertises the graceful-restart capability
	// without any address family: both ends send End-of-RIB after their
	// initial updates (so a restarted router sweeps the next hops it kept
	// within a second of the sessions' return), while the router still
	// drops the node's routes at once when the session goes (a dead node
	// is not kept). enabled: true also asks the router to keep the node's
	// routes for restartTime while the speaker restarts; enabled: false
	// turns the capability off (no End-of-RIB).
	// +optional
	GracefulRestart *GracefulRestart `json:"gracefulRestart,omitempty"`

	// BFD runs Bidirectional Forwarding Detection (RFC 5880 asynchronous
	// mode, RFC 5881 single hop) alongside the session, so that a dead
	// link or router is noticed within receiveInterval x detectMultiplier
	// (900ms with the defaults) instead of the hold time. The router must
	// run BFD towards the node too (FRR: "neighbor X bfd" with bfdd;
	// bgplb-routeragent: neighbors[].bfd). When BFD goes down after having
	// been up, the speaker resets the BGP session.
	// +optional
	BFD *BFD `json:"bfd,omitempty"`

	// ReturnPath is how each node sends the replies of the connections
	// that this router forwarded to a service address. "direct" (the
	// default) leaves the node's routing alone: a client on the node's own
	// subnet gets its replies straight from the node, around the router,
	// and a stateful firewall on the router then sees half of the
	// connection and drops the rest as INVALID (unless it exempts the
	// service subnets). "symmetric" sends them back through this router:
	// the speaker marks the connections whose packets came from the
	// router's MAC address (connmark) and routes their replies by that mark
	// to a table whose default route is the router. It needs the speaker's
	// --symmetric-return-path flag (chart: speaker.symmetricReturnPath.enabled,
	// which grants CAP_NET_ADMIN); BGPSessionState shows the
	// ReturnPathSymmetric condition.
	// +optional
	// +kubebuilder:default=direct
	// +kubebuilder:validation:Enum=direct;symmetric
	ReturnPath ReturnPath `json:"returnPath,omitempty"`
}

// ReturnPath is a BGPPeer's return path mode.
type ReturnPath string

// Return path modes.
const (
	// ReturnPathDirect leaves the nodes' routing alone (the default).
	ReturnPathDirect ReturnPath = "direct"
	// ReturnPathSymmetric sends the replies of connections that came
	// through the router back through it.
	ReturnPathSymmetric ReturnPath = "symmetric"
)

// BFD configures a BGPPeer's BFD session. The names and defaults are those
// of FRR's bfdd and MetalLB. The Echo function is not supported: the speaker
// runs asynchronous mode only and advertises Required Min Echo RX 0.
type BFD struct {
	// Enabled runs a BFD session to the peer from every node that opens the
	// BGP session.
	Enabled bool `json:"enabled"`

	// ReceiveInterval is the shortest interval between received BFD
	// control packets this node asks for (bfd.RequiredMinRxInterval),
	// 10ms-60s.
	// +optional
	// +kubebuilder:default="300ms"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10ms') && duration(self) <= duration('60s')",message="bfd.receiveInterval must be between 10ms and 60s"
	ReceiveInterval *metav1.Duration `json:"receiveInterval,omitempty"`

	// TransmitInterval is the shortest interval between the BFD control
	// packets this node sends (bfd.DesiredMinTxInterval), 10ms-60s. Until
	// the session is up, packets go out once a second (RFC 5880 6.8.3).
	// +optional
	// +kubebuilder:default="300ms"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10ms') && duration(self) <= duration('60s')",message="bfd.transmitInterval must be between 10ms and 60s"
	TransmitInterval *metav1.Duration `json:"transmitInterval,omitempty"`

	// DetectMultiplier is how many packets in a row may be missed before
	// the session goes down (1-255).
	// +optional
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=255
	DetectMultiplier *int32 `json:"detectMultiplier,omitempty"`
}

// SecretKeyReference points at one key of a Secret in the speaker's
// namespace. The speaker may read Secrets only there.
type SecretKeyReference struct {
	// Name of the Secret in the speaker's namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// Key in the Secret's data that holds the password.
	// +optional
	// +kubebuilder:default=password
	// +kubebuilder:validation:MaxLength=253
	Key string `json:"key,omitempty"`
}

// GracefulRestart configures BGP graceful restart for a session.
type GracefulRestart struct {
	// Enabled turns full graceful restart on for the session (the router
	// keeps the node's routes for restartTime while the speaker restarts);
	// false turns the capability off, End-of-RIB included.
	Enabled bool `json:"enabled"`

	// RestartTime is how long the router keeps the node's routes after the
	// session drops while the speaker restarts (1s-4095s).
	// +optional
	// +kubebuilder:default="120s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('4095s')",message="restartTime must be between 1s and 4095s"
	RestartTime *metav1.Duration `json:"restartTime,omitempty"`
}

// BGPPeerStatus is reserved; the per-node session state lives in
// BGPSessionState objects.
type BGPPeerStatus struct{}

// BGPPeer is a router the speakers peer with. Every selected node opens its
// own session to it and announces the service addresses it can serve.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=bgpp
// +kubebuilder:printcolumn:name="Address",type=string,JSONPath=`.spec.peerAddress`
// +kubebuilder:printcolumn:name="Peer ASN",type=integer,JSONPath=`.spec.peerASN`
// +kubebuilder:printcolumn:name="My ASN",type=integer,JSONPath=`.spec.myASN`
// +kubebuilder:printcolumn:name="Hold",type=string,JSONPath=`.spec.holdTime`
// +kubebuilder:printcolumn:name="Return Path",type=string,JSONPath=`.spec.returnPath`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BGPPeer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec describes the session.
	Spec BGPPeerSpec `json:"spec"`
	// Status is reserved.
	// +optional
	Status BGPPeerStatus `json:"status,omitempty"`
}

// BGPPeerList is a list of BGPPeers.
//
// +kubebuilder:object:root=true
type BGPPeerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPPeer `json:"items"`
}

func init() {
	SchemeBuilder.Register(&BGPPeer{}, &BGPPeerList{})
}
