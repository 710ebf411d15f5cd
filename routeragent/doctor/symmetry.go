package doctor

import (
	"fmt"
	"strings"

	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/firewall"
	"github.com/bgplb/bgplb/routeragent/symmetry"
)

// SymmetryInput is what the running agent proved in firewall mode verify.
type SymmetryInput struct {
	// Status is the agent's symmetry section; nil when it has none (the
	// agent does not run verify mode yet).
	Status *symmetry.Status
}

// symmetryFix is what to do about asymmetric service traffic.
const symmetryFix = "make the nodes' replies return through this router: set returnPath: symmetric on the speakers' BGPPeer " +
	"for this router (the nodes need it when clients share their subnet); or go back to the exemptions: " +
	"set firewall.mode: exempt in /etc/bgplb/routeragent.yaml and systemctl reload bgplb-routeragent"

// checkSymmetry is verify mode's check: the agent adds no exemption, so
// service traffic works only when its path is symmetric; this fails when
// the agent saw a flow go one way only or the service subnets' INVALID
// counter rise, and passes when service flows are ASSURED.
func checkSymmetry(in Input) []Finding {
	if in.FirewallMode != config.FirewallVerify {
		return nil
	}
	if in.Symmetry == nil {
		return []Finding{{Check: "symmetry", Status: Warn,
			Message: "firewall mode is verify but the agent does not answer: symmetry not proven",
			Fix:     "systemctl start bgplb-routeragent; bgplb-routeragent status"}}
	}
	s := in.Symmetry.Status
	if s == nil {
		return []Finding{{Check: "symmetry", Status: Warn,
			Message: "firewall mode is verify in the configuration, but the running agent does not check symmetry (not reloaded yet?)",
			Fix:     "systemctl reload bgplb-routeragent"}}
	}
	var out []Finding
	if s.LastError != "" {
		out = append(out, Finding{Check: "symmetry", Status: Warn, Message: "the agent cannot read conntrack: " + s.LastError,
			Fix: "journalctl -u bgplb-routeragent; conntrack -L (package conntrack)"})
	}
	switch s.Verdict {
	case symmetry.Asymmetric:
		msg := "service traffic is asymmetric: " + s.Reason
		if len(s.Offenders) > 0 {
			nodes := map[string]bool{}
			var list []string
			for _, o := range s.Offenders {
				for _, n := range o.Nodes {
					if !nodes[n] {
						nodes[n] = true
						list = append(list, n)
					}
				}
			}
			if len(list) > 0 {
				msg += fmt.Sprintf("; nodes answering around the router: %s", strings.Join(list, ", "))
			}
		}
		if s.InvalidKnown {
			msg += fmt.Sprintf("; %d INVALID service packets counted (the firewall drops them)", s.InvalidPackets)
		}
		out = append(out, Finding{Check: "symmetry", Status: Fail, Message: msg, Fix: symmetryFix})
	case symmetry.Symmetric:
		out = append(out, Finding{Check: "symmetry", Status: OK,
			Message: fmt.Sprintf("service traffic is symmetric: %s (INVALID service packets: %d)", s.Reason, s.InvalidPackets)})
	default:
		out = append(out, Finding{Check: "symmetry", Status: Warn,
			Message: "firewall mode verify: " + s.Reason,
			Fix:     "connect a client to a service address, then run bgplb-routeragent doctor again"})
	}
	return out
}

// verifyFirewallFinding is, in verify mode, the finding for a backend
// whose forward path drops INVALID packets: the drop must stay in force
// for service traffic, so no exemption of ours may precede it.
func verifyFirewallFinding(where string, ours bool, fix string) Finding {
	if ours {
		return Finding{Check: "firewall", Status: Fail,
			Message: "firewall mode is verify, but bgplb's exemptions are still in " + where + ": INVALID service packets are accepted",
			Fix:     "systemctl reload bgplb-routeragent (verify mode removes them), or by hand: " + fix}
	}
	return Finding{Check: "firewall", Status: OK,
		Message: "firewall mode verify: no exemption; the INVALID drop in " + where + " applies to service traffic too (see the symmetry check)"}
}

// verifyRemoveFix is the by-hand removal of our iptables chain.
func verifyRemoveFix(tool string) string {
	return fmt.Sprintf("%s -D FORWARD -m comment --comment %q -j %s; %s -F %s; %s -X %s", tool, firewall.JumpComment, firewall.ChainName,
		tool, firewall.ChainName, tool, firewall.ChainName)
}
