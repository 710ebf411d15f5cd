package iprange

import (
	"math"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

var addrCmp = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    Range
		size    uint64
		wantErr string
	}{
		{in: "192.168.254.0/24", want: Range{addr("192.168.254.0"), addr("192.168.254.255")}, size: 256},
		{in: "192.168.254.10-192.168.254.20", want: Range{addr("192.168.254.10"), addr("192.168.254.20")}, size: 11},
		{in: "192.168.254.10 - 192.168.254.20", want: Range{addr("192.168.254.10"), addr("192.168.254.20")}, size: 11},
		{in: " 10.0.0.255 - 10.0.1.0 ", want: Range{addr("10.0.0.255"), addr("10.0.1.0")}, size: 2},
		{in: "10.0.0.0/22", want: Range{addr("10.0.0.0"), addr("10.0.3.255")}, size: 1024},
		{in: "0.0.0.0/0", want: Range{addr("0.0.0.0"), addr("255.255.255.255")}, size: 1 << 32},
		{in: "10.0.0.5/32", want: Range{addr("10.0.0.5"), addr("10.0.0.5")}, size: 1},
		{in: "fd00::/126", want: Range{addr("fd00::"), addr("fd00::3")}, size: 4},
		{in: "fd00:254::/120", want: Range{addr("fd00:254::"), addr("fd00:254::ff")}, size: 256},
		{in: "fd00::1-fd00::3", want: Range{addr("fd00::1"), addr("fd00::3")}, size: 3},
		{in: "fd00::/64", want: Range{addr("fd00::"), addr("fd00::ffff:ffff:ffff:ffff")}, size: math.MaxUint64},
		{in: "fd00::/65", want: Range{addr("fd00::"), addr("fd00::7fff:ffff:ffff:ffff")}, size: 1 << 63},
		// Host bits are refused, not masked (as the CRD's CEL rule does).
		{in: "192.168.254.7/24", wantErr: "host bits set (did you mean 192.168.254.0/24?)"},
		{in: "192.168.254.1/24", wantErr: "host bits set (did you mean 192.168.254.0/24?)"},
		{in: "fd00::1/64", wantErr: "host bits set (did you mean fd00::/64?)"},
		{in: "192.168.254.20-192.168.254.10", wantErr: "first address is after the last"},
		{in: "10.0.0.9-10.0.0.1", wantErr: "first address is after the last"},
		{in: "192.168.254.1-fd00::1", wantErr: "mixes IPv4 and IPv6"},
		{in: "10.0.0.1-fd00::1", wantErr: "mixes IPv4 and IPv6"},
		{in: "banana", wantErr: "neither a CIDR nor a range"},
		{in: "nonsense", wantErr: "neither a CIDR nor a range"},
		{in: "", wantErr: "neither a CIDR nor a range"},
		{in: "10.0.0.1-x", wantErr: "last address"},
		{in: "x-10.0.0.1", wantErr: "first address"},
		{in: "-", wantErr: "first address"},
		{in: "1-2-3", wantErr: "one dash"},
		{in: "10.0.0.1-10.0.0.2-10.0.0.3", wantErr: "one dash"},
		{in: " 10.0.0.0/24", wantErr: "neither a CIDR nor a range"},
		{in: "fe80::1%eth0-fe80::2", wantErr: "zone"},
		{in: "::ffff:10.0.0.1-::ffff:10.0.0.3", wantErr: "IPv4-mapped"},
		{in: "::ffff:10.0.0.0/104", wantErr: "IPv4-mapped"},
		{in: "::/80", wantErr: "ends in the IPv4-mapped block"},
		{in: "010.0.0.1-10.0.0.2", wantErr: "first address"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse(%q) = %v, %v; want an error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got, addrCmp); diff != "" {
				t.Errorf("Parse(%q) (-want +got):\n%s", tt.in, diff)
			}
			if got.Size() != tt.size {
				t.Errorf("Parse(%q).Size() = %d, want %d", tt.in, got.Size(), tt.size)
			}
		})
	}
}

func TestParsePool(t *testing.T) {
	tests := []struct {
		name    string
		in      []string
		want    []Range
		wantErr string
	}{
		{name: "no entries", wantErr: "no addresses"},
		{name: "overlap", in: []string{"10.0.0.0/24", "10.0.0.128-10.0.1.5"}, wantErr: "overlap"},
		{name: "one bad entry", in: []string{"10.0.0.0/24", "10.0.1.7/24"}, wantErr: "host bits"},
		{name: "disjoint, both families", in: []string{"10.0.0.0/24", "10.0.1.0/24", "fd00::/120"}, want: []Range{
			{addr("10.0.0.0"), addr("10.0.0.255")}, {addr("10.0.1.0"), addr("10.0.1.255")}, {addr("fd00::"), addr("fd00::ff")},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePool(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParsePool(%q) = %v, %v; want an error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, addrCmp); diff != "" {
				t.Errorf("ParsePool(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestRangeString(t *testing.T) {
	for _, tt := range []struct {
		r    Range
		want string
	}{
		{Range{addr("10.0.0.1"), addr("10.0.0.1")}, "10.0.0.1"},
		{Range{addr("10.0.0.1"), addr("10.0.0.9")}, "10.0.0.1-10.0.0.9"},
	} {
		if got := tt.r.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.r, got, tt.want)
		}
	}
}
