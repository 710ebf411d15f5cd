package agent

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bgplb/bgplb/routeragent/config"
)

// BGP listens on the LAN interfaces' addresses unless listen.address says
// otherwise, and never on every address by accident.
func TestBGPConfigListen(t *testing.T) {
	lan := []netip.Addr{netip.MustParseAddr("2001:db8:2::1"), netip.MustParseAddr("192.168.2.1"), netip.MustParseAddr("192.168.2.1")}
	for _, tc := range []struct {
		name, listen string
		lan          []netip.Addr
		wantAddrs    []string
		wantPort     int32
	}{
		{"LAN addresses by default", "", lan, []string{"192.168.2.1", "2001:db8:2::1"}, 179},
		{"no LAN address: no listener", "", nil, []string{}, -1},
		{"one address", "listen: {address: 192.168.2.1}\n", lan, []string{"192.168.2.1"}, 179},
		{"every address", "listen: {address: 0.0.0.0}\n", lan, nil, 179},
		{"every address, v6 spelling", "listen: {address: \"::\"}\n", nil, nil, 179},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(`asn: 64500
routerID: 192.168.2.1
neighbors: [{address: 192.168.2.20, asn: 64512}]
serviceSubnets: [192.168.254.0/24]
lanInterfaces: [lan0]
` + tc.listen))
			if err != nil {
				t.Fatal(err)
			}
			got := BGPConfig(cfg, tc.lan)
			if d := cmp.Diff(tc.wantAddrs, got.ListenAddresses); d != "" || got.ListenPort != tc.wantPort {
				t.Errorf("listen addresses (-want +got):\n%s\nport %d, want %d", d, got.ListenPort, tc.wantPort)
			}
		})
	}
}
