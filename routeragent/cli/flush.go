package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/bgplb/bgplb/routeragent/agent"
	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/firewall"
	"github.com/bgplb/bgplb/routeragent/pinning"
	"github.com/bgplb/bgplb/routeragent/routes"
	"github.com/bgplb/bgplb/routeragent/sysctl"
)

// flush is `flush` and, with uninstall, `uninstall`: remove our routes and
// then our firewall rules and the send_redirects values we changed. Each
// step runs even when an earlier one failed; the exit code is 1 if any did.
func flush(o options, uninstall bool, stdout, stderr io.Writer) int {
	cfg := loadForMaintenance(o.config, stderr)
	if !o.force && agentAnswers(cfg.StatusSocket) {
		fmt.Fprintln(stderr, "the agent is running and would put its routes back; stop it first (or use --force)")
		return ExitFailure
	}
	code := max(flushRoutes(cfg, stdout, stderr), removePins(cfg, stdout, stderr))
	if !uninstall {
		return code
	}
	fw := removeFirewall(cfg, stdout, stderr)
	rd := restoreRedirects(cfg, stdout, stderr)
	return max(code, fw, rd)
}

func agentAnswers(socket string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, _, err := agent.FetchStatus(ctx, socket)
	return err == nil
}

// removePins removes the connection pins (routes.pinConnections) with the
// routes they lead to.
func removePins(cfg *config.Config, stdout, stderr io.Writer) int {
	k, err := pinning.NewNetlink(cfg.Routes.Protocol)
	if err != nil {
		fmt.Fprintf(stderr, "connection pins: %v\n", err)
		return ExitFailure
	}
	defer k.Close()
	if err := k.Remove(); err != nil {
		fmt.Fprintf(stderr, "remove connection pins: %v\n", err)
		return ExitFailure
	}
	fmt.Fprintf(stdout, "removed the connection pins (nftables table inet %s, fib rules of priority %d, their tables)\n", pinning.NftTable, pinning.RulePriority)
	return ExitOK
}

func flushRoutes(cfg *config.Config, stdout, stderr io.Writer) int {
	h, err := netlink.NewHandle()
	if err != nil {
		fmt.Fprintf(stderr, "netlink: %v\n", err)
		return ExitFailure
	}
	defer h.Close()
	// Our nexthop objects (routes.nexthopGroups) go with our routes.
	r := routes.New(h, routesConfig(cfg), slog.New(slog.DiscardHandler), routes.WithNetNS(netns.None()))
	defer r.Close()
	n, err := r.Flush()
	fmt.Fprintf(stdout, "removed %d routes of protocol %d from table %d, and their nexthop objects\n", n, cfg.Routes.Protocol, cfg.Routes.Table)
	if err != nil {
		fmt.Fprintf(stderr, "flush: %v\n", err)
		return ExitFailure
	}
	return ExitOK
}

func removeFirewall(cfg *config.Config, stdout, stderr io.Writer) int {
	fc := firewallConfig(cfg)
	fc.Mode = config.FirewallExempt // uninstall removes our rules whatever the mode is now
	m, err := firewall.New(fc, slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Fprintf(stderr, "firewall: %v\n", err)
		return ExitFailure
	}
	if err := m.Uninstall(context.Background()); err != nil {
		fmt.Fprintf(stderr, "firewall uninstall: %v\n", err)
		return ExitFailure
	}
	fmt.Fprintln(stdout, "removed our firewall chain and jump")
	return ExitOK
}

func restoreRedirects(cfg *config.Config, stdout, stderr io.Writer) int {
	if err := (sysctl.Redirects{StateFile: stateFile(cfg)}).Restore(); err != nil {
		fmt.Fprintf(stderr, "sysctl restore: %v\n", err)
		return ExitFailure
	}
	fmt.Fprintln(stdout, "restored send_redirects")
	return ExitOK
}
