// Package allocator decides which addresses Services of type LoadBalancer get
// from IPPools. It is pure: plain structs and net/netip, no Kubernetes types,
// no I/O. The reconciler in package controllers translates objects into
// PoolSpecs and Requests and applies the results.
package allocator

import (
	"encoding/binary"
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

// buggy reports whether a is an IPv4 address ending in .0 or .255.
func buggy(a netip.Addr) bool {
	if !a.Is4() {
		return false
	}
	last := a.As4()[3]
	return last == 0 || last == 255
}

// buggyCount counts the IPv4 addresses of r ending in .0 or .255.
func buggyCount(r Range) uint64 {
	if !r.First.Is4() {
		return 0
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
