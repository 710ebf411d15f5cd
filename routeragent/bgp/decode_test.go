package bgp

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// nativeDecode is how the watch handler read a path before decode.go: every
// attribute through GoBGP's native types, the NLRI printed and parsed back.
// The test holds decode.go to the same answers.
func nativeDecode(t *testing.T, p *api.Path) (netip.Prefix, pathAttrs) {
	t.Helper()
	nlri, err := apiutil.GetNativeNlri(p)
	if err != nil {
		t.Fatal(err)
	}
	pfx, err := netip.ParsePrefix(nlri.String())
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := apiutil.GetNativePathAttributes(p)
	if err != nil {
		t.Fatal(err)
	}
	var pa pathAttrs
	for _, a := range attrs {
		switch a := a.(type) {
		case *bgp.PathAttributeCommunities:
			pa.gshut = slices.Contains(a.Value, communityGracefulShutdown)
		case *bgp.PathAttributeExtendedCommunities:
			pa.bandwidth = linkBandwidth(a)
		case *bgp.PathAttributeNextHop:
			if v, ok := netip.AddrFromSlice(a.Value); ok {
				pa.nextHop = v.Unmap()
			}
		case *bgp.PathAttributeMpReachNLRI:
			if v, ok := netip.AddrFromSlice(a.Nexthop); ok && !v.Unmap().IsUnspecified() {
				pa.nextHop = v.Unmap()
			}
		}
	}
	return pfx, pa
}

func TestDecodeMatchesGoBGP(t *testing.T) {
	origin := bgp.NewPathAttributeOrigin(0)
	asPath := bgp.NewPathAttributeAsPath([]bgp.AsPathParamInterface{bgp.NewAs4PathParam(bgp.BGP_ASPATH_ATTR_TYPE_SEQ, []uint32{64512, 64513})})
	v6 := bgp.NewIPv6AddrPrefix(128, "2001:db8:100::7")
	cases := []struct {
		name  string
		nlri  bgp.AddrPrefixInterface
		attrs []bgp.PathAttributeInterface
		want  pathAttrs
	}{
		{"v4 plain", bgp.NewIPAddrPrefix(32, "10.0.0.1"),
			[]bgp.PathAttributeInterface{origin, asPath, bgp.NewPathAttributeNextHop("192.0.2.9")},
			pathAttrs{nextHop: netip.MustParseAddr("192.0.2.9")}},
		{"v4 graceful shutdown among others", bgp.NewIPAddrPrefix(24, "10.1.2.0"),
			[]bgp.PathAttributeInterface{origin, asPath, bgp.NewPathAttributeNextHop("192.0.2.9"),
				bgp.NewPathAttributeMultiExitDisc(5), bgp.NewPathAttributeCommunities([]uint32{0xFDE80001, communityGracefulShutdown})},
			pathAttrs{nextHop: netip.MustParseAddr("192.0.2.9"), gshut: true}},
		{"v4 communities without graceful shutdown", bgp.NewIPAddrPrefix(32, "10.0.0.2"),
			[]bgp.PathAttributeInterface{origin, bgp.NewPathAttributeNextHop("192.0.2.9"), bgp.NewPathAttributeCommunities([]uint32{0xFDE80001})},
			pathAttrs{nextHop: netip.MustParseAddr("192.0.2.9")}},
		{"v4 link bandwidth", bgp.NewIPAddrPrefix(32, "10.0.0.3"),
			[]bgp.PathAttributeInterface{origin, bgp.NewPathAttributeNextHop("192.0.2.10"),
				bgp.NewPathAttributeExtendedCommunities([]bgp.ExtendedCommunityInterface{
					bgp.NewTwoOctetAsSpecificExtended(bgp.EC_SUBTYPE_ROUTE_TARGET, 64512, 1, true),
					bgp.NewLinkBandwidthExtended(64512, 1.25e9)})},
			pathAttrs{nextHop: netip.MustParseAddr("192.0.2.10"), bandwidth: 1.25e9}},
		{"v6 over MP_REACH", v6,
			[]bgp.PathAttributeInterface{origin, asPath, bgp.NewPathAttributeMpReachNLRI("2001:db8::9", []bgp.AddrPrefixInterface{v6})},
			pathAttrs{nextHop: netip.MustParseAddr("2001:db8::9")}},
		{"v4-mapped next hop", bgp.NewIPAddrPrefix(32, "10.0.0.4"),
			[]bgp.PathAttributeInterface{origin, bgp.NewPathAttributeNextHop("::ffff:192.0.2.11")},
			pathAttrs{nextHop: netip.MustParseAddr("192.0.2.11")}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := apiutil.NewPath(c.nlri, false, c.attrs, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			wantPfx, wantAttrs := nativeDecode(t, p)
			if wantAttrs != c.want {
				t.Fatalf("GoBGP's decoding: %+v, the case expects %+v", wantAttrs, c.want)
			}
			pfx, err := pathPrefix(p)
			if err != nil || pfx != wantPfx {
				t.Errorf("pathPrefix = %v, %v; GoBGP's: %v", pfx, err, wantPfx)
			}
			got, err := decodeAttrs(p.Pattrs)
			if err != nil || got != wantAttrs {
				t.Errorf("decodeAttrs = %+v, %v; GoBGP's: %+v", got, err, wantAttrs)
			}
		})
	}
}

// TestDecodeRejectsBrokenAttributes: an attribute the agent reads that does
// not decode makes the path undecodable (as GoBGP's decoder did); one it
// does not read is skipped.
func TestDecodeRejectsBrokenAttributes(t *testing.T) {
	p, err := apiutil.NewPath(bgp.NewIPAddrPrefix(32, "10.0.0.1"), false,
		[]bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(0), bgp.NewPathAttributeNextHop("192.0.2.9")}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	broken := func(i int, value []byte) []*anypb.Any {
		attrs := make([]*anypb.Any, len(p.Pattrs))
		for j, a := range p.Pattrs {
			attrs[j] = proto.Clone(a).(*anypb.Any)
		}
		attrs[i].Value = value
		return attrs
	}
	if _, err := decodeAttrs(broken(1, []byte{0xff})); err == nil {
		t.Error("a NEXT_HOP that does not decode was accepted")
	}
	if _, err := decodeAttrs(broken(1, []byte{0x0a, 0x03, 'x', 'y', 'z'})); err == nil {
		t.Error(`a NEXT_HOP of "xyz" was accepted`)
	}
	if pa, err := decodeAttrs(broken(0, []byte{0xff})); err != nil || pa.nextHop != netip.MustParseAddr("192.0.2.9") {
		t.Errorf("a broken ORIGIN (not read) gave %+v, %v", pa, err)
	}
	q := proto.Clone(p).(*api.Path)
	q.Nlri = p.Pattrs[0] // an ORIGIN where the NLRI should be
	if _, err := pathPrefix(q); err == nil {
		t.Error("a path whose NLRI is not a prefix was accepted")
	}
}
