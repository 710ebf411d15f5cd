package trace

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
)

// KernelConntrack is Conntrack over ctnetlink (github.com/ti-mo/conntrack),
// in the caller's network namespace.
type KernelConntrack struct{}

// Watch subscribes to new, update and destroy events and forwards those of
// TCP flows whose original destination is addr until ctx ends. Conntrack
// only tracks a namespace's flows once a rule uses it (since Linux 5.x
// the hooks are registered on demand): the Firewall's INVALID counting
// rule does.
func (KernelConntrack) Watch(ctx context.Context, addr netip.Addr) (<-chan FlowEvent, error) {
	c, err := conntrack.Dial(nil)
	if err != nil {
		return nil, fmt.Errorf("ctnetlink: %w", err)
	}
	// A large buffer: a busy router emits many events we drop, and a full
	// socket buffer ends the subscription (ENOBUFS).
	_ = c.SetReadBuffer(4 << 20)
	raw := make(chan conntrack.Event, 1024)
	errs, err := c.Listen(raw, 1, netfilter.GroupsCT)
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("ctnetlink listen: %w", err)
	}
	out := make(chan FlowEvent, 64)
	go func() {
		defer close(out)
		defer func() { _ = c.Close() }()
		for {
			select {
			case <-ctx.Done():
				return
			case err := <-errs:
				// The subscription ended (ENOBUFS: the socket buffer
				// overflowed): closing the stream ends the trace.
				_ = err
				return
			case ev := <-raw:
				fe, ok := flowEvent(ev, addr, time.Now())
				if !ok {
					continue
				}
				select {
				case out <- fe:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

// flowEvent converts a ctnetlink event of a TCP flow to addr.
func flowEvent(ev conntrack.Event, addr netip.Addr, at time.Time) (FlowEvent, bool) {
	f := ev.Flow
	if f == nil || f.TupleOrig.Proto.Protocol != 6 || f.TupleOrig.IP.DestinationAddress != addr {
		return FlowEvent{}, false
	}
	fe := FlowEvent{At: at, SeenReply: f.Status.SeenReply(),
		Client:  netip.AddrPortFrom(f.TupleOrig.IP.SourceAddress, f.TupleOrig.Proto.SourcePort),
		Service: netip.AddrPortFrom(f.TupleOrig.IP.DestinationAddress, f.TupleOrig.Proto.DestinationPort)}
	switch ev.Type {
	case conntrack.EventNew:
		fe.Type = FlowNew
	case conntrack.EventUpdate:
		fe.Type = FlowUpdate
	case conntrack.EventDestroy:
		fe.Type = FlowDestroy
	default:
		return FlowEvent{}, false
	}
	if f.ProtoInfo.TCP != nil {
		fe.State = TCPState(f.ProtoInfo.TCP.State)
	}
	return fe, true
}
