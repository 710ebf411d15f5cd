package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// AgentName is the cluster process name of the router agent.
const AgentName = "routeragent"

func (c *Cluster) agentConfigPath() string { return filepath.Join(c.opts.StateDir, "routeragent.yaml") }

// AgentConfig renders bgplb-routeragent's config for the lab router: with
// fixes false its firewall and ICMP-redirect work are off (the story's
// "before"), with fixes true both are on.
func (c *Cluster) AgentConfig(fixes bool) string {
	fw, redirects := "off", "leave"
	if fixes {
		fw, redirects = "exempt", "disable"
	}
	return c.agentConfig(fw, redirects)
}

func (c *Cluster) agentConfig(fw, redirects string) string {
	return fmt.Sprintf(`# bgplb-routeragent config for the cluster lab's router (test/cluster).
asn: %d
routerID: %s
listen: {port: 179}
neighbors:
  - prefix: %s
    asn: %d
    allowUnauthenticated: true
    holdTime: 9s
    maxPrefixes: 1000
serviceSubnets: [%s]
lanInterfaces: [%s]
firewall: {mode: %s, backend: auto}
icmpRedirects: %s
routes: {staleTimeout: 30s}
statusSocket: %s
stateDir: %s
metrics: {address: "127.0.0.1:9473"}
`, RouterASN, RouterIP, LANPrefix, NodeASN, ServiceSubnet, LANIf, fw, redirects,
		filepath.Join(c.opts.StateDir, "routeragent.sock"), filepath.Join(c.opts.StateDir, "routeragent-state"))
}

// StartAgent (re)starts bgplb-routeragent on the router.
func (c *Cluster) StartAgent(fixes bool) error {
	return c.startAgent(c.AgentConfig(fixes))
}

// StartAgentVerify (re)starts bgplb-routeragent on the router in
// firewall.mode verify (no ACCEPT rule of its own; it removes the
// exemptions an earlier mode left, counts the INVALID service packets and
// watches conntrack), with ICMP redirects off: for nodes with a symmetric
// return path.
func (c *Cluster) StartAgentVerify() error {
	return c.startAgent(c.agentConfig("verify", "disable"))
}

func (c *Cluster) startAgent(config string) error {
	if c.proc(AgentName) != nil {
		if err := c.Stop(AgentName, syscall.SIGTERM); err != nil {
			return err
		}
	}
	if err := os.WriteFile(c.agentConfigPath(), []byte(config), 0o644); err != nil {
		return err
	}
	return c.start(AgentName, Router, nil, filepath.Join(c.opts.BinDir, "bgplb-routeragent"), "run", "--config", c.agentConfigPath())
}

// WaitAgentPeers waits until the agent reports n established BGP sessions.
func (c *Cluster) WaitAgentPeers(ctx context.Context, n int, timeout time.Duration) error {
	return c.waitFor(ctx, fmt.Sprintf("router agent: %d established peers", n), timeout, AgentName, func() (bool, error) {
		out, err := c.nsExec(Router, filepath.Join(c.opts.BinDir, "bgplb-routeragent"), "status", "--json", "--config", c.agentConfigPath())
		return err == nil && strings.Count(strings.ToLower(out), `"established"`) >= n, err
	})
}

// AgentStatusJSON returns `bgplb-routeragent status --json` on the router.
func (c *Cluster) AgentStatusJSON() (string, error) {
	return c.nsExec(Router, filepath.Join(c.opts.BinDir, "bgplb-routeragent"), "status", "--json", "--config", c.agentConfigPath())
}

// RouterFirewall returns the router's FORWARD chain (iptables-legacy, as
// ferm writes it) with counters.
func (c *Cluster) RouterFirewall() (string, error) {
	return c.nsExec(Router, "iptables-legacy", "-w", "5", "-t", "filter", "-L", "FORWARD", "-v", "-x", "-n")
}

