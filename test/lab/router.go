package lab

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// AgentMode says what the router agent may change on the router.
type AgentMode struct {
	// Firewall enables the conntrack-INVALID exemptions.
	Firewall bool
	// Verify is firewall.mode verify instead: no exemption, the INVALID
	// service packets and asymmetric flows only counted (for nodes that
	// send their replies back through the router, returnPath: symmetric).
	Verify bool
	// Redirects turns ICMP send_redirects off.
	Redirects bool
	// ResyncInterval is the agent's routes.resyncInterval; 0 keeps its
	// default. A long one leaves a poke (or a link change) as the only
	// thing that makes the agent re-read the kernel's routes.
	ResyncInterval time.Duration
	// NexthopGroups is the agent's routes.nexthopGroups ("" keeps its
	// default, auto).
	NexthopGroups string
}

// AgentName is the lab process name of the router agent.
const AgentName = "routeragent"

// AgentConfigPath is where the lab writes the agent's config.
func (l *Lab) AgentConfigPath() string {
	return filepath.Join(l.opts.StateDir, routerStateDir, "routeragent.yaml")
}

// AgentSocket is the agent's status socket in the lab.
func (l *Lab) AgentSocket() string {
	return filepath.Join(l.opts.StateDir, routerStateDir, "routeragent.sock")
}

// AgentConfig renders the router agent's config for the lab.
func (l *Lab) AgentConfig(m AgentMode) string {
	fw, redirects := "off", "leave"
	if m.Firewall {
		fw = "exempt"
	}
	if m.Verify {
		fw = "verify"
	}
	if m.Redirects {
		redirects = "disable"
	}
	resync := ""
	if m.ResyncInterval > 0 {
		resync = ", resyncInterval: " + m.ResyncInterval.String()
	}
	if m.NexthopGroups != "" {
		resync += ", nexthopGroups: " + m.NexthopGroups
	}
	return fmt.Sprintf(`# bgplb-routeragent config for the lab router (written by bgplb-lab).
asn: %d
routerID: %s
# BGP listens on lan0's addresses only (listen.address unset).
listen: {port: 179}
neighbors:
  - prefix: %s
    asn: %d
    # The lab's speakers have no BGPPeer passwordSecret; a real router
    # sets passwordFile instead (docs/install.md).
    allowUnauthenticated: true
    holdTime: 9s
    maxPrefixes: 1000
  # The speakers' IPv6 sessions (BGPPeer %s, see EnableIPv6Peering).
  - prefix: %s
    asn: %d
    allowUnauthenticated: true
    holdTime: 9s
    maxPrefixes: 1000
serviceSubnets: [%s, "%s"]
lanInterfaces: [%s]
firewall: {mode: %s, backend: auto}
icmpRedirects: %s
routes: {staleTimeout: 30s%s}
statusSocket: %s
stateDir: %s
metrics: {address: "127.0.0.1:9473"}
`, RouterASN, RouterIP, LANPrefix, NodeASN, PeerName6, LANPrefix6, NodeASN, ServiceSubnet, ServiceSubnet6, LANIf, fw, redirects,
		resync, l.AgentSocket(), filepath.Join(l.opts.StateDir, routerStateDir, "state"))
}

// StartAgent writes the agent's config for mode and starts
// bgplb-routeragent on the router.
func (l *Lab) StartAgent(m AgentMode) error {
	if err := os.WriteFile(l.AgentConfigPath(), []byte(l.AgentConfig(m)), 0o644); err != nil {
		return err
	}
	return l.start(AgentName, l.NS(Router), nil, filepath.Join(l.opts.BinDir, "bgplb-routeragent"),
		"run", "--config", l.AgentConfigPath())
}

