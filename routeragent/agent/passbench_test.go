package agent

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/bgplb/bgplb/routeragent/policy"
)

// passSpeaker is a speaker for BenchmarkPass whose own cost is O(1) per
// change: it hands over the prefixes the benchmark marked, as the real
// speaker notes changed prefixes in its watch handler.
type passSpeaker struct {
	*fakeSpeaker
	index   map[netip.Prefix]int // prefix -> its path in paths
	pending []netip.Prefix
}

func (s *passSpeaker) TakeChanges() ([]netip.Prefix, []policy.Path) {
	changed := s.pending
	s.pending = nil
	paths := make([]policy.Path, 0, len(changed))
	for _, p := range changed {
		paths = append(paths, s.paths[s.index[p]])
	}
	return changed, paths
}

// BenchmarkPass is the agent's own cost of one pass (the policy's
// decisions, the desired set, the bookkeeping; routes and speaker are fakes
// that cost O(1) a change) by the number of routes held (issue 20). A full
// pass grows with the routes; a pass over a few changes must not
// (TestPassWorkIsOChanges counts the operations behind that).
func BenchmarkPass(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		for _, changes := range []int{0, 1, 100} {
			name := fmt.Sprintf("routes=%d/full", n)
			if changes > 0 {
				name = fmt.Sprintf("routes=%d/changes=%d", n, changes)
			}
			b.Run(name, func(b *testing.B) {
				sp := &passSpeaker{fakeSpeaker: &fakeSpeaker{eor: map[netip.Addr]bool{pA: true, pB: true}}, index: map[netip.Prefix]int{}}
				addr := netip.MustParseAddr("10.0.0.1")
				for i := 0; i < n; i, addr = i+1, addr.Next() {
					p := netip.PrefixFrom(addr, 32)
					sp.index[p] = i
					sp.paths = append(sp.paths, policy.Path{Peer: pA, NextHop: pA, Prefix: p, Seq: uint64(i)})
				}
				rt := &fakeRoutes{}
				a := testAgentSubnets(b, sp, rt, "10.0.0.0/8")
				a.config().Neighbors[0].MaxPrefixes = 2 * n // the default, 1,000, would refuse them
				a.reconcile(b.Context(), true)
				if len(rt.installed) != n {
					b.Fatalf("%d routes installed, want %d", len(rt.installed), n)
				}
				next := 0
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if changes == 0 {
						a.reconcile(b.Context(), true)
						continue
					}
					// Move the next `changes` prefixes to the other peer.
					for j := 0; j < changes; j++ {
						p := &sp.paths[next]
						if p.Peer == pA {
							p.Peer, p.NextHop = pB, pB
						} else {
							p.Peer, p.NextHop = pA, pA
						}
						sp.pending = append(sp.pending, p.Prefix)
						next = (next + 1) % n
					}
					a.reconcile(b.Context(), false)
				}
				b.StopTimer()
				if rt.fullPasses > 1 && changes > 0 {
					b.Fatalf("%d full passes in an incremental benchmark", rt.fullPasses-1)
				}
			})
		}
	}
}
