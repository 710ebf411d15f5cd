package agent

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/bgplb/bgplb/internal/monitoring"
	"github.com/bgplb/bgplb/internal/testenv"
)

// TestMetricsForDashboard runs the real agent in a lab (a speaker, a
// ferm-like iptables-legacy firewall, the exemption on) and scrapes its
// /metrics: every router-agent metric that the Grafana dashboard and the
// alerting rules name is served, with the type their expressions need; the
// per-peer session series exists; bgplb_build_info names the program.
func TestMetricsForDashboard(t *testing.T) {
	if _, err := os.Stat("/usr/sbin/iptables-legacy"); err != nil {
		t.Fatal("iptables-legacy is required (Debian package iptables; make deps installs it)")
	}
	l := newLab(t)
	node := l.host(t, "nd", "192.168.2.20")
	l.router.Exec("sysctl", "-qw", "net.ipv4.ip_forward=1")
	restore := l.router.Command("iptables-legacy-restore")
	restore.Stdin = strings.NewReader(fermRules)
	if out, err := restore.CombinedOutput(); err != nil {
		t.Fatalf("iptables-legacy-restore: %v\n%s", err, out)
	}
	const addr = "127.0.0.1:9481"
	cfg := l.writeConfigFrom(t, strings.Replace(baseConfig, `metrics: {address: "off"}`, `metrics: {address: "`+addr+`"}`, 1),
		"firewall: {mode: exempt, backend: auto}\n")
	l.startAgent(t, cfg)
	sp := startSpeaker(t, node, "192.168.2.20")
	sp.do("up")
	sp.do("announce 192.168.254.1/32")
	// Outside the service subnets: rejected, so the rejection series exists.
	sp.do("announce 10.1.1.1/32")
	waitFor(t, "route, rejection and exemption", func() bool {
		s := l.status(t)
		return l.hasRoute(t, "192.168.254.1/32", "192.168.2.20") && s.Prefix.Rejected == 1 &&
			s.Firewall != nil && len(s.Firewall.Rules) == 1 && s.Firewall.LastError == "" && s.Sysctl != nil
	})

	fams := scrape(t, l, addr)
	refs, err := monitoring.Load(testenv.RepoRoot())
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range monitoring.Check(refs, monitoring.RouterAgent, fams) {
		t.Error(err)
	}
	if p := monitoring.BuildInfoProgram(fams); p != monitoring.RouterAgent {
		t.Errorf("bgplb_build_info program=%q, want %s", p, monitoring.RouterAgent)
	}
	up := fams["bgplb_routeragent_peer_up"].GetMetric()
	if len(up) != 1 || up[0].GetGauge().GetValue() != 1 || up[0].GetLabel()[0].GetValue() != "192.168.2.20" {
		t.Errorf("bgplb_routeragent_peer_up = %v, want 1 for peer 192.168.2.20", up)
	}

	// The speaker goes away: a peer of a prefix: entry is a dynamic
	// neighbour, and its series go with its session (the status keeps it).
	// End of its commands: the speaker stops its BGP server and exits.
	go func() { _, _ = io.Copy(io.Discard, sp.out) }()
	sp.in.Close()
	waitFor(t, "the session down", func() bool {
		for _, p := range l.status(t).Peers {
			if p.Up {
				return false
			}
		}
		return true
	})
	fams = scrape(t, l, addr)
	for _, name := range []string{"bgplb_routeragent_peer_up", "bgplb_routeragent_prefixes_accepted", "bgplb_routeragent_prefixes_rejected"} {
		if n := len(fams[name].GetMetric()); n != 0 {
			t.Errorf("%s: %d series after the dynamic peer went away, want none", name, n)
		}
	}
}

// scrape reads the agent's /metrics, which listens on the router
// namespace's loopback: the connection is opened from a thread inside it.
func scrape(t *testing.T, l *lab, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	var conn net.Conn
	if err := l.router.Do(func() (err error) {
		conn, err = net.Dial("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("metrics: %v", err)
	}
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) { return conn, nil },
	}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	fams, err := monitoring.ParseText(resp.Body)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	return fams
}
