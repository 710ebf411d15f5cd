package trace

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/bgplb/bgplb/routeragent/config"
)

// The observing side: one small interface per source, real adapters in
// system.go, conntrack.go and firewall.go.

// Conntrack streams conntrack events of TCP flows to addr.
type Conntrack interface {
	Watch(ctx context.Context, addr netip.Addr) (<-chan FlowEvent, error)
}

// Firewall reads the firewall's counters and owns the temporary counting
// rules (marked as ours) that scope them to the traced connection.
type Firewall interface {
	// Install inserts the counting rules for scope; Remove deletes them.
	Install(ctx context.Context, scope Scope) error
	Remove(ctx context.Context) error
	// Read returns the counters (OutRedirects excepted).
	Read(ctx context.Context) (Counters, error)
}

// Scope is what the temporary rules match: packets from Client (any when
// invalid) to Service (any port when 0).
type Scope struct {
	Service netip.AddrPort
	Client  netip.Addr
}

// ICMP reads the ICMP statistics.
type ICMP interface {
	OutRedirects() (uint64, error)
}

// Routes looks things up in the kernel's routing state.
type Routes interface {
	// Lookup is the FIB entry for addr and the next hop chosen for
	// packets from client arriving on ingress (both optional).
	Lookup(addr, client netip.Addr, ingress string) (Route, error)
	// Ingress is the interface towards client.
	Ingress(client netip.Addr) (string, error)
	// RedirectsOn reports whether send_redirects is effective on iface.
	RedirectsOn(iface string) bool
}

// Agent is the running agent, over its status socket.
type Agent interface {
	// View is what the agent knows (Reachable false when it does not answer).
	View(ctx context.Context) AgentView
	// Record hands a verdict to the agent (status and metrics).
	Record(ctx context.Context, v Verdict) error
	// Protocol is the routes' protocol number (the agent's, else configured).
	Protocol(ctx context.Context) int
}

// Config is one trace.
type Config struct {
	// Service is the traced address; port 0 watches every port.
	Service netip.AddrPort
	// Client restricts the trace to one client (optional).
	Client netip.Addr
	// Settle is how long a connection is watched once its SYN was seen,
	// unless it completes or dies first.
	Settle time.Duration
	// FirewallMode is the agent's firewall.mode (the running agent's, else
	// the config's; empty is exempt): the fixes depend on it.
	FirewallMode config.FirewallMode
}

// ServiceString is ADDRESS or ADDRESS:PORT.
func (c Config) ServiceString() string {
	if c.Service.Port() == 0 {
		return c.Service.Addr().String()
	}
	return c.Service.String()
}

// Tracer wires the observers together.
type Tracer struct {
	Conntrack Conntrack
	Firewall  Firewall
	ICMP      ICMP
	Routes    Routes
	Agent     Agent
	Log       *slog.Logger
	Now       func() time.Time
}

// ErrRouteVerdict says Run stopped at a route verdict: no connection can
// work, so there is nothing to watch.
var ErrRouteVerdict = errors.New("route verdict")

// Run traces until ctx ends: it calls ready once it watches, and out for
// every verdict. A route verdict (no-route, rejected, foreign-route) comes
// first and alone, and Run returns ErrRouteVerdict after it. The temporary
// rules are removed before Run returns, whatever ends it.
func (t Tracer) Run(ctx context.Context, cfg Config, ready func(), out func(Verdict)) (err error) {
	t = t.defaults()
	addr := cfg.Service.Addr()
	if v, ok := t.static(ctx, cfg); ok {
		t.record(ctx, v, out)
		return ErrRouteVerdict
	}
	// Remove what Install put in, also when it failed halfway.
	defer func() {
		// ctx may be over (a signal): removal gets its own deadline.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if rerr := t.Firewall.Remove(rctx); rerr != nil {
			err = errors.Join(err, fmt.Errorf("remove the counting rules: %w", rerr))
		}
	}()
	if err := t.Firewall.Install(ctx, Scope{Service: cfg.Service, Client: cfg.Client}); err != nil {
		return fmt.Errorf("install the counting rules: %w", err)
	}
	events, err := t.Conntrack.Watch(ctx, addr)
	if err != nil {
		return fmt.Errorf("conntrack events: %w", err)
	}
	base, err := t.read(ctx)
	if err != nil {
		return err
	}
	ready()
	for {
		first, ok := nextSYN(ctx, events, cfg)
		if !ok {
			return nil
		}
		c := t.watch(ctx, events, cfg, first)
		after, err := t.read(ctx)
		if err != nil {
			return err
		}
		c.End = t.Now()
		c.Delta = Delta(base, after)
		base = after
		t.record(ctx, Classify(c), out)
	}
}

