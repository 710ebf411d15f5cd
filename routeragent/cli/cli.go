// Package cli is the command line of bgplb-routeragent: one cobra command
// per subcommand, each accepting only the flags it uses, with help, shell
// completion and man pages (see gendoc). cmd/bgplb-routeragent calls Main;
// the daemon itself is package agent.
package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/bgplb/bgplb/internal/version"
	"github.com/bgplb/bgplb/routeragent/config"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1 // runtime failure
	ExitUsage   = 2 // bad config or usage
)

// Name is the program's name, in help, completion scripts and man pages.
const Name = "bgplb-routeragent"

// Main is the whole command line; cmd/bgplb-routeragent calls it.
func Main(args []string, stdout, stderr io.Writer) int {
	return execute(NewCommand(stdout, stderr), args, stderr)
}

// NewCommand returns the command tree with the real actions (gendoc renders
// its man pages and completion script from it).
func NewCommand(stdout, stderr io.Writer) *cobra.Command {
	return newCommand(stdout, stderr, realActions())
}

// execute runs the tree on args and turns the outcome into an exit code.
// Commands print their own messages and return an exitStatus; any other
// error comes from cobra (unknown command or flag, bad flag value, stray
// argument) and is a usage error.
func execute(root *cobra.Command, args []string, stderr io.Writer) int {
	root.SetArgs(longFlags(args, flagNames(root)))
	cmd, err := root.ExecuteC()
	if err == nil {
		return ExitOK
	}
	var st exitStatus
	if errors.As(err, &st) {
		return int(st)
	}
	fmt.Fprintf(stderr, "%s: %v\nRun '%s --help' for usage.\n", Name, err, cmd.CommandPath())
	return ExitUsage
}

// exitStatus is what a command returns once it has said why it failed.
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func exit(code int) error {
	if code == ExitOK {
		return nil
	}
	return exitStatus(code)
}

// options holds every flag's value; each command registers only the flags
// it uses, so the others keep their zero value.
type options struct {
	config   string
	socket   string
	logLevel logLevel
	json     bool
	all      bool
	force    bool
	// trace's
	target  string
	client  string
	timeout time.Duration
}

// action is what a command does once its flags are parsed.
type action func(o options, stdout, stderr io.Writer) int

// actions maps each command to its action. The tests replace them to check
// the parsing alone.
type actions struct {
	run, status, doctor, flush, uninstall, checkConfig, poke, rtProtos, version, trace action
}

func realActions() actions {
	return actions{
		run:         runAgent,
		status:      showStatus,
		doctor:      diagnose,
		flush:       func(o options, stdout, stderr io.Writer) int { return flush(o, false, stdout, stderr) },
		uninstall:   func(o options, stdout, stderr io.Writer) int { return flush(o, true, stdout, stderr) },
		checkConfig: checkConfig,
		poke:        poke,
		rtProtos:    rtProtos,
		version:     printVersion,
		trace:       runTrace,
	}
}

// flag registers one flag of o on a command. (The completion hints' errors
// only say that the flag just registered does not exist: ignored.)
type flag func(c *cobra.Command, o *options)

func configFlag(c *cobra.Command, o *options) {
	c.Flags().StringVar(&o.config, "config", config.DefaultPath, "configuration file")
	_ = c.MarkFlagFilename("config", "yaml", "yml")
}

func socketFlag(c *cobra.Command, o *options) {
	c.Flags().StringVar(&o.socket, "socket", "", "status socket of the running agent (default: statusSocket from the config)")
	_ = c.MarkFlagFilename("socket")
}

func jsonFlag(c *cobra.Command, o *options) {
	c.Flags().BoolVar(&o.json, "json", false, "print JSON")
}

func allFlag(c *cobra.Command, o *options) {
	c.Flags().BoolVar(&o.all, "all", false, "list every installed route (default: the first 50)")
}

func forceFlag(c *cobra.Command, o *options) {
	c.Flags().BoolVar(&o.force, "force", false, "act even if the agent is running")
}

func logLevelFlag(c *cobra.Command, o *options) {
	c.Flags().Var(&o.logLevel, "log-level", "log level, overrides the config's log.level: "+strings.Join(logLevels, ", "))
	_ = c.RegisterFlagCompletionFunc("log-level", cobra.FixedCompletions(logLevels, cobra.ShellCompDirectiveNoFileComp))
}

