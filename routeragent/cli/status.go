package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bgplb/bgplb/routeragent/agent"
	"github.com/bgplb/bgplb/routeragent/firewall"
)

// maxInstalledShown is how many installed routes `status` lists without --all.
const maxInstalledShown = 50

// showStatus is `status`.
func showStatus(o options, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, raw, err := agent.FetchStatus(ctx, socketPath(o.config, o.socket))
	if err != nil {
		fmt.Fprintf(stderr, "status: %v\n", err)
		return ExitFailure
	}
	if o.json {
		var out any
		_ = json.Unmarshal(raw, &out)
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
		return ExitOK
	}
	PrintStatus(stdout, s, o.all)
	return ExitOK
}

// PrintStatus writes the human view of a status.
func PrintStatus(w io.Writer, s agent.Status, all bool) {
	printHeader(w, s)
	printFamilies(w, s.Families)
	printPeers(w, s.Peers)
	printBFD(w, s.Peers, s.BFD)
	printPrefixes(w, s.Prefix)
	printRoutes(w, s.Config, s.Routes, all)
	printPins(w, s.Pins)
	printFirewall(w, s.Config, s.Firewall)
	printSymmetry(w, s.Symmetry)
	printSysctl(w, s)
	printTraces(w, s.Trace)
}

func printHeader(w io.Writer, s agent.Status) {
	c := s.Config
	fmt.Fprintf(w, "bgplb-routeragent %s, up %s; AS %d, router ID %s, port %d\n", s.Version,
		time.Since(s.Started).Round(time.Second), c.ASN, c.RouterID, c.ListenPort)
	fmt.Fprintf(w, "service subnets %s; LAN %s (connected %v)\n", strings.Join(c.ServiceSubnets, ", "),
		strings.Join(c.LANInterfaces, ", "), s.LAN.Connected)
	if len(s.LAN.Missing) > 0 {
		fmt.Fprintf(w, "WARNING: LAN interfaces missing: %s\n", strings.Join(s.LAN.Missing, ", "))
	}
	fmt.Fprintln(w)
}

// printFamilies puts IPv4 and IPv6 side by side: one row per family with
// a service subnet.
func printFamilies(w io.Writer, fs []agent.FamilyStatus) {
	if len(fs) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "FAMILY\tSERVICE SUBNETS\tSESSIONS UP\tROUTES INSTALLED\tEXEMPTIONS (PACKETS)\tREDIRECTS\n")
	for _, f := range fs {
		red := f.Redirects
		if !f.RedirectsOK {
			red = "WARNING " + red
		}
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%d/%d\t%d (%d)\t%s\n", f.Family, strings.Join(f.ServiceSubnets, ","), f.PeersUp, f.Peers,
			f.RoutesInstalled, f.RoutesDesired, f.Exemptions, f.ExemptedPackets, red)
	}
	tw.Flush()
	fmt.Fprintln(w)
}

// verdictsSent is the VERDICTS column: how many verdicts the peer was
// sent, "no add-path" when it cannot receive them (FRR, BIRD, an older
// speaker), "-" while its session is down.
func verdictsSent(v *agent.PeerVerdicts) string {
	switch {
	case v == nil:
		return "-"
	case !v.AddPathReceive:
		return "no add-path"
	}
	return strconv.Itoa(v.Sent)
}

func printPeers(w io.Writer, peers []agent.PeerStatus) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "PEER\tASN\tSTATE\tSINCE\tEOR\tRECEIVED\tACCEPTED\tVERDICTS\tREJECTED\n")
	for _, p := range peers {
		since := "-"
		if !p.Since.IsZero() {
			since = time.Since(p.Since).Round(time.Second).String()
		}
		rej := reasons(p.Rejected)
		if p.MaxPrefixTeardowns > 0 {
			rej += fmt.Sprintf(" (closed %dx over maxPrefixes)", p.MaxPrefixTeardowns)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%v\t%d\t%d\t%s\t%s\n", p.Address, p.ASN, p.State, since, p.EndOfRIB, p.Received, p.Accepted, verdictsSent(p.Verdicts), rej)
	}
	if len(peers) == 0 {
		fmt.Fprintf(tw, "(no peers yet)\n")
	}
	tw.Flush()
}

