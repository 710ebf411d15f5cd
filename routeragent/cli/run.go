package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/bgplb/bgplb/routeragent/agent"
	"github.com/bgplb/bgplb/routeragent/bgp"
	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/doctor"
	"github.com/bgplb/bgplb/routeragent/firewall"
	"github.com/bgplb/bgplb/routeragent/pinning"
	"github.com/bgplb/bgplb/routeragent/routes"
	"github.com/bgplb/bgplb/routeragent/symmetry"
	"github.com/bgplb/bgplb/routeragent/sysctl"
	"github.com/bgplb/bgplb/routeragent/trace"
)

// runAgent is `run`: load the config, build the agent's side-effect
// boundaries, serve the status socket and metrics, re-read the config on
// SIGHUP, and run until SIGTERM or SIGINT.
func runAgent(o options, _, stderr io.Writer) int {
	cfg, err := loadRunConfig(o)
	if err != nil {
		printConfigError(stderr, o.config, err)
		return ExitUsage
	}
	log := NewLogger(cfg, stderr)
	logSecurity(cfg, log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	h, err := netlink.NewHandle()
	if err != nil {
		log.Error("open netlink", "err", err)
		return ExitFailure
	}
	defer h.Close()
	lan, err := listenLAN(cfg, h)
	if err != nil {
		// Exit 1: systemd restarts the agent (Restart=on-failure) until
		// the LAN interface has its address.
		log.Error("BGP has nowhere to listen", "err", err)
		return ExitFailure
	}
	sweepTraceRules(ctx, log)
	deps, err := agentDeps(ctx, cfg, lan, h, log)
	if err != nil {
		log.Error("firewall", "err", err)
		return ExitUsage
	}
	log.Info("BGP listens", "addresses", agent.BGPConfig(cfg, lan).ListenAddresses, "port", cfg.Listen.Port)
	a := agent.New(cfg, deps, log)

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go reloadOnHUP(ctx, hup, a, o.config, log)
	// Without its status socket (or with one of the wrong mode) the agent
	// refuses to start: status, poke and ferm's hook depend on it.
	sl, err := agent.ListenStatus(cfg.StatusSocket)
	if err != nil {
		log.Error("cannot serve status", "err", err)
		return ExitFailure
	}
	go func() {
		if err := a.ServeStatus(ctx, sl); err != nil {
			log.Error("status socket", "err", err)
		}
	}()
	if cfg.Metrics.Address != config.MetricsOff {
		go func() {
			if err := a.ServeMetrics(ctx, cfg.Metrics.Address); err != nil {
				log.Error("metrics", "err", err)
			}
		}()
	}
	if err := a.Run(ctx); err != nil {
		log.Error("router agent failed", "err", err)
		return ExitFailure
	}
	return ExitOK
}

// sweepTraceRules removes the counting rules of traces killed before they
// could (SIGKILL): no trace runs across an agent start at boot, and a
// running trace's rules are kept (its pid is alive).
func sweepTraceRules(ctx context.Context, log *slog.Logger) {
	n, err := trace.SweepLeftovers(ctx, firewall.XtablesRunners)
	if err != nil {
		log.Warn("remove leftover trace rules", "err", err)
	}
	if n > 0 {
		log.Info("removed leftover trace rules", "rules", n)
	}
	// A killed trace on a native nftables router leaves its own table.
	n, err = trace.SweepNftLeftovers(ctx, firewall.NetlinkNft)
	if err != nil && !errors.Is(err, firewall.ErrUnavailable) {
		log.Warn("remove leftover trace tables", "err", err)
	}
	if n > 0 {
		log.Info("removed leftover trace tables", "tables", n)
	}
}

// loadRunConfig loads the config and applies --log-level over its
// log.level. The override holds for the whole run: a reload does not
// rebuild the logger.
func loadRunConfig(o options) (*config.Config, error) {
	cfg, err := config.Load(o.config)
	if err != nil {
		return nil, err
	}
	if o.logLevel != "" {
		cfg.Log.Level = config.LogLevel(o.logLevel)
	}
	return cfg, nil
}

// agentDeps builds the real side-effect boundaries of the agent. The error
// is the firewall's: a firewall mode the host cannot do.
func agentDeps(ctx context.Context, cfg *config.Config, lan []netip.Addr, h *netlink.Handle, log *slog.Logger) (agent.Deps, error) {
	newFirewall := firewallFactory(log)
	fw, err := newFirewall(cfg)
	if err != nil {
		return agent.Deps{}, err
	}
	return agent.Deps{
		Speaker: bgp.New(agent.BGPConfig(cfg, lan), log.With("component", "bgp")),
		// The agent runs in the router's namespace: its nexthop objects too.
		Routes:    routes.New(h, routesConfig(cfg), log.With("component", "routes"), routes.WithNetNS(netns.None())),
		Firewall:  fw,
		Redirects: sysctl.Redirects{StateFile: stateFile(cfg)},
		LAN: func(ifaces []string) ([]netip.Prefix, []netip.Addr, []string, error) {
			return routes.LANAddresses(h, ifaces)
		},
		LinkEvents: routes.WatchLinks(ctx, log),
		// Every nftables generation (nft -f of nftables.service) asks for a
		// firewall pass: repairs take milliseconds, not the next tick.
		FirewallEvents: watchNft(ctx, cfg, log),
		NewFirewall:    newFirewall,
		// Read only in firewall.mode verify (also after a reload to it).
		Conntrack: symmetry.Conntrack{},
		Pins:      newPins(cfg, log),
		Notify: func(state string) {
			if _, err := daemon.SdNotify(false, state); err != nil {
				log.Debug("sd_notify", "err", err)
			}
		},
	}, nil
}

// newPins opens connection pinning's netlink side (nil, logged, when it
// cannot: the agent then runs without pins).
func newPins(cfg *config.Config, log *slog.Logger) agent.Pins {
	k, err := pinning.NewNetlink(cfg.Routes.Protocol)
	if err != nil {
		log.Error("connection pinning unavailable", "err", err)
		return nil
	}
	return k
}

// firewallFactory returns the agent's NewFirewall. Every mode gets a
// manager, off too: its first pass removes what an earlier run or mode
// installed (exemption chains and jumps, native table bgplb_exempt, verify
// mode's counting table, the ICMPv6 redirect suppression), once, and status
// reports mode off instead of the last mode's section.
func firewallFactory(log *slog.Logger, opts ...firewall.Option) func(*config.Config) (agent.Firewall, error) {
	return func(c *config.Config) (agent.Firewall, error) {
		m, err := firewall.New(firewallConfig(c), log, opts...)
		if err != nil {
			return nil, err
		}
		return m, nil
	}
}

// logSecurity logs the security section's problems (check-config's view)
// at start, so a warning accepted in the config stays visible in the journal.
func logSecurity(cfg *config.Config, log *slog.Logger) {
	in := doctor.SecurityInputFor(cfg)
	in.PasswordFiles = doctor.PasswordFiles(cfg)
	for _, f := range doctor.Security(in) {
		if f.Status != doctor.OK {
			log.Warn("security finding", "check", f.Check, "severity", f.Status, "problem", f.Message, "fix", f.Fix)
		}
	}
}

// listenLAN reads the LAN interfaces' addresses BGP listens on (listen.address
// unset). The listeners are made once, at start: an address that appears
// later (DHCP, an interface brought up later) is listened on after a
// restart, so with no LAN address yet the agent refuses to start rather than
// listen nowhere (or everywhere).
func listenLAN(cfg *config.Config, h *netlink.Handle) ([]netip.Addr, error) {
	if !cfg.ListenOnLAN() {
		return nil, nil
	}
	_, local, missing, err := routes.LANAddresses(h, cfg.LANInterfaces)
	if err != nil {
		return nil, fmt.Errorf("read the addresses of lanInterfaces: %w", err)
	}
	if len(local) == 0 {
		return nil, fmt.Errorf("lanInterfaces %v have no address yet (missing: %v); bring them up, "+
			"or set listen.address (0.0.0.0 listens on every interface, the WAN's too)", cfg.LANInterfaces, missing)
	}
	return local, nil
}

// reloadOnHUP hands the agent the config re-read from path at each SIGHUP; an
// invalid one is refused and the running state kept.
func reloadOnHUP(ctx context.Context, hup <-chan os.Signal, a *agent.Agent, path string, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			nc, err := config.Load(path)
			if err != nil {
				log.Error("reload refused: invalid configuration; running state kept", "err", err)
				continue
			}
			log.Info("reloading configuration", "path", path)
			a.Reload(nc)
		}
	}
}

