// Package allocator decides which addresses Services of type LoadBalancer get
// from IPPools. It is pure: plain structs and net/netip, no Kubernetes types,
// no I/O. The reconciler in package controllers translates objects into
// PoolSpecs and Requests and applies the results.
package allocator

import (
	"encoding/binary"
	"math"
	"net/netip"

	"github.com/bgplb/bgplb/internal/iprange"
)

// Family is an IP address family.
type Family int

// The two families.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string {
	if f == IPv6 {
		return "IPv6"
	}
	return "IPv4"
}

// FamilyOf returns the family of a.
func FamilyOf(a netip.Addr) Family {
	if a.Is4() {
		return IPv4
	}
	return IPv6
}

// Range is an inclusive range of addresses of one family, parsed from a
// pool's spec.addresses by internal/iprange (the grammar the CRD and the
// speaker share).
type Range = iprange.Range

func v4(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

// buggy reports whether a is an address that some equipment takes for
// something other than a host: an IPv4 address ending in .0 or .255
// (network and broadcast addresses of a /24, as MetalLB's avoidBuggyIPs),
// or an IPv6 address whose 64-bit interface identifier is all zero, the
// Subnet-Router anycast address of its /64 (RFC 4291 2.6.1; /64 is the
// subnet size of RFC 4291 2.5.4). A Linux router forwarding IPv6 joins
// that anycast address on every /64 it is attached to, and firewalls and
// IPAMs treat it as the network's own address. MetalLB skips nothing for
// IPv6; bgplb skips the anycast address only when avoidBuggyIPs is set, so
// a pool without it hands out the same addresses as before. The rule is
// per address, as for IPv4: a /48 pool skips the first address of each of
// its /64s, and a range skips the /64 starts it contains.
func buggy(a netip.Addr) bool {
	if !a.Is4() {
		b := a.As16()
		return binary.BigEndian.Uint64(b[8:]) == 0
	}
	last := a.As4()[3]
	return last == 0 || last == 255
}

// buggyWhy says why buggy reports addr, for error messages.
func buggyWhy(a netip.Addr) string {
	if !a.Is4() {
		return "the Subnet-Router anycast address of its /64, RFC 4291 2.6.1"
	}
	return "an IPv4 address ending in .0 or .255, which some clients and routers treat as a network or broadcast address"
}

// buggyCount counts the addresses of r that buggy reports, saturating at
// math.MaxUint64 (::/0 holds 2^64 /64s).
func buggyCount(r Range) uint64 {
	if !r.First.Is4() {
		// The /64 starts in [First, Last]: one per /64 after First's, and
		// First's own when First is its start.
		f, l := r.First.As16(), r.Last.As16()
		fh, fl, lh := binary.BigEndian.Uint64(f[:8]), binary.BigEndian.Uint64(f[8:]), binary.BigEndian.Uint64(l[:8])
		n := lh - fh
		if fl == 0 && n < math.MaxUint64 {
			n++
		}
		return n
	}
	// le(n, x) counts the numbers in [0, n] whose low byte is x.
	le := func(n uint64, x uint64) uint64 {
		c := n >> 8
		if n&0xff >= x {
			c++
		}
		return c
	}
	f, l := uint64(v4(r.First)), uint64(v4(r.Last))
	n := le(l, 0) + le(l, 255)
	if f > 0 {
		n -= le(f-1, 0) + le(f-1, 255)
	}
	return n
}

// usableSize is the number of addresses of r that may be handed out: all,
// or without the buggy ones when avoid is set. A range too large to count
// (Size saturated at math.MaxUint64, more than a /64) stays saturated.
func usableSize(r Range, avoid bool) uint64 {
	n := r.Size()
	if !avoid || n == math.MaxUint64 {
		return n
	}
	return n - buggyCount(r)
}
