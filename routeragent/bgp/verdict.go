package bgp

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
	"github.com/osrg/gobgp/v3/pkg/server"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/bgplb/bgplb/internal/verdict"
)

// The router's verdicts (docs/verdict.md): for every path a peer announced,
// the agent announces the same prefix back to that peer only, with large
// communities that say what it did with it (package internal/verdict), a
// documentation next hop and NO_ADVERTISE.
//
// GoBGP has one global RIB: the peers' own paths for a prefix and one
// verdict path per peer all live in the same destination. So:
//   - each verdict path is a local path with the path identifier of its
//     peer's tag (a number the agent gives each peer it reports to), so the
//     verdicts for two peers of one prefix are two paths, not one replacing
//     the other;
//   - the sessions negotiate ADD-PATH send (RFC 7911, SendMax 1): GoBGP then
//     filters every path of a destination through the export policy instead
//     of only the best one (which is a peer's own path or another peer's
//     verdict as often as not);
//   - the global export policy, REJECT by default (a path from one speaker
//     must never reach another), gets one policy per reported peer that
//     accepts the paths carrying that peer's tag (ASN:5:tag) towards that
//     peer's address only.
// A peer that does not negotiate ADD-PATH receive (FRR, BIRD, an older
// speaker) is sent at most the best path, and only if it is its own
// verdict; bgplb-speaker rejects every path at import, so nothing it
// receives is installed, preferred or re-advertised.

// VerdictPath is the verdict on one received path.
type VerdictPath struct {
	Peer    netip.Addr
	Prefix  netip.Prefix
	Verdict verdict.Verdict
}

// wantedVerdict is the verdict one peer is to be sent on a prefix.
type wantedVerdict struct {
	peer netip.Addr
	v    packedVerdict
	gen  uint64
}

// packedVerdict is a verdict as its communities carry it (verdict.Encode):
// the reason as its code. 12 bytes instead of verdict.Verdict's 40 (a
// string and an int), for every verdict wanted and sent; two verdicts are
// equal when they would be sent alike.
type packedVerdict struct {
	state  verdict.State
	width  uint32
	reason uint16 // verdict.ReasonCode: an index of verdict.Reasons
	via    bool
}

func packVerdict(v verdict.Verdict) packedVerdict {
	p := packedVerdict{state: v.State, reason: uint16(verdict.ReasonCode(v.Reason)), via: v.Via}
	if v.Width > 0 {
		p.width = uint32(v.Width)
	}
	return p
}

func (p packedVerdict) verdict() verdict.Verdict {
	return verdict.Verdict{State: p.state, Reason: verdict.ReasonName(uint32(p.reason)), Width: int(p.width), Via: p.via}
}

// wantedVerdicts are a prefix's wanted verdicts, one per peer that
// announced it and can receive them: a slice, not a map, as a prefix has a handful of peers and
// a map per prefix costs ten times the memory (10,000 prefixes: about
// 0.6 MB instead of 3.5 MB).
type wantedVerdicts []wantedVerdict

func (ws wantedVerdicts) index(peer netip.Addr) int {
	for i := range ws {
		if ws[i].peer == peer {
			return i
		}
	}
	return -1
}

// get returns the wanted verdict of k. e.mu held.
func (e *verdictExport) get(k verdictKey) (packedVerdict, bool) {
	ws := e.want[k.prefix]
	if i := ws.index(k.peer); i >= 0 {
		return ws[i].v, true
	}
	return packedVerdict{}, false
}

type verdictKey struct {
	peer   netip.Addr
	prefix netip.Prefix
}

// verdictExport keeps the desired verdicts (set by the agent's run loop) and
// the exported ones (owned by the export goroutine).
type verdictExport struct {
	mu sync.Mutex
	// want: the verdicts to report, by prefix then peer (an incremental
	// pass touches its prefixes only), each marked with the generation of
	// the last SetVerdicts that wanted it.
	want  map[netip.Prefix]wantedVerdicts
	gen   uint64
	dirty map[verdictKey]struct{}
	kick  chan struct{}

	// sent: what GoBGP accepted; written by the export goroutine under mu.
	sent map[verdictKey]packedVerdict
	// Export goroutine only.
	perPeer map[netip.Addr]int
	tags    map[netip.Addr]uint32
	nextTag uint32
}

