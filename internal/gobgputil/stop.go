// Package gobgputil holds what both of bgplb's GoBGP adapters (the
// speaker's and the router agent's) need from GoBGP v3 beyond its API calls:
// a stop sequence that GoBGP v3 makes race-free.
//
// # Why not just StopBgp
//
// GoBGP v3.37.0's StopBgp deletes every neighbour (which only cancels each
// session's handler goroutines) and then, in the same management operation,
// clears the global configuration (s.bgpConfig.Global = oc.Global{}). Every
// session's handler holds a pointer to that struct and reads it while it
// still runs: the receive loop on every UPDATE (IsEBGPPeer,
// IsConfederationMember), the OPENSENT state when it builds or checks an
// OPEN. A handler that is still finishing when StopBgp clears the struct
// reads a torn configuration: a data race the race detector reports, and in
// production a rare wrong eBGP/iBGP decision on the last UPDATEs.
//
// The sequence that GoBGP v3 makes safe: stop accepting new dynamic
// neighbours, disable every neighbour (administrative shutdown: a Cease goes
// out behind whatever UPDATEs are queued, and the neighbour stays IDLE
// instead of reconnecting), wait until GoBGP reports each one IDLE or gone
// (it records the new state only after the old state's handler, with its
// send and receive goroutines, has returned, and the IDLE handler reads no
// global configuration), delete the neighbours, and only then StopBgp, which
// then has no neighbour left to race with.
package gobgputil

import (
	"context"
	"errors"
	"fmt"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
)

// pollEvery is how often Quiesce re-reads the neighbours' states. A session
// normally ends within a millisecond of its Cease.
const pollEvery = 2 * time.Millisecond

// Quiesce disables the given neighbours (every neighbour when addrs is
// nil) with a Cease (administrative shutdown) carrying communication, and
// waits until GoBGP reports each of them IDLE or removed, or until ctx ends.
// Paths queued for a neighbour before the call leave before its Cease: both
// go through the neighbour's one ordered output queue.
//
// Disabled neighbours stay configured (IDLE, administratively down): the
// caller deletes them.
func Quiesce(ctx context.Context, srv *server.BgpServer, addrs []string, communication string) error {
	if addrs == nil {
		var err error
		if addrs, err = neighbors(ctx, srv); err != nil {
			return err
		}
	}
	var errs []error
	for _, a := range addrs {
		if err := srv.DisablePeer(ctx, &api.DisablePeerRequest{Address: a, Communication: communication}); err != nil {
			errs = append(errs, fmt.Errorf("disable neighbor %s: %w", a, err))
		}
	}
	waiting := map[string]bool{}
	for _, a := range addrs {
		waiting[a] = true
	}
	for {
		states := map[string]api.PeerState_SessionState{}
		err := srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
			if p.State != nil {
				states[p.State.NeighborAddress] = p.State.SessionState
			}
		})
		if err != nil {
			return errors.Join(append(errs, fmt.Errorf("list neighbors: %w", err))...)
		}
		for a := range waiting {
			if st, ok := states[a]; !ok || st == api.PeerState_IDLE {
				delete(waiting, a)
			}
		}
		if len(waiting) == 0 {
			return errors.Join(errs...)
		}
		select {
		case <-ctx.Done():
			left := make([]string, 0, len(waiting))
			for a := range waiting {
				left = append(left, a)
			}
			return errors.Join(append(errs, fmt.Errorf("neighbors %v still not idle: %w", left, ctx.Err()))...)
		case <-time.After(pollEvery):
		}
	}
}

// Stop stops srv in the order described in the package comment: no new
// dynamic neighbours, every neighbour quiesced (bounded by ctx), every
// neighbour deleted, then StopBgp and Stop. It always stops the server; the
// error reports what did not go as planned (a neighbour that did not go
// idle in time is deleted anyway).
func Stop(ctx context.Context, srv *server.BgpServer, communication string) error {
	var errs []error
	var dynamic []*api.DynamicNeighbor
	if err := srv.ListDynamicNeighbor(ctx, &api.ListDynamicNeighborRequest{}, func(d *api.DynamicNeighbor) {
		dynamic = append(dynamic, d)
	}); err != nil {
		errs = append(errs, fmt.Errorf("list dynamic neighbors: %w", err))
	}
	for _, d := range dynamic {
		if err := srv.DeleteDynamicNeighbor(ctx, &api.DeleteDynamicNeighborRequest{Prefix: d.Prefix, PeerGroup: d.PeerGroup}); err != nil {
			errs = append(errs, fmt.Errorf("delete dynamic neighbors %s: %w", d.Prefix, err))
		}
	}
	if err := Quiesce(ctx, srv, nil, communication); err != nil {
		errs = append(errs, err)
	}
	// A neighbour that did not go idle in time is deleted all the same:
	// the server must stop. A fresh context, so that an expired ctx does
	// not leave neighbours behind for StopBgp to race with.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	addrs, err := neighbors(dctx, srv)
	if err != nil {
		errs = append(errs, err)
	}
	for _, a := range addrs {
		if err := srv.DeletePeer(dctx, &api.DeletePeerRequest{Address: a}); err != nil {
			errs = append(errs, fmt.Errorf("delete neighbor %s: %w", a, err))
		}
	}
	if err := srv.StopBgp(dctx, &api.StopBgpRequest{}); err != nil {
		errs = append(errs, fmt.Errorf("stop GoBGP: %w", err))
	}
	srv.Stop()
	return errors.Join(errs...)
}

// neighbors lists the addresses of srv's neighbours as GoBGP spells them.
func neighbors(ctx context.Context, srv *server.BgpServer) ([]string, error) {
	var addrs []string
	err := srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		if p.State != nil && p.State.NeighborAddress != "" {
			addrs = append(addrs, p.State.NeighborAddress)
		} else if p.Conf != nil && p.Conf.NeighborAddress != "" {
			addrs = append(addrs, p.Conf.NeighborAddress)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("list neighbors: %w", err)
	}
	return addrs, nil
}
