// Package allocator decides which addresses Services of type LoadBalancer get
// from IPPools. It is pure: plain structs and net/netip, no Kubernetes types,
// no I/O. The reconciler in package controllers translates objects into
// PoolSpecs and Requests and applies the results.
package allocator

import (
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"strings"
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

// Range is an inclusive range of addresses of one family.
type Range struct {
	First, Last netip.Addr
}

// Family is the family of the range.
func (r Range) Family() Family { return FamilyOf(r.First) }

// Contains reports whether a is in r.
func (r Range) Contains(a netip.Addr) bool {
	return a.BitLen() == r.First.BitLen() && r.First.Compare(a) <= 0 && a.Compare(r.Last) <= 0
}

// Overlaps reports whether r and o share an address.
func (r Range) Overlaps(o Range) bool {
	return r.First.BitLen() == o.First.BitLen() && r.First.Compare(o.Last) <= 0 && o.First.Compare(r.Last) <= 0
}

func (r Range) String() string {
	if r.First == r.Last {
		return r.First.String()
	}
	return r.First.String() + "-" + r.Last.String()
}

// Size is the number of addresses in r, saturated at math.MaxUint64.
func (r Range) Size() uint64 {
	if r.First.Is4() {
		return uint64(v4(r.Last)) - uint64(v4(r.First)) + 1
	}
	fh, fl := v6(r.First)
	lh, ll := v6(r.Last)
	hi := lh - fh
	lo := ll - fl
	if ll < fl {
		hi--
	}
	if hi != 0 || lo == math.MaxUint64 {
		return math.MaxUint64
	}
	return lo + 1
}

// ParseRange parses a CIDR ("192.168.254.0/24") or an inclusive range of
// two addresses of one family ("192.168.254.10-192.168.254.20"). A CIDR
// must not have host bits set, so that a typo does not silently widen it.
func ParseRange(s string) (Range, error) {
	s = strings.TrimSpace(s)
	if first, last, ok := strings.Cut(s, "-"); ok {
		f, err := netip.ParseAddr(strings.TrimSpace(first))
		if err != nil {
			return Range{}, fmt.Errorf("range %q: first address: %w", s, err)
		}
		l, err := netip.ParseAddr(strings.TrimSpace(last))
		if err != nil {
			return Range{}, fmt.Errorf("range %q: last address: %w", s, err)
		}
		if f.Zone() != "" || l.Zone() != "" {
			return Range{}, fmt.Errorf("range %q: addresses must not have a zone", s)
		}
		f, l = f.Unmap(), l.Unmap()
		if f.BitLen() != l.BitLen() {
			return Range{}, fmt.Errorf("range %q mixes IPv4 and IPv6", s)
		}
		if l.Less(f) {
			return Range{}, fmt.Errorf("range %q: first address is after the last", s)
		}
		return Range{First: f, Last: l}, nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return Range{}, fmt.Errorf("%q is neither a CIDR nor a range of two addresses: %w", s, err)
	}
	if p.Masked() != p {
		return Range{}, fmt.Errorf("CIDR %q has host bits set (did you mean %s?)", s, p.Masked())
	}
	return prefixRange(p), nil
}

func prefixRange(p netip.Prefix) Range {
	first := p.Addr()
	b := first.AsSlice()
	bits := p.Bits()
	for i := range b {
		for j := 0; j < 8; j++ {
			if i*8+j >= bits {
				b[i] |= 0x80 >> j
			}
		}
	}
	last, _ := netip.AddrFromSlice(b)
	return Range{First: first, Last: last}
}

// ParseAddresses parses a pool's address list and rejects entries that
// overlap each other.
func ParseAddresses(entries []string) ([]Range, error) {
	if len(entries) == 0 {
		return nil, fmt.Errorf("no addresses")
	}
	out := make([]Range, 0, len(entries))
	for _, e := range entries {
		r, err := ParseRange(e)
		if err != nil {
			return nil, err
		}
		for _, o := range out {
			if r.Overlaps(o) {
				return nil, fmt.Errorf("entries %s and %s overlap", o, r)
			}
		}
		out = append(out, r)
	}
	return out, nil
}

func v4(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func v6(a netip.Addr) (hi, lo uint64) {
	b := a.As16()
	return binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
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
