package cli

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/bgplb/bgplb/routeragent/config"
)

// call is what a fake action saw.
type call struct {
	cmd  string
	opts options
}

// fakeActions records the command and its parsed options, and returns code.
func fakeActions(got *[]call, code int) actions {
	rec := func(name string) action {
		return func(o options, _, _ io.Writer) int {
			*got = append(*got, call{name, o})
			return code
		}
	}
	return actions{run: rec("run"), status: rec("status"), doctor: rec("doctor"), flush: rec("flush"),
		uninstall: rec("uninstall"), checkConfig: rec("check-config"), poke: rec("poke"),
		rtProtos: rec("rt-protos"), version: rec("version"), trace: rec("trace")}
}

// runFake runs the command line on args with fake actions.
func runFake(args []string, code int) (calls []call, exit int, stdout, stderr string) {
	var out, errb bytes.Buffer
	exit = execute(newCommand(&out, &errb, fakeActions(&calls, code)), args, &errb)
	return calls, exit, out.String(), errb.String()
}

const def = config.DefaultPath

// Each command accepts exactly the flags it uses.
func TestCommandFlags(t *testing.T) {
	want := map[string][]string{
		"":             {"config", "log-level"},
		"run":          {"config", "log-level"},
		"status":       {"all", "config", "json", "socket"},
		"doctor":       {"config", "json", "socket"},
		"flush":        {"config", "force"},
		"uninstall":    {"config", "force"},
		"check-config": {"config"},
		"poke":         {"config", "socket"},
		"rt-protos":    {"config"},
		"trace":        {"client", "config", "json", "socket", "timeout"},
		"version":      nil,
		"completion":   nil,
	}
	root := NewCommand(io.Discard, io.Discard)
	got := map[string][]string{}
	for _, c := range append([]*cobra.Command{root}, root.Commands()...) {
		name := c.Name()
		if c == root {
			name = ""
		}
		var flags []string
		c.LocalFlags().VisitAll(func(f *pflag.Flag) { flags = append(flags, f.Name) })
		slices.Sort(flags)
		got[name] = flags
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("flags per command (-want +got):\n%s", diff)
	}
}

