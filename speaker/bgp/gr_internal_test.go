package bgp

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	api "github.com/osrg/gobgp/v3/api"
	"google.golang.org/protobuf/testing/protocmp"
)

// Graceful restart: the default (EndOfRIB) advertises the capability
// without address families (GoBGP's HelperOnly, no per-family tuple), full
// graceful restart lists the session's family, and neither sends nothing.
func TestAPIPeerGracefulRestart(t *testing.T) {
	base := PeerConfig{Name: "r", Address: netip.MustParseAddr("192.168.2.1"), Port: 179, PeerASN: 64512, MyASN: 65001}
	for _, tc := range []struct {
		name       string
		full, eor  bool
		want       *api.GracefulRestart
		wantFamily *api.MpGracefulRestart
	}{
		{name: "off"},
		{name: "End-of-RIB only", eor: true, want: &api.GracefulRestart{Enabled: true, HelperOnly: true}},
		{name: "full", full: true, eor: true, want: &api.GracefulRestart{Enabled: true, RestartTime: 120},
			wantFamily: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}},
	} {
		cfg := base
		cfg.GracefulRestart, cfg.EndOfRIB, cfg.RestartTime = tc.full, tc.eor, 120*time.Second
		p := apiPeer(cfg, "vrf")
		if d := cmp.Diff(tc.want, p.GracefulRestart, protocmp.Transform()); d != "" {
			t.Errorf("%s: GracefulRestart (-want +got):\n%s", tc.name, d)
		}
		if d := cmp.Diff(tc.wantFamily, p.AfiSafis[0].MpGracefulRestart, protocmp.Transform()); d != "" {
			t.Errorf("%s: family's MpGracefulRestart (-want +got):\n%s", tc.name, d)
		}
	}
}
