// Package doctor checks, on the router, what the source documents
// diagnosed by hand: forwarding, ICMP redirects, reverse-path filtering,
// where the firewall's INVALID drop sits relative to our exemptions,
// conntrack's INVALID counter, and whether the routes the agent wants are
// in the kernel. Run is a pure evaluation of observations (Input) into
// findings, each with a concrete fix; Gather reads the observations from
// the host.
package doctor

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/firewall"
	"github.com/bgplb/bgplb/routeragent/sysctl"
)

// Finding statuses.
const (
	OK   = "ok"
	Warn = "warn"
	Fail = "fail"
)

// Finding is one check's result.
type Finding struct {
	// Check names the check (ip_forward, send_redirects, rp_filter,
	// firewall, conntrack, routes, nftables).
	Check string `json:"check"`
	// Status is ok, warn or fail.
	Status string `json:"status"`
	// Message says what was found.
	Message string `json:"message"`
	// Fix is a command (or short instruction) that fixes it; "" when ok.
	Fix string `json:"fix,omitempty"`
	// Section groups findings: "" for the host checks, SectionSecurity
	// for who can reach and steer the router's BGP.
	Section string `json:"section,omitempty"`
	// Family is ipv4 or ipv6 for a check of one address family, "" for
	// one that covers both.
	Family string `json:"family,omitempty"`
}

// Input is everything the checks look at. Gather fills it from the host;
// tests build it by hand.
type Input struct {
	// LANInterfaces, ServiceSubnets, FirewallMode and Protocols are the
	// agent's configuration (what should be true).
	LANInterfaces  []string
	ServiceSubnets []netip.Prefix
	FirewallMode   config.FirewallMode
	Protocols      []string
	// FirewallBackend is firewall.backend ("" = auto).
	FirewallBackend config.FirewallBackend

	// IPForward is net.ipv4.ip_forward, -1 when unreadable.
	IPForward int
	// Redirects is send_redirects for all, default and each LAN interface.
	Redirects sysctl.Report
	// RedirectsErr is why Redirects could not be read.
	RedirectsErr string
	// RPFilter is rp_filter: "all" and each LAN interface; -1 when missing.
	RPFilter map[string]int

	// Firewall is the IPv4 filter table per backend ("legacy", "nft").
	Firewall map[firewall.Backend]Listing
	// Firewall6 is the same for IPv6 (ip6tables), looked at when a
	// service subnet is IPv6.
	Firewall6 map[firewall.Backend]Listing

	// ConntrackInvalid is conntrack's "invalid" counter summed over CPUs;
	// ConntrackKnown is false when nf_conntrack statistics are absent.
	ConntrackInvalid uint64
	ConntrackKnown   bool

	// Routes is passed in by the agent; nil when not known (agent down).
	Routes *Routes

	// Nft is the native nftables ruleset read through netlink, nil when
	// not looked at; NftErr is why it could not be read.
	Nft    *firewall.NftRuleset
	NftErr string

	// Security, when set, adds the security section (see Security).
	Security *SecurityInput

	// IPv6, when set (an IPv6 service subnet is configured), adds the
	// IPv6 host checks next to their IPv4 counterparts.
	IPv6 *IPv6Input

	// Symmetry is what the running agent proved in firewall mode verify
	// (nil when the agent does not answer); see checkSymmetry.
	Symmetry *SymmetryInput
}

// Listing is one backend's filter table as `iptables -v -S` prints it.
type Listing struct {
	// Available is false when the tool is not installed.
	Available bool
	// Lines is the listing (nil when the table does not exist).
	Lines []string
	// Err is why listing failed.
	Err string
}

// Routes compares what the agent wants in the kernel with what is there.
type Routes struct {
	Desired   int
	Installed int
	// Missing are desired prefixes not installed (or owned by someone else).
	Missing []netip.Prefix
	// InstalledAs says how routes reach the kernel (resilient nexthop
	// groups or plain multipath, and why); "" when not known.
	InstalledAs string
}

