// Package bgp runs the speaker's BGP sessions with an embedded GoBGP v3. It
// is the only speaker package that imports GoBGP (besides
// internal/gobgputil, the stop sequence, log adapter and state names it
// shares with the router agent).
//
// Design: one GoBGP server per Manager (per speaker process), with one
// neighbor per peer (BGPPeer). GoBGP v3.37.0 keeps its route-selection
// options in package variables that StartBgp writes and every running server
// reads, so several servers in one process race; one server started once
// does not.
//
// Every neighbor lives in a VRF of its own (a GoBGP RIB construct only:
// nothing in the kernel), with a route distinguisher and route target that
// no other neighbor imports. A path is added to the VRF of the peer it is
// for, so each peer has its own set of prefixes and, per prefix, its own
// communities, large communities and local-pref, exactly as with a server
// per peer: adding, changing or withdrawing a path for one peer sends an
// UPDATE to that peer only, and the others are not even sent duplicates.
// GoBGP turns the VPN path back into a plain IPv4/IPv6 unicast path for the
// neighbor and strips the route target (all extended communities) on the
// way out, so nothing internal reaches a router. (An export policy with
// per-peer statements would also give per-peer attributes, but GoBGP
// decides whether to withdraw from a peer by evaluating the old path
// against the new policy, and a path shared by several peers is re-sent to
// all of them whenever one of them stops wanting it; VRFs avoid both.)
//
// Each neighbor has its own local ASN (PeerConf.LocalAsn, the BGPPeer's
// myASN). The server's global ASN is the myASN of the first peer it was
// started for; GoBGP uses it only as the source AS of our own paths, never
// on the wire (OPEN, AS_PATH and iBGP/eBGP come from the neighbor's local
// ASN), so it is not changed later. The router ID is the node's and is the
// same for every neighbor; when it changes, every session is closed and the
// server restarted (a new node address: rare).
//
// The server never listens (ListenPort -1): the speaker always dials out.
// Two peers with the same address cannot be two neighbors of one server: the
// second is not configured and reports why in its status.
package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
	"github.com/osrg/gobgp/v3/pkg/server"

	"github.com/bgplb/bgplb/internal/gobgputil"
	"github.com/bgplb/bgplb/internal/tcpmd5"
	"github.com/bgplb/bgplb/internal/verdict"
	"github.com/bgplb/bgplb/speaker/model"
)

// PeerConfig is the session to one peer as this node runs it.
type PeerConfig struct {
	// Name is the BGPPeer name, the key of the session.
	Name string
	// Address and Port reach the router.
	Address netip.Addr
	Port    uint16
	// PeerASN is the router's ASN, MyASN ours.
	PeerASN uint32
	MyASN   uint32
	// RouterID is this node's BGP identifier (an IPv4 address).
	RouterID netip.Addr
	// SourceAddress, when valid, binds the session's local end.
	SourceAddress netip.Addr
	// HoldTime and KeepaliveTime; zero means GoBGP's defaults (90s, 30s).
	HoldTime      time.Duration
	KeepaliveTime time.Duration
	// ConnectRetry is the interval between connection attempts; zero means 5s.
	ConnectRetry time.Duration
	// MultiHopTTL, when non-zero, enables eBGP multihop with this TTL.
	MultiHopTTL uint8
	// TTLSecurity is GTSM (RFC 5082): send with TTL 255 and drop the
	// router's packets that arrive with less than 255, or with MultiHopTTL
	// set less than 256-MultiHopTTL. GoBGP sets both on the socket before
	// it connects (dialerControl), so even the SYN-ACK is checked.
	TTLSecurity bool
	// Password is the TCP-MD5 password; empty disables it.
	Password string
	// GracefulRestart enables RFC 4724 with RestartTime: the router keeps
	// the node's routes for RestartTime while the speaker restarts.
	GracefulRestart bool
	RestartTime     time.Duration
	// EndOfRIB (when GracefulRestart is off) advertises the graceful
	// restart capability with no address family, which RFC 4724 section 3
	// defines as "not capable of preserving its forwarding state": GoBGP
	// v3 sends End-of-RIB only to a peer with which the capability was
	// negotiated (getBestFromLocal), so this is what makes both ends send
	// it, while the router keeps none of the node's routes when the session
	// goes (no per-family tuple: forwardingPreservedFamilies is empty).
	EndOfRIB bool
}

// PeerStatus is the observed state of one session.
type PeerStatus struct {
	Name    string
	Address netip.Addr
	// State is one of the v1alpha1.SessionState* values.
	State string
	// LocalAddress is our end of the session (the next hop), when known.
	LocalAddress netip.Addr
	// EstablishedSince is when the session last became Established (zero
	// while it is not).
	EstablishedSince time.Time
	// Announced is the number of prefixes announced to the peer.
	Announced int
	// UpdatesSent counts UPDATE messages sent to the neighbor since it was
	// (re)configured.
	UpdatesSent uint64
	// LastError is the most recent failure (configuration, AddPath...).
	LastError string
	// RoutesInstalled and RoutesRejected count the router's verdicts on
	// our paths (verdict.go): installed in its kernel, rejected. Both 0
	// for a router that does not report.
	RoutesInstalled, RoutesRejected int
	// VerdictsReported: the router sent verdicts in this session.
	VerdictsReported bool
}

