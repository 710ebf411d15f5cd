package model

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/bgplb/bgplb/internal/iprange"
)

// BenchmarkDesired10k decides one node's announcements for 10,000 Services
// (what every reconcile of the speaker does).
func BenchmarkDesired10k(b *testing.B) { benchDesired(b, false) }

// BenchmarkDesired10kShuffled: the same with the Services in random order,
// as the speaker's store holds them (informer delivery order).
func BenchmarkDesired10kShuffled(b *testing.B) { benchDesired(b, true) }

func benchDesired(b *testing.B, shuffle bool) {
	pool, _ := iprange.ParsePool([]string{"10.128.0.0/16"})
	in := Input{
		Node:           "n1",
		Nodes:          []Node{{Name: "n1", Ready: true}},
		Pools:          []Pool{{Name: "p", Ranges: pool}},
		Peers:          []Peer{{Name: "r1", Address: netip.MustParseAddr("192.168.2.1")}, {Name: "r2", Address: netip.MustParseAddr("192.168.2.2")}},
		Advertisements: []BGPAdvertisement{{Name: "a", Communities: []string{"65000:1", "no-export"}}},
	}
	for i := 0; i < 10000; i++ {
		in.Services = append(in.Services, Service{
			Namespace: "bench", Name: fmt.Sprintf("svc-%d", i), TrafficPolicy: TrafficPolicyLocal,
			IPs:       []netip.Addr{netip.AddrFrom4([4]byte{10, 128, byte(i >> 8), byte(i)})},
			Endpoints: []Endpoint{{NodeName: "n1", Ready: true, Serving: true}, {NodeName: "n2", Ready: true, Serving: true}},
		})
	}
	if shuffle {
		rand.New(rand.NewPCG(1, 2)).Shuffle(len(in.Services), func(i, j int) {
			in.Services[i], in.Services[j] = in.Services[j], in.Services[i]
		})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d := Desired(in)
		if len(d.Peers["r1"]) != 10000 {
			b.Fatalf("got %d", len(d.Peers["r1"]))
		}
	}
}