// Run evaluates the checks. It does no I/O.
func Run(ctx context.Context, in Input) []Finding {
	var out []Finding
	// Each IPv4 host check is followed by its IPv6 counterpart, so that
	// both families read side by side.
	out = append(out, family(firewall.IPv4, checkForward(in))...)
	if in.IPv6 != nil {
		out = append(out, checkForward6(*in.IPv6))
	}
	out = append(out, family(firewall.IPv4, checkRedirects(in)...)...)
	if in.IPv6 != nil {
		out = append(out, checkRedirects6(in))
	}
	out = append(out, family(firewall.IPv4, checkRPFilter(in)...)...)
	if in.IPv6 != nil {
		out = append(out, checkRPFilter6(*in.IPv6))
	}
	fw := checkFirewall(in)
	out = append(out, fw...)
	fwBroken := slices.ContainsFunc(fw, func(f Finding) bool { return f.Status == Fail })
	out = append(out, checkConntrack(in, fwBroken))
	out = append(out, checkNftables(in)...)
	out = append(out, checkSymmetry(in)...)
	if in.Routes != nil {
		out = append(out, checkRoutes(*in.Routes))
	}
	if in.Security != nil {
		out = append(out, Security(*in.Security)...)
	}
	return out
}

// family tags findings with their address family.
func family(fam firewall.Family, fs ...Finding) []Finding {
	for i := range fs {
		fs[i].Family = string(fam)
	}
	return fs
}

// Healthy reports whether no finding failed or warned.
func Healthy(fs []Finding) bool {
	return !slices.ContainsFunc(fs, func(f Finding) bool { return f.Status != OK })
}

func checkForward(in Input) Finding {
	switch in.IPForward {
	case 1:
		return Finding{Check: "ip_forward", Status: OK, Message: "IPv4 forwarding is on"}
	case -1:
		return Finding{Check: "ip_forward", Status: Warn, Message: "net.ipv4.ip_forward could not be read", Fix: "sysctl net.ipv4.ip_forward"}
	}
	return Finding{Check: "ip_forward", Status: Fail,
		Message: "IPv4 forwarding is off: the router forwards nothing, service traffic included",
		Fix:     "sysctl -w net.ipv4.ip_forward=1 && echo net.ipv4.ip_forward=1 > /etc/sysctl.d/90-bgplb-forward.conf"}
}

func sysctlName(iface string) string { return strings.ReplaceAll(iface, ".", "/") }

func checkRedirects(in Input) []Finding {
	if in.RedirectsErr != "" {
		return []Finding{{Check: "send_redirects", Status: Warn, Message: "could not read send_redirects: " + in.RedirectsErr,
			Fix: "sysctl -a --pattern 'send_redirects'"}}
	}
	r := in.Redirects
	var out []Finding
	var sending, missing []string
	for _, name := range in.LANInterfaces {
		ir, ok := r.Interfaces[name]
		switch {
		case !ok || ir.Missing:
			missing = append(missing, name)
		case ir.Effective != 0:
			sending = append(sending, name)
		}
	}
	if len(sending) > 0 {
		var keys []string
		if r.All != 0 {
			keys = append(keys, "net.ipv4.conf.all.send_redirects=0")
		}
		for _, n := range sending {
			if r.Interfaces[n].Value != 0 {
				keys = append(keys, "net.ipv4.conf."+sysctlName(n)+".send_redirects=0")
			}
		}
		out = append(out, Finding{Check: "send_redirects", Status: Fail,
			Message: fmt.Sprintf("the router sends ICMP redirects on %s (effective = all OR interface): Linux clients bypass it for minutes, Windows and Android clients ignore them and never connect",
				strings.Join(sending, ", ")),
			Fix: "sysctl -w " + strings.Join(keys, " ") + "   (bgplb-routeragent sets these at start; is it running?)"})
	}
	if r.Default != 0 {
		out = append(out, Finding{Check: "send_redirects", Status: Warn,
			Message: "net.ipv4.conf.default.send_redirects=1: a LAN interface created later (VLAN, bridge) starts sending redirects",
			Fix:     "sysctl -w net.ipv4.conf.default.send_redirects=0"})
	}
	if len(missing) > 0 {
		out = append(out, Finding{Check: "send_redirects", Status: Warn,
			Message: "LAN interface(s) not found: " + strings.Join(missing, ", "),
			Fix:     "ip link show; check lanInterfaces in /etc/bgplb/routeragent.yaml"})
	}
	if len(out) == 0 {
		out = append(out, Finding{Check: "send_redirects", Status: OK,
			Message: "no ICMP redirects from " + strings.Join(in.LANInterfaces, ", ") + " (all, default and the interfaces are 0)"})
	}
	return out
}

