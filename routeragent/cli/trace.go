package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/vishvananda/netlink"

	"github.com/bgplb/bgplb/routeragent/agent"
	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/firewall"
	"github.com/bgplb/bgplb/routeragent/trace"
)

// traceSettle is how long trace watches one connection after its SYN,
// unless it completes or dies first: long enough for a client's first SYN
// retransmission (1 s) and a few of its INVALID packets.
const traceSettle = 2 * time.Second

const traceLong = `Watch the next connection attempts of real clients to a service address (it
makes none itself) and say, for each, why it works or fails, with the fix.
The router sees every packet of the forward path: trace follows the kernel's
conntrack events for the address, the firewall's counters (with two
temporary counting rules at the top of FORWARD in the mangle table, scoped
to the address and --client and marked "bgplb-trace pid=N", removed when
trace ends; a trace killed with SIGKILL leaves them to the next trace or
agent start, which remove them; when only native nftables drops INVALID
packets, a table of its own, inet bgplb_trace_<pid>, that the next trace
removes), the ICMP statistics and the routing table, and asks the running
agent what it was announced and rejected. IPv6: trace '[ADDRESS]:PORT'.

Verdicts: no-route, rejected, foreign-route (printed at once: no connection
can work), redirect, invalid-drop, asymmetric-ok, rst, other-router, healthy.
The agent keeps the last verdicts in its status and counts them in metrics.

Exit status: 0 when every connection seen worked, 1 when one failed, a route
verdict was printed or nothing was seen before --timeout, 2 on bad usage.`

// traceCommand is `trace ADDRESS[:PORT]`: like command(), with one
// positional argument.
func traceCommand(do action) *cobra.Command {
	var o options
	c := &cobra.Command{
		Use:   "trace ADDRESS[:PORT]",
		Short: "Say why clients cannot reach a service address",
		Long:  traceLong,
		Example: `  bgplb-routeragent trace 192.168.254.10:443
  bgplb-routeragent trace 192.168.254.10:443 --client 192.168.2.100 --json`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: cobra.NoFileCompletions,
	}
	for _, f := range []flag{configFlag, socketFlag, jsonFlag, clientFlag, timeoutFlag} {
		f(c, &o)
	}
	c.RunE = func(c *cobra.Command, args []string) error {
		o.target = args[0]
		return exit(do(o, c.OutOrStdout(), c.ErrOrStderr()))
	}
	return c
}

func clientFlag(c *cobra.Command, o *options) {
	c.Flags().StringVar(&o.client, "client", "", "watch only this client's connections (IP address)")
	_ = c.RegisterFlagCompletionFunc("client", cobra.NoFileCompletions)
}

func timeoutFlag(c *cobra.Command, o *options) {
	c.Flags().DurationVar(&o.timeout, "timeout", 30*time.Second, "how long to watch")
}

// parseTarget parses ADDRESS[:PORT] (IPv6 with a port: [ADDRESS]:PORT).
func parseTarget(s string) (netip.AddrPort, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a.Unmap(), 0), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q is not ADDRESS[:PORT]", s)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// traceConfig checks the arguments.
func traceConfig(o options) (trace.Config, error) {
	svc, err := parseTarget(o.target)
	if err != nil {
		return trace.Config{}, err
	}
	cfg := trace.Config{Service: svc, Settle: traceSettle}
	if o.client != "" {
		if cfg.Client, err = netip.ParseAddr(o.client); err != nil {
			return trace.Config{}, fmt.Errorf("--client %q is not an IP address", o.client)
		}
	}
	if o.timeout <= 0 {
		return trace.Config{}, fmt.Errorf("--timeout must be positive")
	}
	return cfg, nil
}

