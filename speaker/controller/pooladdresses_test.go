package controller

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/go-logr/logr/funcr"
	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/speaker/model"
)

// TestToPool: entries that parse become ranges; one that does not is left
// out and returned as an error (host bits are refused, not masked: the
// grammar is internal/iprange's, shared with the controller and the CRD).
func TestToPool(t *testing.T) {
	p := &v1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "p", Labels: map[string]string{"a": "b"}},
		Spec: v1.IPPoolSpec{Addresses: []string{"10.0.0.0/30", "10.0.1.7/24", "10.0.2.1-10.0.2.2", "banana"}}}
	got, errs := toPool(p)
	want := model.Pool{Name: "p", Labels: map[string]string{"a": "b"}, Ranges: []model.AddrRange{
		{First: netip.MustParseAddr("10.0.0.0"), Last: netip.MustParseAddr("10.0.0.3")},
		{First: netip.MustParseAddr("10.0.2.1"), Last: netip.MustParseAddr("10.0.2.2")},
	}}
	if diff := cmp.Diff(want, got, addrCmp); diff != "" {
		t.Errorf("toPool (-want +got):\n%s", diff)
	}
	if len(errs) != 2 || !strings.Contains(errs[0].Error(), "host bits") || !strings.Contains(errs[1].Error(), "banana") {
		t.Errorf("toPool errors = %v, want the host-bits entry and banana", errs)
	}
}

// TestReportBadAddresses: each unparsable entry is logged with its pool and
// error once, and again only when the set changes.
func TestReportBadAddresses(t *testing.T) {
	var lines []string
	log := funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{})
	r := &Reconciler{}
	bad := []poolError{{pool: "p1", err: errors.New("CIDR \"10.0.1.7/24\" has host bits set")}, {pool: "p2", err: errors.New("banana")}}
	r.reportBadAddresses(bad, log)
	r.reportBadAddresses(bad, log)
	if len(lines) != 2 || !strings.Contains(lines[0], `"pool"="p1"`) || !strings.Contains(lines[0], "host bits") ||
		!strings.Contains(lines[1], `"pool"="p2"`) || !strings.Contains(lines[1], "banana") {
		t.Fatalf("after two passes: %q, want one line per entry with pool and error", lines)
	}
	r.reportBadAddresses(bad[1:], log)
	if len(lines) != 3 || !strings.Contains(lines[2], `"pool"="p2"`) {
		t.Fatalf("after the set changed: %q, want p2 logged again", lines)
	}
	r.reportBadAddresses(nil, log)
	r.reportBadAddresses(nil, log)
	if len(lines) != 3 {
		t.Fatalf("with nothing bad: %q, want no new line", lines)
	}
}