// The arguments reach the right command with the right options; usage
// errors exit 2 naming the culprit, and help exits 0.
func TestParse(t *testing.T) {
	for _, tc := range []struct {
		args       []string
		want       *call // nil: no action runs
		code       int
		stdout     string // substring
		stderr     string // substring
		noStderr   bool
		wantStdout bool
	}{
		{args: nil, want: &call{"run", options{config: def}}},
		{args: []string{"--config", "c.yaml"}, want: &call{"run", options{config: "c.yaml"}}},
		{args: []string{"--config", "c.yaml", "--log-level", "debug"}, want: &call{"run", options{config: "c.yaml", logLevel: "debug"}}},
		{args: []string{"run", "--config", "c.yaml"}, want: &call{"run", options{config: "c.yaml"}}},
		{args: []string{"run", "--log-level=error"}, want: &call{"run", options{config: def, logLevel: "error"}}},
		// Go's flag package took one dash: unit files may say -config.
		{args: []string{"-config", "c.yaml"}, want: &call{"run", options{config: "c.yaml"}}},
		{args: []string{"run", "-config=c.yaml"}, want: &call{"run", options{config: "c.yaml"}}},
		{args: []string{"status", "-json", "-all"}, want: &call{"status", options{config: def, json: true, all: true}}},
		{args: []string{"status"}, want: &call{"status", options{config: def}}},
		{args: []string{"status", "--json", "--all", "--socket", "s.sock"}, want: &call{"status", options{config: def, socket: "s.sock", json: true, all: true}}},
		{args: []string{"status", "--json=false", "--config", "c.yaml"}, want: &call{"status", options{config: "c.yaml"}}},
		{args: []string{"--config", "c.yaml", "status"}, want: &call{"status", options{config: "c.yaml"}}},
		{args: []string{"doctor", "--json", "--socket", "s.sock", "--config", "c.yaml"}, want: &call{"doctor", options{config: "c.yaml", socket: "s.sock", json: true}}},
		{args: []string{"flush"}, want: &call{"flush", options{config: def}}},
		{args: []string{"flush", "--force", "--config", "c.yaml"}, want: &call{"flush", options{config: "c.yaml", force: true}}},
		{args: []string{"uninstall", "--force"}, want: &call{"uninstall", options{config: def, force: true}}},
		{args: []string{"check-config", "--config", "c.yaml"}, want: &call{"check-config", options{config: "c.yaml"}}},
		{args: []string{"poke"}, want: &call{"poke", options{config: def}}},
		{args: []string{"poke", "--socket", "s.sock"}, want: &call{"poke", options{config: def, socket: "s.sock"}}},
		{args: []string{"rt-protos", "--config", "c.yaml"}, want: &call{"rt-protos", options{config: "c.yaml"}}},
		{args: []string{"version"}, want: &call{"version", options{}}},

		// Usage errors: exit 2, the culprit named.
		{args: []string{"--bogus"}, code: 2, stderr: "unknown flag: --bogus"},
		{args: []string{"status", "--bogus"}, code: 2, stderr: "unknown flag: --bogus"},
		{args: []string{"status", "-bogus"}, code: 2, stderr: "-bogus"},
		{args: []string{"frobnicate"}, code: 2, stderr: `unknown command "frobnicate"`},
		{args: []string{"status", "extra"}, code: 2, stderr: `unexpected argument "extra"`},
		{args: []string{"version", "extra"}, code: 2, stderr: `unexpected argument "extra"`},
		{args: []string{"--log-level", "verbose"}, code: 2, stderr: `invalid argument "verbose" for "--log-level"`},
		{args: []string{"status", "--socket"}, code: 2, stderr: "flag needs an argument: --socket"},
		{args: []string{"status", "--json=maybe"}, code: 2, stderr: `invalid argument "maybe" for "--json"`},
		{args: []string{"help", "frobnicate"}, code: 2, stderr: `unknown command "frobnicate"`},
		{args: []string{"help", "status", "extra"}, code: 2, stderr: `unknown command "extra"`},
		{args: []string{"completion", "powershell"}, code: 2, stderr: `"powershell"`},

		// Help: stdout, exit 0, no action.
		{args: []string{"--help"}, stdout: "bgplb-routeragent [command]", noStderr: true},
		{args: []string{"-h"}, stdout: "bgplb-routeragent [command]", noStderr: true},
		{args: []string{"-help"}, stdout: "bgplb-routeragent [command]", noStderr: true},
		{args: []string{"help"}, stdout: "bgplb-routeragent [command]", noStderr: true},
		{args: []string{"help", "status"}, stdout: "bgplb-routeragent status [flags]", noStderr: true},
		{args: []string{"status", "--help"}, stdout: "--socket string", noStderr: true},
		{args: []string{"run", "-h"}, stdout: "--log-level level", noStderr: true},
		{args: []string{"completion"}, stdout: "bgplb-routeragent completion [command]", noStderr: true},
		{args: []string{"completion", "bash"}, stdout: "# bash completion V2 for bgplb-routeragent", noStderr: true},
		{args: []string{"completion", "zsh"}, stdout: "#compdef bgplb-routeragent", noStderr: true},
		{args: []string{"completion", "fish"}, stdout: "complete -c bgplb-routeragent", noStderr: true},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			calls, code, stdout, stderr := runFake(tc.args, 0)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tc.code, stderr)
			}
			var want []call
			if tc.want != nil {
				want = []call{*tc.want}
			}
			if diff := cmp.Diff(want, calls, cmp.AllowUnexported(call{}, options{})); diff != "" {
				t.Errorf("actions (-want +got):\n%s", diff)
			}
			if !strings.Contains(stdout, tc.stdout) {
				t.Errorf("stdout lacks %q:\n%s", tc.stdout, stdout)
			}
			if !strings.Contains(stderr, tc.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.stderr, stderr)
			}
			if tc.noStderr && stderr != "" {
				t.Errorf("stderr: %s", stderr)
			}
		})
	}
}

