// The in-process routers listen with TCP-MD5, which MPTCP sockets (Go's
// default for listeners since 1.24) refuse.
//
//go:debug multipathtcp=0
package bgp_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	gobgp "github.com/osrg/gobgp/v3/pkg/packet/bgp"

	"github.com/bgplb/bgplb/internal/tcpmd5"
	"github.com/bgplb/bgplb/speaker/bgp"
	"github.com/bgplb/bgplb/speaker/bgp/bgptest"
	"github.com/bgplb/bgplb/speaker/model"
)

var (
	lo4 = netip.MustParseAddr("127.0.0.1")
	lo6 = netip.MustParseAddr("::1")
	// lo4b is a second loopback address for a second router: one server
	// has one neighbor per address. The speaker's end of a session to it
	// is still 127.0.0.1 (the kernel's source for 127/8).
	lo4b = netip.MustParseAddr("127.0.0.2")
)

const wait = 20 * time.Second // upper bound for events; never a timing assertion

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func peerTo(r *bgptest.Router, name string, myASN uint32) bgp.PeerConfig {
	return bgp.PeerConfig{
		Name: name, Address: r.Addr, Port: r.Port, PeerASN: r.ASN, MyASN: myASN,
		RouterID: netip.MustParseAddr("10.0.0.1"), ConnectRetry: time.Second,
	}
}

func newManager(t *testing.T, peers ...bgp.PeerConfig) *bgp.Manager {
	t.Helper()
	m := bgp.NewManager(testr.New(t))
	if err := m.SetPeers(context.Background(), peers); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown(context.Background(), bgp.ShutdownOptions{}) })
	return m
}

var cmpRoutes = []cmp.Option{
	cmpopts.EquateEmpty(),
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
}

func waitRoutes(t *testing.T, r *bgptest.Router, want []bgptest.Route) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		got := r.Routes()
		diff := cmp.Diff(want, got, cmpRoutes...)
		if diff == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("router routes (-want +got):\n%s", diff)
		}
		select {
		case <-r.Changed():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func TestAnnounceIBGPAttributes(t *testing.T) {
	r := bgptest.Start(t, lo4, 64512, bgptest.Neighbor{Address: lo4, ASN: 64512})
	m := newManager(t, peerTo(r, "r1", 64512))
	r.WaitEstablished(t, lo4, wait)

	desired := []model.Advertisement{
		{Prefix: pfx("192.168.254.10/32"), NextHop: netip.IPv4Unspecified(),
			Communities:      []uint32{65000<<16 | 100, 0xFFFFFF01},
			LargeCommunities: []model.LargeCommunity{{GlobalAdmin: 64512, LocalData1: 1, LocalData2: 2}},
			LocalPref:        250},
		{Prefix: pfx("192.168.254.11/32"), NextHop: netip.IPv4Unspecified()},
	}
	if _, err := m.Set(context.Background(), "r1", desired); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, r, []bgptest.Route{
		{Prefix: pfx("192.168.254.10/32"), NextHop: lo4, Communities: []uint32{65000<<16 | 100, 0xFFFFFF01},
			LargeCommunities: [][3]uint32{{64512, 1, 2}}, LocalPref: 250},
		// iBGP: GoBGP sends the default LOCAL_PREF 100 when none is set.
		{Prefix: pfx("192.168.254.11/32"), NextHop: lo4, LocalPref: 100},
	})

	st := m.Status(context.Background())
	if len(st) != 1 || st[0].State != "Established" || st[0].Announced != 2 || st[0].LocalAddress != lo4 || st[0].EstablishedSince.IsZero() {
		t.Errorf("status = %+v", st)
	}
}