// Manager owns the sessions of this node: one GoBGP server, started at the
// first SetPeers with a peer and stopped by Shutdown, and one neighbor per
// peer. It is safe for concurrent use.
type Manager struct {
	log     logr.Logger
	changed chan struct{}

	mu       sync.Mutex
	srv      *server.BgpServer // nil while no server runs
	routerID netip.Addr        // the running server's
	stop     context.CancelFunc
	nextVRF  uint32 // numbers the neighbors' VRFs; never reused
	sessions map[string]*session
	// weights are the weights the running server's export policy turns
	// into link-bandwidth communities (see weightStatement); asn is its ASN.
	weights map[uint32]bool
	asn     uint32

	// byAddr maps a configured neighbor's address to its session, for the
	// event watcher (a GoBGP goroutine, which must not wait for mu).
	addrMu sync.Mutex
	byAddr map[netip.Addr]*session

	// verdictGen counts the changes of any session's verdicts (verdict.go).
	verdictGen atomic.Uint64
}

// NewManager returns a Manager.
func NewManager(log logr.Logger) *Manager {
	return &Manager{log: log, changed: make(chan struct{}, 1), sessions: map[string]*session{}, byAddr: map[netip.Addr]*session{}}
}

// Changed receives (coalesced: a channel of size 1, as the router agent's
// speaker does it) whenever a session changes state, so that the caller
// can refresh the status it reports.
func (m *Manager) Changed() <-chan struct{} { return m.changed }

// signal never blocks: GoBGP's event goroutine calls it.
func (m *Manager) signal() {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// asTrans is AS_TRANS (RFC 6793), the 2-octet stand-in for a 4-octet ASN.
const asTrans = 23456

// WeightUpdateInterval rate-limits the UPDATEs that only change a path's
// weight (its link-bandwidth community, an endpoint count): the first
// change of a path is sent at once, further ones within this interval are
// coalesced into one sent when it ends. A scaling event (50 pods becoming
// ready one by one) thus costs at most one UPDATE per path per peer per
// interval, while a change after a quiet period reaches the router at once.
const WeightUpdateInterval = time.Second

// path is one announced path and the generation of the last Set wanting it.
type path struct {
	adv model.Advertisement
	gen uint64
	// weightAt is when a change of its weight alone was last sent;
	// pending is a newer weight-only change held back until
	// WeightUpdateInterval has passed since (see WeightUpdateInterval).
	weightAt time.Time
	pending  *model.Advertisement
}

type session struct {
	cfg PeerConfig
	// srv is the Manager's server while the session is a neighbor of it;
	// nil when it could not be configured (configErr says why).
	srv *server.BgpServer
	vrf string // the neighbor's VRF, where its paths go
	log logr.Logger

	// announced is what AddPath accepted, keyed by prefix; updated only
	// after GoBGP returned success.
	announced map[netip.Prefix]*path
	gen       uint64
	// weightTimer sends held-back weight changes (holdWeight); m.mu.
	weightTimer *time.Timer

	mu          sync.Mutex // guards the fields below, written by the watcher
	state       string
	established time.Time
	lastErr     string
	// configErr is a sticky problem of the configuration itself (such as a
	// password the kernel cannot apply, or an address another peer already
	// uses); it wins over lastErr in Status.
	configErr string
	// verdicts are the router's verdicts on our paths in the current
	// session (verdict.go); cleared when the session goes down.
	verdicts map[netip.Prefix]verdict.Verdict
	// verdictIDs: the ADD-PATH identifier of the path each came on.
	verdictIDs map[netip.Prefix]uint32
}

// SetPeers makes the running sessions match peers: new peers get a session,
// removed peers are withdrawn and closed, and a peer whose configuration
// changed is restarted (the others are not touched). Errors of single peers
// are joined; the successful ones are applied regardless. A peer whose
// address another peer's session already uses is kept unconfigured, with
// the reason in its status, until that address is free.
func (m *Manager) SetPeers(ctx context.Context, peers []PeerConfig) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	want := map[string]PeerConfig{}
	names := make([]string, 0, len(peers))
	for _, p := range peers {
		if _, dup := want[p.Name]; !dup {
			names = append(names, p.Name)
		}
		want[p.Name] = p
	}
	sort.Strings(names)
	var errs []error

	// The node's router ID (the same in every PeerConfig) is the server's;
	// a new one restarts the server, closing every session first.
	var routerID netip.Addr
	for _, n := range names {
		if id := want[n].RouterID; id.Is4() {
			routerID = id
			break
		}
	}
	if m.srv != nil && routerID.IsValid() && routerID != m.routerID {
		m.log.Info("router ID changed, restarting BGP", "old", m.routerID, "new", routerID)
		if err := m.stopServer(ctx); err != nil {
			errs = append(errs, err)
		}
	}

	var closing []*session
	for name, s := range m.sessions {
		if cfg, ok := want[name]; ok && cfg == s.cfg {
			continue
		}
		if s.srv != nil {
			m.log.Info("closing BGP session", "peer", name, "address", s.cfg.Address)
			closing = append(closing, s)
		}
		delete(m.sessions, name)
	}
	// Let the withdrawals and the Cease leave before the neighbor goes, as
	// on shutdown: a router that only sees the TCP connection drop may keep
	// the routes (graceful restart) or not notice until its hold timer
	// expires.
	errs = append(errs, m.close(ctx, closing, closeFlush)...)

	for _, name := range names {
		cfg := want[name]
		prev, ok := m.sessions[name]
		if ok && prev.srv != nil {
			continue
		}
		s, err := m.open(ctx, cfg)
		if err != nil {
			errs = append(errs, fmt.Errorf("open session to %s: %w", name, err))
			continue
		}
		if s.srv == nil && (!ok || prev.configErr != s.configErr) {
			// Logged once, not on every reconcile that retries it.
			s.log.Error(nil, "BGP session not configured", "reason", s.configErr)
		}
		m.sessions[name] = s
	}
	return errors.Join(errs...)
}