func (t Tracer) defaults() Tracer {
	if t.Log == nil {
		t.Log = slog.New(slog.DiscardHandler)
	}
	if t.Now == nil {
		t.Now = time.Now
	}
	return t
}

// static looks at the route and the agent before any connection.
func (t Tracer) static(ctx context.Context, cfg Config) (Verdict, bool) {
	addr := cfg.Service.Addr()
	proto := t.Agent.Protocol(ctx)
	ingress := ""
	if cfg.Client.IsValid() {
		ingress, _ = t.Routes.Ingress(cfg.Client)
	}
	rt, err := t.Routes.Lookup(addr, cfg.Client, ingress)
	if err != nil {
		t.Log.Debug("route lookup", "address", addr, "err", err)
	}
	rt.Ours = rt.Found && rt.Protocol == proto
	v, ok := Static(cfg.ServiceString(), addr, rt, t.Agent.View(ctx))
	v.Client = cfg.Client
	return v, ok
}

func (t Tracer) record(ctx context.Context, v Verdict, out func(Verdict)) {
	v.At = t.Now()
	out(v)
	if err := t.Agent.Record(ctx, v); err != nil {
		t.Log.Debug("record the verdict in the agent", "err", err)
	}
}

func (t Tracer) read(ctx context.Context) (Counters, error) {
	c, err := t.Firewall.Read(ctx)
	if err != nil {
		return Counters{}, fmt.Errorf("firewall counters: %w", err)
	}
	if c.OutRedirects, err = t.ICMP.OutRedirects(); err != nil {
		return Counters{}, fmt.Errorf("icmp statistics: %w", err)
	}
	return c, nil
}

// matches reports whether e belongs to the traced service and client.
func matches(e FlowEvent, cfg Config) bool {
	if e.Service.Addr() != cfg.Service.Addr() {
		return false
	}
	if cfg.Service.Port() != 0 && e.Service.Port() != cfg.Service.Port() {
		return false
	}
	return !cfg.Client.IsValid() || e.Client.Addr() == cfg.Client
}

// nextSYN waits for the next new flow of the traced service.
func nextSYN(ctx context.Context, events <-chan FlowEvent, cfg Config) (FlowEvent, bool) {
	for {
		select {
		case <-ctx.Done():
			return FlowEvent{}, false
		case e, ok := <-events:
			if !ok {
				return FlowEvent{}, false
			}
			if e.Type == FlowNew && matches(e, cfg) {
				return e, true
			}
		}
	}
}

// watch collects the events of first's flow until it completes, dies, or
// Settle passes; other flows are ignored meanwhile (one connection at a
// time).
func (t Tracer) watch(ctx context.Context, events <-chan FlowEvent, cfg Config, first FlowEvent) Conn {
	ingress, err := t.Routes.Ingress(first.Client.Addr())
	if err != nil {
		t.Log.Debug("ingress lookup", "client", first.Client, "err", err)
	}
	rt, err := t.Routes.Lookup(cfg.Service.Addr(), first.Client.Addr(), ingress)
	if err != nil {
		t.Log.Debug("route lookup", "err", err)
	}
	rt.Ours = true
	c := Conn{Service: cfg.ServiceString(), Client: first.Client, Start: first.At, Route: rt, Ingress: ingress,
		RedirectsOn: t.Routes.RedirectsOn(ingress), Events: []FlowEvent{first}, FirewallMode: cfg.FirewallMode}
	settle := time.NewTimer(cfg.Settle)
	defer settle.Stop()
	for {
		select {
		case <-ctx.Done():
			return c
		case <-settle.C:
			return c
		case e, ok := <-events:
			if !ok {
				return c
			}
			if e.Client != first.Client || e.Service != first.Service {
				continue
			}
			c.Events = append(c.Events, e)
			if established, reset := handshake(c.Events); established || reset || e.Type == FlowDestroy {
				return c
			}
		}
	}
}
