package allocator

import (
	"testing"

	"github.com/bgplb/bgplb/internal/iprange"
)

// FuzzPoolRange: for any IPPool address entry that parses (the grammar
// itself is fuzzed by internal/iprange's FuzzParseRange), buggyCount agrees
// with counting the buggy addresses (.0/.255, IPv6 /64 starts) one by one and never exceeds the
// range's size, and a pool made of the entry hands out addresses only from
// it. Seeds: testdata/fuzz/FuzzPoolRange (FuzzParseRange's).
func FuzzPoolRange(f *testing.F) {
	for _, s := range []string{
		"192.168.254.0/24", "192.168.254.10-192.168.254.20", " 10.0.0.1 - 10.0.0.1 ", "2001:db8::/64",
		"2001:db8::1-2001:db8::ffff", "0.0.0.0/0", "::/0", "1.2.3.4/32", "10.0.0.250-10.0.1.5",
		"255.255.255.255-255.255.255.255", "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
		"fd00:0:0:1:ffff:ffff:ffff:ff00-fd00:0:0:2::ff", "2001:db8:254::/120",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := iprange.Parse(s)
		if err != nil {
			return
		}
		if n := buggyCount(r); n > r.Size() {
			t.Fatalf("%q: %d buggy addresses in a range of %d", s, n, r.Size())
		}
		if r.Size() <= 1024 {
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
		// With avoidBuggyIPs it never hands out a buggy address.
		ab := New()
		ab.SetPools([]PoolSpec{{Name: "p", Addresses: []string{s}, AutoAssign: true, AvoidBuggyIPs: true}})
		fam6 := IPv4
		if r.First.Is6() {
			fam6 = IPv6
		}
		if got, _, err := ab.Assign(Request{Service: "ns/svc", Namespace: "ns", Families: []Family{fam6}}); err == nil && (len(got) != 1 || buggy(got[0]) || !r.Contains(got[0])) {
			t.Fatalf("%q with avoidBuggyIPs: assigned %v", s, got)
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
