// Package bgptest runs an in-process GoBGP "router" on loopback for tests
// and benchmarks of the speaker: it listens on a loopback address (127.0.0.1,
// 127.0.0.2, ::1...) on a free port, accepts the speaker's session, and
// exposes the routes it received.
//
// Race detector rule: GoBGP v3.37.0's StartBgp writes package variables that
// every running server reads whenever it handles an UPDATE. A test therefore
// starts all its routers (each runs StartBgp once, in Start) before the
// bgp.Manager under test starts its server (at its first SetPeers with a
// peer; once per Manager), and starts no router while a Manager's server
// runs. The Manager's server starts before any session exists, so no router
// is handling an UPDATE at that moment, and the session's first bytes order
// the write before the routers' reads. A second server in the same process,
// started while the first handles UPDATEs, is a data race.
package bgptest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
	"github.com/osrg/gobgp/v3/pkg/server"

	"github.com/bgplb/bgplb/internal/gobgputil"
)

// Route is a route as the router received it.
type Route struct {
	Prefix           netip.Prefix
	NextHop          netip.Addr
	Communities      []uint32
	LargeCommunities [][3]uint32
	LocalPref        uint32
	ASPath           []uint32
	// ExtendedCommunities are the route's extended communities as GoBGP
	// prints them (the speaker sends none).
	ExtendedCommunities []string
}

// Router is a GoBGP server that accepts sessions from speakers.
type Router struct {
	ASN  uint32
	Addr netip.Addr
	Port uint16
	srv  *server.BgpServer

	// devnull orders the watcher's reads before the next session's OPEN:
	// see onPaths.
	devnull *os.File

	mu      sync.Mutex
	routes  map[netip.Prefix]Route
	updates int // table events seen (each UPDATE yields at least one)
	changed chan struct{}
}

// Neighbor is a speaker the router accepts.
type Neighbor struct {
	Address  netip.Addr
	ASN      uint32
	Password string
	// GracefulRestart enables the helper side of RFC 4724.
	GracefulRestart bool
}

// FreePort returns a TCP port free on addr at the time of the call.
func FreePort(tb testing.TB, addr netip.Addr) uint16 {
	tb.Helper()
	l, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		tb.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

// Start runs a router with asn listening on addr (a loopback address) and
// accepting the given neighbors. It stops when the test ends.
func Start(tb testing.TB, addr netip.Addr, asn uint32, neighbors ...Neighbor) *Router {
	tb.Helper()
	ctx := context.Background()
	r := &Router{ASN: asn, Addr: addr, Port: FreePort(tb, addr), routes: map[netip.Prefix]Route{}, changed: make(chan struct{})}
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		tb.Fatalf("open %s: %v", os.DevNull, err)
	}
	r.devnull = devnull
	tb.Cleanup(func() { devnull.Close() })
	r.srv = server.NewBgpServer(server.LoggerOption(quiet{}))
	go r.srv.Serve()
	if err := r.srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: asn, RouterId: "10.255.255.254", ListenPort: int32(r.Port), ListenAddresses: []string{addr.String()},
	}}); err != nil {
		tb.Fatalf("start router: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = gobgputil.Stop(ctx, r.srv, "")
	})
	if err := r.srv.WatchEvent(ctx, &api.WatchEventRequest{Table: &api.WatchEventRequest_Table{
		Filters: []*api.WatchEventRequest_Table_Filter{{Type: api.WatchEventRequest_Table_Filter_ADJIN, Init: true}},
	}}, r.onPaths); err != nil {
		tb.Fatalf("watch router table: %v", err)
	}
	for _, n := range neighbors {
		r.AddNeighbor(tb, n)
	}
	return r
}

// AddNeighbor accepts one more speaker.
func (r *Router) AddNeighbor(tb testing.TB, n Neighbor) {
	tb.Helper()
	family := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	if n.Address.Is6() {
		family = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
	}
	p := &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: n.Address.String(), PeerAsn: n.ASN, AuthPassword: n.Password},
		Transport: &api.Transport{PassiveMode: true},
		// Send with TTL 255 and demand nothing, so that speakers with and
		// without GTSM (BGPPeer ttlSecurity, on by default) both peer: an
		// eBGP session otherwise leaves GoBGP with TTL 1, which a GTSM
		// speaker drops. (iBGP sessions keep the listener's TTL 255.)
		EbgpMultihop: &api.EbgpMultihop{Enabled: true, MultihopTtl: 255},
		AfiSafis:     []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: family, Enabled: true}}},
	}
	if n.GracefulRestart {
		p.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: 120}
		p.AfiSafis[0].MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
	}
	if err := r.srv.AddPeer(context.Background(), &api.AddPeerRequest{Peer: p}); err != nil {
		tb.Fatalf("router: add neighbor %v: %v", n.Address, err)
	}
}

func (r *Router) onPaths(ev *api.WatchEventResponse) {
	t := ev.GetTable()
	if t == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range t.Paths {
		rt, err := decode(p)
		if err != nil {
			continue
		}
		if p.IsWithdraw {
			delete(r.routes, rt.Prefix)
		} else {
			r.routes[rt.Prefix] = rt
		}
	}
	r.updates++
	close(r.changed)
	r.changed = make(chan struct{})
	// GoBGP builds the event from the paths' source, which is the
	// neighbor's session info, and rewrites that info without a lock when
	// the neighbor's next session opens (fsm.go opensent; osrg/gobgp#2705).
	// The next session comes at least a second later (GoBGP's first dial
	// waits 1-2 s), long after this event; the write below (the race
	// detector orders file and socket I/O: it happens before the router
	// reads that session's OPEN) lets the detector see that order too.
	_, _ = r.devnull.Write([]byte{0})
}