func newVerdictExport() *verdictExport {
	return &verdictExport{want: map[netip.Prefix]wantedVerdicts{}, dirty: map[verdictKey]struct{}{},
		kick: make(chan struct{}, 1), sent: map[verdictKey]packedVerdict{}, perPeer: map[netip.Addr]int{},
		tags: map[netip.Addr]uint32{}}
}

// SetVerdicts sets the verdicts to report. With full, vs is every verdict
// and the others are withdrawn; otherwise vs holds the verdicts of the
// given prefixes, and those prefixes' other verdicts are withdrawn. It only
// records and signals: the paths are sent by a goroutine of their own, so
// the agent's pass never waits for GoBGP.
//
// Only peers that can receive ADD-PATH are sent their verdicts, and only
// their verdicts are kept: bgplb-speaker can; other routers' peers and
// older speakers cannot, and cost neither memory here nor a GoBGP path (a
// kept verdict was about 160 bytes a path, 16 MB for 100,000 routes from
// FRR). A verdict for a peer whose capabilities are not known yet is
// dropped too: when the peer turns out capable, learnAddPath marks its
// prefixes changed, so the agent's next pass decides and reports them
// again.
func (s *Speaker) SetVerdicts(full bool, prefixes []netip.Prefix, vs []VerdictPath) {
	s.mu.Lock()
	capable := s.addPathPeersLocked()
	s.mu.Unlock()
	e := s.verdicts
	e.mu.Lock()
	defer e.mu.Unlock()
	// Mark what this call wants with a new generation; then whatever in
	// its scope (every prefix, or the given ones) is not marked goes. No
	// map of the whole set is built: a full pass costs O(paths), an
	// incremental one O(its prefixes).
	e.gen++
	for _, v := range vs {
		k := verdictKey{v.Peer.Unmap(), v.Prefix}
		if !capable[k.peer] {
			continue // not kept: withdrawn below if it was
		}
		ws := e.want[k.prefix]
		w := wantedVerdict{peer: k.peer, v: packVerdict(v.Verdict), gen: e.gen}
		switch i := ws.index(k.peer); {
		case i < 0:
			e.dirty[k] = struct{}{}
			e.want[k.prefix] = append(ws, w)
		default:
			if ws[i].v != w.v {
				e.dirty[k] = struct{}{}
			}
			ws[i] = w
		}
	}
	drop := func(pfx netip.Prefix, ws wantedVerdicts) {
		kept := ws[:0]
		for _, w := range ws {
			if w.gen == e.gen {
				kept = append(kept, w)
				continue
			}
			e.dirty[verdictKey{w.peer, pfx}] = struct{}{}
		}
		if len(kept) == 0 {
			delete(e.want, pfx)
			return
		}
		clear(ws[len(kept):])
		e.want[pfx] = kept
	}
	if full {
		for pfx, ws := range e.want {
			drop(pfx, ws)
		}
	} else {
		for _, pfx := range prefixes {
			if ws := e.want[pfx]; ws != nil {
				drop(pfx, ws)
			}
		}
	}
	if len(e.dirty) > 0 {
		select {
		case e.kick <- struct{}{}:
		default:
		}
	}
}

// addPathPeersLocked is the set of peers that can receive ADD-PATH: the
// verdicts' receivers. s.mu held.
func (s *Speaker) addPathPeersLocked() map[netip.Addr]bool {
	capable := map[netip.Addr]bool{}
	for a, p := range s.peers {
		if p.addPathRecv {
			capable[a] = true
		}
	}
	return capable
}

// VerdictsSent returns the verdicts GoBGP accepted for export, per peer
// (tests and status).
func (s *Speaker) VerdictsSent() map[netip.Addr]map[netip.Prefix]verdict.Verdict {
	e := s.verdicts
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[netip.Addr]map[netip.Prefix]verdict.Verdict{}
	for k, v := range e.sent {
		if out[k.peer] == nil {
			out[k.peer] = map[netip.Prefix]verdict.Verdict{}
		}
		out[k.peer][k.prefix] = v.verdict()
	}
	return out
}

// VerdictReport is what the agent reports to one peer.
type VerdictReport struct {
	// Sent counts the verdicts GoBGP accepted for export to the peer.
	Sent int
	// AddPathReceive: the peer negotiated ADD-PATH receive, so it is sent
	// verdicts; a peer without it (FRR, BIRD, an older speaker) is sent none.
	AddPathReceive bool
}