// NewLogger builds the slog logger the config asks for.
func NewLogger(c *config.Config, w io.Writer) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(c.Log.Level))
	opts := &slog.HandlerOptions{Level: lv}
	if c.Log.Format == config.LogJSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// printConfigError prints why the config at path was refused: every problem
// on a line of its own, under the file's name.
func printConfigError(w io.Writer, path string, err error) {
	var es config.Errors
	if errors.As(err, &es) {
		fmt.Fprintf(w, "invalid configuration %s (%d %s):\n", path, len(es), plural(len(es), "problem", "problems"))
		for _, e := range es {
			fmt.Fprintf(w, "  %s\n", e)
		}
		return
	}
	fmt.Fprintf(w, "invalid configuration: %v\n", err)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// watchNft starts the nftables netlink monitor when the backend may be
// native nftables; nil otherwise or when it cannot start (the 1 s check
// remains).
func watchNft(ctx context.Context, cfg *config.Config, log *slog.Logger) <-chan struct{} {
	if cfg.Firewall.Mode == config.FirewallOff || (cfg.Firewall.Backend != config.BackendAuto && cfg.Firewall.Backend != config.BackendNftables) {
		return nil
	}
	ch, err := firewall.WatchNft(ctx, log.With("component", "firewall"))
	if err != nil {
		log.Warn("nftables monitor unavailable; firewall drift is found by the 1 s check", "err", err)
		return nil
	}
	return ch
}

func firewallConfig(c *config.Config) firewall.Config {
	return firewall.Config{Mode: c.Firewall.Mode, Backend: c.Firewall.Backend, Interfaces: c.LANInterfaces,
		Subnets: c.ServicePrefixes(), Protocols: c.Firewall.Protocols}
}

func routesConfig(c *config.Config) routes.Config {
	return routes.Config{Table: c.Routes.Table, Metric: c.Routes.Metric, Protocol: c.Routes.Protocol,
		NexthopGroups: routes.Mode(c.Routes.NexthopGroups)}
}

func stateFile(c *config.Config) string { return filepath.Join(c.StateDir, "sysctl-redirects.json") }
