package bgp

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	api "github.com/osrg/gobgp/v3/api"
	"google.golang.org/protobuf/testing/protocmp"
)

// GTSM: TTL 255 out, and the lowest TTL accepted back is 255 minus the
// routers in between.
func TestAPIPeerTTLSecurity(t *testing.T) {
	base := PeerConfig{Name: "r", Address: netip.MustParseAddr("192.168.2.1"), Port: 179, PeerASN: 64512, MyASN: 65001}
	for _, tc := range []struct {
		name     string
		gtsm     bool
		multiHop uint8
		want     *api.TtlSecurity
	}{
		{"off", false, 0, nil},
		{"directly connected", true, 0, &api.TtlSecurity{Enabled: true, TtlMin: 255}},
		{"multi-hop 3", true, 3, &api.TtlSecurity{Enabled: true, TtlMin: 253}},
		{"multi-hop 255", true, 255, &api.TtlSecurity{Enabled: true, TtlMin: 1}},
		{"multi-hop without GTSM", false, 3, nil},
	} {
		cfg := base
		cfg.TTLSecurity, cfg.MultiHopTTL = tc.gtsm, tc.multiHop
		if d := cmp.Diff(tc.want, apiPeer(cfg, "v").TtlSecurity, protocmp.Transform()); d != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, d)
		}
	}
}
