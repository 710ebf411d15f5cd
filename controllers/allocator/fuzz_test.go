package allocator

import (
	"net/netip"
	"strings"
	"testing"
)

// FuzzParseRange: any string given as an IPPool address entry never panics;
// a parsed range has one family, First <= Last, contains both ends, its
// text form (as first-last) parses back to the same range, and a CIDR's bounds are the
// prefix's first and last address. Seeds: testdata/fuzz/FuzzParseRange.
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{
		"192.168.254.0/24", "192.168.254.10-192.168.254.20", " 10.0.0.1 - 10.0.0.1 ", "2001:db8::/64",
		"2001:db8::1-2001:db8::ffff", "::ffff:192.168.254.1-::ffff:192.168.254.9", "0.0.0.0/0", "::/0",
		"192.168.254.7/24", "192.168.254.20-192.168.254.10", "10.0.0.1-2001:db8::1", "fe80::1%eth0-fe80::2",
		"1.2.3.4/32", "-", "1-2-3", "", "255.255.255.255-255.255.255.255", "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRange(s)
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
		if n := buggyCount(r); n > r.Size() {
			t.Fatalf("%q: %d .0/.255 addresses in a range of %d", s, n, r.Size())
		}
		if r.First.Is4() && r.Size() <= 1024 {
			n := uint64(0)
			for a := r.First; ; a = a.Next() {
				if buggy(a) {
					n++
				}
				if a == r.Last {
					break
				}
			}
			if n != buggyCount(r) {
				t.Fatalf("%q: buggyCount %d, counted %d", s, buggyCount(r), n)
			}
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
		back, err := ParseRange(text)
		if err != nil || back != r {
			t.Fatalf("%q: %q parses to %v, %v", s, text, back, err)
		}
		if r.First != r.Last && r.String() != text {
			t.Fatalf("%q: String() = %q, want %q", s, r.String(), text)
		}
		if !strings.Contains(s, "-") {
			p := netip.MustParsePrefix(strings.TrimSpace(s))
			if r.First != p.Addr() || !p.Contains(r.Last) || (r.Last.Next().IsValid() && p.Contains(r.Last.Next())) {
				t.Fatalf("%q: bounds %v are not the prefix's", s, r)
			}
		}
		// A pool made of this range hands out addresses only from it.
		a := New()
		a.SetPools([]PoolSpec{{Name: "p", Addresses: []string{s}, AutoAssign: true}})
		fam := IPv4
		if r.First.Is6() {
			fam = IPv6
		}
		got, _, aerr := a.Assign(Request{Service: "ns/svc", Namespace: "ns", Families: []Family{fam}})
		if aerr == nil {
			if len(got) != 1 || !r.Contains(got[0]) {
				t.Fatalf("%q: assigned %v outside %v", s, got, r)
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
		rs, err := ParseAddresses(strings.Split(s, ","))
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
