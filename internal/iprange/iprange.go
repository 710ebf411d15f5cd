// Package iprange is the one grammar of IPPool spec.addresses entries,
// shared by bgplb-controller (which allocates from them) and bgplb-speaker
// (which announces only addresses inside them), so that both programs read
// a pool the same way the apiserver's validation does.
//
// An entry is either a CIDR without host bits ("192.168.254.0/24") or an
// inclusive range of two addresses of one family separated by one dash
// ("192.168.254.10-192.168.254.20", spaces around either address allowed).
// This is the CRD's CEL rule (api/v1alpha1, IPPoolSpec.Addresses), and
// controllers' TestAddressGrammarAgreesWithCRD checks both against the same
// table through a real apiserver. What CEL cannot express is checked here
// only: a range's first address must not come after its last.
//
// Like CEL's isIP and isCIDR, addresses with a zone ("fe80::1%eth0") and
// IPv4-mapped IPv6 addresses ("::ffff:10.0.0.1") are refused: a pool's
// IPv4 addresses are written as IPv4. A CIDR with host bits set is refused,
// not masked, so that a typo ("192.168.254.7/24") does not silently widen
// into a whole /24.
package iprange

import (
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"strings"
)

// Range is an inclusive range of addresses of one family.
type Range struct {
	First, Last netip.Addr
}

// Contains reports whether a is in r.
func (r Range) Contains(a netip.Addr) bool {
	return a.BitLen() == r.First.BitLen() && r.First.Compare(a) <= 0 && a.Compare(r.Last) <= 0
}

// Overlaps reports whether r and o share an address.
func (r Range) Overlaps(o Range) bool {
	return r.First.BitLen() == o.First.BitLen() && r.First.Compare(o.Last) <= 0 && o.First.Compare(r.Last) <= 0
}

// String is "first-last", or the address alone for a range of one.
func (r Range) String() string {
	if r.First == r.Last {
		return r.First.String()
	}
	return r.First.String() + "-" + r.Last.String()
}

// Size is the number of addresses in r, saturated at math.MaxUint64.
func (r Range) Size() uint64 {
	if r.First.Is4() {
		f, l := r.First.As4(), r.Last.As4()
		return uint64(binary.BigEndian.Uint32(l[:])) - uint64(binary.BigEndian.Uint32(f[:])) + 1
	}
	f, l := r.First.As16(), r.Last.As16()
	fh, fl := binary.BigEndian.Uint64(f[:8]), binary.BigEndian.Uint64(f[8:])
	lh, ll := binary.BigEndian.Uint64(l[:8]), binary.BigEndian.Uint64(l[8:])
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

// Parse parses one spec.addresses entry.
func Parse(s string) (Range, error) {
	if strings.Contains(s, "-") {
		return parseRange(s)
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return Range{}, fmt.Errorf("%q is neither a CIDR nor a range of two addresses: %w", s, err)
	}
	if p.Addr().Is4In6() {
		return Range{}, fmt.Errorf("CIDR %q is an IPv4-mapped IPv6 prefix: write it as IPv4", s)
	}
	if p.Masked() != p {
		return Range{}, fmt.Errorf("CIDR %q has host bits set (did you mean %s?)", s, p.Masked())
	}
	r := prefixRange(p)
	if r.Last.Is4In6() {
		// ::/80 ends at ::ffff:255.255.255.255: its last 2^32 addresses
		// are the IPv4-mapped block, as a range it would not parse back.
		return Range{}, fmt.Errorf("CIDR %q ends in the IPv4-mapped block ::ffff:0:0/96 (its last address is %s): use a prefix outside it", s, r.Last)
	}
	return r, nil
}

func parseRange(s string) (Range, error) {
	parts := strings.Split(s, "-")
	if len(parts) != 2 {
		return Range{}, fmt.Errorf("range %q: want two addresses separated by one dash", s)
	}
	f, err := parseAddr(parts[0])
	if err != nil {
		return Range{}, fmt.Errorf("range %q: first address: %w", s, err)
	}
	l, err := parseAddr(parts[1])
	if err != nil {
		return Range{}, fmt.Errorf("range %q: last address: %w", s, err)
	}
	if f.BitLen() != l.BitLen() {
		return Range{}, fmt.Errorf("range %q mixes IPv4 and IPv6", s)
	}
	if l.Less(f) {
		return Range{}, fmt.Errorf("range %q: first address is after the last", s)
	}
	return Range{First: f, Last: l}, nil
}

// parseAddr parses one end of a range as CEL's isIP does (after trim()).
func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	switch {
	case err != nil:
		return netip.Addr{}, err
	case a.Zone() != "":
		return netip.Addr{}, fmt.Errorf("%s: an address must not have a zone", a)
	case a.Is4In6():
		return netip.Addr{}, fmt.Errorf("%s is an IPv4-mapped IPv6 address: write it as IPv4", a)
	}
	return a, nil
}

func prefixRange(p netip.Prefix) Range {
	first := p.Addr()
	b := first.AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	last, _ := netip.AddrFromSlice(b)
	return Range{First: first, Last: last}
}

// ParsePool parses a pool's whole address list, as the controller accepts
// it: at least one entry, every entry valid, no two entries overlapping.
func ParsePool(entries []string) ([]Range, error) {
	if len(entries) == 0 {
		return nil, fmt.Errorf("no addresses")
	}
	out := make([]Range, 0, len(entries))
	for _, e := range entries {
		r, err := Parse(e)
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
