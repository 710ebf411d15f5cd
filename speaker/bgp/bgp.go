// Package bgp runs the speaker's BGP sessions with an embedded GoBGP v3. It
// is the only speaker package that imports GoBGP.
//
// Design: one GoBGP server per peer (BGPPeer). Each server owns exactly one
// neighbor, so the paths added to it reach that peer and no other. This gives
// per-peer sets without export policies, lets every BGPPeer carry its own
// local ASN and router settings, and isolates sessions: a changed BGPPeer
// restarts its server only, and a slow peer never holds up the others. The
// cost is one RIB per peer (a few hundred bytes per path), which stays small
// for the handful of routers a node peers with.
//
// The servers never listen (ListenPort -1): the speaker always dials out.
package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/go-logr/logr"
	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
	"github.com/osrg/gobgp/v3/pkg/server"

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
	// Password is the TCP-MD5 password; empty disables it.
	Password string
	// GracefulRestart enables RFC 4724 with RestartTime.
	GracefulRestart bool
	RestartTime     time.Duration
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
	// UpdatesSent counts UPDATE messages sent on the current server.
	UpdatesSent uint64
	// LastError is the most recent failure (configuration, AddPath...).
	LastError string
}

// Manager owns the sessions of this node. It is safe for concurrent use.
type Manager struct {
	log      logr.Logger
	onChange func()

	mu       sync.Mutex
	sessions map[string]*session
}

// NewManager returns a Manager. onChange, if not nil, is called (from a
// GoBGP goroutine; it must not block) whenever a session changes state, so
// the caller can refresh the status it reports.
func NewManager(log logr.Logger, onChange func()) *Manager {
	if onChange == nil {
		onChange = func() {}
	}
	return &Manager{log: log, onChange: onChange, sessions: map[string]*session{}}
}

// path is one announced path and the generation of the last Set wanting it.
type path struct {
	adv model.Advertisement
	gen uint64
}

type session struct {
	cfg    PeerConfig
	srv    *server.BgpServer
	cancel context.CancelFunc // stops the watch

	// announced is what AddPath accepted, keyed by prefix; updated only
	// after GoBGP returned success.
	announced map[netip.Prefix]*path
	gen       uint64

	mu          sync.Mutex // guards the fields below, written by the watcher
	state       string
	established time.Time
	lastErr     string
	// configErr is a sticky problem of the configuration itself (such as a
	// password the kernel cannot apply); it wins over lastErr in Status.
	configErr string
}

// SetPeers makes the running sessions match peers: new peers get a session,
// removed peers are withdrawn and closed, and a peer whose configuration
// changed is restarted (the others are not touched). Errors of single peers
// are joined; the successful ones are applied regardless.
func (m *Manager) SetPeers(ctx context.Context, peers []PeerConfig) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	want := map[string]PeerConfig{}
	for _, p := range peers {
		want[p.Name] = p
	}
	var errs []error
	for name, s := range m.sessions {
		if cfg, ok := want[name]; ok && cfg == s.cfg {
			continue
		}
		m.log.Info("closing BGP session", "peer", name, "address", s.cfg.Address)
		// Let the withdrawals and the Cease leave before the socket closes,
		// as on shutdown: a router that only sees the TCP connection drop
		// may keep the routes (graceful restart) or not notice until its
		// hold timer expires.
		if err := s.close(ctx, m.log, closeFlush); err != nil {
			errs = append(errs, fmt.Errorf("close session to %s: %w", name, err))
		}
		delete(m.sessions, name)
	}
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		if _, ok := m.sessions[name]; ok {
			continue
		}
		s, err := m.open(ctx, want[name])
		if err != nil {
			errs = append(errs, fmt.Errorf("open session to %s: %w", name, err))
			continue
		}
		m.sessions[name] = s
	}
	return errors.Join(errs...)
}

