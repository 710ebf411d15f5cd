package controller

// The metrics endpoint's authentication and authorization
// (internal/metricsauth, --metrics-secure): the speaker runs in the host
// network, so its endpoint is on the node's addresses; each scrape's token
// is checked with a TokenReview and its holder's right to GET /metrics with
// a SubjectAccessReview.
//
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create