// start runs the server with the global ASN and router ID of cfg and starts
// watching its neighbors' state. With the race detector in mind, StartBgp
// runs once per Manager (again only after a router ID change): see the
// package comment of bgptest.
func (m *Manager) start(ctx context.Context, cfg PeerConfig) error {
	srv := server.NewBgpServer(server.LoggerOption(gobgputil.NewLogger(slog.New(logr.ToSlogHandler(m.log.WithName("gobgp"))))))
	go srv.Serve()
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:        cfg.MyASN,
		RouterId:   cfg.RouterID.String(),
		ListenPort: -1,
	}}); err != nil {
		srv.Stop()
		return fmt.Errorf("start GoBGP: %w", err)
	}
	if err := rejectImports(ctx, srv); err != nil {
		_ = gobgputil.Stop(ctx, srv, "")
		return err
	}
	wctx, cancel := context.WithCancel(context.Background())
	// Received paths, before policy: the routers' verdicts (verdict.go).
	watch := &api.WatchEventRequest{Peer: &api.WatchEventRequest_Peer{}, Table: &api.WatchEventRequest_Table{
		Filters: []*api.WatchEventRequest_Table_Filter{{Type: api.WatchEventRequest_Table_Filter_ADJIN, Init: true}},
	}}
	if err := srv.WatchEvent(wctx, watch, m.onEvent); err != nil {
		cancel()
		_ = gobgputil.Stop(ctx, srv, "")
		return fmt.Errorf("watch peer events: %w", err)
	}
	m.srv, m.stop, m.routerID = srv, cancel, cfg.RouterID
	m.weights, m.asn = map[uint32]bool{}, cfg.MyASN
	m.log.Info("BGP started", "routerID", cfg.RouterID, "asn", cfg.MyASN)
	return nil
}

// rejectImports makes the speaker accept nothing from any neighbour: it
// only announces. The global import policy also sees the speaker's own
// paths (AddPath into a VRF), so it cannot simply default to reject: one
// statement rejects paths whose source is any neighbour address (own
// paths have none) and the default accepts. GoBGP still keeps each
// session's adj-RIB-in, before policy.
func rejectImports(ctx context.Context, srv *server.BgpServer) error {
	const set, name = "bgplb-any-neighbor", "bgplb-reject-received"
	if err := srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: &api.DefinedSet{
		DefinedType: api.DefinedType_NEIGHBOR, Name: set, List: []string{"0.0.0.0/0", "::/0"},
	}}); err != nil {
		return fmt.Errorf("add neighbor set for the import policy: %w", err)
	}
	if err := srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: &api.Policy{Name: name, Statements: []*api.Statement{{
		Name:       name,
		Conditions: &api.Conditions{NeighborSet: &api.MatchSet{Type: api.MatchSet_ANY, Name: set}},
		Actions:    &api.Actions{RouteAction: api.RouteAction_REJECT},
	}}}}); err != nil {
		return fmt.Errorf("add import policy: %w", err)
	}
	if err := srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name: "global", Direction: api.PolicyDirection_IMPORT, Policies: []*api.Policy{{Name: name}},
		DefaultAction: api.RouteAction_ACCEPT,
	}}); err != nil {
		return fmt.Errorf("set import policy: %w", err)
	}
	return nil
}

// weightMarkerAS marks the large community that carries a path's weight
// from AddPath to the export policy (4294967294, the last private-use
// ASN): GoBGP drops every extended community of a path from a VRF when it
// sends it to the VRF's neighbour (Path.ToLocal strips VPN route targets
// that way), so the link-bandwidth community cannot be put on the path
// itself. The export policy adds it after that and removes the marker,
// which therefore never leaves the speaker.
const weightMarkerAS = 4294967294