func TestAnnounceEBGPNextHopAndASPath(t *testing.T) {
	r := bgptest.Start(t, lo4, 64512, bgptest.Neighbor{Address: lo4, ASN: 65001})
	m := newManager(t, peerTo(r, "r1", 65001))
	r.WaitEstablished(t, lo4, wait)
	if _, err := m.Set(context.Background(), "r1", []model.Advertisement{
		{Prefix: pfx("192.168.254.10/32"), NextHop: netip.IPv4Unspecified(), LocalPref: 300},
	}); err != nil {
		t.Fatal(err)
	}
	// eBGP: next hop is our end of the session, AS_PATH is our ASN, and
	// LOCAL_PREF is not sent.
	waitRoutes(t, r, []bgptest.Route{{Prefix: pfx("192.168.254.10/32"), NextHop: lo4, ASPath: []uint32{65001}}})
}

func TestDiffOnlySendsChanges(t *testing.T) {
	ctx := context.Background()
	r := bgptest.Start(t, lo4, 64512, bgptest.Neighbor{Address: lo4, ASN: 65001})
	m := newManager(t, peerTo(r, "r1", 65001))
	r.WaitEstablished(t, lo4, wait)

	a := model.Advertisement{Prefix: pfx("192.168.254.1/32"), NextHop: netip.IPv4Unspecified()}
	b := model.Advertisement{Prefix: pfx("192.168.254.2/32"), NextHop: netip.IPv4Unspecified()}
	c := model.Advertisement{Prefix: pfx("192.168.254.3/32"), NextHop: netip.IPv4Unspecified()}
	if _, err := m.Set(ctx, "r1", []model.Advertisement{a, b}); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, r, []bgptest.Route{
		{Prefix: a.Prefix, NextHop: lo4, ASPath: []uint32{65001}},
		{Prefix: b.Prefix, NextHop: lo4, ASPath: []uint32{65001}},
	})

	// Same set again: nothing to do.
	ch, err := m.Set(ctx, "r1", []model.Advertisement{b, a})
	if err != nil || len(ch.Added) != 0 || len(ch.Withdrawn) != 0 {
		t.Fatalf("Set(same) = %+v, %v; want no changes", ch, err)
	}

	// Replace a with c and change b's communities: one withdraw, two adds.
	b2 := b
	b2.Communities = []uint32{65000<<16 | 7}
	_, updBefore, _ := r.SessionState(lo4)
	ch, err = m.Set(ctx, "r1", []model.Advertisement{b2, c})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(bgp.Changes{Added: []model.Advertisement{b2, c}, Withdrawn: []model.Advertisement{a}}, ch, cmpRoutes...); diff != "" {
		t.Fatalf("Set(change) (-want +got):\n%s", diff)
	}
	waitRoutes(t, r, []bgptest.Route{
		{Prefix: b.Prefix, NextHop: lo4, ASPath: []uint32{65001}, Communities: []uint32{65000<<16 | 7}},
		{Prefix: c.Prefix, NextHop: lo4, ASPath: []uint32{65001}},
	})
	_, updAfter, _ := r.SessionState(lo4)
	// a's withdraw, b2 and c: at most three UPDATEs; the untouched route is
	// not re-sent (GoBGP may pack several into one message).
	if n := updAfter - updBefore; n < 1 || n > 3 {
		t.Errorf("router received %d UPDATEs for the change, want 1-3", n)
	}
}