// logLevels are the values of log.level and --log-level.
var logLevels = []string{string(config.LogDebug), string(config.LogInfo), string(config.LogWarn), string(config.LogError)}

// logLevel is --log-level: empty (keep the config's) or one of logLevels.
type logLevel string

var _ pflag.Value = (*logLevel)(nil)

func (l *logLevel) String() string { return string(*l) }
func (l *logLevel) Type() string   { return "level" }
func (l *logLevel) Set(s string) error {
	for _, v := range logLevels {
		if s == v {
			*l = logLevel(s)
			return nil
		}
	}
	return fmt.Errorf("%q is not one of %s", s, strings.Join(logLevels, ", "))
}

const rootLong = `bgplb-routeragent runs on the Linux router: it accepts BGP sessions from
the bgplb speakers of a Kubernetes cluster, installs the service routes they
announce in the kernel (ECMP when several nodes announce one), turns off ICMP
redirects on the LAN and keeps scoped conntrack-INVALID exemptions in the
firewall that is in force (with firewall.mode verify, none: it only counts
INVALID service packets and reports flows whose reply bypassed the router).

Without a command it runs the agent, as "run" does.

Exit status: 0 ok, 1 runtime failure, 2 bad configuration or usage.`

func newCommand(stdout, stderr io.Writer, do actions) *cobra.Command {
	root := command(&cobra.Command{
		Use:   Name,
		Short: "BGP routes for Kubernetes LoadBalancer services on the router",
		Long:  rootLong,
		Example: `  bgplb-routeragent check-config --config /etc/bgplb/routeragent.yaml
  systemctl start bgplb-routeragent
  bgplb-routeragent status
  bgplb-routeragent doctor`,
	}, do.run, configFlag, logLevelFlag)
	// Without Args, cobra reports the root's stray arguments as unknown
	// commands, with suggestions.
	root.Args = nil
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SilenceErrors = true // execute prints them
	root.SilenceUsage = true
	root.DisableAutoGenTag = true // reproducible man pages
	// --version as in the cluster programs; the same line as `version`.
	root.Version = version.Version
	root.SetVersionTemplate(Name + " {{.Version}}\n")
	root.AddCommand(
		command(&cobra.Command{
			Use:   "run",
			Short: "Run the agent (the default command)",
			Long: `Run the agent until SIGTERM or SIGINT, which close the BGP sessions and leave
routes and firewall rules in place. SIGHUP re-reads the configuration (a bad
one is refused and the running state kept). Under systemd (Type=notify) it
reports READY once BGP listens and the first pass ran.`,
		}, do.run, configFlag, logLevelFlag),
		command(&cobra.Command{
			Use:   "status",
			Short: "Show the running agent's state",
			Long: `Show the running agent's peers, prefixes accepted and rejected with reasons,
routes desired and installed, firewall rules with their counters and
send_redirects. Every route that is not simply installed is listed, and the
first 50 installed ones (--all: every route).`,
		}, do.status, jsonFlag, allFlag, configFlag, socketFlag),
		command(&cobra.Command{
			Use:   "doctor",
			Short: "Diagnose the router",
			Long: `Check ip_forward, the effective send_redirects, rp_filter, where the
conntrack-INVALID drop sits relative to our jump (both iptables backends),
the INVALID counter, native nftables drops, routes desired vs in the FIB and
the BGP sessions, each finding with a fix. Exits 1 when a check fails.`,
		}, do.doctor, jsonFlag, configFlag, socketFlag),
		traceCommand(do.trace),
		command(&cobra.Command{
			Use:   "flush",
			Short: "Remove our kernel routes",
			Long: `Remove the routes of our protocol (any metric) from the configured table.
Refuses while the agent runs, which would put them back (--force: do it
anyway). Works with the defaults when the configuration is gone or broken.`,
		}, do.flush, configFlag, forceFlag),
		command(&cobra.Command{
			Use:   "uninstall",
			Short: "Flush, remove our firewall rules, restore send_redirects",
			Long: `Remove our routes (as flush does), our firewall chains and jumps, and
restore the send_redirects values the agent changed. The package's prerm
runs it. Refuses while the agent runs (--force: do it anyway). Works with the
defaults when the configuration is gone or broken.`,
		}, do.uninstall, configFlag, forceFlag),
		command(&cobra.Command{
			Use:   "check-config",
			Short: "Validate a configuration",
			Long:  `Validate a configuration file; exits 2 and lists every error when it is invalid.`,
		}, do.checkConfig, configFlag),
		command(&cobra.Command{
			Use:   "poke",
			Short: "Make the running agent check its firewall rules and routes now",
			Long: `Make the running agent check its firewall rules and routes now. ferm's post
hook (/etc/ferm/ferm.d/bgplb.conf) runs it after every ferm reload, which
deletes all chains. Exits 1 when the agent does not answer.`,
		}, do.poke, configFlag, socketFlag),
		command(&cobra.Command{
			Use:   "rt-protos",
			Short: "Print the iproute2 rt_protos.d entry naming our route protocol",
		}, do.rtProtos, configFlag),
		command(&cobra.Command{
			Use:   "version",
			Short: "Print the version",
		}, do.version),
	)
	root.SetHelpCommand(helpCommand())
	addCompletion(root)
	return root
}

