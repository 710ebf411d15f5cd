package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/bgplb/bgplb/routeragent/agent"
	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/doctor"
	"github.com/bgplb/bgplb/routeragent/tcpstat"
)

// diagnose is `doctor`: it gathers what the host looks like, adds what the
// running agent knows (routes desired vs installed), and prints the
// findings with fixes. Exit status 1 when a check fails.
func diagnose(o options, stdout, stderr io.Writer) int {
	cfg := loadForMaintenance(o.config, stderr)
	socket := o.socket
	if socket == "" {
		socket = cfg.StatusSocket
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sctx, scancel := context.WithTimeout(ctx, 3*time.Second)
	st, _, fetchErr := agent.FetchStatus(sctx, socket)
	scancel()
	answered := fetchErr == nil
	extra, rts := agentFindings(socket, st, fetchErr)
	in, err := doctor.Gather(ctx, doctor.GatherConfig{
		LANInterfaces: cfg.LANInterfaces, ServiceSubnets: cfg.ServicePrefixes(),
		FirewallMode: cfg.Firewall.Mode, Protocols: cfg.Firewall.Protocols, Routes: rts, FirewallBackend: cfg.Firewall.Backend,
	})
	if err != nil {
		fmt.Fprintf(stderr, "doctor: %v\n", err)
		return ExitFailure
	}
	in.Security = securityInput(cfg, stderr)
	in.Symmetry = symmetryInput(st, fetchErr)
	findings := append(extra, doctor.Run(ctx, in)...)
	findings = append(findings, doctor.CheckBFD(bfdInput(cfg, st, answered))...)
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(findings)
	} else {
		printFindings(stdout, findings)
	}
	for _, f := range findings {
		if f.Status == doctor.Fail {
			return ExitFailure
		}
	}
	return ExitOK
}

// agentFindings turns the running agent's status (or the error fetching it
// from socket) into findings, and into the routes doctor compares with the
// FIB (nil when the agent does not answer).
func agentFindings(socket string, st agent.Status, err error) ([]doctor.Finding, *doctor.Routes) {
	if err != nil {
		return []doctor.Finding{{Check: "agent", Status: doctor.Fail,
			Message: fmt.Sprintf("the agent does not answer on %s: %v", socket, err),
			Fix:     "systemctl start bgplb-routeragent; journalctl -u bgplb-routeragent"}}, nil
	}
	r := doctor.Routes{Desired: st.Routes.Desired, Installed: st.Routes.Installed, InstalledAs: installedAs(st.Routes)}
	for _, rt := range st.Routes.List {
		if rt.State != "installed" && rt.State != "stale" {
			r.Missing = append(r.Missing, rt.Prefix)
		}
	}
	up := 0
	for _, p := range st.Peers {
		if p.Up {
			up++
		}
	}
	f := doctor.Finding{Check: "bgp", Status: doctor.OK, Message: fmt.Sprintf("%d of %d speakers established", up, len(st.Peers))}
	if up == 0 {
		f.Status = doctor.Warn
		f.Message = "no speaker has an established session"
		f.Fix = fmt.Sprintf("check the speakers' BGPPeer (router address, port %d, ASN %d) and that TCP %d reaches this router", st.Config.ListenPort, st.Config.ASN, st.Config.ListenPort)
	}
	return []doctor.Finding{f}, &r
}

// securityInput is the security section's input: the config, its password
// files and the live interfaces (left out when they cannot be listed).
func securityInput(cfg *config.Config, stderr io.Writer) *doctor.SecurityInput {
	in := doctor.SecurityInputFor(cfg)
	in.PasswordFiles = doctor.PasswordFiles(cfg)
	ifs, err := doctor.InterfaceAddrs()
	if err != nil {
		fmt.Fprintf(stderr, "doctor: %v; security checks without the interfaces\n", err)
	}
	in.Interfaces = ifs
	if d, err := tcpstat.Read(); err == nil {
		in.TCPDrops = &d
	}
	return &in
}

// printFindings prints one line per finding (and its fix), with a heading
// where a section starts.
func printFindings(w io.Writer, findings []doctor.Finding) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	section := ""
	for _, f := range findings {
		if f.Section != section && f.Section != "" {
			fmt.Fprintf(tw, "%s:\n", f.Section)
		}
		section = f.Section
		check := f.Check
		if f.Family != "" {
			// The IPv4 and IPv6 counterparts of a check come one after
			// the other; the family tells them apart.
			check += " (" + f.Family + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", f.Status, check, f.Message)
		if f.Fix != "" {
			fmt.Fprintf(tw, "\t\tfix: %s\n", f.Fix)
		}
	}
	tw.Flush()
}

// installedAs says how the agent installs routes, for doctor.
func installedAs(rs agent.RouteSummary) string {
	var s string
	switch rs.NexthopGroups {
	case "":
		return ""
	case "resilient":
		s = "resilient nexthop groups (a next hop that leaves moves only its own flows)"
	default:
		s = "plain multipath routes (a change of next hops re-hashes flows)"
	}
	if rs.NexthopGroupsReason != "" {
		s += ": " + rs.NexthopGroupsReason
	}
	return s
}
