package e2e

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/bgplb/bgplb/test/lab"
)

var (
	node1v6 = netip.MustParseAddr(lab.NodeIPs6[lab.Node1])
	node2v6 = netip.MustParseAddr(lab.NodeIPs6[lab.Node2])
)

// TestIPv6DualStackServiceThroughRouter is the IPv6 version of the story in
// the lab: both speakers also peer with the router over IPv6, a dual-stack
// Service gets an IPv4 and an IPv6 address, the router installs an ECMP
// /128 towards both nodes' IPv6 addresses, and the IPv6 client reaches the
// Service through the router. With the agent stopped and its ip6tables
// chains flushed by a ferm reload, the IPv6 client hangs (its ACKs are
// INVALID on the router and dropped); the agent started again makes it work.
// No ICMPv6 Redirect leaves the router meanwhile (the speakers' next hops
// are global addresses, for which Linux sends none; the link-local case is
// routeragent/firewall's TestKernelSeedNetworkV6).
func TestIPv6DualStackServiceThroughRouter(t *testing.T) {
	l, ctx := setup(t)
	disable, err := l.EnableIPv6Peering(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := disable(context.Background()); err != nil {
			t.Errorf("delete the IPv6 BGPPeer: %v", err)
		}
	})
	waitAgentPeers(t, l, 4, 60*time.Second)
	redirects, err := l.OutRedirects6()
	if err != nil {
		t.Fatal(err)
	}

	const name = "e2e-dualstack"
	if err := l.CreateService(ctx, lab.ServiceSpec{Name: name, DualStack: true, EndpointsOn: []string{lab.Node1, lab.Node2}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.DeleteService(context.Background(), name) })
	ips, err := l.WaitServiceIPs(ctx, name, 2, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var v4, v6 netip.Addr
	for _, ip := range ips {
		if ip.Is6() {
			v6 = ip
		} else {
			v4 = ip
		}
	}
	if !v4.IsValid() || !v6.IsValid() || !netip.MustParsePrefix(lab.ServiceSubnet6).Contains(v6) {
		t.Fatalf("dual-stack Service addresses %v, want one IPv4 and one from %s", ips, lab.ServiceSubnet6)
	}
	if err := l.WaitRoute(ctx, netip.PrefixFrom(v6, 128), []netip.Addr{node1v6, node2v6}, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitRoute(ctx, netip.PrefixFrom(v4, 32), []netip.Addr{node1, node2}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, ip := range []netip.Addr{v6, v4} {
		body, _, err := getEventually(ctx, l, ip, 10*time.Second)
		if err != nil || !strings.HasPrefix(body, "hello from node") {
			t.Fatalf("the client could not reach %s through the router: %q, %v", ip, body, err)
		}
	}

	// Before the agent: stop it (its routes stay) and let ferm flush its
	// chains; the IPv6 client's connections hang.
	if err := l.StopAgent(); err != nil {
		t.Fatal(err)
	}
	agentUp := false
	t.Cleanup(func() {
		if !agentUp {
			if err := l.StartAgent(lab.AgentMode{Firewall: true, Redirects: true}); err != nil {
				t.Errorf("restart agent: %v", err)
			}
			waitAgentPeers(t, l, 2, 30*time.Second)
		}
	})
	if err := l.ReloadFerm(); err != nil {
		t.Fatal(err)
	}
	drops, err := l.InvalidDrops6()
	if err != nil {
		t.Fatal(err)
	}
	if body, err := l.ClientGet(ctx, v6.String(), 2*time.Second); err == nil {
		t.Fatalf("without the agent's exemption the IPv6 client got %q; the lab does not reproduce the story", body)
	}
	if after, err := l.InvalidDrops6(); err != nil || after == drops {
		t.Errorf("the router's ip6tables INVALID drop counted %d -> %d (err %v), want the client's ACKs", drops, after, err)
	}

	// After: the agent is back and the IPv6 client gets through.
	if err := l.StartAgent(lab.AgentMode{Firewall: true, Redirects: true}); err != nil {
		t.Fatal(err)
	}
	agentUp = true
	waitAgentPeers(t, l, 4, 60*time.Second)
	if body, _, err := getEventually(ctx, l, v6, 10*time.Second); err != nil || !strings.HasPrefix(body, "hello from node") {
		t.Fatalf("with the agent the IPv6 client still cannot reach %s: %q, %v", v6, body, err)
	}
	if n, err := l.OutRedirects6(); err != nil || n != redirects {
		t.Errorf("the router sent %d ICMPv6 redirects (err %v)", n-redirects, err)
	}

	// status shows both families side by side.
	out, err := l.AgentCommand("status", "--json", "--config", l.AgentConfigPath())
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	var st struct {
		Families []struct {
			Family          string `json:"family"`
			PeersUp         int    `json:"peersUp"`
			RoutesInstalled int    `json:"routesInstalled"`
			Exemptions      int    `json:"exemptions"`
			RedirectsOK     bool   `json:"redirectsOK"`
		} `json:"families"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("parse status: %v\n%s", err, out)
	}
	if len(st.Families) != 2 {
		t.Fatalf("status families: %+v", st.Families)
	}
	for _, f := range st.Families {
		if f.PeersUp != 2 || f.RoutesInstalled < 1 || f.Exemptions != 1 || !f.RedirectsOK {
			t.Errorf("status family %+v: want 2 sessions up, routes installed, one exemption, redirects stopped", f)
		}
	}
	human, err := l.AgentCommand("status", "--config", l.AgentConfigPath())
	if err != nil || !strings.Contains(human, "FAMILY") || !strings.Contains(human, lab.ServiceSubnet6) {
		t.Errorf("status (err %v):\n%s", err, human)
	}
	t.Logf("status:\n%s", human)
}