// weightStatement makes the server's export policy turn the marker of
// weight w into the link-bandwidth community: one statement per weight in
// use (endpoint counts: a few dozen at most). m.mu held.
func (m *Manager) weightStatement(ctx context.Context, w uint32) error {
	if m.srv == nil || m.weights[w] {
		return nil
	}
	const policy = "bgplb-weights"
	set := fmt.Sprintf("bgplb-weight-%d", w)
	if err := m.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: &api.DefinedSet{
		DefinedType: api.DefinedType_LARGE_COMMUNITY, Name: set, List: []string{fmt.Sprintf("^%d:0:%d$", uint32(weightMarkerAS), w)},
	}}); err != nil {
		return fmt.Errorf("add large-community set for weight %d: %w", w, err)
	}
	as := uint32(asTrans)
	if m.asn <= 0xffff {
		as = m.asn
	}
	if err := m.srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: &api.Policy{Name: policy, Statements: []*api.Statement{{
		Name:       set,
		Conditions: &api.Conditions{LargeCommunitySet: &api.MatchSet{Type: api.MatchSet_ANY, Name: set}},
		Actions: &api.Actions{
			ExtCommunity: &api.CommunityAction{Type: api.CommunityAction_ADD,
				Communities: []string{fmt.Sprintf("lb:%d:%d", as, uint64(w)*model.WeightBandwidth)}},
			LargeCommunity: &api.CommunityAction{Type: api.CommunityAction_REMOVE,
				Communities: []string{fmt.Sprintf("^%d:", uint32(weightMarkerAS))}},
		},
	}}}}); err != nil {
		return fmt.Errorf("add export statement for weight %d: %w", w, err)
	}
	if len(m.weights) == 0 {
		if err := m.srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
			Name: "global", Direction: api.PolicyDirection_EXPORT, Policies: []*api.Policy{{Name: policy}},
			DefaultAction: api.RouteAction_ACCEPT,
		}}); err != nil {
			return fmt.Errorf("set export policy: %w", err)
		}
	}
	m.weights[w] = true
	return nil
}

// stopServer closes every session and stops the server.
func (m *Manager) stopServer(ctx context.Context) error {
	if m.srv == nil {
		return nil
	}
	var all []*session
	for name, s := range m.sessions {
		if s.srv != nil {
			all = append(all, s)
		}
		delete(m.sessions, name)
	}
	errs := m.close(ctx, all, closeFlush)
	if err := gobgputil.Stop(ctx, m.srv, "bgplb-speaker shutting down"); err != nil {
		errs = append(errs, err)
	}
	m.stop()
	m.srv, m.stop = nil, nil
	return errors.Join(errs...)
}

// onEvent dispatches one event of the watch.
func (m *Manager) onEvent(r *api.WatchEventResponse) {
	if t := r.GetTable(); t != nil {
		m.onPathEvent(t)
		return
	}
	m.onPeerEvent(r)
}

// onPeerEvent records a neighbor's state change; GoBGP calls it for every
// neighbor of the server.
func (m *Manager) onPeerEvent(r *api.WatchEventResponse) {
	pe := r.GetPeer()
	if pe == nil || pe.Type != api.WatchEventResponse_PeerEvent_STATE || pe.Peer == nil || pe.Peer.State == nil {
		return
	}
	addr, err := netip.ParseAddr(pe.Peer.State.NeighborAddress)
	if err != nil {
		return
	}
	m.addrMu.Lock()
	s := m.byAddr[addr.Unmap()]
	m.addrMu.Unlock()
	if s == nil {
		return
	}
	st := gobgputil.StateName(pe.Peer.State.SessionState)
	s.mu.Lock()
	changed := s.state != st
	s.state = st
	if st == "Established" && changed {
		s.established = time.Now()
	} else if st != "Established" {
		s.established = time.Time{}
		// GoBGP drops the session's received paths without telling the
		// path watch: so do the verdicts.
		if len(s.verdicts) > 0 {
			s.verdicts, s.verdictIDs = nil, nil
			changed = true
			m.verdictGen.Add(1)
		}
	}
	s.mu.Unlock()
	if changed {
		s.log.Info("BGP session state", "state", st)
		m.signal()
	}
}

// open makes cfg a neighbor of the server (starting the server if needed),
// in a VRF of its own. A session whose address is taken is returned
// unconfigured, with the reason in its status.
func (m *Manager) open(ctx context.Context, cfg PeerConfig) (*session, error) {
	if !cfg.Address.IsValid() {
		return nil, fmt.Errorf("peer %s has no address", cfg.Name)
	}
	if !cfg.RouterID.Is4() {
		return nil, fmt.Errorf("router id %v is not an IPv4 address", cfg.RouterID)
	}
	addr := cfg.Address.Unmap()
	log := m.log.WithValues("peer", cfg.Name, "address", addr)
	s := &session{cfg: cfg, log: log, announced: map[netip.Prefix]*path{}, state: "Idle"}

	for _, o := range m.sessions {
		if o.srv != nil && o.cfg.Address.Unmap() == addr {
			s.configErr = fmt.Sprintf("peer address %v is already used by BGPPeer %s; a node has one session per address", addr, o.cfg.Name)
			return s, nil
		}
	}
	if m.srv == nil {
		if err := m.start(ctx, cfg); err != nil {
			return nil, err
		}
	}
	if cfg.RouterID != m.routerID {
		return nil, fmt.Errorf("router id %v differs from the node's %v", cfg.RouterID, m.routerID)
	}
	if cfg.Password != "" {
		if err := tcpmd5.KernelSupported(); err != nil {
			s.configErr = fmt.Sprintf("TCP-MD5 password set but cannot be used: %v", err)
			log.Error(err, "the session has a TCP-MD5 password the kernel cannot apply; it will not come up")
		}
	}

	m.nextVRF++
	id := m.nextVRF
	s.vrf = fmt.Sprintf("bgplb-%d", id)
	vrf, err := apiVRF(s.vrf, id)
	if err != nil {
		return nil, err
	}
	if err := m.srv.AddVrf(ctx, &api.AddVrfRequest{Vrf: vrf}); err != nil {
		return nil, fmt.Errorf("add VRF for %s: %w", cfg.Name, err)
	}
	m.addrMu.Lock()
	m.byAddr[addr] = s
	m.addrMu.Unlock()
	if err := m.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(cfg, s.vrf)}); err != nil {
		m.addrMu.Lock()
		delete(m.byAddr, addr)
		m.addrMu.Unlock()
		_ = m.srv.DeleteVrf(ctx, &api.DeleteVrfRequest{Name: s.vrf})
		return nil, fmt.Errorf("add neighbor %s: %w", addr, err)
	}
	s.srv = m.srv
	log.Info("BGP session configured", "peerASN", cfg.PeerASN, "myASN", cfg.MyASN, "port", cfg.Port)
	return s, nil
}