// InvalidDrops returns the packet counter of the router firewall's
// `ctstate INVALID DROP` rule in FORWARD.
func (c *Cluster) InvalidDrops() (uint64, error) {
	out, err := c.RouterFirewall()
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && f[2] == "DROP" && strings.Contains(line, "ctstate INVALID") {
			return strconv.ParseUint(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("no INVALID DROP rule in the router's FORWARD chain:\n%s", out)
}

// RouterConntrack returns the router's conntrack entries of TCP flows to
// dst (`conntrack -L`, one line each).
func (c *Cluster) RouterConntrack(dst string) ([]string, error) {
	out, err := c.nsExec(Router, "conntrack", "-L", "-p", "tcp", "-d", dst)
	if err != nil {
		return nil, err
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "tcp") {
			lines = append(lines, l)
		}
	}
	return lines, nil
}

// FlushRouterConntrack deletes the router's conntrack entries of flows to
// dst (an address or a prefix).
func (c *Cluster) FlushRouterConntrack(dst string) error {
	_, err := c.nsExec(Router, "conntrack", "-D", "-d", dst)
	if err != nil && strings.Contains(err.Error(), "0 flow entries have been deleted") {
		return nil
	}
	return err
}

// RouterNextHopFor returns the next hop the router picks for a packet from
// src to dst arriving on its LAN interface (`ip route get ... iif`; with
// ECMP the same hash as forwarding).
func (c *Cluster) RouterNextHopFor(src, dst string) (string, error) {
	out, err := c.nsExec(Router, "ip", "-j", "route", "get", dst, "from", src, "iif", LANIf)
	if err != nil {
		return "", err
	}
	var r []struct {
		Gateway string `json:"gateway"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return "", fmt.Errorf("ip -j route get: %w: %s", err, out)
	}
	if len(r) != 1 || r[0].Gateway == "" {
		return "", fmt.Errorf("ip route get %s from %s iif %s: no gateway in %s", dst, src, LANIf, out)
	}
	return r[0].Gateway, nil
}

// RouterNextHops returns the sorted next hops of the router's kernel route
// for dst (an address; its /32), nil without a route.
func (c *Cluster) RouterNextHops(dst string) ([]string, error) {
	out, err := c.nsExec(Router, "ip", "-j", "route", "show", "exact", dst+"/32")
	if err != nil {
		return nil, err
	}
	var routes []struct {
		Gateway  string `json:"gateway"`
		Nexthops []struct {
			Gateway string `json:"gateway"`
		} `json:"nexthops"`
	}
	if err := json.Unmarshal([]byte(out), &routes); err != nil {
		return nil, fmt.Errorf("ip -j route: %w: %s", err, out)
	}
	var hops []string
	for _, r := range routes {
		if r.Gateway != "" {
			hops = append(hops, r.Gateway)
		}
		for _, nh := range r.Nexthops {
			hops = append(hops, nh.Gateway)
		}
	}
	sort.Strings(hops)
	return hops, nil
}

// WaitNextHops waits until the router's route for dst has exactly the next
// hops want (nil: no route).
func (c *Cluster) WaitNextHops(ctx context.Context, dst string, want []string, timeout time.Duration) error {
	want = slices.Sorted(slices.Values(want))
	return c.waitFor(ctx, fmt.Sprintf("router route %s via %v", dst, want), timeout, "", func() (bool, error) {
		got, err := c.RouterNextHops(dst)
		if err != nil {
			return false, err
		}
		return slices.Equal(got, want), fmt.Errorf("next hops %v", got)
	})
}

// BGPObjects is what the user applies after installing bgplb: an IPPool
// over ServiceSubnet, a BGPPeer for the router and a BGPAdvertisement.
var BGPObjects = fmt.Sprintf(`apiVersion: bgplb.io/v1alpha1
kind: IPPool
metadata:
  name: lab-pool
spec:
  addresses: [%q]
  avoidBuggyIPs: true
---
apiVersion: bgplb.io/v1alpha1
kind: BGPPeer
metadata:
  name: lab-router
spec:
  peerAddress: %s
  peerASN: %d
  myASN: %d
  holdTime: 9s
---
apiVersion: bgplb.io/v1alpha1
kind: BGPAdvertisement
metadata:
  name: lab-all
spec:
  ipPools: [lab-pool]
`, ServiceSubnet, RouterIP, RouterASN, NodeASN)
