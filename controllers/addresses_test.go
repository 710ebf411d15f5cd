package controllers_test

import (
	"context"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	bgplbv1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/internal/iprange"
)

// TestAddressGrammarAgreesWithCRD: the CRD's CEL rule on
// IPPool spec.addresses (checked by the real envtest apiserver, dry run)
// and internal/iprange (what bgplb-controller and bgplb-speaker parse)
// accept and reject the same entries. The one difference is deliberate
// and listed: CEL cannot compare two addresses, so a range written
// backwards passes the apiserver and only iprange refuses it (the
// controller reports it as BadAddresses, see TestPoolValidation).
func TestAddressGrammarAgreesWithCRD(t *testing.T) {
	setup(t)
	tests := []struct {
		in     string
		accept bool
		// celOnly: accepted by the apiserver, refused by iprange.
		celOnly bool
	}{
		{in: "192.168.254.0/24", accept: true},
		{in: "192.168.254.10-192.168.254.20", accept: true},
		{in: "192.168.254.10 - 192.168.254.20", accept: true},
		{in: " 10.0.0.255 - 10.0.1.0 ", accept: true},
		{in: "10.0.0.5/32", accept: true},
		{in: "10.0.0.5-10.0.0.5", accept: true},
		{in: "0.0.0.0/0", accept: true},
		{in: "fd00::/126", accept: true},
		{in: "fd00:254::/120", accept: true},
		{in: "fd00::1-fd00::3", accept: true},
		{in: "::/0", accept: true},
		// Host bits: refused by both (iprange does not mask).
		{in: "192.168.254.7/24"},
		{in: "fd00::1/64"},
		// Not one family, not two addresses, not an address.
		{in: "10.0.0.1-fd00::1"},
		{in: "10.0.0.5-10.0.0"},
		{in: "1-2-3"},
		{in: "10.0.0.1-10.0.0.2-10.0.0.3"},
		{in: "-"},
		{in: "10.0.0.1-"},
		{in: "banana"},
		{in: ""},
		{in: "010.0.0.1-10.0.0.2"},
		{in: "10.0.0.0/33"},
		// Whitespace is allowed around a range's addresses, not around a CIDR.
		{in: " 10.0.0.0/24"},
		{in: "10.0.0.0/24 "},
		// Zones and IPv4-mapped IPv6 addresses (CEL's isIP and isCIDR refuse them).
		{in: "fe80::1%eth0-fe80::2"},
		{in: "::ffff:10.0.0.1-::ffff:10.0.0.3"},
		{in: "::ffff:10.0.0.0/104"},
		// Backwards: CEL cannot tell.
		{in: "10.0.0.9-10.0.0.1", celOnly: true},
		{in: "fd00::9-fd00::1", celOnly: true},
	}
	ctx := context.Background()
	for _, tt := range tests {
		_, perr := iprange.Parse(tt.in)
		if got := perr == nil; got != tt.accept {
			t.Errorf("iprange.Parse(%q) accepts = %v (%v), want %v", tt.in, got, perr, tt.accept)
		}
		p := &bgplbv1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "grammar"}, Spec: bgplbv1.IPPoolSpec{Addresses: []string{tt.in}}}
		err := env.Client.Create(ctx, p, client.DryRunAll)
		if err != nil && !apierrors.IsInvalid(err) {
			t.Fatalf("apiserver, %q: %v", tt.in, err)
		}
		if got, want := err == nil, tt.accept || tt.celOnly; got != want {
			t.Errorf("apiserver accepts %q = %v (%v), want %v", tt.in, got, err, want)
		}
		if err != nil && !strings.Contains(err.Error(), "spec.addresses") {
			t.Errorf("apiserver, %q: error %v does not name spec.addresses", tt.in, err)
		}
	}
}