// SetPrefixes touches only the prefixes it is given: a changed one is
// replaced, an unwanted one withdrawn, and the others stay as they are even
// though desired does not mention them.
func TestSetPrefixesTouchesOnlyThosePrefixes(t *testing.T) {
	ctx := context.Background()
	r := bgptest.Start(t, lo4, 64512, bgptest.Neighbor{Address: lo4, ASN: 65001})
	m := newManager(t, peerTo(r, "r1", 65001))
	r.WaitEstablished(t, lo4, wait)

	a := model.Advertisement{Prefix: pfx("192.168.254.1/32"), NextHop: netip.IPv4Unspecified()}
	b := model.Advertisement{Prefix: pfx("192.168.254.2/32"), NextHop: netip.IPv4Unspecified()}
	c := model.Advertisement{Prefix: pfx("192.168.254.3/32"), NextHop: netip.IPv4Unspecified()}
	if _, err := m.Set(ctx, "r1", []model.Advertisement{a, b}); err != nil {
		t.Fatal(err)
	}
	b2 := b
	b2.Communities = []uint32{65000<<16 | 9}
	// a is withdrawn (listed, not desired), b changes, c is new; nothing
	// else is looked at.
	ch, err := m.SetPrefixes(ctx, "r1", []netip.Prefix{a.Prefix, b.Prefix, c.Prefix}, []model.Advertisement{b2, c})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(bgp.Changes{Added: []model.Advertisement{b2, c}, Withdrawn: []model.Advertisement{a}}, ch, cmpRoutes...); diff != "" {
		t.Fatalf("SetPrefixes (-want +got):\n%s", diff)
	}
	waitRoutes(t, r, []bgptest.Route{
		{Prefix: b.Prefix, NextHop: lo4, ASPath: []uint32{65001}, Communities: []uint32{65000<<16 | 9}},
		{Prefix: c.Prefix, NextHop: lo4, ASPath: []uint32{65001}},
	})
	// Only c listed and unchanged: no change, b stays although not listed.
	ch, err = m.SetPrefixes(ctx, "r1", []netip.Prefix{c.Prefix}, []model.Advertisement{c})
	if err != nil || len(ch.Added)+len(ch.Withdrawn) != 0 {
		t.Fatalf("SetPrefixes(unchanged) = %+v, %v; want no changes", ch, err)
	}
	if got := len(m.Announced("r1")); got != 2 {
		t.Fatalf("announced %d paths, want 2 (b and c)", got)
	}
	// A full Set afterwards still sees what SetPrefixes recorded.
	ch, err = m.Set(ctx, "r1", []model.Advertisement{b2})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(bgp.Changes{Withdrawn: []model.Advertisement{c}}, ch, cmpRoutes...); diff != "" {
		t.Fatalf("Set after SetPrefixes (-want +got):\n%s", diff)
	}
	waitRoutes(t, r, []bgptest.Route{
		{Prefix: b.Prefix, NextHop: lo4, ASPath: []uint32{65001}, Communities: []uint32{65000<<16 | 9}},
	})
}

func TestIPv6OverIPv6Session(t *testing.T) {
	r := bgptest.Start(t, lo6, 64512, bgptest.Neighbor{Address: lo6, ASN: 65001})
	m := newManager(t, peerTo(r, "r6", 65001))
	r.WaitEstablished(t, lo6, wait)
	if _, err := m.Set(context.Background(), "r6", []model.Advertisement{
		{Prefix: pfx("fd00:254::10/128"), NextHop: netip.IPv6Unspecified(), Communities: []uint32{65000<<16 | 6}},
	}); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, r, []bgptest.Route{{Prefix: pfx("fd00:254::10/128"), NextHop: lo6, ASPath: []uint32{65001}, Communities: []uint32{65000<<16 | 6}}})
}

func TestMD5(t *testing.T) {
	r := bgptest.Start(t, lo4, 64512, bgptest.Neighbor{Address: lo4, ASN: 65001, Password: "s3cret"})
	p := peerTo(r, "r1", 65001)
	p.Password = "s3cret"
	m := newManager(t, p)
	if err := tcpmd5.KernelSupported(); err != nil {
		// The session cannot come up; it must say why instead of sitting
		// silently in Active.
		st := m.Status(context.Background())
		if len(st) != 1 || !strings.Contains(st[0].LastError, "TCP-MD5") {
			t.Fatalf("status without the TCP-MD5 error: %+v", st)
		}
		t.Skipf("skipping the MD5 session: %v (checked that the session reports it)", err)
	}
	r.WaitEstablished(t, lo4, wait)
	if _, err := m.Set(context.Background(), "r1", []model.Advertisement{{Prefix: pfx("192.168.254.9/32")}}); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, r, []bgptest.Route{{Prefix: pfx("192.168.254.9/32"), NextHop: lo4, ASPath: []uint32{65001}}})
}

