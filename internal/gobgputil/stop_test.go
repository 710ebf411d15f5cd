package gobgputil

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
	"github.com/osrg/gobgp/v3/pkg/server"

	"github.com/bgplb/bgplb/internal/poll"
)

type quiet struct{}

func (quiet) Panic(string, gobgplog.Fields) {}
func (quiet) Fatal(string, gobgplog.Fields) {}
func (quiet) Error(string, gobgplog.Fields) {}
func (quiet) Warn(string, gobgplog.Fields)  {}
func (quiet) Info(string, gobgplog.Fields)  {}
func (quiet) Debug(string, gobgplog.Fields) {}
func (quiet) SetLevel(gobgplog.LogLevel)    {}
func (quiet) GetLevel() gobgplog.LogLevel   { return gobgplog.PanicLevel }

// notifications records the administrative communications of the Cease
// NOTIFICATIONs a server sent (GoBGP's counters are gone with the
// neighbour).
type notifications struct {
	quiet
	mu  sync.Mutex
	got []string
}

func (n *notifications) Warn(msg string, f gobgplog.Fields) {
	if msg != "sent notification" {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.got = append(n.got, fmt.Sprint(f["Communicated-Reason"]))
}

func (n *notifications) sent() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.got...)
}

func freePort(t *testing.T, addr string) int32 {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return int32(l.Addr().(*net.TCPAddr).Port)
}

func start(t *testing.T, asn uint32, routerID string, port int32, listen string, logger gobgplog.Logger) *server.BgpServer {
	t.Helper()
	if logger == nil {
		logger = quiet{}
	}
	srv := server.NewBgpServer(server.LoggerOption(logger))
	go srv.Serve()
	g := &api.Global{Asn: asn, RouterId: routerID, ListenPort: port}
	if listen != "" {
		g.ListenAddresses = []string{listen}
	}
	if err := srv.StartBgp(context.Background(), &api.StartBgpRequest{Global: g}); err != nil {
		t.Fatalf("start GoBGP: %v", err)
	}
	return srv
}

func peer(addr string, asn uint32, port uint32, passive bool) *api.Peer {
	fam := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	p := &api.Peer{
		Conf:     &api.PeerConf{NeighborAddress: addr, PeerAsn: asn},
		Timers:   &api.Timers{Config: &api.TimersConfig{ConnectRetry: 1, HoldTime: 90, KeepaliveInterval: 30}},
		AfiSafis: []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: fam, Enabled: true}}},
	}
	if passive {
		p.Transport = &api.Transport{PassiveMode: true}
	} else {
		p.Transport = &api.Transport{LocalAddress: "127.0.0.1", RemotePort: port}
	}
	return p
}

func path(t *testing.T, i int) *api.Path {
	t.Helper()
	pfx := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
	nlri := bgp.NewIPAddrPrefix(32, pfx.Addr().String())
	p, err := apiutil.NewPath(nlri, false, []bgp.PathAttributeInterface{
		bgp.NewPathAttributeOrigin(0), bgp.NewPathAttributeNextHop("127.0.0.1"),
	}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestStopWhileUpdatesArrive stops a router while a speaker floods it with
// UPDATEs: under -race (make test-race) this is the sequence that made
// GoBGP's StopBgp race with the router's receive loop (issue 17). Stop must
// return without error, the speaker must see an administrative-shutdown
// Cease (not a dropped connection), and the router must have stopped
// listening.
func TestStopWhileUpdatesArrive(t *testing.T) {
	port := freePort(t, "127.0.0.2")
	// Both servers start before any session: GoBGP v3's StartBgp writes
	// package variables that running sessions read (osrg/gobgp#3659).
	sent := &notifications{}
	router := start(t, 65000, "10.255.0.1", port, "127.0.0.2", sent)
	speaker := start(t, 65001, "10.255.0.2", -1, "", nil)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = Stop(ctx, speaker, "")
	})
	ctx := context.Background()
	if err := router.AddPeerGroup(ctx, &api.AddPeerGroupRequest{PeerGroup: &api.PeerGroup{
		Conf:      &api.PeerGroupConf{PeerGroupName: "speakers", PeerAsn: 65001},
		Transport: &api.Transport{PassiveMode: true},
		AfiSafis:  []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}, Enabled: true}}},
	}}); err != nil {
		t.Fatal(err)
	}
	if err := router.AddDynamicNeighbor(ctx, &api.AddDynamicNeighborRequest{DynamicNeighbor: &api.DynamicNeighbor{
		Prefix: "127.0.0.0/8", PeerGroup: "speakers",
	}}); err != nil {
		t.Fatal(err)
	}
	if err := speaker.AddPeer(ctx, &api.AddPeerRequest{Peer: peer("127.0.0.2", 65000, uint32(port), false)}); err != nil {
		t.Fatal(err)
	}
	state := func() (*api.PeerState, error) {
		var st *api.PeerState
		err := speaker.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) { st = p.State })
		if st == nil && err == nil {
			err = fmt.Errorf("no neighbor")
		}
		return st, err
	}
	poll.Until(t, 30*time.Second, 10*time.Millisecond, "session up", func() error {
		st, err := state()
		if err != nil {
			return err
		}
		if st.SessionState != api.PeerState_ESTABLISHED {
			return fmt.Errorf("state %v", st.SessionState)
		}
		return nil
	})

	flood, stopFlood := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; flood.Err() == nil; i++ {
			p := path(t, i%50000)
			if _, err := speaker.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: p}); err != nil {
				return
			}
		}
	}()
	// Let UPDATEs reach the router's receive loop before it stops.
	poll.Until(t, 30*time.Second, time.Millisecond, "router receiving UPDATEs", func() error {
		st, err := state()
		if err != nil {
			return err
		}
		if st.Messages == nil || st.Messages.Sent == nil || st.Messages.Sent.Update < 100 {
			return fmt.Errorf("not enough UPDATEs sent yet")
		}
		return nil
	})

	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := Stop(sctx, router, "router stopping"); err != nil {
		t.Errorf("Stop: %v", err)
	}
	stopFlood()
	wg.Wait()

	// Stop returned after the router's session had ended, and so after its
	// Cease had been written.
	if got := sent.sent(); len(got) != 1 || got[0] != "router stopping" {
		t.Errorf("router sent NOTIFICATIONs with communications %q, want one with \"router stopping\"", got)
	}
	// The speaker may read the Cease or, when the router closed its socket
	// with the flood still unread, a TCP reset that discards it: either way
	// the session ends now, not when the 90 s hold timer expires (the
	// bound below is far shorter).
	poll.Until(t, 30*time.Second, 10*time.Millisecond, "speaker's session down", func() error {
		st, err := state()
		if err != nil {
			return err
		}
		if st.SessionState == api.PeerState_ESTABLISHED {
			return fmt.Errorf("still established")
		}
		return nil
	})
	if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.2", fmt.Sprint(port)), time.Second); err == nil {
		c.Close()
		t.Errorf("router still accepts connections on port %d after Stop", port)
	}
}

// TestQuiesceUnknownNeighbor reports a neighbour GoBGP does not have
// instead of waiting for it.
func TestQuiesceUnknownNeighbor(t *testing.T) {
	srv := start(t, 65000, "10.255.0.3", -1, "", nil)
	t.Cleanup(func() { _ = Stop(context.Background(), srv, "") })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := Quiesce(ctx, srv, []string{"127.0.0.9"}, ""); err == nil {
		t.Fatal("Quiesce of an unknown neighbor: no error")
	}
}
