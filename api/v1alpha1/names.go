package v1alpha1

// Names shared by every bgplb program. Keep them in one place.
const (
	// LoadBalancerClass is the spec.loadBalancerClass bgplb serves.
	LoadBalancerClass = "bgplb.io/bgp"
	// AnnotationLoadBalancerIPs requests specific addresses, comma-separated,
	// at most one per IP family.
	AnnotationLoadBalancerIPs = "bgplb.io/loadBalancerIPs"
	// AnnotationIPPool names the IPPool a Service's address must come from.
	AnnotationIPPool = "bgplb.io/ip-pool"
	// AnnotationAllowSharedIP is a sharing key: Services with the same key
	// may share an address when their ports and protocols do not collide.
	AnnotationAllowSharedIP = "bgplb.io/allow-shared-ip"
	// Namespace is where the bgplb programs run.
	Namespace = "bgplb-system"
)

// The Service condition the speakers write from the routers' verdicts
// (docs/verdict.md).
const (
	// ServiceConditionRouted is True when every router that reports has
	// installed the Service's addresses in its kernel.
	ServiceConditionRouted = "bgplb.io/Routed"
	// RoutedReasonInstalled: every reporting router installed them.
	RoutedReasonInstalled = "Installed"
	// RoutedReasonRejected: a router rejected an address (or a foreign
	// route holds it there).
	RoutedReasonRejected = "Rejected"
	// RoutedReasonPending: a router accepted an address but has no route
	// for it yet (or the kernel refused it and it retries).
	RoutedReasonPending = "Pending"
	// RoutedReasonNotReported: no router the addresses are announced to
	// reports verdicts (FRR, BIRD), or none has yet.
	RoutedReasonNotReported = "NotReported"
	// RoutedReasonNotAnnounced (status False): no node announces the
	// Service any more (no usable endpoint anywhere, or bgplb no longer
	// handles it), so no router has a route for it from bgplb.
	RoutedReasonNotAnnounced = "NotAnnounced"
)