// runTrace is `trace`. SIGINT, SIGTERM and SIGHUP end it like the timeout:
// the counting rules are removed first.
func runTrace(o options, stdout, stderr io.Writer) int {
	cfg, err := traceConfig(o)
	if err != nil {
		fmt.Fprintf(stderr, "trace: %v\n", err)
		return ExitUsage
	}
	rc := loadForMaintenance(o.config, io.Discard)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	h, err := netlink.NewHandle()
	if err != nil {
		fmt.Fprintf(stderr, "trace: netlink: %v\n", err)
		return ExitFailure
	}
	defer h.Close()
	fam := firewall.IPv4
	if cfg.Service.Addr().Is6() {
		fam = firewall.IPv6
	}
	as := &agentSocket{path: socketPath(o.config, o.socket), protocol: rc.Routes.Protocol}
	cfg.FirewallMode = as.FirewallMode(ctx, rc.Firewall.Mode)
	t := trace.Tracer{
		Conntrack: trace.KernelConntrack{},
		Firewall: &trace.Firewalls{Iptables: &trace.Iptables{Runners: firewall.XtablesRunners, Family: fam, PID: os.Getpid()},
			Nft: &trace.Nft{Open: firewall.NetlinkNft, PID: os.Getpid()}},
		ICMP:   trace.ProcICMP{},
		Routes: trace.NetlinkRoutes{H: h},
		Agent:  as,
		Log:    slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	p := verdictPrinter{w: stdout, json: o.json}
	ready := func() {
		fmt.Fprintf(stderr, "watching connections to %s for %s (Ctrl-C to stop)\n", cfg.ServiceString(), o.timeout)
	}
	err = t.Run(ctx, cfg, ready, p.print)
	switch {
	case errors.Is(err, trace.ErrRouteVerdict):
		return ExitFailure
	case err != nil:
		fmt.Fprintf(stderr, "trace: %v\n", err)
		return ExitFailure
	case p.n == 0:
		fmt.Fprintf(stderr, "no connection to %s seen in %s\n", cfg.ServiceString(), o.timeout)
		return ExitFailure
	case p.failed:
		return ExitFailure
	}
	return ExitOK
}

// verdictPrinter prints verdicts as they come: JSON lines, or a timeline
// and a verdict paragraph.
type verdictPrinter struct {
	w      io.Writer
	json   bool
	n      int
	failed bool
}

func (p *verdictPrinter) print(v trace.Verdict) {
	p.n++
	if !v.Kind.OK() {
		p.failed = true
	}
	if p.json {
		_ = json.NewEncoder(p.w).Encode(v)
		return
	}
	printVerdict(p.w, v)
}

func printVerdict(w io.Writer, v trace.Verdict) {
	who := v.Service
	if v.Client.IsValid() {
		who = v.Client.String() + " -> " + v.Service
	}
	fmt.Fprintf(w, "%s\n", who)
	for _, e := range v.Timeline {
		fmt.Fprintf(w, "  %+6dms  %s\n", e.MS, e.What)
	}
	fmt.Fprintf(w, "verdict: %s\n", v.Kind)
	if v.NextHop.IsValid() {
		fmt.Fprintf(w, "  next hop: %s", v.NextHop)
		if v.Interface != "" {
			fmt.Fprintf(w, " dev %s", v.Interface)
		}
		fmt.Fprintln(w)
	}
	switch {
	case v.Rule != nil && v.Rule.Table != "":
		fmt.Fprintf(w, "  rule:     %s %s chain %s handle %d: %s\n", v.Rule.Backend, v.Rule.Table, v.Rule.Chain, v.Rule.Handle, v.Rule.Spec)
	case v.Rule != nil:
		fmt.Fprintf(w, "  rule:     %s %s #%d: %s\n", v.Rule.Backend, v.Rule.Chain, v.Rule.Number, v.Rule.Spec)
	}
	if v.Route != "" {
		fmt.Fprintf(w, "  route:    %s\n", v.Route)
	}
	if v.Reason != "" {
		fmt.Fprintf(w, "  reason:   %s (peer %s)\n", v.Reason, v.Peer)
	}
	fmt.Fprintf(w, "  %s\n  fix: %s\n\n", v.Message, v.Fix)
}

// agentSocket is trace.Agent over the status socket.
type agentSocket struct {
	path     string
	protocol int // the config's, when the agent does not answer
	st       *agent.Status
}

func (a *agentSocket) status(ctx context.Context) *agent.Status {
	if a.st == nil {
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if st, _, err := agent.FetchStatus(sctx, a.path); err == nil {
			a.st = &st
		}
	}
	return a.st
}

func (a *agentSocket) Protocol(ctx context.Context) int {
	if st := a.status(ctx); st != nil && st.Config.Protocol != 0 {
		return st.Config.Protocol
	}
	if a.protocol != 0 {
		return a.protocol
	}
	return config.DefaultProtocol
}

// FirewallMode is the running agent's firewall.mode (a reload may have
// changed it since the config was read), else fallback (the config's).
func (a *agentSocket) FirewallMode(ctx context.Context, fallback config.FirewallMode) config.FirewallMode {
	if st := a.status(ctx); st != nil && st.Config.FirewallMode != "" {
		return st.Config.FirewallMode
	}
	return fallback
}

func (a *agentSocket) View(ctx context.Context) trace.AgentView {
	st := a.status(ctx)
	if st == nil {
		return trace.AgentView{}
	}
	v := trace.AgentView{Reachable: true}
	for _, r := range st.Prefix.RejectedPaths {
		v.Rejected = append(v.Rejected, trace.Rejection{Peer: r.Peer, Prefix: r.Prefix, NextHop: r.NextHop, Reason: string(r.Reason)})
	}
	for _, c := range st.Routes.Conflicts {
		v.Conflicts = append(v.Conflicts, c.Prefix)
	}
	return v
}

func (a *agentSocket) Record(ctx context.Context, v trace.Verdict) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer cancel()
	return agent.PostVerdict(rctx, a.path, v)
}

// printTraces is the end of `status`: trace's verdicts by kind and the
// last five.
func printTraces(w io.Writer, t *agent.TraceStatus) {
	if t == nil {
		return
	}
	var counts []string
	for _, k := range trace.Kinds {
		if n := t.Counts[k]; n > 0 {
			counts = append(counts, fmt.Sprintf("%s: %d", k, n))
		}
	}
	fmt.Fprintf(w, "\ntrace verdicts: %s\n", strings.Join(counts, ", "))
	for _, v := range t.Last[max(0, len(t.Last)-5):] {
		who := v.Service
		if v.Client.IsValid() {
			who = v.Client.String() + " -> " + v.Service
		}
		fmt.Fprintf(w, "  %s  %s  %s\n", v.At.Format(time.TimeOnly), v.Kind, who)
	}
}
