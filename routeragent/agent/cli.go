package agent

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/vishvananda/netlink"

	"github.com/bgplb/bgplb/internal/version"
	"github.com/bgplb/bgplb/routeragent/bgp"
	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/firewall"
	"github.com/bgplb/bgplb/routeragent/routes"
	"github.com/bgplb/bgplb/routeragent/sysctl"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1 // runtime failure
	ExitUsage   = 2 // bad config or usage
)

const usage = `usage: bgplb-routeragent [command] [flags]

commands:
  run            run the agent (default)          --config FILE
  status         show the running agent's state    [--json] [--all] [--config FILE | --socket PATH]
  doctor         diagnose the router               [--json] [--config FILE]
  flush          remove our kernel routes          [--config FILE] [--force]
  uninstall      flush, remove our firewall rules, restore sysctls  [--config FILE] [--force]
  check-config   validate a configuration          --config FILE
  poke           make the running agent check its firewall rules and routes now (ferm hook)
                 [--config FILE | --socket PATH]
  rt-protos      print the iproute2 rt_protos.d entry naming our route protocol
  version        print the version
`

// Main is the whole command line; cmd/bgplb-routeragent calls it.
func Main(args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", config.DefaultPath, "configuration file")
	asJSON := fs.Bool("json", false, "print JSON")
	socket := fs.String("socket", "", "status socket (default: statusSocket from the config)")
	force := fs.Bool("force", false, "act even if the agent is running")
	all := fs.Bool("all", false, "status: list every installed route")
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	if err := fs.Parse(args); err != nil {
		return ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "unexpected arguments: %v\n%s", fs.Args(), usage)
		return ExitUsage
	}
	switch cmd {
	case "run":
		return runCmd(*cfgPath, stderr)
	case "status":
		return statusCmd(*cfgPath, *socket, *asJSON, *all, stdout, stderr)
	case "doctor":
		return doctorCmd(*cfgPath, *socket, *asJSON, stdout, stderr)
	case "flush":
		return flushCmd(*cfgPath, *force, false, stdout, stderr)
	case "uninstall":
		return flushCmd(*cfgPath, *force, true, stdout, stderr)
	case "check-config":
		if _, err := config.Load(*cfgPath); err != nil {
			printConfigError(stderr, err)
			return ExitUsage
		}
		fmt.Fprintf(stdout, "%s: ok\n", *cfgPath)
		return ExitOK
	case "poke":
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := Poke(ctx, socketPath(*cfgPath, *socket)); err != nil {
			fmt.Fprintf(stderr, "poke: %v\n", err)
			return ExitFailure
		}
		return ExitOK
	case "rt-protos":
		c := config.Config{}
		c.SetDefaults()
		if lc, err := config.Load(*cfgPath); err == nil {
			c = *lc
		}
		fmt.Fprint(stdout, routes.RTProtosConf(c.Routes.Protocol))
		return ExitOK
	case "version":
		fmt.Fprintf(stdout, "bgplb-routeragent %s\n", version.Version)
		return ExitOK
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return ExitOK
	}
	fmt.Fprintf(stderr, "unknown command %q\n%s", cmd, usage)
	return ExitUsage
}

func printConfigError(w io.Writer, err error) {
	var es config.Errors
	if errors.As(err, &es) {
		fmt.Fprintln(w, "invalid configuration:")
		for _, e := range es {
			fmt.Fprintf(w, "  %s\n", e)
		}
		return
	}
	fmt.Fprintf(w, "invalid configuration: %v\n", err)
}

// NewLogger builds the slog logger the config asks for.
func NewLogger(c *config.Config, w io.Writer) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(c.Log.Level))
	opts := &slog.HandlerOptions{Level: lv}
	if c.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func firewallConfig(c *config.Config) firewall.Config {
	return firewall.Config{Mode: c.Firewall.Mode, Backend: c.Firewall.Backend, Interfaces: c.LANInterfaces,
		Subnets: c.ServicePrefixes(), Protocols: c.Firewall.Protocols}
}

func routesConfig(c *config.Config) routes.Config {
	return routes.Config{Table: c.Routes.Table, Metric: c.Routes.Metric, Protocol: c.Routes.Protocol}
}