func decode(p *api.Path) (Route, error) {
	nlri, err := apiutil.GetNativeNlri(p)
	if err != nil {
		return Route{}, err
	}
	pfx, err := netip.ParsePrefix(nlri.String())
	if err != nil {
		return Route{}, fmt.Errorf("prefix %q: %w", nlri.String(), err)
	}
	rt := Route{Prefix: pfx}
	if p.IsWithdraw {
		return rt, nil
	}
	attrs, err := apiutil.GetNativePathAttributes(p)
	if err != nil {
		return Route{}, err
	}
	for _, a := range attrs {
		switch a := a.(type) {
		case *bgp.PathAttributeNextHop:
			rt.NextHop, _ = netip.AddrFromSlice(a.Value)
			rt.NextHop = rt.NextHop.Unmap()
		case *bgp.PathAttributeMpReachNLRI:
			rt.NextHop, _ = netip.AddrFromSlice(a.Nexthop)
			rt.NextHop = rt.NextHop.Unmap()
		case *bgp.PathAttributeCommunities:
			rt.Communities = append([]uint32(nil), a.Value...)
		case *bgp.PathAttributeLargeCommunities:
			for _, c := range a.Values {
				rt.LargeCommunities = append(rt.LargeCommunities, [3]uint32{c.ASN, c.LocalData1, c.LocalData2})
			}
		case *bgp.PathAttributeExtendedCommunities:
			for _, c := range a.Value {
				rt.ExtendedCommunities = append(rt.ExtendedCommunities, c.String())
			}
		case *bgp.PathAttributeLocalPref:
			rt.LocalPref = a.Value
		case *bgp.PathAttributeAsPath:
			for _, seg := range a.Value {
				rt.ASPath = append(rt.ASPath, seg.GetAS()...)
			}
		}
	}
	return rt, nil
}

// Routes returns the routes the router holds, sorted by prefix.
func (r *Router) Routes() []Route {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Route, 0, len(r.routes))
	for _, rt := range r.routes {
		out = append(out, rt)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Prefix.Addr().Less(out[j].Prefix.Addr()) })
	return out
}

// Len is the number of routes the router holds.
func (r *Router) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.routes)
}

// Wait blocks until cond holds over the router's routes or timeout passes,
// and reports whether it held. It re-checks on every received UPDATE, so it
// is an event wait, not a timing assertion.
func (r *Router) Wait(timeout time.Duration, cond func(routes map[netip.Prefix]Route) bool) bool {
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		ok := cond(r.routes)
		ch := r.changed
		r.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-deadline:
			return false
		}
	}
}

// Changed returns a channel closed at the next received UPDATE.
func (r *Router) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

// SessionState returns the state of the session with neighbor, e.g.
// "ESTABLISHED", and the number of UPDATEs and NOTIFICATIONs received on it.
func (r *Router) SessionState(neighbor netip.Addr) (state string, updates, notifications uint64) {
	_ = r.srv.ListPeer(context.Background(), &api.ListPeerRequest{Address: neighbor.String()}, func(p *api.Peer) {
		if p.State == nil {
			return
		}
		state = p.State.SessionState.String()
		if m := p.State.Messages; m != nil && m.Received != nil {
			updates, notifications = m.Received.Update, m.Received.Notification
		}
	})
	return state, updates, notifications
}

// NeighborRouterID is the BGP identifier the neighbor sent in its OPEN on
// the current or last session (invalid before the first).
func (r *Router) NeighborRouterID(neighbor netip.Addr) netip.Addr {
	var id netip.Addr
	_ = r.srv.ListPeer(context.Background(), &api.ListPeerRequest{Address: neighbor.String()}, func(p *api.Peer) {
		if p.State != nil {
			id, _ = netip.ParseAddr(p.State.RouterId)
		}
	})
	return id
}

// WaitEstablished waits for the session with neighbor to be established.
func (r *Router) WaitEstablished(tb testing.TB, neighbor netip.Addr, timeout time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if s, _, _ := r.SessionState(neighbor); s == "ESTABLISHED" {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	s, _, _ := r.SessionState(neighbor)
	tb.Fatalf("session with %v not established after %v (state %s)", neighbor, timeout, s)
}

type quiet struct{}

func (quiet) Panic(msg string, _ gobgplog.Fields) { panic(msg) }
func (quiet) Fatal(string, gobgplog.Fields)       {}
func (quiet) Error(string, gobgplog.Fields)       {}
func (quiet) Warn(string, gobgplog.Fields)        {}
func (quiet) Info(string, gobgplog.Fields)        {}
func (quiet) Debug(string, gobgplog.Fields)       {}
func (quiet) SetLevel(gobgplog.LogLevel)          {}
func (quiet) GetLevel() gobgplog.LogLevel         { return gobgplog.PanicLevel }

// AnnounceRange announces n consecutive /32s from first to the router's
// neighbors, with the router itself as next hop (a router that sends the
// speaker routes, which the speaker must not take).
func (r *Router) AnnounceRange(tb testing.TB, first netip.Addr, n int) {
	tb.Helper()
	a := first
	for range n {
		nlri := bgp.NewIPAddrPrefix(32, a.String())
		attrs := []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(0), bgp.NewPathAttributeNextHop(r.Addr.String())}
		p, err := apiutil.NewPath(nlri, false, attrs, time.Now())
		if err != nil {
			tb.Fatalf("router: path %v: %v", a, err)
		}
		if _, err := r.srv.AddPath(context.Background(), &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: p}); err != nil {
			tb.Fatalf("router: announce %v: %v", a, err)
		}
		a = a.Next()
	}
}