// VerdictReports returns, per established peer, what it is reported (for
// status). It counts, it copies no verdict.
func (s *Speaker) VerdictReports() map[netip.Addr]VerdictReport {
	out := map[netip.Addr]VerdictReport{}
	s.mu.Lock()
	for addr, p := range s.peers {
		if p.state == "established" {
			out[addr] = VerdictReport{AddPathReceive: p.addPathRecv}
		}
	}
	s.mu.Unlock()
	e := s.verdicts
	e.mu.Lock()
	defer e.mu.Unlock()
	for k := range e.sent {
		if r, ok := out[k.peer]; ok {
			r.Sent++
			out[k.peer] = r
		}
	}
	return out
}

// runVerdicts exports the verdicts until ctx ends; a failed call is retried
// after a second.
func (s *Speaker) runVerdicts(ctx context.Context, srv *server.BgpServer) {
	e := s.verdicts
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.kick:
		case <-retry.C:
		}
		if err := s.flushVerdicts(ctx, srv); err != nil && ctx.Err() == nil {
			s.log.Warn("could not send some verdicts; retrying", "err", err)
			retry.Reset(time.Second)
		}
	}
}

type verdictChange struct {
	k    verdictKey
	v    packedVerdict
	want bool
}

// flushVerdicts sends the dirty verdicts: peers new to reporting get their
// export policy first, then the paths are added or withdrawn, then the
// policies of peers left with none are removed.
func (s *Speaker) flushVerdicts(ctx context.Context, srv *server.BgpServer) error {
	e := s.verdicts
	e.mu.Lock()
	changes := make([]verdictChange, 0, len(e.dirty))
	for k := range e.dirty {
		v, ok := e.get(k)
		changes = append(changes, verdictChange{k, v, ok})
	}
	e.dirty = map[verdictKey]struct{}{}
	e.mu.Unlock()
	s.mu.Lock()
	asn := s.cfg.ASN
	capable := s.addPathPeersLocked()
	s.mu.Unlock()
	// A verdict for a peer that cannot receive it is not sent; it is sent
	// when the peer turns out capable (learnAddPath marks it again).
	kept := changes[:0]
	for _, c := range changes {
		if capable[c.k.peer] || !c.want {
			kept = append(kept, c)
		}
	}
	changes = kept

	var failed []verdictKey
	var firstErr error
	fail := func(k verdictKey, err error) {
		failed = append(failed, k)
		if firstErr == nil {
			firstErr = err
		}
	}
	newPeers := false
	for _, c := range changes {
		if _, ok := e.tags[c.k.peer]; c.want && !ok {
			e.nextTag++
			e.tags[c.k.peer] = e.nextTag
			if err := addVerdictPolicy(ctx, srv, asn, c.k.peer, e.nextTag); err != nil {
				delete(e.tags, c.k.peer)
				fail(c.k, err)
				continue
			}
			newPeers = true
		}
	}
	if newPeers {
		if err := s.assignVerdictPolicies(ctx, srv); err != nil {
			// No path is added before its policy is in force.
			e.mu.Lock()
			for _, c := range changes {
				e.dirty[c.k] = struct{}{}
			}
			e.mu.Unlock()
			return err
		}
	}
	for _, c := range changes {
		tag, tagged := e.tags[c.k.peer]
		old, sent := e.sent[c.k]
		switch {
		case c.want && tagged && (!sent || old != c.v):
			p, err := verdictPath(asn, tag, c.k.prefix, c.v.verdict(), false)
			if err == nil {
				_, err = srv.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: p})
			}
			if err != nil {
				fail(c.k, fmt.Errorf("send verdict on %s to %s: %w", c.k.prefix, c.k.peer, err))
				continue
			}
			if !sent {
				e.perPeer[c.k.peer]++
			}
			e.mu.Lock()
			e.sent[c.k] = c.v
			e.mu.Unlock()
		case !c.want && sent:
			p, err := verdictPath(asn, tag, c.k.prefix, old.verdict(), true)
			if err == nil {
				err = srv.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Family: p.Family, Path: p})
			}
			if err != nil {
				fail(c.k, fmt.Errorf("withdraw verdict on %s from %s: %w", c.k.prefix, c.k.peer, err))
				continue
			}
			e.mu.Lock()
			delete(e.sent, c.k)
			e.mu.Unlock()
			if e.perPeer[c.k.peer]--; e.perPeer[c.k.peer] <= 0 {
				delete(e.perPeer, c.k.peer)
			}
		}
	}
	if len(failed) > 0 {
		e.mu.Lock()
		for _, k := range failed {
			e.dirty[k] = struct{}{}
		}
		e.mu.Unlock()
	}
	if err := s.dropIdleVerdictPolicies(ctx, srv); err != nil && firstErr == nil {
		firstErr = err
	}
	return firstErr
}