func runCmd(path string, stderr io.Writer) int {
	cfg, err := config.Load(path)
	if err != nil {
		printConfigError(stderr, err)
		return ExitUsage
	}
	log := NewLogger(cfg, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	h, err := netlink.NewHandle()
	if err != nil {
		log.Error("open netlink", "err", err)
		return ExitFailure
	}
	defer h.Close()
	newFirewall := func(c *config.Config) (Firewall, error) {
		if c.Firewall.Mode == "off" {
			return nil, nil
		}
		m, err := firewall.New(firewallConfig(c), log)
		if err != nil {
			return nil, err
		}
		return m, nil
	}
	fw, err := newFirewall(cfg)
	if err != nil {
		log.Error("firewall", "err", err)
		return ExitUsage
	}
	deps := Deps{
		Speaker:   bgp.New(BGPConfig(cfg), log.With("component", "bgp")),
		Routes:    routes.New(h, routesConfig(cfg), log.With("component", "routes")),
		Firewall:  fw,
		Redirects: sysctl.Redirects{StateFile: stateFile(cfg)},
		LAN: func(ifaces []string) ([]netip.Prefix, []netip.Addr, []string, error) {
			return routes.LANAddresses(h, ifaces)
		},
		LinkEvents:  routes.WatchLinks(ctx, log),
		NewFirewall: newFirewall,
		Notify: func(state string) {
			if _, err := daemon.SdNotify(false, state); err != nil {
				log.Debug("sd_notify", "err", err)
			}
		},
	}
	a := New(cfg, deps, log)

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
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
	}()
	go func() {
		if err := a.ServeStatus(ctx, cfg.StatusSocket); err != nil {
			log.Error("status socket", "err", err)
		}
	}()
	if cfg.Metrics.Address != "off" {
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

func socketPath(cfgPath, socket string) string {
	if socket != "" {
		return socket
	}
	if c, err := config.Load(cfgPath); err == nil {
		return c.StatusSocket
	}
	c := config.Config{}
	c.SetDefaults()
	return c.StatusSocket
}

// maxInstalledShown is how many installed routes `status` lists without --all.
const maxInstalledShown = 50

func statusCmd(cfgPath, socket string, asJSON, all bool, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, raw, err := FetchStatus(ctx, socketPath(cfgPath, socket))
	if err != nil {
		fmt.Fprintf(stderr, "status: %v\n", err)
		return ExitFailure
	}
	if asJSON {
		var out any
		_ = json.Unmarshal(raw, &out)
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
		return ExitOK
	}
	PrintStatus(stdout, s, all)
	return ExitOK
}

// PrintStatus writes the human view of a status.
func PrintStatus(w io.Writer, s Status, all bool) {
	c := s.Config
	fmt.Fprintf(w, "bgplb-routeragent %s, up %s; AS %d, router ID %s, port %d\n", s.Version,
		time.Since(s.Started).Round(time.Second), c.ASN, c.RouterID, c.ListenPort)
	fmt.Fprintf(w, "service subnets %s; LAN %s (connected %v)\n", strings.Join(c.ServiceSubnets, ", "),
		strings.Join(c.LANInterfaces, ", "), s.LAN.Connected)
	if len(s.LAN.Missing) > 0 {
		fmt.Fprintf(w, "WARNING: LAN interfaces missing: %s\n", strings.Join(s.LAN.Missing, ", "))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "PEER\tASN\tSTATE\tSINCE\tEOR\tRECEIVED\tACCEPTED\tREJECTED\n")
	for _, p := range s.Peers {
		since := "-"
		if !p.Since.IsZero() {
			since = time.Since(p.Since).Round(time.Second).String()
		}
		rej := reasons(p.Rejected)
		if p.MaxPrefixTeardowns > 0 {
			rej += fmt.Sprintf(" (closed %dx over maxPrefixes)", p.MaxPrefixTeardowns)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%v\t%d\t%d\t%s\n", p.Address, p.ASN, p.State, since, p.EndOfRIB, p.Received, p.Accepted, rej)
	}
	if len(s.Peers) == 0 {
		fmt.Fprintf(tw, "(no peers yet)\n")
	}
	tw.Flush()
	fmt.Fprintf(w, "\nprefixes: %d accepted, %d rejected %s\n", s.Prefix.Accepted, s.Prefix.Rejected, reasons(s.Prefix.ByReason))
	if len(s.Prefix.RejectedPaths) > 0 {
		tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "  REJECTED\tPEER\tNEXT HOP\tREASON\n")
		for i, r := range s.Prefix.RejectedPaths {
			if i == 20 {
				fmt.Fprintf(tw, "  ... %d more (status --json)\t\t\t\n", len(s.Prefix.RejectedPaths)-20)
				break
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", r.Prefix, r.Peer, r.NextHop, r.Reason)
		}
		tw.Flush()
	}
	widths := make([]int, 0, len(s.Routes.ECMPWidth))
	for k := range s.Routes.ECMPWidth {
		widths = append(widths, k)
	}
	sort.Ints(widths)
	var ws []string
	for _, k := range widths {
		ws = append(ws, fmt.Sprintf("%d next hop(s): %d", k, s.Routes.ECMPWidth[k]))
	}
	fmt.Fprintf(w, "\nroutes (table %d, metric %d, proto %d): %d desired, %d installed", c.Table, c.Metric, c.Protocol, s.Routes.Desired, s.Routes.Installed)
	if len(ws) > 0 {
		fmt.Fprintf(w, " [%s]", strings.Join(ws, ", "))
	}
	if s.Routes.Stale > 0 {
		fmt.Fprintf(w, ", %d stale next hops kept awaiting End-of-RIB", s.Routes.Stale)
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  PREFIX\tSTATE\tDESIRED\tINSTALLED\n")
	shown, hidden := 0, 0
	for _, r := range s.Routes.List {
		// Every route that is not simply installed, and the first
		// installed ones: a router with 10,000 services needs --all.
		if r.State == "installed" && shown >= maxInstalledShown && !all {
			hidden++
			continue
		}
		if r.State == "installed" {
			shown++
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", r.Prefix, r.State, addrs(r.Desired), addrs(r.Installed))
	}
	if hidden > 0 {
		fmt.Fprintf(tw, "  ... %d more installed (status --all, or --json)\t\t\t\n", hidden)
	}
	tw.Flush()
	for _, cf := range s.Routes.Conflicts {
		fmt.Fprintf(w, "  CONFLICT %s: held by a route of protocol %d, left alone: %s\n", cf.Prefix, cf.Protocol, cf.Route)
	}
	for _, e := range s.Routes.Errors {
		fmt.Fprintf(w, "  ERROR %s: %s\n", e.Prefix, e.Err)
	}
	fmt.Fprintln(w)
	if f := s.Firewall; f != nil {
		fmt.Fprintf(w, "firewall: mode %s, backend %q, %s/%s, %d rules, %d repairs", f.Mode, f.Backend, f.Table, f.Chain, len(f.Rules), f.Repairs)
		if f.Reason != "" {
			fmt.Fprintf(w, " (%s)", f.Reason)
		}
		fmt.Fprintln(w)
		if f.LastError != "" {
			fmt.Fprintf(w, "  ERROR %s\n", f.LastError)
		}
		tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		if len(f.Rules) > 0 {
			fmt.Fprintf(tw, "  INTERFACE\tSUBNET\tPROTO\tBACKEND\tPACKETS\tBYTES\n")
		}
		for _, r := range f.Rules {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d\t%d\n", r.Interface, r.Subnet, r.Protocol, r.Backend, r.Packets, r.Bytes)
		}
		tw.Flush()
	} else {
		fmt.Fprintf(w, "firewall: mode %s\n", c.FirewallMode)
	}
	if r := s.Sysctl; r != nil {
		names := make([]string, 0, len(r.Interfaces))
		for n := range r.Interfaces {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintf(w, "send_redirects: all=%d default=%d", r.All, r.Default)
		for _, n := range names {
			if r.Interfaces[n].Missing {
				fmt.Fprintf(w, " %s=missing", n)
				continue
			}
			fmt.Fprintf(w, " %s=%d (effective %d)", n, r.Interfaces[n].Value, r.Interfaces[n].Effective)
		}
		fmt.Fprintln(w)
	}
	if s.SysctlError != "" {
		fmt.Fprintf(w, "  ERROR sysctl: %s\n", s.SysctlError)
	}
}

func reasons[K ~string](m map[K]int) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, string(k))
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s: %d", k, m[K(k)])
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

func addrs(as []netip.Addr) string {
	if len(as) == 0 {
		return "-"
	}
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

// loadForMaintenance loads the config for flush/uninstall; those must work
// even when the config is gone or broken (package removal), with defaults.
func loadForMaintenance(path string, stderr io.Writer) *config.Config {
	c, err := config.Load(path)
	if err == nil {
		return c
	}
	fmt.Fprintf(stderr, "warning: %v; using defaults\n", err)
	c = &config.Config{}
	c.SetDefaults()
	return c
}

func flushCmd(cfgPath string, force, uninstall bool, stdout, stderr io.Writer) int {
	cfg := loadForMaintenance(cfgPath, stderr)
	if !force {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, _, err := FetchStatus(ctx, cfg.StatusSocket)
		cancel()
		if err == nil {
			fmt.Fprintln(stderr, "the agent is running and would put its routes back; stop it first (or use --force)")
			return ExitFailure
		}
	}
	h, err := netlink.NewHandle()
	if err != nil {
		fmt.Fprintf(stderr, "netlink: %v\n", err)
		return ExitFailure
	}
	defer h.Close()
	code := ExitOK
	n, err := routes.New(h, routesConfig(cfg), slog.New(slog.DiscardHandler)).Flush()
	fmt.Fprintf(stdout, "removed %d routes of protocol %d from table %d\n", n, cfg.Routes.Protocol, cfg.Routes.Table)
	if err != nil {
		fmt.Fprintf(stderr, "flush: %v\n", err)
		code = ExitFailure
	}
	if !uninstall {
		return code
	}
	fc := firewallConfig(cfg)
	fc.Mode = "exempt" // uninstall removes our rules whatever the mode is now
	if m, err := firewall.New(fc, slog.New(slog.DiscardHandler)); err != nil {
		fmt.Fprintf(stderr, "firewall: %v\n", err)
		code = ExitFailure
	} else if err := m.Uninstall(context.Background()); err != nil {
		fmt.Fprintf(stderr, "firewall uninstall: %v\n", err)
		code = ExitFailure
	} else {
		fmt.Fprintln(stdout, "removed our firewall chain and jump")
	}
	if err := (sysctl.Redirects{StateFile: stateFile(cfg)}).Restore(); err != nil {
		fmt.Fprintf(stderr, "sysctl restore: %v\n", err)
		code = ExitFailure
	} else {
		fmt.Fprintln(stdout, "restored send_redirects")
	}
	return code
}

func stateFile(c *config.Config) string { return filepath.Join(c.StateDir, "sysctl-redirects.json") }
