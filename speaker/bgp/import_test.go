//go:debug multipathtcp=0
package bgp

import (
	"context"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	api "github.com/osrg/gobgp/v3/api"

	"github.com/bgplb/bgplb/speaker/bgp/bgptest"
)

func heapKB() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc / 1024
}

// TestImportRejected: a router that sends the speaker 10,000 routes gets
// none of them into the speaker's global RIB (import reject-all); the
// session stays up. The heap growth is logged (GoBGP still keeps the
// session's adj-RIB-in, before policy).
func TestImportRejected(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	r := bgptest.Start(t, lo, 64512, bgptest.Neighbor{Address: lo, ASN: 65001})
	m := NewManager(testr.New(t))
	ctx := context.Background()
	if err := m.SetPeers(ctx, []PeerConfig{{Name: "r1", Address: r.Addr, Port: r.Port, PeerASN: r.ASN, MyASN: 65001,
		RouterID: netip.MustParseAddr("10.0.0.1"), ConnectRetry: time.Second}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown(context.Background(), ShutdownOptions{}) })
	r.WaitEstablished(t, lo, 20*time.Second)
	before := heapKB()
	const n = 10000
	r.AnnounceRange(t, netip.MustParseAddr("10.1.0.0"), n)
	received := func() uint64 {
		var got uint64
		_ = m.srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
			for _, af := range p.AfiSafis {
				if af.State != nil {
					got += af.State.Received
				}
			}
		})
		return got
	}
	deadline := time.Now().Add(60 * time.Second)
	for received() < n {
		if time.Now().After(deadline) {
			t.Fatalf("the speaker received %d of %d paths", received(), n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	after := heapKB()
	// A neighbour's paths go to its VRF and, as VPN paths, to the global
	// RIB: count every place they could land.
	var global int
	for _, req := range []*api.ListPathRequest{
		{TableType: api.TableType_GLOBAL, Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}},
		{TableType: api.TableType_GLOBAL, Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_MPLS_VPN}},
		{TableType: api.TableType_VRF, Name: m.sessions["r1"].vrf, Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}},
	} {
		if err := m.srv.ListPath(ctx, req, func(*api.Destination) { global++ }); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("speaker heap %d kB before, %d kB after %d routes received (+%d kB); %d in the global RIB and VRF", before, after, n, int64(after)-int64(before), global)
	if global != 0 {
		t.Errorf("%d of the router's routes are in the speaker's global RIB, want 0", global)
	}
	if st := m.Status(ctx); len(st) != 1 || st[0].State != "Established" {
		t.Errorf("status = %+v", st)
	}
}