// A flag of one command is refused by every command that would ignore it.
func TestForeignFlags(t *testing.T) {
	root := NewCommand(io.Discard, io.Discard)
	all := []string{"all", "config", "force", "json", "log-level", "socket"}
	for _, c := range root.Commands() {
		if c.Name() == "completion" {
			continue
		}
		for _, f := range all {
			if c.LocalFlags().Lookup(f) != nil {
				continue
			}
			args := []string{c.Name(), "--" + f}
			if f == "config" || f == "socket" || f == "log-level" {
				args = append(args, "info")
			}
			calls, code, _, stderr := runFake(args, 0)
			if code != ExitUsage || len(calls) != 0 || !strings.Contains(stderr, "unknown flag: --"+f) {
				t.Errorf("%v: exit %d, actions %v, stderr %q; want 2, none, the flag named", args, code, calls, stderr)
			}
		}
	}
}

// A command's own exit status passes through, without a usage message.
func TestActionExitStatus(t *testing.T) {
	for _, code := range []int{ExitOK, ExitFailure, ExitUsage} {
		_, got, _, stderr := runFake([]string{"status"}, code)
		if got != code || stderr != "" {
			t.Errorf("action returned %d: exit %d, stderr %q", code, got, stderr)
		}
	}
}

func TestLongFlags(t *testing.T) {
	known := map[string]bool{"config": true, "json": true, "help": true}
	for _, tc := range []struct{ in, want []string }{
		{nil, []string{}},
		{[]string{"-config", "x"}, []string{"--config", "x"}},
		{[]string{"-config=x", "-json"}, []string{"--config=x", "--json"}},
		{[]string{"--config", "x", "-h", "-help"}, []string{"--config", "x", "-h", "--help"}},
		// Unknown names are left for cobra to refuse; -- ends the flags.
		{[]string{"-bogus", "--", "-json"}, []string{"-bogus", "--", "-json"}},
		{[]string{"-"}, []string{"-"}},
		// Completion requests are cobra's business.
		{[]string{"__complete", "-json"}, []string{"__complete", "-json"}},
	} {
		if diff := cmp.Diff(tc.want, longFlags(tc.in, known)); diff != "" {
			t.Errorf("longFlags(%q) (-want +got):\n%s", tc.in, diff)
		}
	}
}