func (m *Manager) open(ctx context.Context, cfg PeerConfig) (*session, error) {
	if !cfg.Address.IsValid() {
		return nil, fmt.Errorf("peer %s has no address", cfg.Name)
	}
	if !cfg.RouterID.Is4() {
		return nil, fmt.Errorf("router id %v is not an IPv4 address", cfg.RouterID)
	}
	log := m.log.WithValues("peer", cfg.Name, "address", cfg.Address)
	srv := server.NewBgpServer(server.LoggerOption(&logAdapter{log: log.WithName("gobgp")}))
	go srv.Serve()
	s := &session{cfg: cfg, srv: srv, announced: map[netip.Prefix]*path{}, state: "Idle"}
	if cfg.Password != "" {
		if err := MD5Supported(); err != nil {
			s.configErr = fmt.Sprintf("TCP-MD5 password set but cannot be used: %v", err)
			log.Error(err, "the session has a TCP-MD5 password the kernel cannot apply; it will not come up")
		}
	}

	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:        cfg.MyASN,
		RouterId:   cfg.RouterID.String(),
		ListenPort: -1,
	}}); err != nil {
		srv.Stop()
		return nil, fmt.Errorf("start GoBGP: %w", err)
	}

	wctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	if err := srv.WatchEvent(wctx, &api.WatchEventRequest{Peer: &api.WatchEventRequest_Peer{}}, func(r *api.WatchEventResponse) {
		pe := r.GetPeer()
		if pe == nil || pe.Type != api.WatchEventResponse_PeerEvent_STATE || pe.Peer == nil || pe.Peer.State == nil {
			return
		}
		st := sessionState(pe.Peer.State.SessionState)
		s.mu.Lock()
		changed := s.state != st
		s.state = st
		if st == "Established" && changed {
			s.established = time.Now()
		} else if st != "Established" {
			s.established = time.Time{}
		}
		s.mu.Unlock()
		if changed {
			log.Info("BGP session state", "state", st)
			m.onChange()
		}
	}); err != nil {
		cancel()
		srv.Stop()
		return nil, fmt.Errorf("watch peer events: %w", err)
	}

	if err := srv.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(cfg)}); err != nil {
		cancel()
		_ = srv.StopBgp(ctx, &api.StopBgpRequest{})
		srv.Stop()
		return nil, fmt.Errorf("add neighbor %s: %w", cfg.Address, err)
	}
	log.Info("BGP session configured", "peerASN", cfg.PeerASN, "myASN", cfg.MyASN, "port", cfg.Port)
	return s, nil
}

func apiPeer(cfg PeerConfig) *api.Peer {
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
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:      uint64(retry / time.Second),
			HoldTime:          uint64(cfg.HoldTime / time.Second),
			KeepaliveInterval: uint64(cfg.KeepaliveTime / time.Second),
			// Send each change at once: the point of the speaker is a
			// prompt withdraw, and there is no flapping to damp here.
			MinimumAdvertisementInterval: 0,
		}},
		Transport: &api.Transport{RemotePort: uint32(cfg.Port)},
		AfiSafis: []*api.AfiSafi{{
			Config: &api.AfiSafiConfig{Family: family, Enabled: true},
		}},
	}
	if cfg.SourceAddress.IsValid() {
		p.Transport.LocalAddress = cfg.SourceAddress.Unmap().String()
	}
	if cfg.MultiHopTTL > 0 {
		p.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: uint32(cfg.MultiHopTTL)}
	}
	if cfg.GracefulRestart {
		p.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: uint32(cfg.RestartTime / time.Second)}
		p.AfiSafis[0].MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
	}
	return p
}

// Changes are the paths one Set call sent: Added holds new paths and paths
// whose attributes changed, Withdrawn the paths no longer wanted.
type Changes struct {
	Added     []model.Advertisement
	Withdrawn []model.Advertisement
}