func noArgs(c *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("unexpected argument %q", args[0])
	}
	return nil
}

// helpCommand is cobra's "help [command]", except that an unknown command
// is a usage error (cobra's prints the usage and exits 0).
func helpCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "help [command]",
		Short: "Help about any command",
		Long:  "Help prints the help of any command.",
		ValidArgsFunction: func(c *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			cmd, _, err := c.Root().Find(args)
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var out []cobra.Completion
			for _, s := range cmd.Commands() {
				if s.IsAvailableCommand() && strings.HasPrefix(s.Name(), toComplete) {
					out = append(out, cobra.CompletionWithDesc(s.Name(), s.Short))
				}
			}
			return out, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(c *cobra.Command, args []string) error {
			cmd, rest, err := c.Root().Find(args)
			if err != nil {
				return err
			}
			if len(rest) > 0 {
				return fmt.Errorf("unknown command %q for %q", rest[0], cmd.CommandPath())
			}
			cmd.InitDefaultHelpFlag()
			return cmd.Help()
		},
	}
}

// command fills in what every command shares: no positional arguments, its
// flags, and its action.
func command(c *cobra.Command, do action, flags ...flag) *cobra.Command {
	var o options
	for _, f := range flags {
		f(c, &o)
	}
	c.Args = noArgs
	c.ValidArgsFunction = cobra.NoFileCompletions
	c.RunE = func(c *cobra.Command, _ []string) error {
		return exit(do(o, c.OutOrStdout(), c.ErrOrStderr()))
	}
	return c
}

// addCompletion adds cobra's "completion" command for bash, zsh and fish
// (a Debian router has no use for PowerShell). Cobra's prints its help and
// exits 0 for an unknown shell; here that is a usage error.
func addCompletion(root *cobra.Command) {
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() != "completion" {
			continue
		}
		for _, sh := range c.Commands() {
			if sh.Name() == "powershell" {
				c.RemoveCommand(sh)
			}
		}
		c.Args = noArgs
		c.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
	}
}

// flagNames lists the long flag names of the tree.
func flagNames(root *cobra.Command) map[string]bool {
	names := map[string]bool{"help": true}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.Flags().VisitAll(func(f *pflag.Flag) { names[f.Name] = true })
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
	return names
}

// longFlags rewrites "-config" into "--config" for the known long flags: the
// command line before cobra (Go's flag package) accepted one dash, and unit
// files written for it must keep working. Everything after "--" and
// completion requests are left alone.
func longFlags(args []string, known map[string]bool) []string {
	if len(args) > 0 && strings.HasPrefix(args[0], "__complete") {
		return args
	}
	out := make([]string, len(args))
	copy(out, args)
	for i, a := range out {
		if a == "--" {
			break
		}
		if len(a) < 3 || a[0] != '-' || a[1] == '-' {
			continue
		}
		name, _, _ := strings.Cut(a[1:], "=")
		if known[name] {
			out[i] = "-" + a
		}
	}
	return out
}