func printPrefixes(w io.Writer, p agent.PrefixSummary) {
	fmt.Fprintf(w, "\nprefixes: %d accepted, %d rejected %s\n", p.Accepted, p.Rejected, reasons(p.ByReason))
	if p.Undecodable > 0 {
		// GoBGP delivered paths the agent could not read: a bug or a
		// peer sending what GoBGP accepts and we do not. Never silent.
		fmt.Fprintf(w, "  %d path(s) could not be decoded and were ignored (see the agent's log)\n", p.Undecodable)
	}
	if len(p.RejectedPaths) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  REJECTED\tPEER\tNEXT HOP\tREASON\n")
	for i, r := range p.RejectedPaths {
		if i == 20 {
			fmt.Fprintf(tw, "  ... %d more (status --json)\t\t\t\n", len(p.RejectedPaths)-20)
			break
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", r.Prefix, r.Peer, r.NextHop, r.Reason)
	}
	tw.Flush()
}

func printRoutes(w io.Writer, c agent.StatusConfig, rs agent.RouteSummary, all bool) {
	widths := make([]int, 0, len(rs.ECMPWidth))
	for k := range rs.ECMPWidth {
		widths = append(widths, k)
	}
	sort.Ints(widths)
	var ws []string
	for _, k := range widths {
		ws = append(ws, fmt.Sprintf("%d next hop(s): %d", k, rs.ECMPWidth[k]))
	}
	fmt.Fprintf(w, "\nroutes (table %d, metric %d, proto %d): %d desired, %d installed", c.Table, c.Metric, c.Protocol, rs.Desired, rs.Installed)
	if len(ws) > 0 {
		fmt.Fprintf(w, " [%s]", strings.Join(ws, ", "))
	}
	if rs.Stale > 0 {
		fmt.Fprintf(w, ", %d stale next hops kept awaiting End-of-RIB", rs.Stale)
	}
	if rs.Draining > 0 {
		fmt.Fprintf(w, ", %d next hops draining (GRACEFUL_SHUTDOWN)", rs.Draining)
	}
	fmt.Fprintln(w)
	if rs.NexthopGroups != "" {
		fmt.Fprintf(w, "  installed as: %s", rs.NexthopGroups)
		if rs.NexthopGroups == "resilient" {
			fmt.Fprintf(w, " nexthop groups (%d groups, %d next-hop objects)", rs.Groups, rs.Nexthops)
		} else {
			fmt.Fprint(w, " multipath routes")
		}
		if rs.NexthopGroupsReason != "" {
			fmt.Fprintf(w, ": %s", rs.NexthopGroupsReason)
		}
		if rs.Weighted > 0 {
			fmt.Fprintf(w, "; %d weighted by link bandwidth", rs.Weighted)
		}
		fmt.Fprintln(w)
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  PREFIX\tSTATE\tDESIRED\tINSTALLED\n")
	shown, hidden := 0, 0
	for _, r := range rs.List {
		// Every route that is not simply installed, and the first
		// installed ones: a router with 10,000 services needs --all.
		if r.State == "installed" && shown >= maxInstalledShown && !all {
			hidden++
			continue
		}
		if r.State == "installed" {
			shown++
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", r.Prefix, r.State, addrs(r.Desired), weightedAddrs(r.Installed, r.Weights))
	}
	if hidden > 0 {
		fmt.Fprintf(tw, "  ... %d more installed (status --all, or --json)\t\t\t\n", hidden)
	}
	tw.Flush()
	for _, cf := range rs.Conflicts {
		fmt.Fprintf(w, "  CONFLICT %s: held by a route of protocol %d, left alone: %s\n", cf.Prefix, cf.Protocol, cf.Route)
	}
	for _, e := range rs.Errors {
		fmt.Fprintf(w, "  ERROR %s: %s\n", e.Prefix, e.Err)
	}
	fmt.Fprintln(w)
}

func printFirewall(w io.Writer, c agent.StatusConfig, f *firewall.Status) {
	if f == nil {
		fmt.Fprintf(w, "firewall: mode %s\n", c.FirewallMode)
		return
	}
	fmt.Fprintf(w, "firewall: mode %s, backend %q, %s/%s, %d rules, %d repairs", f.Mode, f.Backend, f.Table, f.Chain, len(f.Rules), f.Repairs)
	if f.Reason != "" {
		fmt.Fprintf(w, " (%s)", f.Reason)
	}
	fmt.Fprintln(w)
	if f.LastError != "" {
		fmt.Fprintf(w, "  ERROR %s\n", f.LastError)
	}
	printInvalidCounters(w, f)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	if len(f.Rules) > 0 {
		fmt.Fprintf(tw, "  INTERFACE\tSUBNET\tPROTO\tBACKEND\tPACKETS\tBYTES\n")
	}
	for _, r := range f.Rules {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d\t%d\n", r.Interface, r.Subnet, r.Protocol, r.Where(), r.Packets, r.Bytes)
	}
	tw.Flush()
	if len(f.Redirects) > 0 {
		fmt.Fprintf(tw, "  ICMPv6 REDIRECTS DROPPED (%s)\tSUBNET\tBACKEND\tPACKETS\tBYTES\n", redirectChainName(f.Redirects))
	}
	for _, r := range f.Redirects {
		fmt.Fprintf(tw, "  \t%s\t%s\t%d\t%d\n", r.Subnet, r.Backend, r.Packets, r.Bytes)
	}
	tw.Flush()
}

// redirectChainName names where the ICMPv6 redirect rules live: our
// ip6tables chain, or our own native nftables table and chain.
func redirectChainName(rs []firewall.RedirectStatus) string {
	if rs[0].Backend == string(firewall.Nftables) {
		return "inet " + firewall.NftRedirectTable + " " + firewall.NftRedirectChain
	}
	return firewall.RedirectChainName
}

func printSysctl(w io.Writer, s agent.Status) {
	if r := s.Sysctl; r != nil {
		names := make([]string, 0, len(r.Interfaces))
		for n := range r.Interfaces {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintf(w, "send_redirects: all=%d default=%d", r.All, r.Default)
		for _, n := range names {
			if r.Interfaces[n].Missing {
				fmt.Fprintf(w, " %s=missing", n)
				continue
			}
			fmt.Fprintf(w, " %s=%d (effective %d)", n, r.Interfaces[n].Value, r.Interfaces[n].Effective)
		}
		fmt.Fprintln(w)
	}
	if s.SysctlError != "" {
		fmt.Fprintf(w, "  ERROR sysctl: %s\n", s.SysctlError)
	}
}

func reasons[K ~string](m map[K]int) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, string(k))
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s: %d", k, m[K(k)])
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

func addrs(as []netip.Addr) string {
	if len(as) == 0 {
		return "-"
	}
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

// weightedAddrs is addrs with each next hop's weight, "a*3 b*1", when the
// weights are unequal.
func weightedAddrs(as []netip.Addr, w []uint16) string {
	if len(w) != len(as) {
		return addrs(as)
	}
	parts := make([]string, len(as))
	for i, a := range as {
		parts[i] = fmt.Sprintf("%s*%d", a, w[i])
	}
	return strings.Join(parts, ",")
}