func checkRPFilter(in Input) []Finding {
	all := in.RPFilter["all"]
	var strict []string
	for _, name := range in.LANInterfaces {
		v, ok := in.RPFilter[name]
		if !ok || v < 0 {
			continue
		}
		// The kernel uses the larger of all and the interface.
		if max(all, v) == 1 {
			strict = append(strict, name)
		}
	}
	if len(strict) == 0 {
		return []Finding{{Check: "rp_filter", Status: OK, Message: "no strict reverse-path filtering on the LAN interfaces"}}
	}
	keys := []string{}
	if all == 1 {
		keys = append(keys, "net.ipv4.conf.all.rp_filter=2")
	}
	for _, n := range strict {
		keys = append(keys, "net.ipv4.conf."+sysctlName(n)+".rp_filter=2")
	}
	return []Finding{{Check: "rp_filter", Status: Warn,
		Message: "strict reverse-path filtering (rp_filter=1) on " + strings.Join(strict, ", ") +
			": with asymmetric paths (replies that bypass the router, several LAN interfaces) packets whose return route uses another interface are dropped silently",
		Fix: "sysctl -w " + strings.Join(keys, " ") + "   (loose mode)"}}
}

func toolName(b firewall.Backend, fam firewall.Family) string {
	if fam == firewall.IPv6 {
		return "ip6tables-" + string(b)
	}
	return "iptables-" + string(b)
}

func checkFirewall(in Input) []Finding {
	cfg := firewall.Config{Interfaces: in.LANInterfaces, Subnets: in.ServiceSubnets, Protocols: in.Protocols}
	out := family(firewall.IPv4, checkFirewallFamily(in, firewall.IPv4, in.Firewall, firewall.Desired(cfg, firewall.IPv4))...)
	if want6 := firewall.Desired(cfg, firewall.IPv6); len(want6) > 0 {
		out = append(out, family(firewall.IPv6, checkFirewallFamily(in, firewall.IPv6, in.Firewall6, want6)...)...)
	}
	return out
}