// vrfAdmin is the administrator field of the neighbors' route distinguishers
// and route targets. They never leave the server (GoBGP strips them when it
// sends a VRF's path to its neighbor as plain unicast); 65535 is a reserved
// ASN, so they cannot be mistaken for anyone's.
const vrfAdmin = 65535

func apiVRF(name string, id uint32) (*api.Vrf, error) {
	rd, err := apiutil.MarshalRD(bgp.NewRouteDistinguisherTwoOctetAS(vrfAdmin, id))
	if err != nil {
		return nil, fmt.Errorf("encode route distinguisher: %w", err)
	}
	rt := []bgp.ExtendedCommunityInterface{bgp.NewTwoOctetAsSpecificExtended(bgp.EC_SUBTYPE_ROUTE_TARGET, vrfAdmin, id, true)}
	im, err := apiutil.MarshalRTs(rt)
	if err != nil {
		return nil, fmt.Errorf("encode route target: %w", err)
	}
	ex, err := apiutil.MarshalRTs(rt)
	if err != nil {
		return nil, fmt.Errorf("encode route target: %w", err)
	}
	// Id stays 0: it is zebra's VRF number, and with a non-zero one GoBGP
	// matches every new best path against every VRF's route targets (a
	// regexp compiled per VRF and path) to tell zebra watchers.
	return &api.Vrf{Name: name, Rd: rd, ImportRt: im, ExportRt: ex}, nil
}

// ttlMin is the lowest TTL GTSM accepts from a router multiHop hops away
// (0: directly connected): 255 minus the hops in between.
func ttlMin(multiHop uint8) uint8 {
	if multiHop <= 1 {
		return 255
	}
	return uint8(256 - int(multiHop))
}

func apiPeer(cfg PeerConfig, vrf string) *api.Peer {
	family := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	if cfg.Address.Unmap().Is6() {
		family = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
	}
	retry := cfg.ConnectRetry
	if retry == 0 {
		retry = 5 * time.Second
	}
	p := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: cfg.Address.Unmap().String(),
			PeerAsn:         cfg.PeerASN,
			LocalAsn:        cfg.MyASN,
			AuthPassword:    cfg.Password,
			Vrf:             vrf,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:      uint64(retry / time.Second),
			HoldTime:          uint64(cfg.HoldTime / time.Second),
			KeepaliveInterval: uint64(cfg.KeepaliveTime / time.Second),
			// Send each change at once: the point of the speaker is a
			// prompt withdraw, and there is no flapping to damp here.
			MinimumAdvertisementInterval: 0,
			IdleHoldTimeAfterReset:       idleHoldAfterReset, // see ResetSession
		}},
		Transport: &api.Transport{RemotePort: uint32(cfg.Port)},
		AfiSafis: []*api.AfiSafi{{
			Config: &api.AfiSafiConfig{Family: family, Enabled: true},
			// ADD-PATH receive: how a bgplb router sends this node's
			// verdicts (verdict.go); other routers send no ADD-PATH.
			AddPaths: &api.AddPaths{Config: &api.AddPathsConfig{Receive: true}},
		}},
	}
	if cfg.SourceAddress.IsValid() {
		p.Transport.LocalAddress = cfg.SourceAddress.Unmap().String()
	}
	if cfg.MultiHopTTL > 0 {
		p.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: uint32(cfg.MultiHopTTL)}
	}
	if cfg.TTLSecurity {
		p.TtlSecurity = &api.TtlSecurity{Enabled: true, TtlMin: uint32(ttlMin(cfg.MultiHopTTL))}
	}
	switch {
	case cfg.GracefulRestart:
		p.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: uint32(cfg.RestartTime / time.Second)}
		p.AfiSafis[0].MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
	case cfg.EndOfRIB:
		// HelperOnly: GoBGP advertises the capability without its
		// <AFI, SAFI> tuples (capabilitiesFromConfig).
		p.GracefulRestart = &api.GracefulRestart{Enabled: true, HelperOnly: true}
	}
	return p
}

// Changes are the paths one Set call sent: Added holds new paths and paths
// whose attributes changed, Withdrawn the paths no longer wanted.
type Changes struct {
	Added     []model.Advertisement
	Withdrawn []model.Advertisement
}

// configured returns the session of peer when it is a neighbor of the
// server. A session that is not (its status says why) gets nil and no
// error: nothing can be announced, and the session that replaces it starts
// empty. m.mu held.
func (m *Manager) configured(peer string) (*session, error) {
	s, ok := m.sessions[peer]
	if !ok {
		return nil, fmt.Errorf("no session for peer %q", peer)
	}
	if s.srv == nil {
		return nil, nil
	}
	return s, nil
}