// Set makes the paths announced to peer equal desired: it adds what is new or
// changed and withdraws what is no longer wanted, leaving the rest alone.
// Bookkeeping follows GoBGP's answers, so a failed call is retried by the
// next Set. It returns what it changed, also when some calls failed.
func (m *Manager) Set(ctx context.Context, peer string, desired []model.Advertisement) (ch Changes, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[peer]
	if !ok {
		return ch, fmt.Errorf("no session for peer %q", peer)
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
				continue
			}
		}
		// AddPath with the same prefix replaces the previous path
		// (implicit withdraw), so a changed attribute is one UPDATE.
		if err := s.addPath(ctx, a); err != nil {
			// The old path (if any) stays announced and marked; the
			// differing attributes make the next Set retry.
			errs = append(errs, err)
			continue
		}
		if old != nil {
			old.adv = a
		} else {
			s.announced[a.Prefix] = &path{adv: a, gen: s.gen}
		}
		ch.Added = append(ch.Added, a)
	}
	for p, old := range s.announced {
		if old.gen == s.gen {
			continue
		}
		if err := s.deletePath(ctx, old.adv); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(s.announced, p)
		ch.Withdrawn = append(ch.Withdrawn, old.adv)
	}
	err = errors.Join(errs...)
	s.mu.Lock()
	if err != nil {
		s.lastErr = err.Error()
	} else {
		s.lastErr = ""
	}
	s.mu.Unlock()
	return ch, err
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
	s, ok := m.sessions[peer]
	if !ok {
		return ch, fmt.Errorf("no session for peer %q", peer)
	}
	want := make(map[netip.Prefix]model.Advertisement, len(desired))
	for _, a := range desired {
		want[a.Prefix] = a
	}
	var errs []error
	for _, p := range prefixes {
		old := s.announced[p]
		a, wanted := want[p]
		switch {
		case wanted && old != nil && old.adv.SameRoute(a):
			old.adv = a
		case wanted:
			if err := s.addPath(ctx, a); err != nil {
				errs = append(errs, err)
				continue
			}
			if old != nil {
				old.adv = a
			} else {
				s.announced[p] = &path{adv: a, gen: s.gen}
			}
			ch.Added = append(ch.Added, a)
		case old != nil:
			if err := s.deletePath(ctx, old.adv); err != nil {
				errs = append(errs, err)
				continue
			}
			delete(s.announced, p)
			ch.Withdrawn = append(ch.Withdrawn, old.adv)
		}
	}
	err = errors.Join(errs...)
	s.mu.Lock()
	if err != nil {
		s.lastErr = err.Error()
	} else {
		s.lastErr = ""
	}
	s.mu.Unlock()
	return ch, err
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
	if _, err := s.srv.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: p}); err != nil {
		return fmt.Errorf("announce %s to %s: %w", a.Prefix, s.cfg.Name, err)
	}
	return nil
}

func (s *session) deletePath(ctx context.Context, a model.Advertisement) error {
	p, err := apiPath(a, true)
	if err != nil {
		return err
	}
	if err := s.srv.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Family: p.Family, Path: p}); err != nil {
		return fmt.Errorf("withdraw %s from %s: %w", a.Prefix, s.cfg.Name, err)
	}
	return nil
}