func TestChangedPeerRestartsOnlyThatSession(t *testing.T) {
	ctx := context.Background()
	r1 := bgptest.Start(t, lo4, 64512, bgptest.Neighbor{Address: lo4, ASN: 65001})
	r2 := bgptest.Start(t, lo4b, 64513, bgptest.Neighbor{Address: lo4, ASN: 65001})
	p1, p2 := peerTo(r1, "r1", 65001), peerTo(r2, "r2", 65001)
	m := newManager(t, p1, p2)
	r1.WaitEstablished(t, lo4, wait)
	r2.WaitEstablished(t, lo4, wait)
	adv := []model.Advertisement{{Prefix: pfx("192.168.254.1/32")}}
	for _, p := range []string{"r1", "r2"} {
		if _, err := m.Set(ctx, p, adv); err != nil {
			t.Fatal(err)
		}
	}
	waitRoutes(t, r2, []bgptest.Route{{Prefix: adv[0].Prefix, NextHop: lo4, ASPath: []uint32{65001}}})
	_, upd2, notif2 := r2.SessionState(lo4)

	p1.HoldTime = 9 * time.Second
	p1.KeepaliveTime = 3 * time.Second
	if err := m.SetPeers(ctx, []bgp.PeerConfig{p1, p2}); err != nil {
		t.Fatal(err)
	}
	// The restarted session starts empty; the next Set re-announces.
	if got := m.Announced("r1"); len(got) != 0 {
		t.Fatalf("restarted session still claims %d paths", len(got))
	}
	r1.WaitEstablished(t, lo4, wait)
	if _, err := m.Set(ctx, "r1", adv); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, r1, []bgptest.Route{{Prefix: adv[0].Prefix, NextHop: lo4, ASPath: []uint32{65001}}})

	state, upd, notif := r2.SessionState(lo4)
	if state != "ESTABLISHED" || upd != upd2 || notif != notif2 {
		t.Errorf("untouched session r2 disturbed: state %s, updates %d->%d, notifications %d->%d", state, upd2, upd, notif2, notif)
	}

	// Removing a peer withdraws and closes its session only.
	if err := m.SetPeers(ctx, []bgp.PeerConfig{p2}); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, r1, nil)
	if state, _, _ := r2.SessionState(lo4); state != "ESTABLISHED" {
		t.Errorf("r2 session state %s after removing r1", state)
	}
}