// Set makes the paths announced to peer equal desired: it adds what is new or
// changed and withdraws what is no longer wanted, leaving the rest alone.
// Bookkeeping follows GoBGP's answers, so a failed call is retried by the
// next Set. It returns what it changed, also when some calls failed.
func (m *Manager) Set(ctx context.Context, peer string, desired []model.Advertisement) (ch Changes, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.configured(peer)
	if s == nil {
		return ch, err
	}
	// Mark what is still wanted with a new generation instead of building a
	// set of desired prefixes: Set runs on every reconcile over every path.
	s.gen++
	var errs []error
	for _, a := range desired {
		old := s.announced[a.Prefix]
		if old != nil {
			old.gen = s.gen
			if old.adv.SameRoute(a) {
				old.adv = a // refresh the Services it carries
				old.pending = nil
				continue
			}
			if m.holdWeight(s, old, a) {
				continue
			}
		}
		// The old path (if any) stays announced and marked when this
		// fails; the differing attributes make the next Set retry.
		if err := m.announce(ctx, s, old, a, &ch); err != nil {
			errs = append(errs, err)
		}
	}
	for _, old := range s.announced {
		if old.gen == s.gen {
			continue
		}
		if err := s.withdraw(ctx, old, &ch); err != nil {
			errs = append(errs, err)
		}
	}
	return ch, s.setResult(errs)
}

// announce is session.announce with the export statement of a's weight
// in place first. m.mu held.
func (m *Manager) announce(ctx context.Context, s *session, old *path, a model.Advertisement, ch *Changes) error {
	if a.Weight > 0 {
		if err := m.weightStatement(ctx, a.Weight); err != nil {
			return err
		}
	}
	return s.announce(ctx, old, a, ch)
}

// announce adds or replaces (old, when not nil) the path of a.Prefix and
// records it once GoBGP accepted it. AddPath with the same prefix replaces
// the previous path (implicit withdraw), so a changed attribute is one
// UPDATE.
func (s *session) announce(ctx context.Context, old *path, a model.Advertisement, ch *Changes) error {
	if err := s.addPath(ctx, a); err != nil {
		return err
	}
	if old != nil {
		if old.adv.Weight != a.Weight {
			old.weightAt = time.Now()
		}
		old.adv, old.pending = a, nil
	} else {
		s.announced[a.Prefix] = &path{adv: a, gen: s.gen}
	}
	ch.Added = append(ch.Added, a)
	return nil
}

// holdWeight holds back a's change of old's weight, when that is all that
// changes and the last such change was sent less than
// WeightUpdateInterval ago: it keeps a as pending and makes sure a timer
// sends the session's pending changes when the interval ends. m.mu held.
func (m *Manager) holdWeight(s *session, old *path, a model.Advertisement) bool {
	if !old.adv.SameRouteButWeight(a) {
		return false
	}
	wait := WeightUpdateInterval - time.Since(old.weightAt)
	if wait <= 0 {
		return false
	}
	old.adv.Services = a.Services
	old.pending = &a
	if s.weightTimer == nil {
		s.weightTimer = time.AfterFunc(wait, func() { m.flushWeights(s) })
	}
	return true
}

// flushWeights sends the weight changes held back on session s (the
// timer of holdWeight), and arms the timer again for any still too new.
func (m *Manager) flushWeights(s *session) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s.weightTimer = nil
	if m.sessions[s.cfg.Name] != s || s.srv == nil {
		return // closed or replaced: a new session announces afresh
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var ch Changes
	var errs []error
	next := time.Duration(0)
	for _, p := range s.announced {
		if p.pending == nil {
			continue
		}
		if wait := WeightUpdateInterval - time.Since(p.weightAt); wait > 0 {
			next = max(next, wait)
			continue
		}
		if err := m.announce(ctx, s, p, *p.pending, &ch); err != nil {
			errs = append(errs, err) // pending stays: retried below
			next = max(next, WeightUpdateInterval)
		}
	}
	if next > 0 {
		s.weightTimer = time.AfterFunc(next, func() { m.flushWeights(s) })
	}
	if err := errors.Join(errs...); err != nil {
		s.log.Error(err, "send held-back weight changes")
	}
}

// withdraw deletes an announced path and forgets it once GoBGP accepted.
func (s *session) withdraw(ctx context.Context, old *path, ch *Changes) error {
	if err := s.deletePath(ctx, old.adv); err != nil {
		return err
	}
	delete(s.announced, old.adv.Prefix)
	ch.Withdrawn = append(ch.Withdrawn, old.adv)
	return nil
}

// setResult records the outcome of a Set or SetPrefixes as the session's
// last error (cleared by a call without errors) and returns it.
func (s *session) setResult(errs []error) error {
	err := errors.Join(errs...)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.lastErr = err.Error()
	} else {
		s.lastErr = ""
	}
	return err
}