const validConfig = `asn: 64500
routerID: 192.168.2.1
neighbors: [{prefix: 192.168.2.0/24, asn: 64512, allowUnauthenticated: true}] # no secret in tests
serviceSubnets: [192.168.254.0/24]
lanInterfaces: [lan0]
`

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "routeragent.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// The commands that need neither root nor a running agent, for real.
func TestRealCommands(t *testing.T) {
	good := writeConfig(t, validConfig)
	bad := writeConfig(t, validConfig+"bogusKey: 1\n")
	typo := writeConfig(t, strings.Replace(validConfig, "neighbors:", "neighbours:", 1))
	proto := writeConfig(t, validConfig+"routes: {protocol: 201}\n")
	for _, tc := range []struct {
		args           []string
		code           int
		stdout, stderr string
	}{
		{[]string{"check-config", "--config", good}, 0, good + ": ok\n", ""},
		{[]string{"check-config", "--config", bad}, 2, "", "invalid configuration"},
		{[]string{"check-config", "--config", typo}, 2, "", "line 3: neighbours: unknown key; did you mean neighbors?\n"},
		{[]string{"check-config", "--config", typo + "x"}, 2, "", "invalid configuration: read config: open " + typo + "x: no such file or directory\n"},
		{[]string{"check-config", "--config", filepath.Join(t.TempDir(), "missing.yaml")}, 2, "", "invalid configuration"},
		{[]string{"rt-protos", "--config", proto}, 0, "201 bgplb\n", ""},
		{[]string{"rt-protos", "--config", bad}, 0, "220 bgplb\n", ""},
		{[]string{"version"}, 0, "bgplb-routeragent dev\n", ""},
		{[]string{"--version"}, 0, "bgplb-routeragent dev\n", ""},
		{[]string{"run", "--config", bad}, 2, "", "invalid configuration"},
		{[]string{"--config", bad, "--log-level", "debug"}, 2, "", "invalid configuration"},
		{[]string{"poke", "--socket", filepath.Join(t.TempDir(), "none.sock")}, 1, "", "is the agent running?"},
		{[]string{"status", "--socket", filepath.Join(t.TempDir(), "none.sock")}, 1, "", "is the agent running?"},
	} {
		var out, errb bytes.Buffer
		code := Main(tc.args, &out, &errb)
		if code != tc.code || !strings.HasSuffix(out.String(), tc.stdout) || !strings.Contains(errb.String(), tc.stderr) {
			t.Errorf("%v: exit %d (want %d)\nstdout %q (want suffix %q)\nstderr %q (want %q)", tc.args, code, tc.code, out.String(), tc.stdout, errb.String(), tc.stderr)
		}
	}
}

// check-config prints every problem of the file, one per line under the
// file's name, in the file's order, and exits 2; run refuses the same way.
func TestCheckConfigErrors(t *testing.T) {
	p := writeConfig(t, `asn: 64500
routerId: 192.168.2.1
neighbours:
  - prefix: 192.168.2.0/24
    asn: 64512
    holdTime: 9
serviceSubnets: [192.168.254.0/24]
lanInterfaces: [enp1s0.2, enp1s0.2-uplink0]
firewall: {backnd: nft}
`)
	want := "invalid configuration " + p + ` (5 problems):
  line 2: routerId: unknown key; did you mean routerID?
  line 3: neighbours: unknown key; did you mean neighbors?
  line 6: neighbours[0].holdTime: 9 is not a duration; write 9s
  line 8: lanInterfaces[1]: "enp1s0.2-uplink0" is not an interface name: it is 16 bytes long, the kernel allows at most 15
  line 9: firewall.backnd: unknown key; did you mean backend?
`
	for _, cmd := range []string{"check-config", "run"} {
		var out, errb bytes.Buffer
		if code := Main([]string{cmd, "--config", p}, &out, &errb); code != ExitUsage {
			t.Errorf("%s: exit %d, want %d", cmd, code, ExitUsage)
		}
		if d := cmp.Diff(want, errb.String()); d != "" || out.Len() > 0 {
			t.Errorf("%s: stderr (-want +got):\n%s\nstdout %q", cmd, d, out.String())
		}
	}
}

// --log-level overrides log.level; without it the config's stays.
func TestLoadRunConfig(t *testing.T) {
	p := writeConfig(t, validConfig+"log: {level: warn}\n")
	for _, tc := range []struct {
		flag logLevel
		want config.LogLevel
	}{{"", config.LogWarn}, {"debug", config.LogDebug}, {"error", config.LogError}} {
		c, err := loadRunConfig(options{config: p, logLevel: tc.flag})
		if err != nil {
			t.Fatal(err)
		}
		if c.Log.Level != tc.want {
			t.Errorf("--log-level %q: level %q, want %q", tc.flag, c.Log.Level, tc.want)
		}
	}
}

