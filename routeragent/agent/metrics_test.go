package agent

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bgplb/bgplb/routeragent/bgp"
	"github.com/bgplb/bgplb/routeragent/config"
)

// TestMetricPeers: per-peer series exist for the peers the configuration
// admits, those of an address: entry up or down, those of a prefix: entry
// (dynamic, deleted by GoBGP when they drop) only while established. The
// status keeps every peer seen; the metrics must not.
func TestMetricPeers(t *testing.T) {
	cfg, err := config.Parse([]byte(`asn: 64500
routerID: 192.168.2.1
neighbors:
  - {prefix: 192.168.2.0/24, asn: 64512, allowUnauthenticated: true} # no secret in tests
  - {address: 192.168.3.7, asn: 64513}
serviceSubnets: [192.168.254.0/24]
lanInterfaces: [lan0]
`))
	if err != nil {
		t.Fatal(err)
	}
	peer := func(addr string, up bool) PeerStatus {
		st := "active"
		if up {
			st = "established"
		}
		return PeerStatus{PeerState: bgp.PeerState{Address: netip.MustParseAddr(addr), State: st, Up: up}}
	}
	addrs := func(ps []PeerStatus) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.Address.String())
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		cfg   *config.Config
		peers []PeerStatus
		want  []string
	}{
		{"before the first pass", nil, []PeerStatus{peer("192.168.2.20", true)}, nil},
		{"dynamic peer up", cfg, []PeerStatus{peer("192.168.2.20", true)}, []string{"192.168.2.20"}},
		{"dynamic peer gone (last state kept by status)", cfg, []PeerStatus{peer("192.168.2.20", false), peer("192.168.2.21", true)}, []string{"192.168.2.21"}},
		{"static peer down stays, to alert on", cfg, []PeerStatus{peer("192.168.3.7", false)}, []string{"192.168.3.7"}},
		{"peer no entry admits any more (reload)", cfg, []PeerStatus{peer("192.168.9.9", true), peer("192.168.3.7", true)}, []string{"192.168.3.7"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, addrs(metricPeers(tc.cfg, tc.peers))); diff != "" {
				t.Errorf("exported peers (-want +got):\n%s", diff)
			}
		})
	}
}