// SetPrefixes is Set restricted to prefixes: for each of them it announces
// the advertisement of desired with that prefix (adding it, or replacing it
// when its attributes changed) or withdraws it when desired has none. Paths
// of other prefixes are left alone, so a change of a few Services costs a
// few map lookups instead of a pass over every path. desired should hold
// only advertisements of prefixes in prefixes; others are ignored.
func (m *Manager) SetPrefixes(ctx context.Context, peer string, prefixes []netip.Prefix, desired []model.Advertisement) (ch Changes, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.configured(peer)
	if s == nil {
		return ch, err
	}
	want := make(map[netip.Prefix]model.Advertisement, len(desired))
	for _, a := range desired {
		want[a.Prefix] = a
	}
	var errs []error
	for _, p := range prefixes {
		old := s.announced[p]
		a, wanted := want[p]
		var err error
		switch {
		case wanted && old != nil && old.adv.SameRoute(a):
			old.adv = a
			old.pending = nil
		case wanted && old != nil && m.holdWeight(s, old, a):
		case wanted:
			err = m.announce(ctx, s, old, a, &ch)
		case old != nil:
			err = s.withdraw(ctx, old, &ch)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return ch, s.setResult(errs)
}

// Announced returns a copy of what is announced to peer, sorted by prefix.
func (m *Manager) Announced(peer string) []model.Advertisement {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[peer]
	if !ok {
		return nil
	}
	out := make([]model.Advertisement, 0, len(s.announced))
	for _, p := range s.announced {
		out = append(out, p.adv)
	}
	slices.SortFunc(out, func(a, b model.Advertisement) int { return a.Prefix.Addr().Compare(b.Prefix.Addr()) })
	return out
}

func (s *session) addPath(ctx context.Context, a model.Advertisement) error {
	p, err := apiPath(a, false)
	if err != nil {
		return err
	}
	if _, err := s.srv.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_VRF, VrfId: s.vrf, Path: p}); err != nil {
		return fmt.Errorf("announce %s to %s: %w", a.Prefix, s.cfg.Name, err)
	}
	return nil
}

func (s *session) deletePath(ctx context.Context, a model.Advertisement) error {
	p, err := apiPath(a, true)
	if err != nil {
		return err
	}
	if err := s.srv.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_VRF, VrfId: s.vrf, Family: p.Family, Path: p}); err != nil {
		return fmt.Errorf("withdraw %s from %s: %w", a.Prefix, s.cfg.Name, err)
	}
	return nil
}

// apiPath renders an advertisement as a GoBGP path. An unspecified next hop
// is kept as such: GoBGP replaces it with the session's local address, which
// is the node's address towards that peer. A weight goes out as the
// link-bandwidth extended community of our ASN (AS_TRANS when it needs 4
// octets), model.WeightBandwidth bytes/s per unit, through the export
// policy (see weightMarkerAS).
func apiPath(a model.Advertisement, withdraw bool) (*api.Path, error) {
	if !a.Prefix.IsValid() {
		return nil, fmt.Errorf("invalid prefix %v", a.Prefix)
	}
	nh := a.NextHop
	if !nh.IsValid() {
		nh = netip.IPv4Unspecified()
		if a.Prefix.Addr().Is6() {
			nh = netip.IPv6Unspecified()
		}
	}
	var nlri bgp.AddrPrefixInterface
	attrs := []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
	if a.Prefix.Addr().Is4() {
		nlri = bgp.NewIPAddrPrefix(uint8(a.Prefix.Bits()), a.Prefix.Addr().String())
		attrs = append(attrs, bgp.NewPathAttributeNextHop(nh.String()))
	} else {
		nlri = bgp.NewIPv6AddrPrefix(uint8(a.Prefix.Bits()), a.Prefix.Addr().String())
		attrs = append(attrs, bgp.NewPathAttributeMpReachNLRI(nh.String(), []bgp.AddrPrefixInterface{nlri}))
	}
	if len(a.Communities) > 0 {
		attrs = append(attrs, bgp.NewPathAttributeCommunities(a.Communities))
	}
	if len(a.LargeCommunities) > 0 || a.Weight > 0 {
		lc := make([]*bgp.LargeCommunity, 0, len(a.LargeCommunities)+1)
		for _, c := range a.LargeCommunities {
			lc = append(lc, bgp.NewLargeCommunity(c.GlobalAdmin, c.LocalData1, c.LocalData2))
		}
		if a.Weight > 0 {
			// The export policy makes it the link-bandwidth community
			// (see weightMarkerAS).
			lc = append(lc, bgp.NewLargeCommunity(weightMarkerAS, 0, a.Weight))
		}
		attrs = append(attrs, bgp.NewPathAttributeLargeCommunities(lc))
	}
	if a.LocalPref != 0 {
		attrs = append(attrs, bgp.NewPathAttributeLocalPref(a.LocalPref))
	}
	p, err := apiutil.NewPath(nlri, withdraw, attrs, time.Now())
	if err != nil {
		return nil, fmt.Errorf("encode path %s: %w", a.Prefix, err)
	}
	return p, nil
}

// listNeighbors calls fn for each of GoBGP's neighbors that has a state,
// with its address (unmapped). A failed listing reports no neighbor: the
// callers read it as "not established".
func (m *Manager) listNeighbors(ctx context.Context, fn func(netip.Addr, *api.Peer)) {
	_ = m.srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		if p.State == nil {
			return
		}
		if addr, err := netip.ParseAddr(p.State.NeighborAddress); err == nil {
			fn(addr.Unmap(), p)
		}
	})
}