// ReloadAgent writes the agent's config for mode and makes the running agent
// reload it (SIGHUP, as `systemctl reload` does). It returns once the agent
// logged that the new config is in force, or with the agent's refusal.
func (l *Lab) ReloadAgent(m AgentMode) error {
	done := func() (applied, refused int) {
		b, _ := os.ReadFile(l.LogPath(AgentName))
		return strings.Count(string(b), "configuration reloaded"), strings.Count(string(b), "reload refused")
	}
	applied0, refused0 := done()
	if err := os.WriteFile(l.AgentConfigPath(), []byte(l.AgentConfig(m)), 0o644); err != nil {
		return err
	}
	p := l.proc(AgentName)
	if p == nil || p.exited() {
		return fmt.Errorf("the router agent is not running")
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		return fmt.Errorf("signal the router agent: %w", err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		applied, refused := done()
		switch {
		case applied > applied0:
			return nil
		case refused > refused0:
			return fmt.Errorf("the router agent refused the reload (see %s)", l.LogPath(AgentName))
		case time.Now().After(deadline):
			return fmt.Errorf("the router agent did not reload within 15s of SIGHUP (see %s)", l.LogPath(AgentName))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StopAgent stops the router agent with SIGTERM, which leaves its routes and
// firewall rules in place.
func (l *Lab) StopAgent() error { return l.Stop(AgentName, syscall.SIGTERM) }

// AgentCommand runs a bgplb-routeragent subcommand (status, doctor, ...)
// on the router and returns its output and exit error.
func (l *Lab) AgentCommand(args ...string) (string, error) {
	full := append([]string{filepath.Join(l.opts.BinDir, "bgplb-routeragent")}, args...)
	return nsExec(l.NS(Router), full...)
}

// WaitAgentPeers waits until the agent's status reports n established BGP
// sessions.
func (l *Lab) WaitAgentPeers(ctx context.Context, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var out string
	var err error
	for {
		out, err = l.AgentCommand("status", "--json", "--config", l.AgentConfigPath())
		if err == nil && strings.Count(strings.ToLower(out), `"established"`) >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the router agent does not report %d established peers after %v (%w):\n%s", n, timeout, err, out)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// RouterRoute returns the next hops of the router's kernel route for prefix
// in the main table (sorted), and its protocol; no route gives nil.
func (l *Lab) RouterRoute(prefix netip.Prefix) ([]netip.Addr, int, error) {
	var hops []netip.Addr
	proto := 0
	err := l.withRouterNetlink(func(h *netlink.Handle) error {
		family, bits := netlink.FAMILY_V4, 32
		if prefix.Addr().Is6() {
			family, bits = netlink.FAMILY_V6, 128
		}
		routes, err := h.RouteListFiltered(family, &netlink.Route{
			Dst: &net.IPNet{IP: prefix.Addr().AsSlice(), Mask: net.CIDRMask(prefix.Bits(), bits)}, Table: syscall.RT_TABLE_MAIN,
		}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
		if err != nil {
			return err
		}
		for _, r := range routes {
			proto = int(r.Protocol)
			if a, ok := gateway(r.Gw); ok {
				hops = append(hops, a)
			}
			for _, nh := range r.MultiPath {
				if a, ok := gateway(nh.Gw); ok {
					hops = append(hops, a)
				}
			}
		}
		return nil
	})
	sort.Slice(hops, func(i, j int) bool { return hops[i].Less(hops[j]) })
	return hops, proto, err
}

// gateway converts a next hop (IPv4 or IPv6) to a netip.Addr.
func gateway(ip net.IP) (netip.Addr, bool) {
	if ip == nil {
		return netip.Addr{}, false
	}
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}

// WaitRoute waits until the router's route for prefix has exactly want next
// hops (nil: no route).
func (l *Lab) WaitRoute(ctx context.Context, prefix netip.Prefix, want []netip.Addr, timeout time.Duration) error {
	sort.Slice(want, func(i, j int) bool { return want[i].Less(want[j]) })
	deadline := time.Now().Add(timeout)
	for {
		got, _, err := l.RouterRoute(prefix)
		if err == nil && equalAddrs(got, want) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("router route %s: next hops %v, want %v after %v (err %w)", prefix, got, want, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func equalAddrs(a, b []netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (l *Lab) withRouterNetlink(f func(*netlink.Handle) error) error {
	ns, err := netns.GetFromName(l.NS(Router))
	if err != nil {
		return err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	return f(h)
}

// RouterSubscribe streams route updates from the router's kernel until done
// is closed. Use it to prove that no route was deleted during an operation.
func (l *Lab) RouterSubscribe(ch chan<- netlink.RouteUpdate, done <-chan struct{}) error {
	ns, err := netns.GetFromName(l.NS(Router))
	if err != nil {
		return err
	}
	defer ns.Close()
	return netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{Namespace: &ns})
}

// InvalidDrops returns the packet counter of the router firewall's
// `--ctstate INVALID -j DROP` rule in FORWARD (iptables-legacy, as ferm
// writes it).
func (l *Lab) InvalidDrops() (uint64, error) {
	return l.invalidDrops("iptables-legacy")
}

// invalidDrops reads the INVALID DROP rule's packet counter in the router's
// FORWARD chain with tool (iptables-legacy or ip6tables-legacy).
func (l *Lab) invalidDrops(tool string) (uint64, error) {
	out, err := nsExec(l.NS(Router), tool, "-w", "5", "-t", "filter", "-L", "FORWARD", "-v", "-x", "-n")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && f[2] == "DROP" && strings.Contains(line, "ctstate INVALID") {
			return strconv.ParseUint(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("%s: no INVALID DROP rule in the router's FORWARD chain:\n%s", tool, out)
}

// FirewallListing returns `iptables-legacy -S FORWARD` and our chain on the
// router, for showing.
func (l *Lab) FirewallListing() (string, error) {
	return nsExec(l.NS(Router), "iptables-legacy", "-w", "5", "-t", "filter", "-L", "FORWARD", "-v", "-n", "--line-numbers")
}

// OutRedirects returns the router's Icmp OutRedirects counter.
func (l *Lab) OutRedirects() (uint64, error) {
	var v uint64
	err := DoIn(l.NS(Router), func() error {
		// /proc/net is per network namespace of the reading thread's task
		// via /proc/thread-self.
		f, err := os.Open("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		defer f.Close()
		var header []string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) == 0 || fields[0] != "Icmp:" {
				continue
			}
			if header == nil {
				header = fields
				continue
			}
			for i, h := range header {
				if h == "OutRedirects" && i < len(fields) {
					v, err = strconv.ParseUint(fields[i], 10, 64)
					return err
				}
			}
		}
		return fmt.Errorf("no Icmp OutRedirects in /proc/net/snmp")
	})
	return v, err
}

// SendRedirects returns the router's net.ipv4.conf.{all,lan0}.send_redirects.
func (l *Lab) SendRedirects() (all, lan string, err error) {
	out, err := nsExec(l.NS(Router), "sysctl", "-n", "net.ipv4.conf.all.send_redirects", "net.ipv4.conf."+LANIf+".send_redirects")
	if err != nil {
		return "", "", err
	}
	f := strings.Fields(out)
	if len(f) != 2 {
		return "", "", fmt.Errorf("unexpected sysctl output %q", out)
	}
	return f[0], f[1], nil
}

// OutRedirects6 returns the router's Icmp6OutRedirects counter: the ICMPv6
// Redirects that left it (one dropped in OUTPUT is not counted).
func (l *Lab) OutRedirects6() (uint64, error) {
	var v uint64
	err := DoIn(l.NS(Router), func() error {
		b, err := os.ReadFile("/proc/thread-self/net/snmp6")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == "Icmp6OutRedirects" {
				v, err = strconv.ParseUint(f[1], 10, 64)
				return err
			}
		}
		return fmt.Errorf("no Icmp6OutRedirects in /proc/net/snmp6")
	})
	return v, err
}

// InvalidDrops6 is InvalidDrops for IPv6 (ip6tables-legacy).
func (l *Lab) InvalidDrops6() (uint64, error) {
	return l.invalidDrops("ip6tables-legacy")
}
