package trace

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

type fakeConntrack struct{ ch chan FlowEvent }

func (f fakeConntrack) Watch(context.Context, netip.Addr) (<-chan FlowEvent, error) { return f.ch, nil }

type fakeFirewall struct {
	installed []Scope
	removed   int
	reads     []Counters
}

func (f *fakeFirewall) Install(_ context.Context, s Scope) error {
	f.installed = append(f.installed, s)
	return nil
}

func (f *fakeFirewall) Remove(ctx context.Context) error {
	if ctx.Err() != nil {
		return ctx.Err() // removal must not run on the cancelled context
	}
	f.removed++
	return nil
}

func (f *fakeFirewall) Read(context.Context) (Counters, error) {
	c := f.reads[0]
	if len(f.reads) > 1 {
		f.reads = f.reads[1:]
	}
	return c, nil
}

type fakeICMP struct{}

func (fakeICMP) OutRedirects() (uint64, error) { return 0, nil }

type fakeRoutes struct{ rt Route }

func (f fakeRoutes) Lookup(netip.Addr, netip.Addr, string) (Route, error) { return f.rt, nil }
func (fakeRoutes) Ingress(netip.Addr) (string, error)                     { return "lan0", nil }
func (fakeRoutes) RedirectsOn(string) bool                                { return false }

type fakeAgent struct{ recorded []Kind }

func (*fakeAgent) View(context.Context) AgentView { return AgentView{Reachable: true} }
func (*fakeAgent) Protocol(context.Context) int   { return 220 }
func (a *fakeAgent) Record(_ context.Context, v Verdict) error {
	a.recorded = append(a.recorded, v.Kind)
	return nil
}

// Run: a route verdict comes alone and installs nothing; otherwise the
// counting rules go in, each new flow of the service gets a verdict, other
// flows are ignored, and the rules come out when the context ends.
func TestRun(t *testing.T) {
	svc := netip.MustParseAddrPort("192.168.254.10:80")
	cfg := Config{Service: svc, Settle: 50 * time.Millisecond}

	t.Run("route verdict", func(t *testing.T) {
		fw, ag := &fakeFirewall{}, &fakeAgent{}
		tr := Tracer{Conntrack: fakeConntrack{}, Firewall: fw, ICMP: fakeICMP{}, Routes: fakeRoutes{}, Agent: ag}
		var got []Kind
		err := tr.Run(t.Context(), cfg, func() { t.Error("ready without watching") }, func(v Verdict) { got = append(got, v.Kind) })
		if !errors.Is(err, ErrRouteVerdict) {
			t.Fatalf("err = %v, want ErrRouteVerdict", err)
		}
		if diff := cmp.Diff([]Kind{NoRoute}, got); diff != "" {
			t.Errorf("verdicts (-want +got):\n%s", diff)
		}
		if len(fw.installed) != 0 || fw.removed != 0 {
			t.Errorf("rules touched for a route verdict: %+v", fw)
		}
		if diff := cmp.Diff([]Kind{NoRoute}, ag.recorded); diff != "" {
			t.Errorf("recorded (-want +got):\n%s", diff)
		}
	})

	t.Run("connections", func(t *testing.T) {
		ch := make(chan FlowEvent, 8)
		fw := &fakeFirewall{reads: []Counters{{}, {Packets: 1}, {Packets: 4}}}
		tr := Tracer{Conntrack: fakeConntrack{ch: ch}, Firewall: fw, ICMP: fakeICMP{}, Agent: &fakeAgent{},
			Routes: fakeRoutes{rt: Route{Found: true, Protocol: 220, Prefix: netip.MustParsePrefix("192.168.254.10/32"),
				NextHop: netip.MustParseAddr("192.168.2.10"), Dev: "lan0", OnLink: []netip.Prefix{netip.MustParsePrefix("192.168.2.0/24")}}}}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		client := netip.MustParseAddrPort("10.9.0.2:4000")
		ev := func(typ FlowEventType, dst netip.AddrPort, st TCPState, reply bool) FlowEvent {
			return FlowEvent{At: time.Now(), Type: typ, Client: client, Service: dst, State: st, SeenReply: reply}
		}
		ready := make(chan struct{})
		var got []Kind
		done := make(chan error)
		go func() {
			done <- tr.Run(ctx, cfg, func() { close(ready) }, func(v Verdict) {
				got = append(got, v.Kind)
				if len(got) == 2 {
					cancel()
				}
			})
		}()
		<-ready
		ch <- ev(FlowNew, netip.MustParseAddrPort("192.168.254.10:22"), TCPSynSent, false) // another port: ignored
		ch <- ev(FlowNew, svc, TCPSynSent, false)                                          // nothing more: rst
		time.Sleep(200 * time.Millisecond)
		ch <- ev(FlowNew, svc, TCPSynSent, false)
		ch <- ev(FlowUpdate, svc, TCPSynRecv, true)
		ch <- ev(FlowUpdate, svc, TCPEstablished, true) // healthy
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]Kind{RST, Healthy}, got); diff != "" {
			t.Errorf("verdicts (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]Scope{{Service: svc}}, fw.installed, cmp.Comparer(func(a, b Scope) bool { return a == b })); diff != "" {
			t.Errorf("installed (-want +got):\n%s", diff)
		}
		if fw.removed != 1 {
			t.Errorf("rules removed %d times after the context ended, want 1", fw.removed)
		}
	})
}