func checkFirewallFamily(in Input, fam firewall.Family, listings map[firewall.Backend]Listing, want []firewall.Exemption) []Finding {
	var out []Finding
	toolName := func(b firewall.Backend) string { return toolName(b, fam) }
	type seen struct {
		b firewall.Backend
		a firewall.Analysis
		t firewall.Table
	}
	var tables []seen
	for _, b := range []firewall.Backend{firewall.Legacy, firewall.NFT} {
		l, ok := listings[b]
		if !ok || !l.Available {
			continue
		}
		if l.Err != "" {
			out = append(out, Finding{Check: "firewall", Status: Warn, Message: fmt.Sprintf("could not list %s: %s", toolName(b), l.Err),
				Fix: toolName(b) + " -S"})
			continue
		}
		t, err := firewall.ParseTable(l.Lines)
		if err != nil {
			out = append(out, Finding{Check: "firewall", Status: Warn, Message: fmt.Sprintf("could not parse the %s listing: %v", toolName(b), err), Fix: toolName(b) + " -S"})
			continue
		}
		tables = append(tables, seen{b, firewall.Analyze(t), t})
	}
	var withDrop []seen
	for _, s := range tables {
		if s.a.Drop != nil {
			withDrop = append(withDrop, s)
		}
	}
	if len(withDrop) == 0 {
		if len(tables) > 0 {
			out = append(out, Finding{Check: "firewall", Status: OK, Message: fmt.Sprintf("no rule drops conntrack-INVALID forwarded %s packets in either backend; nothing to exempt", fam)})
		}
		return out
	}
	if in.FirewallMode == config.FirewallVerify {
		for _, s := range withDrop {
			where := fmt.Sprintf("%s FORWARD rule %d (%s)", toolName(s.b), s.a.Drop.ForwardIndex, s.a.Drop.Rule)
			out = append(out, verifyFirewallFinding(where, s.a.HasChain || len(s.a.JumpIndexes) > 0, verifyRemoveFix(toolName(s.b))))
		}
		return out
	}
	if in.FirewallMode == config.FirewallOff {
		for _, s := range withDrop {
			out = append(out, Finding{Check: "firewall", Status: Warn,
				Message: fmt.Sprintf("firewall mode is off and %s drops INVALID packets (FORWARD rule %d: %s): clients on the nodes' L2 cannot keep connections to services",
					toolName(s.b), s.a.Drop.ForwardIndex, s.a.Drop.Rule),
				Fix: "set firewall.mode: exempt in /etc/bgplb/routeragent.yaml and systemctl reload bgplb-routeragent"})
		}
		return out
	}
	for _, s := range withDrop {
		tool := toolName(s.b)
		where := fmt.Sprintf("%s FORWARD rule %d (%s)", tool, s.a.Drop.ForwardIndex, s.a.Drop.Rule)
		if s.a.Drop.Chain != "FORWARD" {
			where = fmt.Sprintf("%s chain %s (%s), reached from FORWARD rule %d", tool, s.a.Drop.Chain, s.a.Drop.Rule, s.a.Drop.ForwardIndex)
		}
		jumpFix := tool + " -I FORWARD 1 -m comment --comment \"" + firewall.JumpComment + "\" -j " + firewall.ChainName
		var otherHasOurs []string
		for _, o := range tables {
			if o.b != s.b && (o.a.HasChain || len(o.a.JumpIndexes) > 0) {
				otherHasOurs = append(otherHasOurs, toolName(o.b))
			}
		}
		switch {
		case len(s.a.JumpIndexes) == 0:
			msg := "the INVALID drop in " + where + " is not preceded by the jump to " + firewall.ChainName + ": asymmetric service traffic is dropped"
			if len(otherHasOurs) > 0 {
				msg += "; our chain is in " + strings.Join(otherHasOurs, ", ") + ", and an ACCEPT in one backend does not undo a DROP in the other"
			}
			out = append(out, Finding{Check: "firewall", Status: Fail, Message: msg,
				Fix: "systemctl restart bgplb-routeragent (firewall.backend: auto finds the drop), or by hand: " + jumpFix})
			continue
		case s.a.JumpIndexes[0] > s.a.Drop.ForwardIndex:
			out = append(out, Finding{Check: "firewall", Status: Fail,
				Message: fmt.Sprintf("the jump to %s is FORWARD rule %d, after the INVALID drop in %s: it never sees the packets", firewall.ChainName, s.a.JumpIndexes[0], where),
				Fix:     "systemctl reload bgplb-routeragent (it moves the jump to the top), or by hand: " + jumpFix})
			continue
		case len(s.a.JumpIndexes) > 1:
			out = append(out, Finding{Check: "firewall", Status: Warn,
				Message: fmt.Sprintf("%d jumps to %s in %s FORWARD (rules %v); the agent keeps exactly one", len(s.a.JumpIndexes), firewall.ChainName, tool, s.a.JumpIndexes),
				Fix:     "systemctl reload bgplb-routeragent"})
		}
		// The chain must hold every exemption.
		have := s.t.Rules[firewall.ChainName]
		var missing []string
		for _, e := range want {
			if !slices.ContainsFunc(have, func(r firewall.Rule) bool { return slices.Equal(r.Args, e.Args()) }) {
				missing = append(missing, tool+" -A "+firewall.ChainName+" "+firewall.Rule{Args: e.Args()}.String())
			}
		}
		if len(missing) > 0 {
			out = append(out, Finding{Check: "firewall", Status: Fail,
				Message: fmt.Sprintf("%s lacks %d of %d exemptions in %s", tool, len(missing), len(want), firewall.ChainName),
				Fix:     "systemctl reload bgplb-routeragent, or by hand: " + strings.Join(missing, " ; ")})
			continue
		}
		var pk uint64
		for _, r := range have {
			pk += r.Packets
		}
		out = append(out, Finding{Check: "firewall", Status: OK,
			Message: fmt.Sprintf("the jump to %s (FORWARD rule %d) precedes the INVALID drop in %s; %d exemptions, %d packets accepted",
				firewall.ChainName, s.a.JumpIndexes[0], where, len(want), pk)})
	}
	return out
}