// Status reports every session, sorted by peer name.
func (m *Manager) Status(ctx context.Context) []PeerStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	type seen struct {
		state   string
		updates uint64
		local   netip.Addr
	}
	neighbors := map[netip.Addr]seen{}
	if m.srv != nil {
		m.listNeighbors(ctx, func(addr netip.Addr, p *api.Peer) {
			n := seen{state: gobgputil.StateName(p.State.SessionState)}
			if p.State.Messages != nil && p.State.Messages.Sent != nil {
				n.updates = p.State.Messages.Sent.Update
			}
			if p.Transport != nil {
				if a, err := netip.ParseAddr(p.Transport.LocalAddress); err == nil {
					n.local = a.Unmap()
				}
			}
			neighbors[addr] = n
		})
	}
	out := make([]PeerStatus, 0, len(m.sessions))
	for _, s := range m.sessions {
		st := PeerStatus{Name: s.cfg.Name, Address: s.cfg.Address, Announced: len(s.announced)}
		if n, ok := neighbors[s.cfg.Address.Unmap()]; ok && s.srv != nil {
			st.State, st.UpdatesSent, st.LocalAddress = n.state, n.updates, n.local
		}
		s.mu.Lock()
		if st.State == "" {
			st.State = s.state
		}
		if st.State == "Established" {
			st.EstablishedSince = s.established
		}
		st.LastError = s.lastErr
		st.RoutesInstalled, st.RoutesRejected = verdictCounts(s.verdicts)
		st.VerdictsReported = len(s.verdicts) > 0
		if s.configErr != "" {
			st.LastError = s.configErr
		}
		s.mu.Unlock()
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ShutdownOptions tune Shutdown.
type ShutdownOptions struct {
	// GracefulShutdownFor, when positive, first re-announces every path
	// with the GRACEFUL_SHUTDOWN community (RFC 8326) and waits this long,
	// so routers move traffic away before the routes disappear.
	GracefulShutdownFor time.Duration
}

// Shutdown withdraws every path, closes every session with a Cease
// (administrative shutdown) NOTIFICATION and stops the server.
func (m *Manager) Shutdown(ctx context.Context, opts ShutdownOptions) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if opts.GracefulShutdownFor > 0 && m.srv != nil {
		for _, s := range m.sessions {
			if s.srv == nil {
				continue
			}
			for p, old := range s.announced {
				a := old.adv
				g := a
				g.Communities = append(slices.Clone(a.Communities), model.CommunityGracefulShutdown)
				slices.Sort(g.Communities)
				g.Communities = slices.Compact(g.Communities)
				if err := s.addPath(ctx, g); err != nil {
					m.log.Error(err, "announcing GRACEFUL_SHUTDOWN failed", "peer", s.cfg.Name, "prefix", p)
					continue
				}
				old.adv = g
			}
		}
		m.log.Info("announced GRACEFUL_SHUTDOWN, waiting before withdrawing", "wait", opts.GracefulShutdownFor)
		select {
		case <-time.After(opts.GracefulShutdownFor):
		case <-ctx.Done():
		}
	}
	err := m.stopServer(ctx)
	clear(m.sessions)
	return err
}

// closeFlush bounds how long closing sessions waits for their withdrawals
// and Cease NOTIFICATIONs to leave (normally milliseconds).
const closeFlush = 2 * time.Second

// close withdraws everything announced to the sessions, disables each
// neighbor (a Cease NOTIFICATION behind its withdrawals: both go through the
// neighbor's one ordered output queue), waits up to flush until GoBGP
// reports each one idle (the NOTIFICATION has left and its session handler
// has returned), and removes the neighbors and their VRFs. The server's
// other neighbors are not touched.
func (m *Manager) close(ctx context.Context, sessions []*session, flush time.Duration) []error {
	if len(sessions) == 0 {
		return nil
	}
	var errs []error
	withdrawn := make([]int, len(sessions))
	for i, s := range sessions {
		for p, old := range s.announced {
			if err := s.deletePath(ctx, old.adv); err != nil {
				errs = append(errs, err)
				continue
			}
			delete(s.announced, p)
			withdrawn[i]++
		}
	}
	// Disabling (not only a Cease) keeps a neighbour from reconnecting
	// before it is deleted, and waiting for IDLE means its session
	// handler has returned: see package gobgputil.
	addrs := make([]string, 0, len(sessions))
	for _, s := range sessions {
		addrs = append(addrs, s.cfg.Address.Unmap().String())
	}
	qctx, cancel := context.WithTimeout(ctx, flush)
	if err := gobgputil.Quiesce(qctx, m.srv, addrs, "bgplb-speaker shutting down"); err != nil {
		errs = append(errs, fmt.Errorf("close sessions: %w", err))
	}
	cancel()
	for i, s := range sessions {
		addr := s.cfg.Address.Unmap()
		if err := m.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
			errs = append(errs, fmt.Errorf("remove neighbor %s: %w", s.cfg.Name, err))
		}
		if err := m.srv.DeleteVrf(ctx, &api.DeleteVrfRequest{Name: s.vrf}); err != nil {
			errs = append(errs, fmt.Errorf("remove VRF of %s: %w", s.cfg.Name, err))
		}
		m.addrMu.Lock()
		if m.byAddr[addr] == s {
			delete(m.byAddr, addr)
		}
		m.addrMu.Unlock()
		s.srv = nil
		m.log.Info("BGP session closed", "peer", s.cfg.Name, "withdrawn", withdrawn[i])
	}
	return errs
}
