package symmetry

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/ti-mo/conntrack"
)

// Source reads the service flows (package-level seam for the agent: a
// fake in tests, Conntrack on the router).
type Source interface {
	// Flows returns the conntrack entries whose original destination is
	// in one of subnets.
	Flows(subnets []netip.Prefix) ([]Flow, error)
}

// Conntrack is Source over ctnetlink (github.com/ti-mo/conntrack), in the
// caller's network namespace. Each call dumps the table once and keeps the
// service flows: the dump is transient (the kernel's table is bounded by
// nf_conntrack_max); what the Tracker keeps is bounded by its Config.
// Periodic dumps rather than events: an event stream drops events under
// load (ENOBUFS) and a missed destroy would leave a flow "unreplied"
// forever, where a dump is always the truth.
type Conntrack struct{}

// Flows dumps conntrack and keeps the flows to subnets.
func (Conntrack) Flows(subnets []netip.Prefix) ([]Flow, error) {
	c, err := conntrack.Dial(nil)
	if err != nil {
		return nil, fmt.Errorf("ctnetlink: %w", err)
	}
	defer func() { _ = c.Close() }()
	raw, err := c.Dump(nil)
	if err != nil {
		return nil, fmt.Errorf("conntrack dump: %w", err)
	}
	var flows []Flow
	for _, f := range raw {
		o := f.TupleOrig
		dst := o.IP.DestinationAddress.Unmap()
		if !slices.ContainsFunc(subnets, func(p netip.Prefix) bool { return p.Contains(dst) }) {
			continue
		}
		flows = append(flows, Flow{
			Protocol:    o.Proto.Protocol,
			Client:      netip.AddrPortFrom(o.IP.SourceAddress.Unmap(), o.Proto.SourcePort),
			Service:     netip.AddrPortFrom(dst, o.Proto.DestinationPort),
			ReplySource: f.TupleReply.IP.SourceAddress.Unmap(),
			SeenReply:   f.Status.SeenReply(),
			Assured:     f.Status.Assured(),
		})
	}
	return InSubnets(flows, subnets), nil
}