func verdictSetName(tag uint32) string { return "bgplb-verdict-" + strconv.FormatUint(uint64(tag), 10) }

// addVerdictPolicy defines the policy that sends the paths tagged tag to
// peer (and to no one else).
func addVerdictPolicy(ctx context.Context, srv *server.BgpServer, asn uint32, peer netip.Addr, tag uint32) error {
	name := verdictSetName(tag)
	if err := srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: &api.DefinedSet{
		DefinedType: api.DefinedType_NEIGHBOR, Name: name, List: []string{netip.PrefixFrom(peer, peer.BitLen()).String()},
	}}); err != nil {
		return fmt.Errorf("add neighbor set for the verdicts to %s: %w", peer, err)
	}
	if err := srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: &api.DefinedSet{
		DefinedType: api.DefinedType_LARGE_COMMUNITY, Name: name,
		List: []string{fmt.Sprintf("^%d:%d:%d$", asn, verdict.FuncTag, tag)},
	}}); err != nil {
		return fmt.Errorf("add community set for the verdicts to %s: %w", peer, err)
	}
	if err := srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: &api.Policy{Name: name, Statements: []*api.Statement{{
		Name: name,
		Conditions: &api.Conditions{
			NeighborSet:       &api.MatchSet{Type: api.MatchSet_ANY, Name: name},
			LargeCommunitySet: &api.MatchSet{Type: api.MatchSet_ANY, Name: name},
		},
		Actions: &api.Actions{RouteAction: api.RouteAction_ACCEPT},
	}}}}); err != nil {
		return fmt.Errorf("add the verdict policy for %s: %w", peer, err)
	}
	return nil
}

// assignVerdictPolicies makes the global export policy the reported peers'
// policies, REJECT for everything else.
func (s *Speaker) assignVerdictPolicies(ctx context.Context, srv *server.BgpServer) error {
	tags := slices.Sorted(maps.Values(s.verdicts.tags))
	ps := make([]*api.Policy, 0, len(tags))
	for _, t := range tags {
		ps = append(ps, &api.Policy{Name: verdictSetName(t)})
	}
	if err := srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name: "global", Direction: api.PolicyDirection_EXPORT, Policies: ps, DefaultAction: api.RouteAction_REJECT,
	}}); err != nil {
		return fmt.Errorf("set the export policy: %w", err)
	}
	return nil
}

// dropIdleVerdictPolicies removes the policies of peers that have no
// verdict left (a dynamic peer that went away), so they do not pile up.
func (s *Speaker) dropIdleVerdictPolicies(ctx context.Context, srv *server.BgpServer) error {
	e := s.verdicts
	var idle []uint32
	for peer, tag := range e.tags {
		if e.perPeer[peer] == 0 && !e.wanted(peer) {
			idle = append(idle, tag)
			delete(e.tags, peer)
		}
	}
	if len(idle) == 0 {
		return nil
	}
	if err := s.assignVerdictPolicies(ctx, srv); err != nil {
		return err
	}
	for _, tag := range idle {
		name := verdictSetName(tag)
		if err := srv.DeletePolicy(ctx, &api.DeletePolicyRequest{Policy: &api.Policy{Name: name}, All: true}); err != nil {
			return fmt.Errorf("delete verdict policy %s: %w", name, err)
		}
		for _, typ := range []api.DefinedType{api.DefinedType_NEIGHBOR, api.DefinedType_LARGE_COMMUNITY} {
			if err := srv.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: &api.DefinedSet{DefinedType: typ, Name: name}, All: true}); err != nil {
				return fmt.Errorf("delete verdict set %s: %w", name, err)
			}
		}
	}
	return nil
}

