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