func checkConntrack(in Input, firewallBroken bool) Finding {
	if !in.ConntrackKnown {
		return Finding{Check: "conntrack", Status: Warn, Message: "conntrack statistics not available (nf_conntrack not loaded?)",
			Fix: "conntrack -S   (package conntrack)"}
	}
	if in.ConntrackInvalid == 0 {
		return Finding{Check: "conntrack", Status: OK, Message: "no INVALID packets counted by conntrack"}
	}
	if in.FirewallMode == config.FirewallVerify {
		return Finding{Check: "conntrack", Status: OK,
			Message: fmt.Sprintf("conntrack counted %d INVALID packets since boot, all traffic (the symmetry check counts the service subnets')", in.ConntrackInvalid)}
	}
	if firewallBroken {
		return Finding{Check: "conntrack", Status: Fail,
			Message: fmt.Sprintf("conntrack counted %d INVALID packets and the exemptions are not in effect: asymmetric service connections are being dropped", in.ConntrackInvalid),
			Fix:     "fix the firewall finding above; watch `conntrack -S` (invalid=) while a client connects to a service"}
	}
	return Finding{Check: "conntrack", Status: OK,
		Message: fmt.Sprintf("conntrack counted %d INVALID packets since boot (asymmetric service traffic counts here and is accepted by the exemptions)", in.ConntrackInvalid)}
}

// checkNftables reports, for each native nftables forward base chain whose
// path drops INVALID packets (firewall.AnalyzeNft: the same analysis the
// agent uses, on the expressions read through netlink), where the drop is
// and where our jump is relative to it.
func checkNftables(in Input) []Finding {
	if in.NftErr != "" {
		return []Finding{{Check: "nftables", Status: Warn, Message: "could not read the native nftables ruleset: " + in.NftErr, Fix: "nft list ruleset"}}
	}
	if in.Nft == nil {
		return nil
	}
	a := firewall.AnalyzeNft(*in.Nft)
	var out []Finding
	if a.Firewalld {
		out = append(out, Finding{Check: "nftables", Status: Warn,
			Message: fmt.Sprintf("firewalld manages this host's nftables ruleset (table %s): bgplb leaves it alone", firewall.FirewalldTable),
			Fix:     firewall.FirewalldAdvice})
	}
	if len(a.Drops) == 0 {
		if a.ForwardChains > 0 {
			out = append(out, Finding{Check: "nftables", Status: OK,
				Message: fmt.Sprintf("native nftables: %d forward chain(s), none drops conntrack-INVALID packets; nothing to exempt", a.ForwardChains)})
		}
		return out
	}
	cfg := firewall.Config{Interfaces: in.LANInterfaces, Subnets: in.ServiceSubnets, Protocols: in.Protocols}
	want := append(firewall.Desired(cfg, firewall.IPv4), firewall.Desired(cfg, firewall.IPv6)...)
	for _, d := range a.Drops {
		out = append(out, checkNftDrop(in, d, nftTable(*in.Nft, d.Table), want))
	}
	return out
}

func nftTable(rs firewall.NftRuleset, name string) firewall.NftTable {
	for _, t := range rs.Tables {
		if t.String() == name {
			return t
		}
	}
	return firewall.NftTable{}
}

