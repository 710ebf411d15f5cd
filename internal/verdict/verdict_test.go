package verdict

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRoundTrip(t *testing.T) {
	for _, v := range []Verdict{
		{State: Installed, Width: 2, Via: true},
		{State: Installed, Width: 3, Reason: "draining"},
		{State: Rejected, Reason: "outside-service-subnets"},
		{State: Rejected, Reason: "route-conflict"},
		{State: Pending, Reason: "route-error"},
		{State: Pending},
	} {
		got, ok := Decode(64500, Encode(64500, 7, v))
		if !ok {
			t.Fatalf("%v: not decoded", v)
		}
		if d := cmp.Diff(v, got); d != "" {
			t.Errorf("round trip (-want +got):\n%s", d)
		}
	}
}

func TestEncoding(t *testing.T) {
	got := Encode(64500, 3, Verdict{State: Rejected, Reason: "max-prefixes"})
	want := []LargeCommunity{{64500, 0, 1}, {64500, 1, 2}, {64500, 2, 7}, {64500, 3, 0}, {64500, 4, 0}, {64500, 5, 3}}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("communities (-want +got):\n%s", d)
	}
}

func TestDecodeIgnores(t *testing.T) {
	for name, lcs := range map[string][]LargeCommunity{
		"none":            nil,
		"no marker":       {{64500, 1, 1}, {64500, 3, 2}},
		"other ASN":       Encode(64501, 1, Verdict{State: Installed, Width: 1}),
		"unknown state":   {{64500, 0, 1}, {64500, 1, 9}},
		"marker version0": {{64500, 0, 0}, {64500, 1, 1}},
	} {
		if v, ok := Decode(64500, lcs); ok {
			t.Errorf("%s: decoded %v, want no verdict", name, v)
		}
	}
	// Communities of other administrators beside a verdict are ignored.
	lcs := append(Encode(64500, 1, Verdict{State: Installed, Width: 1, Via: true}), LargeCommunity{64501, 1, 2})
	if v, ok := Decode(64500, lcs); !ok || v != (Verdict{State: Installed, Width: 1, Via: true}) {
		t.Errorf("with a foreign community: %v %v", v, ok)
	}
	// A reason of a later version reads as its number.
	if v, _ := Decode(64500, []LargeCommunity{{64500, 0, 1}, {64500, 1, 2}, {64500, 2, 99}}); v.Reason != "reason-99" {
		t.Errorf("unknown reason read %q", v.Reason)
	}
}

func TestDescribe(t *testing.T) {
	r := netip.MustParseAddr("192.168.2.1")
	for _, c := range []struct {
		v    Verdict
		pfx  string
		want string
	}{
		{Verdict{State: Installed, Width: 2, Via: true}, "192.168.254.1/32", "router 192.168.2.1 installed 192.168.254.1/32 via 2 nodes"},
		{Verdict{State: Installed, Width: 1, Via: true}, "192.168.254.1/32", "router 192.168.2.1 installed 192.168.254.1/32 via 1 node"},
		{Verdict{State: Rejected, Reason: "outside-service-subnets"}, "10.1.1.1/32", "router 192.168.2.1 rejected 10.1.1.1/32: outside-service-subnets"},
	} {
		if got := Describe(r, netip.MustParsePrefix(c.pfx), c.v); got != c.want {
			t.Errorf("got %q, want %q", got, c.want)
		}
	}
}

func TestReasonCodesStable(t *testing.T) {
	// The codes are on the wire: a renumbering breaks mixed versions.
	for code, name := range map[uint32]string{4: "outside-service-subnets", 5: "next-hop-not-peer", 7: "max-prefixes", 8: "route-conflict"} {
		if ReasonCode(name) != code || ReasonName(code) != name {
			t.Errorf("%s is not code %d", name, code)
		}
	}
}