// apiPath renders an advertisement as a GoBGP path. An unspecified next hop
// is kept as such: GoBGP replaces it with the session's local address, which
// is the node's address towards that peer.
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
	if len(a.LargeCommunities) > 0 {
		lc := make([]*bgp.LargeCommunity, 0, len(a.LargeCommunities))
		for _, c := range a.LargeCommunities {
			lc = append(lc, bgp.NewLargeCommunity(c.GlobalAdmin, c.LocalData1, c.LocalData2))
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

// Status reports every session, sorted by peer name.
func (m *Manager) Status(ctx context.Context) []PeerStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]PeerStatus, 0, len(m.sessions))
	for _, s := range m.sessions {
		st := PeerStatus{Name: s.cfg.Name, Address: s.cfg.Address, Announced: len(s.announced)}
		_ = s.srv.ListPeer(ctx, &api.ListPeerRequest{Address: s.cfg.Address.Unmap().String()}, func(p *api.Peer) {
			if p.State != nil {
				st.State = sessionState(p.State.SessionState)
				if p.State.Messages != nil && p.State.Messages.Sent != nil {
					st.UpdatesSent = p.State.Messages.Sent.Update
				}
			}
			if p.Transport != nil {
				if a, err := netip.ParseAddr(p.Transport.LocalAddress); err == nil {
					st.LocalAddress = a.Unmap()
				}
			}
		})
		s.mu.Lock()
		if st.State == "" {
			st.State = s.state
		}
		if st.State == "Established" {
			st.EstablishedSince = s.established
		}
		st.LastError = s.lastErr
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
// (administrative shutdown) NOTIFICATION and stops the servers.
func (m *Manager) Shutdown(ctx context.Context, opts ShutdownOptions) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if opts.GracefulShutdownFor > 0 {
		for _, s := range m.sessions {
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
	var errs []error
	for name, s := range m.sessions {
		if err := s.close(ctx, m.log, closeFlush); err != nil {
			errs = append(errs, fmt.Errorf("close session to %s: %w", name, err))
		}
		delete(m.sessions, name)
	}
	return errors.Join(errs...)
}

// closeFlush bounds how long closing a session waits for its withdrawals
// and Cease NOTIFICATION to leave (normally milliseconds).
const closeFlush = 2 * time.Second

// close withdraws everything, sends a Cease NOTIFICATION behind the
// withdrawals (both go through the neighbor's one ordered output queue), waits
// up to flush for the NOTIFICATION to leave, and stops the server.
func (s *session) close(ctx context.Context, log logr.Logger, flush time.Duration) error {
	defer s.cancel()
	var errs []error
	n := 0
	for p, old := range s.announced {
		if err := s.deletePath(ctx, old.adv); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(s.announced, p)
		n++
	}
	addr := s.cfg.Address.Unmap().String()
	sent := func() (notif uint64, established bool) {
		_ = s.srv.ListPeer(ctx, &api.ListPeerRequest{Address: addr}, func(p *api.Peer) {
			if p.State != nil {
				established = p.State.SessionState == api.PeerState_ESTABLISHED
				if p.State.Messages != nil && p.State.Messages.Sent != nil {
					notif = p.State.Messages.Sent.Notification
				}
			}
		})
		return notif, established
	}
	before, established := sent()
	if established {
		if err := s.srv.ShutdownPeer(ctx, &api.ShutdownPeerRequest{Address: addr, Communication: "bgplb-speaker shutting down"}); err != nil {
			errs = append(errs, fmt.Errorf("send Cease: %w", err))
		} else {
			deadline := time.Now().Add(flush)
			for time.Now().Before(deadline) {
				if now, est := sent(); now > before || !est {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	if err := s.srv.StopBgp(ctx, &api.StopBgpRequest{}); err != nil {
		errs = append(errs, fmt.Errorf("stop GoBGP: %w", err))
	}
	s.srv.Stop()
	log.Info("BGP session closed", "peer", s.cfg.Name, "withdrawn", n)
	return errors.Join(errs...)
}

func sessionState(s api.PeerState_SessionState) string {
	switch s {
	case api.PeerState_IDLE:
		return "Idle"
	case api.PeerState_CONNECT:
		return "Connect"
	case api.PeerState_ACTIVE:
		return "Active"
	case api.PeerState_OPENSENT:
		return "OpenSent"
	case api.PeerState_OPENCONFIRM:
		return "OpenConfirm"
	case api.PeerState_ESTABLISHED:
		return "Established"
	}
	return "Unknown"
}

// logAdapter sends GoBGP's logs to logr. GoBGP's Info is chatty (every
// state change), so it maps to V(1); the speaker logs state changes itself.
type logAdapter struct {
	log   logr.Logger
	level gobgplog.LogLevel
}

func kv(f gobgplog.Fields) []any {
	out := make([]any, 0, 2*len(f))
	for k, v := range f {
		out = append(out, k, v)
	}
	return out
}

func (l *logAdapter) Panic(msg string, f gobgplog.Fields) {
	l.log.Error(nil, msg, kv(f)...)
	panic(msg)
}
func (l *logAdapter) Fatal(msg string, f gobgplog.Fields) { l.log.Error(nil, msg, kv(f)...) }
func (l *logAdapter) Error(msg string, f gobgplog.Fields) { l.log.Error(nil, msg, kv(f)...) }
func (l *logAdapter) Warn(msg string, f gobgplog.Fields)  { l.log.Info(msg, kv(f)...) }
func (l *logAdapter) Info(msg string, f gobgplog.Fields)  { l.log.V(1).Info(msg, kv(f)...) }
func (l *logAdapter) Debug(msg string, f gobgplog.Fields) { l.log.V(2).Info(msg, kv(f)...) }
func (l *logAdapter) SetLevel(level gobgplog.LogLevel)    { l.level = level }
func (l *logAdapter) GetLevel() gobgplog.LogLevel {
	if l.log.V(2).Enabled() {
		return gobgplog.DebugLevel
	}
	return gobgplog.InfoLevel
}