// checkNftDrop is the finding for one forward base chain that drops.
func checkNftDrop(in Input, d firewall.NftDrop, t firewall.NftTable, want []firewall.Exemption) Finding {
	where := fmt.Sprintf("native nftables table %q chain %q drops INVALID packets (%s)", d.Table, d.BaseChain, d)
	switch {
	case in.FirewallMode == config.FirewallVerify:
		f := verifyFirewallFinding(fmt.Sprintf("native nftables table %q chain %q", d.Table, d.BaseChain), d.OurJumpIndex > 0 || t.Chain(firewall.NftChainName) != nil,
			fmt.Sprintf("nft delete chain %s %s   (after deleting our jump rules to it)", d.Table, firewall.NftChainName))
		f.Check = "nftables"
		return f
	case in.FirewallMode == config.FirewallOff:
		return Finding{Check: "nftables", Status: Warn,
			Message: where + " and firewall mode is off: clients on the nodes' L2 cannot keep connections to services",
			Fix:     "set firewall.mode: exempt in /etc/bgplb/routeragent.yaml and systemctl reload bgplb-routeragent"}
	case in.FirewallBackend == config.BackendLegacy || in.FirewallBackend == config.BackendNFT:
		return Finding{Check: "nftables", Status: Warn,
			Message: where + "; firewall.backend is " + string(in.FirewallBackend) + ", and bgplb's iptables exemptions cannot override it",
			Fix: "set firewall.backend: auto in /etc/bgplb/routeragent.yaml and systemctl reload bgplb-routeragent; or by hand: " +
				strings.Join(nftInsertFixes(in, d), " ; ") + "   (insert before the drop; or add it to /etc/nftables.conf)"}
	case d.OurJumpIndex == 0:
		return Finding{Check: "nftables", Status: Fail,
			Message: where + ", not preceded by the jump to " + firewall.NftChainName + ": asymmetric service traffic is dropped",
			Fix:     "systemctl status bgplb-routeragent (the agent puts the jump back within a second; bgplb-routeragent poke asks at once)"}
	case d.OurJumpIndex > d.BaseIndex:
		return Finding{Check: "nftables", Status: Fail,
			Message: fmt.Sprintf("%s; our jump to %s is rule %d, after it", where, firewall.NftChainName, d.OurJumpIndex),
			Fix:     "bgplb-routeragent poke (the agent moves its jump to the top)"}
	}
	var missing []string
	for _, e := range want {
		if !nftHasRule(t, e.Comment()) && nftFamilyHolds(t, e) {
			missing = append(missing, e.Interface+" "+e.Subnet.String()+" "+e.Protocol)
		}
	}
	if len(missing) > 0 {
		return Finding{Check: "nftables", Status: Fail,
			Message: fmt.Sprintf("%s; chain %s lacks the exemptions for %s", where, firewall.NftChainName, strings.Join(missing, ", ")),
			Fix:     "bgplb-routeragent poke (the agent rewrites its chain)"}
	}
	return Finding{Check: "nftables", Status: OK,
		Message: fmt.Sprintf("%s; our jump to %s is rule %d, before it", where, firewall.NftChainName, d.OurJumpIndex)}
}

func nftHasRule(t firewall.NftTable, comment string) bool {
	c := t.Chain(firewall.NftChainName)
	if c == nil {
		return false
	}
	return slices.ContainsFunc(c.Rules, func(r firewall.NftRule) bool { return r.Comment() == comment })
}

// nftFamilyHolds: an ip table holds IPv4 exemptions only, ip6 IPv6 ones.
func nftFamilyHolds(t firewall.NftTable, e firewall.Exemption) bool {
	switch firewall.FamilyName(t.Family) {
	case "ip":
		return e.Subnet.Addr().Is4()
	case "ip6":
		return e.Subnet.Addr().Is6()
	}
	return true
}

// nftInsertFixes are the `nft insert` commands that exempt by hand.
func nftInsertFixes(in Input, d firewall.NftDrop) []string {
	var out []string
	for _, ifc := range in.LANInterfaces {
		for _, s := range in.ServiceSubnets {
			fam := "ip"
			if s.Addr().Is6() {
				fam = "ip6"
			}
			out = append(out, fmt.Sprintf("nft insert rule %s %s iifname %q %s daddr %s meta l4proto tcp ct state invalid accept", d.Table, d.BaseChain, ifc, fam, s))
		}
	}
	return out
}

func checkRoutes(r Routes) Finding {
	if len(r.Missing) == 0 && r.Installed >= r.Desired {
		msg := fmt.Sprintf("%d of %d desired service routes are in the kernel", r.Installed, r.Desired)
		if r.InstalledAs != "" {
			msg += ", as " + r.InstalledAs
		}
		return Finding{Check: "routes", Status: OK, Message: msg}
	}
	var ps []string
	for i, p := range r.Missing {
		if i == 10 {
			ps = append(ps, fmt.Sprintf("… %d more", len(r.Missing)-10))
			break
		}
		ps = append(ps, p.String())
	}
	fix := "bgplb-routeragent status; ip route show proto bgplb"
	if len(r.Missing) > 0 {
		fix = "ip route show " + r.Missing[0].String() + "   (a route of another owner is left alone: remove it if it is stale); " + fix
	}
	return Finding{Check: "routes", Status: Fail,
		Message: fmt.Sprintf("%d of %d desired service routes are in the kernel; missing: %s", r.Installed, r.Desired, strings.Join(ps, ", ")),
		Fix:     fix}
}