func TestGracefulShutdown(t *testing.T) {
	ctx := context.Background()
	r := bgptest.Start(t, lo4, 64512, bgptest.Neighbor{Address: lo4, ASN: 65001, GracefulRestart: true})
	p := peerTo(r, "r1", 65001)
	p.GracefulRestart, p.RestartTime = true, 120*time.Second
	m := bgp.NewManager(testr.New(t))
	if err := m.SetPeers(ctx, []bgp.PeerConfig{p}); err != nil {
		t.Fatal(err)
	}
	r.WaitEstablished(t, lo4, wait)
	if _, err := m.Set(ctx, "r1", []model.Advertisement{
		{Prefix: pfx("192.168.254.1/32"), Communities: []uint32{65000<<16 | 1}},
		{Prefix: pfx("192.168.254.2/32")},
	}); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, r, []bgptest.Route{
		{Prefix: pfx("192.168.254.1/32"), NextHop: lo4, ASPath: []uint32{65001}, Communities: []uint32{65000<<16 | 1}},
		{Prefix: pfx("192.168.254.2/32"), NextHop: lo4, ASPath: []uint32{65001}},
	})

	sawGshut := make(chan bool, 1)
	go func() {
		sawGshut <- r.Wait(wait, func(routes map[netip.Prefix]bgptest.Route) bool {
			for _, rt := range routes {
				if len(rt.Communities) == 0 || rt.Communities[len(rt.Communities)-1] != model.CommunityGracefulShutdown {
					return false
				}
			}
			return len(routes) == 2
		})
	}()
	if err := m.Shutdown(ctx, bgp.ShutdownOptions{GracefulShutdownFor: 500 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if !<-sawGshut {
		t.Error("router never saw both routes with GRACEFUL_SHUTDOWN (65535:0)")
	}
	// With graceful restart on both sides the router would keep stale routes
	// after a bare disconnect; they are gone because the speaker withdrew
	// them and then closed with a Cease.
	waitRoutes(t, r, nil)
	deadline := time.Now().Add(wait)
	for {
		_, _, notif := r.SessionState(lo4)
		if notif >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("router received no Cease NOTIFICATION")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Two peers share the Manager's one GoBGP server. Each gets its own prefixes
// and, per prefix, its own attributes and local ASN; a change for one peer
// sends nothing to the other; and nothing internal (the route targets of the
// neighbors' VRFs) reaches either: the expected routes have no extended
// communities.
func TestPerPeerPathsAndAttributes(t *testing.T) {
	ctx := context.Background()
	// r1 is iBGP (myASN 64512), r2 eBGP with another local ASN.
	r1 := bgptest.Start(t, lo4, 64512, bgptest.Neighbor{Address: lo4, ASN: 64512})
	r2 := bgptest.Start(t, lo4b, 64513, bgptest.Neighbor{Address: lo4, ASN: 65002})
	m := newManager(t, peerTo(r1, "r1", 64512), peerTo(r2, "r2", 65002))
	r1.WaitEstablished(t, lo4, wait)
	r2.WaitEstablished(t, lo4, wait)

	A, B, C, D, E := pfx("192.168.254.1/32"), pfx("192.168.254.2/32"), pfx("192.168.254.3/32"), pfx("192.168.254.4/32"), pfx("192.168.254.5/32")
	a1 := model.Advertisement{Prefix: A, Communities: []uint32{65000<<16 | 1}, LocalPref: 200}
	b1 := model.Advertisement{Prefix: B}
	a2 := model.Advertisement{Prefix: A, Communities: []uint32{65000<<16 | 2}, LargeCommunities: []model.LargeCommunity{{GlobalAdmin: 65002, LocalData1: 1, LocalData2: 2}}, LocalPref: 300}
	c2 := model.Advertisement{Prefix: C}
	if _, err := m.Set(ctx, "r1", []model.Advertisement{a1, b1}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Set(ctx, "r2", []model.Advertisement{a2, c2}); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, r1, []bgptest.Route{
		{Prefix: A, NextHop: lo4, Communities: []uint32{65000<<16 | 1}, LocalPref: 200},
		{Prefix: B, NextHop: lo4, LocalPref: 100},
	})
	// eBGP: our local ASN for this peer in the AS_PATH, no LOCAL_PREF.
	waitRoutes(t, r2, []bgptest.Route{
		{Prefix: A, NextHop: lo4, ASPath: []uint32{65002}, Communities: []uint32{65000<<16 | 2}, LargeCommunities: [][3]uint32{{65002, 1, 2}}},
		{Prefix: C, NextHop: lo4, ASPath: []uint32{65002}},
	})

	// A leaves r1 and B's communities change there; then r2 gets D. The
	// router receives UPDATEs in order, so once it has D, anything the r1
	// change had sent it would have been counted.
	_, upd2, _ := r2.SessionState(lo4)
	b1x := b1
	b1x.Communities = []uint32{65000<<16 | 3}
	if _, err := m.Set(ctx, "r1", []model.Advertisement{b1x}); err != nil {
		t.Fatal(err)
	}
	d2 := model.Advertisement{Prefix: D}
	if _, err := m.Set(ctx, "r2", []model.Advertisement{a2, c2, d2}); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, r1, []bgptest.Route{{Prefix: B, NextHop: lo4, Communities: []uint32{65000<<16 | 3}, LocalPref: 100}})
	waitRoutes(t, r2, []bgptest.Route{
		{Prefix: A, NextHop: lo4, ASPath: []uint32{65002}, Communities: []uint32{65000<<16 | 2}, LargeCommunities: [][3]uint32{{65002, 1, 2}}},
		{Prefix: C, NextHop: lo4, ASPath: []uint32{65002}},
		{Prefix: D, NextHop: lo4, ASPath: []uint32{65002}},
	})
	if _, upd, _ := r2.SessionState(lo4); upd != upd2+1 {
		t.Errorf("r2 received %d UPDATEs, want 1 (D only): the change for r1 reached r2", upd-upd2)
	}

	// The other way round, with a withdrawal: D leaves r2, then r1 gets E.
	_, upd1, _ := r1.SessionState(lo4)
	if _, err := m.Set(ctx, "r2", []model.Advertisement{a2, c2}); err != nil {
		t.Fatal(err)
	}
	e1 := model.Advertisement{Prefix: E}
	if _, err := m.Set(ctx, "r1", []model.Advertisement{b1x, e1}); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, r2, []bgptest.Route{
		{Prefix: A, NextHop: lo4, ASPath: []uint32{65002}, Communities: []uint32{65000<<16 | 2}, LargeCommunities: [][3]uint32{{65002, 1, 2}}},
		{Prefix: C, NextHop: lo4, ASPath: []uint32{65002}},
	})
	waitRoutes(t, r1, []bgptest.Route{
		{Prefix: B, NextHop: lo4, Communities: []uint32{65000<<16 | 3}, LocalPref: 100},
		{Prefix: E, NextHop: lo4, LocalPref: 100},
	})
	if _, upd, _ := r1.SessionState(lo4); upd != upd1+1 {
		t.Errorf("r1 received %d UPDATEs, want 1 (E only): the withdrawal for r2 reached r1", upd-upd1)
	}

	st := m.Status(ctx)
	if len(st) != 2 {
		t.Fatalf("status = %+v", st)
	}
	for i, want := range []struct {
		name      string
		announced int
	}{{"r1", 2}, {"r2", 2}} {
		if st[i].Name != want.name || st[i].State != "Established" || st[i].Announced != want.announced || st[i].LocalAddress != lo4 || st[i].LastError != "" {
			t.Errorf("status[%d] = %+v, want %s Established with %d prefixes from %v", i, st[i], want.name, want.announced, lo4)
		}
	}
}

// One server has one neighbor per address: a second BGPPeer with the address
// of a running one is not configured and says why in its status, without
// disturbing the first, and takes the address over when the first goes.
func TestSameAddressSecondPeerReportsError(t *testing.T) {
	ctx := context.Background()
	r := bgptest.Start(t, lo4, 64512, bgptest.Neighbor{Address: lo4, ASN: 65001})
	a, b := peerTo(r, "a", 65001), peerTo(r, "b", 65001)
	b.HoldTime, b.KeepaliveTime = 30*time.Second, 10*time.Second
	m := newManager(t, a, b) // no error: a configuration problem, not a failure to retry
	r.WaitEstablished(t, lo4, wait)

	x := model.Advertisement{Prefix: pfx("192.168.254.1/32")}
	y := model.Advertisement{Prefix: pfx("192.168.254.2/32")}
	if ch, err := m.Set(ctx, "b", []model.Advertisement{x}); err != nil || len(ch.Added) != 0 {
		t.Fatalf("Set(b) = %+v, %v; want nothing announced and no error", ch, err)
	}
	if _, err := m.Set(ctx, "a", []model.Advertisement{y}); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, r, []bgptest.Route{{Prefix: y.Prefix, NextHop: lo4, ASPath: []uint32{65001}}})
	st := m.Status(ctx)
	if len(st) != 2 || st[0].Name != "a" || st[0].State != "Established" || st[0].LastError != "" || st[0].Announced != 1 {
		t.Errorf("status of a = %+v", st)
	}
	if len(st) == 2 && (st[1].Name != "b" || st[1].State != "Idle" || st[1].Announced != 0 ||
		!strings.Contains(st[1].LastError, "127.0.0.1 is already used by BGPPeer a")) {
		t.Errorf("status of b = %+v, want Idle with an error naming the address and peer a", st[1])
	}

	// a goes: its route is withdrawn, and b gets the address.
	if err := m.SetPeers(ctx, []bgp.PeerConfig{b}); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, r, nil)
	deadline := time.Now().Add(wait)
	for {
		st = m.Status(ctx)
		if len(st) == 1 && st[0].Name == "b" && st[0].State == "Established" && st[0].LastError == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b not established after a left: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := m.Set(ctx, "b", []model.Advertisement{x}); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, r, []bgptest.Route{{Prefix: x.Prefix, NextHop: lo4, ASPath: []uint32{65001}}})
}

