package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/bgplb/bgplb/internal/version"
	"github.com/bgplb/bgplb/routeragent/agent"
	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/doctor"
	"github.com/bgplb/bgplb/routeragent/routes"
)

// checkConfig is `check-config`: the config must load, and its security
// section (what the config alone shows; doctor adds the live interfaces)
// must have no error. Warnings are printed but exit 0.
func checkConfig(o options, stdout, stderr io.Writer) int {
	cfg, err := config.Load(o.config)
	if err != nil {
		printConfigError(stderr, o.config, err)
		return ExitUsage
	}
	in := doctor.SecurityInputFor(cfg)
	in.PasswordFiles = doctor.PasswordFiles(cfg)
	findings := doctor.Security(in)
	printFindings(stdout, findings)
	printBFDConfig(stdout, cfg)
	if n := countStatus(findings, doctor.Fail); n > 0 {
		fmt.Fprintf(stderr, "%s: %d security %s (see above)\n", o.config, n, plural(n, "error", "errors"))
		return ExitUsage
	}
	fmt.Fprintf(stdout, "%s: ok\n", o.config)
	return ExitOK
}

func countStatus(fs []doctor.Finding, status string) int {
	n := 0
	for _, f := range fs {
		if f.Status == status {
			n++
		}
	}
	return n
}

// poke is `poke`, ferm's post hook.
func poke(o options, _, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := agent.Poke(ctx, socketPath(o.config, o.socket)); err != nil {
		fmt.Fprintf(stderr, "poke: %v\n", err)
		return ExitFailure
	}
	return ExitOK
}

// rtProtos is `rt-protos`: the protocol of the config when it loads, else
// the default.
func rtProtos(o options, stdout, _ io.Writer) int {
	c := config.Config{}
	c.SetDefaults()
	if lc, err := config.Load(o.config); err == nil {
		c = *lc
	}
	fmt.Fprint(stdout, routes.RTProtosConf(c.Routes.Protocol))
	return ExitOK
}

// printVersion is `version`.
func printVersion(_ options, stdout, _ io.Writer) int {
	fmt.Fprintf(stdout, "%s %s\n", Name, version.Version)
	return ExitOK
}

// socketPath is --socket, else the config's statusSocket, else the default
// one.
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

// loadForMaintenance loads the config for flush/uninstall/doctor; those
// must work even when the config is gone or broken (package removal), with
// defaults.
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
