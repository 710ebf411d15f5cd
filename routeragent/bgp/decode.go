package bgp

import (
	"fmt"
	"net/netip"
	"slices"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Decoding a watched path: the agent needs the prefix, the next hop,
// GRACEFUL_SHUTDOWN and the link bandwidth. GoBGP's apiutil turns every
// attribute into its native form (GetNativePathAttributes: ORIGIN, AS_PATH
// and the rest too) and the NLRI into a native one printed and parsed back;
// that was 4.6 µs and 23 allocations a path (BenchmarkOnPath), a fifth of
// the agent's own CPU in a bulk (issue 20). These read the API messages
// directly and decode only the attributes the agent uses.

// Full names of the API messages decoded here (anypb type URLs end in them).
var (
	nameIPAddressPrefix = proto.MessageName(&api.IPAddressPrefix{})
	nameNextHop         = proto.MessageName(&api.NextHopAttribute{})
	nameMpReach         = proto.MessageName(&api.MpReachNLRIAttribute{})
	nameCommunities     = proto.MessageName(&api.CommunitiesAttribute{})
	nameExtCommunities  = proto.MessageName(&api.ExtendedCommunitiesAttribute{})
)

// pathPrefix is the prefix of a unicast path's NLRI.
func pathPrefix(p *api.Path) (netip.Prefix, error) {
	if p.Nlri.MessageName() != nameIPAddressPrefix {
		// Not a unicast prefix (the agent negotiates unicast only): let
		// GoBGP say what it is.
		n, err := apiutil.GetNativeNlri(p)
		if err != nil {
			return netip.Prefix{}, err
		}
		return netip.ParsePrefix(n.String())
	}
	var m api.IPAddressPrefix
	if err := p.Nlri.UnmarshalTo(&m); err != nil {
		return netip.Prefix{}, fmt.Errorf("nlri: %w", err)
	}
	a, err := netip.ParseAddr(m.Prefix)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("nlri: %w", err)
	}
	return a.Prefix(int(m.PrefixLen))
}

// decodeAttrs reads the next hop, GRACEFUL_SHUTDOWN and the link bandwidth
// from a path's attributes, skipping the others undecoded.
func decodeAttrs(pattrs []*anypb.Any) (pathAttrs, error) {
	var pa pathAttrs
	for _, a := range pattrs {
		switch a.MessageName() {
		case nameNextHop:
			var m api.NextHopAttribute
			if err := a.UnmarshalTo(&m); err != nil {
				return pa, fmt.Errorf("next hop: %w", err)
			}
			v, err := netip.ParseAddr(m.NextHop)
			if err != nil {
				return pa, fmt.Errorf("next hop: %w", err)
			}
			pa.nextHop = v.Unmap()
		case nameMpReach:
			var m api.MpReachNLRIAttribute
			if err := a.UnmarshalTo(&m); err != nil {
				return pa, fmt.Errorf("mp_reach_nlri: %w", err)
			}
			if len(m.NextHops) > 0 {
				v, err := netip.ParseAddr(m.NextHops[0])
				if err != nil {
					return pa, fmt.Errorf("mp_reach_nlri next hop: %w", err)
				}
				if v = v.Unmap(); !v.IsUnspecified() {
					pa.nextHop = v
				}
			}
		case nameCommunities:
			var m api.CommunitiesAttribute
			if err := a.UnmarshalTo(&m); err != nil {
				return pa, fmt.Errorf("communities: %w", err)
			}
			pa.gshut = slices.Contains(m.Communities, communityGracefulShutdown)
		case nameExtCommunities:
			// Rare (weighted ECMP only); GoBGP's decoder knows every
			// extended community type.
			n, err := apiutil.UnmarshalAttribute(a)
			if err != nil {
				return pa, fmt.Errorf("extended communities: %w", err)
			}
			if e, ok := n.(*bgp.PathAttributeExtendedCommunities); ok {
				pa.bandwidth = linkBandwidth(e)
			}
		}
	}
	return pa, nil
}
