package agent

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/firewall"
	"github.com/bgplb/bgplb/routeragent/symmetry"
)

// TestVerifyModeLab runs the real agent on the seed's network (a ferm
// firewall on iptables-legacy; client and node on one L2, the node
// answering directly) in exempt mode, then reloads it (SIGHUP) to
// firewall.mode verify: the exemptions go from every firewall, the
// client's connection hangs, and the agent's status names the node of the
// asymmetric flow and shows the INVALID counter risen.
func TestVerifyModeLab(t *testing.T) {
	if _, err := os.Stat("/usr/sbin/iptables-legacy"); err != nil {
		t.Fatal("iptables-legacy is required (Debian package iptables; make deps installs it)")
	}
	l := newLab(t)
	client := l.host(t, "cl", "192.168.2.100")
	node := l.host(t, "nd", "192.168.2.10")
	client.Exec("sysctl", "-qw", "net.ipv4.conf.all.accept_redirects=0", "net.ipv4.conf.eth0.accept_redirects=0")
	client.Exec("ip", "route", "add", "default", "via", "192.168.2.1")
	node.Exec("ip", "addr", "add", "192.168.254.10/32", "dev", "lo")
	l.router.Exec("sysctl", "-qw", "net.ipv4.ip_forward=1")
	restore := l.router.Command("iptables-legacy-restore")
	restore.Stdin = strings.NewReader(traceFerm)
	if out, err := restore.CombinedOutput(); err != nil {
		t.Fatalf("iptables-legacy-restore: %v\n%s", err, out)
	}
	cfgPath := l.writeConfig(t, "firewall: {mode: exempt}\n")
	agent := l.startAgent(t, cfgPath)
	sp := startSpeaker(t, node, "192.168.2.10")
	sp.do("up")
	sp.do("announce 192.168.254.10/32")
	waitFor(t, "the route and the exemption", func() bool {
		s := l.status(t)
		return l.hasRoute(t, "192.168.254.10/32", "192.168.2.10") && s.Firewall != nil && len(s.Firewall.Rules) == 1
	})
	(&traceLab{lab: l}).serve(t, node, "192.168.254.10:80")

	// Reload to verify.
	cfg := regexp.MustCompile(`(?m)^firewall: .*$`).ReplaceAllString(mustRead(t, cfgPath), "firewall: {mode: verify}")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = agent.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "verify mode", func() bool {
		s := l.status(t)
		return s.Firewall != nil && s.Firewall.Mode == config.FirewallVerify && len(s.Firewall.Invalid) == 2 && s.Symmetry != nil
	})
	for _, tool := range []string{"iptables-legacy-save", "iptables-nft-save", "nft"} {
		args := []string{tool}
		if tool == "nft" {
			args = []string{"nft", "list", "ruleset"}
		}
		if out := l.router.Exec(args...); strings.Contains(out, firewall.ChainName) || strings.Contains(out, firewall.NftChainName) {
			t.Errorf("%s still holds an exemption after the reload to verify:\n%s", tool, out)
		}
	}

	// The seed's connection: it hangs, and the agent says why and where.
	// The client keeps its unanswered connection open well past the 5 s
	// after which the agent calls a flow without a reply asymmetric (on
	// giving up it resets the connection, and the flow is gone).
	connect(t, client, "192.168.254.10:80", tcpClientTimeoutEnv+"=20s")
	waitFor(t, "the asymmetric verdict", func() bool {
		s := l.status(t).Symmetry
		return s != nil && s.Verdict == symmetry.Asymmetric && s.InvalidPackets > 0 &&
			slices.ContainsFunc(s.Offenders, func(o symmetry.Offender) bool {
				return strings.HasPrefix(o.Client, "192.168.2.100:") && o.Service == "192.168.254.10:80" && slices.Equal(o.Nodes, []string{"192.168.2.10"})
			})
	})
	t.Logf("symmetry: %+v", *l.status(t).Symmetry)

	// Reload to off: verify's counting table goes too, and status says off.
	cfg = regexp.MustCompile(`(?m)^firewall: .*$`).ReplaceAllString(mustRead(t, cfgPath), "firewall: {mode: \"off\"}")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = agent.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "off mode", func() bool {
		s := l.status(t)
		return s.Firewall != nil && s.Firewall.Mode == config.FirewallOff && len(s.Firewall.Invalid) == 0 && s.Firewall.LastError == ""
	})
	if out := l.router.Exec("nft", "list", "ruleset"); strings.Contains(out, firewall.NftVerifyTable) {
		t.Errorf("nft still holds the counting table after the reload to off:\n%s", out)
	}
}

// TestOffModeLab: a reload from exempt to firewall.mode off removes the
// exemption (chain and jump) from the seed's ferm firewall on
// iptables-legacy, and status says mode off.
func TestOffModeLab(t *testing.T) {
	if _, err := os.Stat("/usr/sbin/iptables-legacy"); err != nil {
		t.Fatal("iptables-legacy is required (Debian package iptables; make deps installs it)")
	}
	l := newLab(t)
	l.router.Exec("sysctl", "-qw", "net.ipv4.ip_forward=1")
	restore := l.router.Command("iptables-legacy-restore")
	restore.Stdin = strings.NewReader(traceFerm)
	if out, err := restore.CombinedOutput(); err != nil {
		t.Fatalf("iptables-legacy-restore: %v\n%s", err, out)
	}
	cfgPath := l.writeConfig(t, "firewall: {mode: exempt}\n")
	agent := l.startAgent(t, cfgPath)
	waitFor(t, "the exemption", func() bool {
		s := l.status(t)
		return s.Firewall != nil && len(s.Firewall.Rules) == 1 && strings.Contains(l.router.Exec("iptables-legacy-save"), firewall.ChainName)
	})
	cfg := regexp.MustCompile(`(?m)^firewall: .*$`).ReplaceAllString(mustRead(t, cfgPath), "firewall: {mode: \"off\"}")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = agent.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "off mode", func() bool {
		s := l.status(t)
		return s.Firewall != nil && s.Firewall.Mode == config.FirewallOff && len(s.Firewall.Rules) == 0 && s.Firewall.LastError == ""
	})
	if out := l.router.Exec("iptables-legacy-save"); strings.Contains(out, firewall.ChainName) {
		t.Errorf("iptables-legacy still holds the exemption after the reload to off:\n%s", out)
	}
}
