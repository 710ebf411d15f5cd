package iprange

import (
	"net/netip"
	"strings"
	"testing"
)

// FuzzParseRange: any string given as an IPPool address entry never panics;
// a parsed range has one family, First <= Last, contains both ends and
// nothing just outside them, its text form (as first-last) parses back to
// the same range, and a CIDR's bounds are the prefix's first and last
// address. Seeds: testdata/fuzz/FuzzParseRange. (The allocator's
// FuzzPoolRange checks what a pool made of the entry hands out.)
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{
		"192.168.254.0/24", "192.168.254.10-192.168.254.20", " 10.0.0.1 - 10.0.0.1 ", "2001:db8::/64",
		"2001:db8::1-2001:db8::ffff", "::ffff:192.168.254.1-::ffff:192.168.254.9", "0.0.0.0/0", "::/0",
		"192.168.254.7/24", "192.168.254.20-192.168.254.10", "10.0.0.1-2001:db8::1", "fe80::1%eth0-fe80::2",
		"1.2.3.4/32", "-", "1-2-3", "", "255.255.255.255-255.255.255.255", "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
		"::ffff:10.0.0.0/104", " 10.0.0.0/24",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := Parse(s)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if !r.First.IsValid() || !r.Last.IsValid() || r.First.BitLen() != r.Last.BitLen() {
			t.Fatalf("%q: range %v mixes families or is invalid", s, r)
		}
		if r.First.Is4In6() || r.Last.Is4In6() || r.First.Zone() != "" || r.Last.Zone() != "" {
			t.Fatalf("%q: range %v keeps a mapped address or a zone", s, r)
		}
		if r.Last.Less(r.First) {
			t.Fatalf("%q: First %s after Last %s", s, r.First, r.Last)
		}
		if !r.Contains(r.First) || !r.Contains(r.Last) || !r.Overlaps(r) {
			t.Fatalf("%q: range %v does not contain its bounds", s, r)
		}
		if r.Size() == 0 {
			t.Fatalf("%q: range %v has size 0", s, r)
		}
		if prev := r.First.Prev(); prev.IsValid() && r.Contains(prev) {
			t.Fatalf("%q: range %v contains %s before its first", s, r, prev)
		}
		if next := r.Last.Next(); next.IsValid() && r.Contains(next) {
			t.Fatalf("%q: range %v contains %s after its last", s, r, next)
		}
		// Formatting as "first-last" parses back to the same range (String
		// prints a one-address range as the bare address, for messages).
		text := r.First.String() + "-" + r.Last.String()
		back, err := Parse(text)
		if err != nil || back != r {
			t.Fatalf("%q: %q parses to %v, %v", s, text, back, err)
		}
		if r.First != r.Last && r.String() != text {
			t.Fatalf("%q: String() = %q, want %q", s, r.String(), text)
		}
		if !strings.Contains(s, "-") {
			p := netip.MustParsePrefix(s)
			if r.First != p.Addr() || !p.Contains(r.Last) || (r.Last.Next().IsValid() && p.Contains(r.Last.Next())) {
				t.Fatalf("%q: bounds %v are not the prefix's", s, r)
			}
		}
	})
}

// FuzzParseAddresses: a pool's address list (comma separated here) never
// panics and, when accepted, holds no two overlapping entries.
func FuzzParseAddresses(f *testing.F) {
	for _, s := range []string{
		"192.168.254.0/24", "192.168.254.0/25,192.168.254.128/25", "192.168.254.0/24,192.168.254.10-192.168.254.20",
		"10.0.0.0/8,2001:db8::/64", ",", "1.1.1.1-1.1.1.1,1.1.1.1/32",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rs, err := ParsePool(strings.Split(s, ","))
		if err != nil {
			return
		}
		for i := range rs {
			for j := i + 1; j < len(rs); j++ {
				if rs[i].Overlaps(rs[j]) || rs[j].Overlaps(rs[i]) {
					t.Fatalf("%q: accepted overlapping %v and %v", s, rs[i], rs[j])
				}
			}
		}
	})
}