// A new router ID (the node's address changed) restarts the server: the
// session comes back with the new identifier. No path is announced before
// the restart, which keeps the test race-free (see bgptest).
func TestRouterIDChangeRestartsServer(t *testing.T) {
	ctx := context.Background()
	r := bgptest.Start(t, lo4, 64512, bgptest.Neighbor{Address: lo4, ASN: 65001})
	p := peerTo(r, "r1", 65001)
	m := newManager(t, p)
	r.WaitEstablished(t, lo4, wait)
	if id := r.NeighborRouterID(lo4); id != p.RouterID {
		t.Fatalf("router sees identifier %v, want %v", id, p.RouterID)
	}
	p.RouterID = netip.MustParseAddr("10.0.0.2")
	if err := m.SetPeers(ctx, []bgp.PeerConfig{p}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(wait)
	for r.NeighborRouterID(lo4) != p.RouterID {
		if time.Now().After(deadline) {
			t.Fatalf("router sees identifier %v, want %v", r.NeighborRouterID(lo4), p.RouterID)
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.WaitEstablished(t, lo4, wait)
	if _, err := m.Set(ctx, "r1", []model.Advertisement{{Prefix: pfx("192.168.254.1/32")}}); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, r, []bgptest.Route{{Prefix: pfx("192.168.254.1/32"), NextHop: lo4, ASPath: []uint32{65001}}})
}

// TestWeightLinkBandwidth: a weight goes out as the link-bandwidth
// extended community (WeightBandwidth per unit), and weight-only changes
// are rate-limited: the first is sent at once, one made right after it is
// held back (Set reports nothing added) and sent when the interval ends.
func TestWeightLinkBandwidth(t *testing.T) {
	ctx := context.Background()
	r := bgptest.Start(t, lo4, 64512, bgptest.Neighbor{Address: lo4, ASN: 65001})
	m := newManager(t, peerTo(r, "r1", 65001))
	r.WaitEstablished(t, lo4, wait)
	lb := func(w uint32) []string {
		return []string{gobgp.NewLinkBandwidthExtended(65001, float32(w)*model.WeightBandwidth).String()}
	}
	a := model.Advertisement{Prefix: pfx("192.168.254.10/32"), NextHop: netip.IPv4Unspecified(), Weight: 3}
	if _, err := m.Set(ctx, "r1", []model.Advertisement{a}); err != nil {
		t.Fatal(err)
	}
	route := bgptest.Route{Prefix: a.Prefix, NextHop: lo4, ASPath: []uint32{65001}, ExtendedCommunities: lb(3)}
	waitRoutes(t, r, []bgptest.Route{route})

	a.Weight = 2
	ch, err := m.Set(ctx, "r1", []model.Advertisement{a})
	if err != nil || len(ch.Added) != 1 {
		t.Fatalf("the first weight change is sent at once: %+v, %v", ch, err)
	}
	a.Weight = 1
	ch, err = m.SetPrefixes(ctx, "r1", []netip.Prefix{a.Prefix}, []model.Advertisement{a})
	if err != nil || len(ch.Added) != 0 {
		t.Fatalf("a second weight change within %s is held back: %+v, %v", bgp.WeightUpdateInterval, ch, err)
	}
	if got := m.Announced("r1"); len(got) != 1 || got[0].Weight != 2 {
		t.Fatalf("announced %+v, want weight 2 until the interval ends", got)
	}
	// The held change goes out by itself.
	route.ExtendedCommunities = lb(1)
	waitRoutes(t, r, []bgptest.Route{route})
	// Another attribute is never held back.
	a.Weight, a.Communities = 4, []uint32{65000<<16 | 1}
	if ch, err := m.Set(ctx, "r1", []model.Advertisement{a}); err != nil || len(ch.Added) != 1 {
		t.Fatalf("a change of communities is sent at once: %+v, %v", ch, err)
	}
}