// check-config on each insecure configuration: the finding, and the exit
// status (an error exits 2; warnings alone exit 0 but are printed).
func TestCheckConfigSecurity(t *testing.T) {
	dir := t.TempDir()
	secret := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("s3cret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	private, world, group := secret("private", 0o600), secret("world", 0o644), secret("group", 0o640)
	conf := func(neighbors, extra string) string {
		return "asn: 64500\nrouterID: 192.168.2.1\nneighbors:\n" + neighbors +
			"serviceSubnets: [192.168.254.0/24]\nlanInterfaces: [lan0]\n" + extra
	}
	withSecret := func(p string) string {
		return "  - {prefix: 192.168.2.0/24, asn: 64512, passwordFile: " + p + "}\n"
	}
	for _, tc := range []struct {
		name, yaml string
		code       int
		finding    string // the line of the finding (status, check, message) on stdout
		stderr     string
	}{
		{"secure", conf(withSecret(private), ""), 0, "ok    authentication  every neighbor needs the TCP-MD5 password", ""},
		{"prefix without password", conf("  - {prefix: 192.168.2.0/24, asn: 64512}\n", ""), 2, "",
			"neighbors[0]: a prefix neighbor accepts any host in 192.168.2.0/24 that speaks BGP; set passwordFile"},
		{"prefix accepting the risk", conf("  - {prefix: 192.168.2.0/24, asn: 64512, allowUnauthenticated: true}\n", ""), 0,
			"warn  authentication  neighbors[0] (192.168.2.0/24) has no password (allowUnauthenticated: true)", ""},
		{"address without password", conf("  - {address: 192.168.2.20, asn: 64512}\n", ""), 0,
			"warn  authentication  neighbors[0] (192.168.2.20) has no password", ""},
		{"service subnet over the nodes", strings.Replace(conf(withSecret(private), ""), "192.168.254.0/24", "192.168.2.128/25", 1), 2,
			"fail  service-subnets  serviceSubnets[0] 192.168.2.128/25 overlaps neighbors[0] (192.168.2.0/24), the nodes' addresses", "1 security error (see above)"},
		{"service subnet holding the router", strings.Replace(conf("  - {address: 10.0.0.7, asn: 64512, passwordFile: "+private+"}\n", ""), "192.168.254.0/24", "192.168.2.0/24", 1), 2,
			"fail  service-subnets  serviceSubnets[0] 192.168.2.0/24 overlaps the routerID 192.168.2.1", "1 security error (see above)"},
		{"listen everywhere", conf(withSecret(private), "listen: {address: 0.0.0.0}\n"), 0,
			"warn  listen  BGP listens on every address (listen.address 0.0.0.0), the WAN's included", ""},
		{"wildcard interface", strings.Replace(conf(withSecret(private), ""), "[lan0]", "[lan+]", 1), 0,
			`warn  lan-interfaces  lanInterfaces[0] "lan+" is taken literally: lanInterfaces has no wildcards`, ""},
		{"world-readable secret", conf(withSecret(world), ""), 2,
			"fail  password-file  " + world + " is readable by every user (mode 0644)", "1 security error (see above)"},
		{"group-readable secret", conf(withSecret(group), ""), 0,
			"warn  password-file  " + group + " is readable by its group (mode 0640)", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeConfig(t, tc.yaml)
			var out, errb bytes.Buffer
			code := Main([]string{"check-config", "--config", p}, &out, &errb)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out.String(), errb.String())
			}
			if !strings.Contains(errb.String(), tc.stderr) {
				t.Errorf("stderr %q, want %q", errb.String(), tc.stderr)
			}
			if tc.finding != "" && !strings.Contains(squeeze(out.String()), squeeze(tc.finding)) {
				t.Errorf("stdout:\n%s\nwant the finding %q", out.String(), tc.finding)
			}
			if tc.code == 0 && !strings.HasSuffix(out.String(), p+": ok\n") {
				t.Errorf("stdout %q does not end with %q", out.String(), p+": ok\n")
			}
			if tc.code == 0 && !strings.HasPrefix(out.String(), "security:\n") {
				t.Errorf("stdout %q does not start with the security section", out.String())
			}
		})
	}
}

// squeeze collapses the tabwriter's padding, so findings compare by words.
func squeeze(s string) string { return strings.Join(strings.Fields(s), " ") }
