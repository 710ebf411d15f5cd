package symmetry_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bgplb/bgplb/internal/netnstest"
	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/doctor"
	"github.com/bgplb/bgplb/routeragent/firewall"
	"github.com/bgplb/bgplb/routeragent/symmetry"
)

// The seed's network: client, router and node on one L2; the service
// address on the node's lo; the router's route to it via the node.
const (
	serviceAddr = "192.168.254.1"
	service     = serviceAddr + ":3142"
	nodeAddr    = "192.168.2.20"
)

var v4Subnets = []netip.Prefix{netip.MustParsePrefix("192.168.254.0/24")}

// fermRuleset is a ferm/DebOps stateful router (iptables-legacy).
const fermRuleset = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -m state --state INVALID -j DROP
-A FORWARD -m state --state RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -i lan0 -m state --state NEW -j ACCEPT
COMMIT
`

// nftRuleset is a Debian router's /etc/nftables.conf (native nftables).
const nftRuleset = `flush ruleset
table inet filter {
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related counter accept
		ct state invalid counter drop
		iifname "lan0" ct state new accept
	}
}
`

type lab struct {
	client, router, node *netnstest.NS
}

// newLab builds the network with the router's firewall (ferm's rules on
// iptables-legacy or iptables-nft, or native nftables) and ICMP redirects off on the
// router (the agent's icmpRedirects: disable; verify mode needs it too: a
// redirect would send the node's replies around the router again).
func newLab(t *testing.T, fw string) *lab {
	t.Helper()
	sw := netnstest.New(t, "sw")
	l := &lab{client: netnstest.New(t, "client"), router: netnstest.New(t, "router"), node: netnstest.New(t, "node")}
	plug := netnstest.Bridge(t, sw, "br0")
	for _, ns := range []*netnstest.NS{l.client, l.node} {
		ns.Exec("sysctl", "-qw", "net.ipv4.conf.all.accept_redirects=0")
		ns.Exec("sysctl", "-qw", "net.ipv4.conf.default.accept_redirects=0")
	}
	plug(l.client, "eth0", "192.168.2.109/24")
	l.client.Exec("ip", "addr", "add", "192.168.2.110/24", "dev", "eth0")
	plug(l.router, "lan0", "192.168.2.1/24")
	plug(l.node, "eth0", nodeAddr+"/24")
	l.node.Exec("ip", "addr", "add", serviceAddr+"/32", "dev", "lo")
	l.client.Exec("ip", "route", "add", "default", "via", "192.168.2.1")
	l.router.Exec("sysctl", "-qw", "net.ipv4.ip_forward=1")
	l.router.Exec("sysctl", "-qw", "net.ipv4.conf.all.send_redirects=0")
	l.router.Exec("ip", "route", "add", serviceAddr+"/32", "via", nodeAddr)
	switch fw {
	case "iptables-legacy", "iptables-nft":
		cmd := l.router.Command(fw + "-restore")
		cmd.Stdin = strings.NewReader(fermRuleset)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s-restore: %v\n%s", fw, err, out)
		}
	case "nftables":
		cmd := l.router.Command("nft", "-f", "-")
		cmd.Stdin = strings.NewReader(nftRuleset)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nft -f: %v\n%s", err, out)
		}
	default:
		t.Fatalf("unknown firewall %q", fw)
	}
	netnstest.ServePing(t, l.node, service, nil)
	return l
}

// exchange does one request/response from src to the service; only a
// reply proves the path (the client "connects" either way: the SYN-ACK
// comes straight from the node).
func exchange(client *netnstest.NS, src string) error { return exchangeTo(client, src, service) }

func exchangeTo(client *netnstest.NS, src, dst string) error { return netnstest.Ping(client, src, dst) }

func manager(t *testing.T, mode config.FirewallMode, subnets ...netip.Prefix) *firewall.Manager {
	t.Helper()
	if len(subnets) == 0 {
		subnets = v4Subnets
	}
	m, err := firewall.New(firewall.Config{Mode: mode, Interfaces: []string{"lan0"}, Subnets: subnets}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func ensure(t *testing.T, ns *netnstest.NS, m *firewall.Manager) firewall.Status {
	t.Helper()
	var st firewall.Status
	if err := ns.Do(func() error {
		var err error
		st, err = m.Ensure(context.Background())
		return err
	}); err != nil {
		t.Fatalf("Ensure (%s): %v", st.Mode, err)
	}
	return st
}

// rulesets returns what every firewall of ns holds: iptables-legacy,
// iptables-nft and native nftables.
func rulesets(t *testing.T, ns *netnstest.NS) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, tool := range []string{"iptables-legacy-save", "iptables-nft-save", "ip6tables-legacy-save", "ip6tables-nft-save"} {
		s, err := ns.Try(tool)
		if err != nil {
			t.Fatalf("%s: %v\n%s", tool, err, s)
		}
		out[tool] = s
	}
	s, err := ns.Try("nft", "list", "ruleset")
	if err != nil {
		t.Fatalf("nft list ruleset: %v\n%s", err, s)
	}
	out["nft"] = s
	return out
}

// assertNoExemption: no firewall of the router holds an exemption of
// ours, and our counting table accepts nothing.
func assertNoExemption(t *testing.T, ns *netnstest.NS) {
	t.Helper()
	for tool, s := range rulesets(t, ns) {
		for _, bad := range []string{firewall.ChainName, firewall.NftChainName} {
			if strings.Contains(s, bad) {
				t.Errorf("%s still holds %q:\n%s", tool, bad, s)
			}
		}
		for _, l := range strings.Split(s, "\n") {
			if ll := strings.ToLower(l); strings.Contains(ll, "invalid") && strings.Contains(ll, "accept") {
				t.Errorf("%s accepts INVALID packets: %q", tool, l)
			}
		}
	}
	table, err := ns.Try("nft", "list", "table", "inet", firewall.NftVerifyTable)
	if err != nil {
		t.Fatalf("our counting table: %v\n%s", err, table)
	}
	for _, l := range strings.Split(table, "\n") {
		if strings.Contains(l, "accept") && !strings.Contains(l, "policy accept") {
			t.Errorf("counting table accepts: %q", l)
		}
		if strings.Contains(l, "drop") {
			t.Errorf("counting table drops: %q", l)
		}
	}
}

func flows(t *testing.T, ns *netnstest.NS, subnets []netip.Prefix) []symmetry.Flow {
	t.Helper()
	var fs []symmetry.Flow
	if err := ns.Do(func() error {
		var err error
		fs, err = symmetry.Conntrack{}.Flows(subnets)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return fs
}

// hops is what the agent's installed routes say: the service via the node.
func hops(a netip.Addr) []netip.Addr {
	if a == netip.MustParseAddr(serviceAddr) {
		return []netip.Addr{netip.MustParseAddr(nodeAddr)}
	}
	return nil
}

// observe takes two looks at the router's conntrack, the grace period
// apart on the tracker's clock, as the agent's loop does.
func observe(t *testing.T, l *lab, m *firewall.Manager) symmetry.Status {
	return observeIn(t, l, m, v4Subnets, hops)
}

func observeIn(t *testing.T, l *lab, m *firewall.Manager, subnets []netip.Prefix, hops symmetry.NextHops) symmetry.Status {
	t.Helper()
	tr := symmetry.NewTracker(symmetry.Config{})
	t0 := time.Now()
	fw := ensure(t, l.router, m)
	tr.Observe(t0, flows(t, l.router, subnets), fw.InvalidTotal(), true, hops)
	fw = ensure(t, l.router, m)
	return tr.Observe(t0.Add(symmetry.DefaultGrace+time.Second), flows(t, l.router, subnets), fw.InvalidTotal(), true, hops)
}

func doctorSymmetry(t *testing.T, st symmetry.Status) doctor.Finding {
	t.Helper()
	in := doctor.Input{FirewallMode: config.FirewallVerify, ServiceSubnets: v4Subnets, LANInterfaces: []string{"lan0"},
		Symmetry: &doctor.SymmetryInput{Status: &st}}
	for _, f := range doctor.Run(context.Background(), in) {
		if f.Check == "symmetry" {
			return f
		}
	}
	t.Fatal("doctor has no symmetry finding in verify mode")
	return doctor.Finding{}
}

// TestKernelVerifyAsymmetric: the seed's asymmetric path (the node answers
// the client directly). The agent ran in exempt mode; a reload to verify
// removes the exemption from the firewall in force, so the connection
// hangs as in the seed; the INVALID counter rises, the flow is reported
// unreplied with the node, and doctor fails with the fix.
func TestKernelVerifyAsymmetric(t *testing.T) {
	for _, fw := range []string{"iptables-legacy", "iptables-nft", "nftables"} {
		t.Run(fw, func(t *testing.T) {
			l := newLab(t, fw)

			// Exempt mode first: the exemption makes the asymmetric path work.
			exempt := manager(t, config.FirewallExempt)
			if st := ensure(t, l.router, exempt); len(st.Rules) == 0 {
				t.Fatalf("exempt mode installed nothing: %+v", st)
			}
			if err := exchange(l.client, "192.168.2.110"); err != nil {
				t.Fatalf("with the exemption: %v", err)
			}

			// The reload to verify builds a new manager: exemptions go.
			verify := manager(t, config.FirewallVerify)
			st := ensure(t, l.router, verify)
			if st.Mode != config.FirewallVerify || len(st.Rules) != 0 || len(st.Invalid) != 2 {
				t.Fatalf("verify status %+v", st)
			}
			assertNoExemption(t, l.router)
			before := st.InvalidTotal()

			err := exchange(l.client, "192.168.2.109")
			var ne net.Error
			if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("asymmetric path in verify mode: exchange error %v, want a timeout", err)
			}
			sym := observe(t, l, verify)
			if sym.InvalidPackets <= before {
				t.Errorf("INVALID counter %d, was %d: did not rise", sym.InvalidPackets, before)
			}
			if sym.Verdict != symmetry.Asymmetric || sym.Asymmetric == 0 || len(sym.Offenders) == 0 {
				t.Fatalf("symmetry %+v, want asymmetric with an offender", sym)
			}
			// Both connections are listed: the one of exempt mode went
			// one way too (the exemption let it through), the hung one.
			i := slices.IndexFunc(sym.Offenders, func(o symmetry.Offender) bool { return strings.HasPrefix(o.Client, "192.168.2.109:") })
			if i < 0 || len(sym.Offenders) != 2 {
				t.Fatalf("offenders %+v, want the connections from 192.168.2.109 and .110", sym.Offenders)
			}
			if o := sym.Offenders[i]; o.Service != service || len(o.Nodes) != 1 || o.Nodes[0] != nodeAddr {
				t.Errorf("offender %+v, want %s via node %s", o, service, nodeAddr)
			}
			if f := doctorSymmetry(t, sym); f.Status != doctor.Fail || !strings.Contains(f.Message, nodeAddr) ||
				!strings.Contains(f.Fix, "returnPath: symmetric") || !strings.Contains(f.Fix, "firewall.mode: exempt") {
				t.Errorf("doctor: %+v", f)
			}
			assertNoExemption(t, l.router)

			// Uninstall takes the counting table away too.
			if err := l.router.Do(func() error { return verify.Uninstall(context.Background()) }); err != nil {
				t.Fatal(err)
			}
			if s := rulesets(t, l.router)["nft"]; strings.Contains(s, firewall.NftVerifyTable) {
				t.Errorf("counting table left after uninstall:\n%s", s)
			}
		})
	}
}

// TestKernelVerifySymmetric: the node sends its replies back through the
// router (a policy route for the service address's replies, what the
// speakers' returnPath: symmetric sets up): with no exemption anywhere the
// client connects, the router's conntrack shows the flow ASSURED, the
// INVALID counter stays flat, and doctor passes.
func TestKernelVerifySymmetric(t *testing.T) {
	for _, fw := range []string{"iptables-legacy", "nftables"} {
		t.Run(fw, func(t *testing.T) {
			l := newLab(t, fw)
			l.node.Exec("ip", "route", "add", "default", "via", "192.168.2.1", "dev", "eth0", "table", "100")
			l.node.Exec("ip", "rule", "add", "from", serviceAddr, "table", "100", "priority", "100")

			verify := manager(t, config.FirewallVerify)
			st := ensure(t, l.router, verify)
			assertNoExemption(t, l.router)
			before := st.InvalidTotal()

			for _, src := range []string{"192.168.2.109", "192.168.2.110"} {
				if err := exchange(l.client, src); err != nil {
					t.Fatalf("symmetric path from %s: %v", src, err)
				}
			}
			sym := observe(t, l, verify)
			if sym.InvalidPackets != before {
				t.Errorf("INVALID counter moved: %d -> %d", before, sym.InvalidPackets)
			}
			if sym.Verdict != symmetry.Symmetric || sym.Assured < 2 || sym.Asymmetric != 0 || len(sym.Offenders) != 0 {
				t.Fatalf("symmetry %+v, want symmetric with both flows assured", sym)
			}
			if f := doctorSymmetry(t, sym); f.Status != doctor.OK {
				t.Errorf("doctor: %+v", f)
			}
			assertNoExemption(t, l.router)
		})
	}
}

// TestKernelVerifyIPv6: the same asymmetric path over IPv6 (a native
// nftables firewall, whose inet table covers both families): no exemption,
// the IPv6 counters rise, the flow is reported with the node's IPv6
// address, and the ICMPv6 Redirect suppression is kept.
func TestKernelVerifyIPv6(t *testing.T) {
	const (
		svc6  = "2001:db8:254::1"
		node6 = "2001:db8:2::20"
	)
	l := newLab(t, "nftables")
	l.router.Exec("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	for _, ns := range []*netnstest.NS{l.client, l.node} {
		ns.Exec("sysctl", "-qw", "net.ipv6.conf.all.accept_redirects=0", "net.ipv6.conf.eth0.accept_redirects=0")
	}
	for _, a := range []struct {
		ns        *netnstest.NS
		dev, addr string
	}{{l.router, "lan0", "2001:db8:2::1/64"}, {l.client, "eth0", "2001:db8:2::109/64"}, {l.node, "eth0", node6 + "/64"}, {l.node, "lo", svc6 + "/128"}} {
		a.ns.Exec("ip", "addr", "add", a.addr, "dev", a.dev, "nodad")
	}
	l.client.Exec("ip", "-6", "route", "add", "default", "via", "2001:db8:2::1")
	l.router.Exec("ip", "-6", "route", "add", svc6+"/128", "via", node6)
	netnstest.ServePing(t, l.node, "["+svc6+"]:3142", nil)
	subnets6 := []netip.Prefix{netip.MustParsePrefix("2001:db8:254::/64")}
	hops6 := func(a netip.Addr) []netip.Addr {
		if a == netip.MustParseAddr(svc6) {
			return []netip.Addr{netip.MustParseAddr(node6)}
		}
		return nil
	}

	verify := manager(t, config.FirewallVerify, subnets6...)
	st := ensure(t, l.router, verify)
	if len(st.Invalid) != 2 || len(st.Redirects) != 1 || st.Redirects[0].Backend != string(firewall.Nftables) {
		t.Fatalf("verify status %+v: want two IPv6 counters and the redirect suppression in nftables", st)
	}
	assertNoExemption(t, l.router)
	before := st.InvalidTotal()
	err := exchangeTo(l.client, "2001:db8:2::109", "["+svc6+"]:3142")
	var ne net.Error
	if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("asymmetric IPv6 path: exchange error %v, want a timeout", err)
	}
	sym := observeIn(t, l, verify, subnets6, hops6)
	if sym.Verdict != symmetry.Asymmetric || len(sym.Offenders) != 1 {
		t.Fatalf("symmetry %+v", sym)
	}
	// Not asserted: on the CI kernel (6.18) some runs saw the IPv6
	// packets of the hung connection counted INVALID by conntrack
	// (conntrack -S) without matching `ct state invalid`, in our counting
	// chain exactly as in the firewall's own INVALID rule (both 0), while
	// most runs count 5; the flow report is the evidence.
	t.Logf("INVALID service packets: %d before, %d after", before, sym.InvalidPackets)
	if o := sym.Offenders[0]; !strings.HasPrefix(o.Client, "[2001:db8:2::109]:") || o.Service != "["+svc6+"]:3142" || !slices.Equal(o.Nodes, []string{node6}) {
		t.Errorf("offender %+v", o)
	}
}
