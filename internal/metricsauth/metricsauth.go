// Package metricsauth configures the metrics endpoint of bgplb-controller's
// and bgplb-speaker's controller-runtime managers, as kubebuilder projects
// do: by default HTTPS with controller-runtime's authentication and
// authorization filter, so that only a client whose token the apiserver
// accepts (TokenReview) and who may GET the path (SubjectAccessReview on
// the non-resource URL, e.g. /metrics) reads it. The speaker runs in the
// host network, so its endpoint is on the node's addresses: without the
// filter anyone on the LAN could read it, and pprof with it.
//
// --metrics-secure=false serves plain HTTP instead, on the address the
// administrator chooses (for example the pod IP or 127.0.0.1).
package metricsauth

import (
	"flag"
	"net/http"

	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// Flags are the metrics endpoint's command-line flags.
type Flags struct {
	// BindAddress is --metrics-bind-address ("0" disables the endpoint).
	BindAddress string
	// Secure is --metrics-secure: HTTPS with authentication and
	// authorization (the default).
	Secure bool
	// CertDir is --metrics-cert-dir: tls.crt and tls.key for HTTPS; empty
	// for a self-signed certificate generated at start.
	CertDir string
}

// BindFlags registers the flags on fs with defaultAddr as the bind address.
func BindFlags(fs *flag.FlagSet, defaultAddr string) *Flags {
	f := &Flags{}
	fs.StringVar(&f.BindAddress, "metrics-bind-address", defaultAddr, "address of the Prometheus metrics endpoint (\"0\" disables it)")
	fs.BoolVar(&f.Secure, "metrics-secure", true, "serve metrics over HTTPS to clients the apiserver authenticates (TokenReview) and authorises to GET /metrics (SubjectAccessReview); false: plain HTTP, bind it to the pod IP or 127.0.0.1")
	fs.StringVar(&f.CertDir, "metrics-cert-dir", "", "folder with tls.crt and tls.key for the HTTPS metrics endpoint (default: a self-signed certificate)")
	return f
}

// Options returns the manager's metrics server options. extra handlers
// (pprof) are served on the same endpoint, behind the same filter.
func (f Flags) Options(extra map[string]http.Handler) metricsserver.Options {
	o := metricsserver.Options{BindAddress: f.BindAddress, ExtraHandlers: extra}
	if f.Secure {
		o.SecureServing = true
		o.CertDir = f.CertDir
		o.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	return o
}
