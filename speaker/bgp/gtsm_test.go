package bgp_test

import (
	"context"
	"testing"

	"github.com/bgplb/bgplb/speaker/bgp/bgptest"
	"github.com/bgplb/bgplb/speaker/model"
)

// A GTSM speaker peers with a router that sends TTL 255 (bgptest.Router
// does, for eBGP and iBGP) and announces as usual.
func TestTTLSecurityEBGP(t *testing.T) {
	r := bgptest.Start(t, lo4, 64512, bgptest.Neighbor{Address: lo4, ASN: 65001})
	cfg := peerTo(r, "r1", 65001)
	cfg.TTLSecurity = true
	m := newManager(t, cfg)
	r.WaitEstablished(t, lo4, wait)
	if _, err := m.Set(context.Background(), "r1", []model.Advertisement{{Prefix: pfx("192.168.254.10/32"), NextHop: lo4}}); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, r, []bgptest.Route{{Prefix: pfx("192.168.254.10/32"), NextHop: lo4, ASPath: []uint32{65001}}})
}