// wanted reports whether a verdict for peer waits to be sent.
func (e *verdictExport) wanted(peer netip.Addr) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for k := range e.dirty {
		if k.peer == peer {
			if _, ok := e.get(k); ok {
				return true
			}
		}
	}
	return false
}

// verdictPath renders one verdict as the GoBGP path that carries it.
func verdictPath(asn, tag uint32, prefix netip.Prefix, v verdict.Verdict, withdraw bool) (*api.Path, error) {
	nh := verdict.NextHop(prefix)
	attrs := []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
	var nlri bgp.AddrPrefixInterface
	if prefix.Addr().Is4() {
		nlri = bgp.NewIPAddrPrefix(uint8(prefix.Bits()), prefix.Addr().String())
		attrs = append(attrs, bgp.NewPathAttributeNextHop(nh.String()))
	} else {
		nlri = bgp.NewIPv6AddrPrefix(uint8(prefix.Bits()), prefix.Addr().String())
		attrs = append(attrs, bgp.NewPathAttributeMpReachNLRI(nh.String(), []bgp.AddrPrefixInterface{nlri}))
	}
	// NO_ADVERTISE (RFC 1997): a receiver that kept the path anyway must
	// not pass it on.
	attrs = append(attrs, bgp.NewPathAttributeCommunities([]uint32{uint32(bgp.COMMUNITY_NO_ADVERTISE)}))
	var lcs []*bgp.LargeCommunity
	for _, c := range verdict.Encode(asn, tag, v) {
		lcs = append(lcs, bgp.NewLargeCommunity(c.GlobalAdmin, c.LocalData1, c.LocalData2))
	}
	attrs = append(attrs, bgp.NewPathAttributeLargeCommunities(lcs))
	p, err := apiutil.NewPath(nlri, withdraw, attrs, time.Now())
	if err != nil {
		return nil, fmt.Errorf("encode verdict path %s: %w", prefix, err)
	}
	p.Identifier = tag
	return p, nil
}

// learnAddPath asks GoBGP for the capabilities peer sent in its OPEN (the
// peer events do not carry them) and, when it can receive ADD-PATH, has
// its verdicts sent. It runs in a goroutine of its own per established
// session.
func (s *Speaker) learnAddPath(peer netip.Addr) {
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	if srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	recv := false
	err := srv.ListPeer(ctx, &api.ListPeerRequest{Address: peer.String()}, func(p *api.Peer) {
		if p.State != nil && p.State.SessionState == api.PeerState_ESTABLISHED {
			recv = canReceiveAddPath(p.State.RemoteCap)
		}
	})
	if err != nil {
		s.log.Warn("could not read a peer's capabilities; it gets no verdicts", "peer", peer.String(), "err", err)
		return
	}
	if !s.setAddPathRecv(peer, recv) {
		return
	}
	e := s.verdicts
	e.mu.Lock()
	for pfx, ws := range e.want {
		if ws.index(peer) >= 0 {
			e.dirty[verdictKey{peer, pfx}] = struct{}{}
		}
	}
	e.mu.Unlock()
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// setAddPathRecv records whether an established peer can receive ADD-PATH
// and reports whether it can. The verdicts for a peer are only kept once
// it can (SetVerdicts), so its prefixes are marked changed: the agent's
// next pass decides them again and reports their verdicts.
func (s *Speaker) setAddPathRecv(peer netip.Addr, recv bool) bool {
	s.mu.Lock()
	p := s.peers[peer]
	if p == nil || p.state != "established" {
		s.mu.Unlock()
		return false
	}
	p.addPathRecv = recv
	if recv {
		for pfx := range p.received {
			s.dirty[pfx] = struct{}{}
		}
	}
	s.mu.Unlock()
	if recv {
		s.signal()
	}
	return recv
}

// canReceiveAddPath reports whether a peer's capabilities (its OPEN)
// include ADD-PATH receive for some family.
func canReceiveAddPath(caps []*anypb.Any) bool {
	cs, err := apiutil.UnmarshalCapabilities(caps)
	if err != nil {
		return false
	}
	for _, c := range cs {
		if ap, ok := c.(*bgp.CapAddPath); ok {
			for _, t := range ap.Tuples {
				if t.Mode&bgp.BGP_ADD_PATH_RECEIVE != 0 {
					return true
				}
			}
		}
	}
	return false
}
