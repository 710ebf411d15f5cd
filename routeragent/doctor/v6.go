package doctor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/firewall"
	"github.com/bgplb/bgplb/routeragent/sysctl"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// IPv6Input is what the IPv6 host checks look at. Gather fills it when a
// service subnet is IPv6; nil means IPv4 only (no IPv6 checks).
type IPv6Input struct {
	// Forwarding is net.ipv6.conf.all.forwarding, -1 when unreadable.
	Forwarding int
	// RPFilter are the IPv6 reverse-path filter rules found: ip6tables
	// `-m rpfilter` in the raw and mangle tables of either backend, and
	// native nftables `fib saddr ... oif missing` rules in inet/ip6 tables.
	RPFilter []RPFilterRule
	// RPFilterErr says which of those could not be read.
	RPFilterErr string
}

// RPFilterRule is one IPv6 reverse-path filter rule.
type RPFilterRule struct {
	// Where names the tool, table and chain ("ip6tables-legacy raw
	// PREROUTING", "nft inet firewalld filter_PREROUTING").
	Where string
	// Rule is the rule as the tool prints it.
	Rule string
	// Loose is true for a loose check (ip6tables --loose; nft fib without
	// iif): only a source with no route at all is dropped.
	Loose bool
}

// checkForward6 is checkForward for IPv6. Only all.forwarding decides
// whether the kernel forwards (ip6_forward); per-interface forwarding only
// changes host/router behaviour such as accepting router advertisements.
func checkForward6(v6 IPv6Input) Finding {
	f := Finding{Check: "ipv6_forwarding", Family: string(firewall.IPv6)}
	switch v6.Forwarding {
	case 1:
		f.Status, f.Message = OK, "IPv6 forwarding is on"
	case -1:
		f.Status, f.Message, f.Fix = Warn, "net.ipv6.conf.all.forwarding could not be read", "sysctl net.ipv6.conf.all.forwarding"
	default:
		f.Status = Fail
		f.Message = "IPv6 forwarding is off: the router forwards no IPv6 packet, service traffic included"
		f.Fix = "sysctl -w net.ipv6.conf.all.forwarding=1 && echo net.ipv6.conf.all.forwarding=1 > /etc/sysctl.d/90-bgplb-forward.conf" +
			"   (a router that takes its own address from router advertisements also needs accept_ra=2 on that interface)"
	}
	return f
}

// checkRedirects6 is the IPv6 counterpart of send_redirects: IPv6 has no
// such sysctl, so the agent drops the router's ICMPv6 Redirects about the
// service subnets at the output hook (firewall.RedirectBlock): in
// ip6tables OUTPUT, or with native nftables in table inet bgplb
// (firewall.RedirectsInNative says which). It looks for our OUTPUT jump
// and a chain holding every desired rule in an ip6tables backend, and for
// our output chain holding them in the native ruleset read through
// netlink.
func checkRedirects6(in Input) Finding {
	f := Finding{Check: "icmpv6_redirects", Family: string(firewall.IPv6)}
	want := firewall.DesiredRedirectBlocks(firewall.Config{Subnets: in.ServiceSubnets})
	if len(want) == 0 {
		f.Status, f.Message = OK, "no IPv6 service subnet"
		return f
	}
	var listed []firewall.Backend
	var holders []string
	var pk uint64
	ip6Drop := false
	for _, b := range []firewall.Backend{firewall.Legacy, firewall.NFT} {
		l, ok := in.Firewall6[b]
		if !ok || !l.Available || l.Err != "" {
			continue
		}
		t, err := firewall.ParseTable(l.Lines)
		if err != nil {
			continue // the firewall check reports the listing
		}
		listed = append(listed, b)
		ip6Drop = ip6Drop || firewall.Analyze(t).Drop != nil
		if n, ok := redirectBlocked(t, want); ok {
			holders = append(holders, fmt.Sprintf("%s OUTPUT (chain %s)", toolName(b, firewall.IPv6), firewall.RedirectChainName))
			pk += n
		}
	}
	if in.Nft != nil {
		if n, ok := nftRedirectBlocked(*in.Nft, want); ok {
			holders = append(holders, fmt.Sprintf("native nftables table inet %s chain %s (hook output)", firewall.NftRedirectTable, firewall.NftRedirectChain))
			pk += n
		}
	}
	subnets := make([]string, len(want))
	for i, r := range want {
		subnets[i] = r.Subnet.String()
	}
	switch {
	case len(holders) > 0:
		f.Status = OK
		f.Message = fmt.Sprintf("ICMPv6 Redirects about %s are dropped in %s; %d suppressed",
			strings.Join(subnets, ", "), strings.Join(holders, " and "), pk)
	case len(listed) == 0 && in.Nft == nil:
		f.Status = Warn
		f.Message = "ip6tables could not be listed nor native nftables read: cannot tell whether the router sends ICMPv6 Redirects about " + strings.Join(subnets, ", ")
		f.Fix = "ip6tables-legacy -S OUTPUT; ip6tables-nft -S OUTPUT; nft list table inet " + firewall.NftRedirectTable
	default:
		f.Status = Fail
		if in.FirewallMode == config.FirewallOff {
			f.Status = Warn
		}
		f.Message = "nothing stops the router's ICMPv6 Redirects about " + strings.Join(subnets, ", ") +
			" (IPv6 has no send_redirects): with a link-local next hop, clients that obey them bypass the router and their connections go stale there"
		manual := firewall.NftRedirectCommands(want)
		if !redirectsBelongNative(in, listed, ip6Drop) {
			manual = redirectCommands(toolName(listed[0], firewall.IPv6), want)
		}
		f.Fix = "systemctl reload bgplb-routeragent (firewall.mode: exempt installs it), or by hand: " + strings.Join(manual, " ; ")
	}
	return f
}

// redirectsBelongNative mirrors firewall.RedirectsInNative for the manual
// fix: native nftables when firewall.backend is nftables, when no
// ip6tables could be listed, or in auto mode when native nftables has the
// forward path and ip6tables no IPv6 INVALID drop.
func redirectsBelongNative(in Input, listed []firewall.Backend, ip6Drop bool) bool {
	switch {
	case in.Nft == nil:
		return false
	case in.FirewallBackend == config.BackendNftables, len(listed) == 0:
		return true
	case in.FirewallBackend == config.BackendLegacy || in.FirewallBackend == config.BackendNFT:
		return false
	}
	a := firewall.AnalyzeNft(*in.Nft)
	return !ip6Drop && (len(a.Drops) > 0 || a.ForwardChains > 0)
}

// nftRedirectBlocked reports whether our native output chain holds every
// wanted rule, with the rules' packets.
func nftRedirectBlocked(rs firewall.NftRuleset, want []firewall.RedirectBlock) (uint64, bool) {
	var pk uint64
	for _, w := range want {
		n, _, ok := firewall.NftRedirectCounters(rs, w)
		if !ok {
			return 0, false
		}
		pk += n
	}
	return pk, true
}

// redirectCommands are the commands that install the redirect suppression
// by hand with tool.
func redirectCommands(tool string, want []firewall.RedirectBlock) []string {
	cmds := []string{tool + " -N " + firewall.RedirectChainName}
	for _, r := range want {
		cmds = append(cmds, tool+" -A "+firewall.RedirectChainName+" "+firewall.Rule{Args: r.Args()}.String())
	}
	return append(cmds, tool+" -I OUTPUT 1 "+firewall.Rule{Args: firewall.RedirectJumpArgs()}.String())
}

// redirectBlocked reports whether t jumps from OUTPUT to our redirect
// chain and that chain holds every wanted rule, with the rules' packets.
func redirectBlocked(t firewall.Table, want []firewall.RedirectBlock) (uint64, bool) {
	if !slices.ContainsFunc(t.Rules["OUTPUT"], func(r firewall.Rule) bool { return r.Target() == firewall.RedirectChainName }) {
		return 0, false
	}
	have := t.Rules[firewall.RedirectChainName]
	var pk uint64
	for _, w := range want {
		i := slices.IndexFunc(have, func(r firewall.Rule) bool { return slices.Equal(r.Args, w.Args()) })
		if i < 0 {
			return 0, false
		}
		pk += have[i].Packets
	}
	return pk, true
}

// checkRPFilter6 is checkRPFilter for IPv6, which has no rp_filter sysctl:
// the reverse-path filter is a firewall rule (ip6tables rpfilter, nft fib;
// firewalld adds one by default).
func checkRPFilter6(v6 IPv6Input) Finding {
	f := Finding{Check: "ipv6_rpfilter", Family: string(firewall.IPv6)}
	var strict []string
	for _, r := range v6.RPFilter {
		if !r.Loose {
			strict = append(strict, r.Where+": "+r.Rule)
		}
	}
	switch {
	case len(strict) > 0:
		f.Status = Warn
		f.Message = "strict IPv6 reverse-path filtering (" + strings.Join(strict, "; ") +
			"): with asymmetric paths (replies that bypass the router, several LAN interfaces) packets whose return route uses another interface are dropped silently"
		f.Fix = "make it loose: ip6tables `-m rpfilter --loose --invert -j DROP`, nft `fib saddr oif missing drop` (without `. iif`); firewalld: IPv6_rpfilter=loose in /etc/firewalld/firewalld.conf"
	case v6.RPFilterErr != "":
		f.Status = Warn
		f.Message = "could not look for IPv6 reverse-path filter rules: " + v6.RPFilterErr
		f.Fix = "ip6tables-legacy -t raw -S; ip6tables-nft -t raw -S; nft list ruleset"
	default:
		f.Status, f.Message = OK, fmt.Sprintf("no strict IPv6 reverse-path filter rule (%d loose)", len(v6.RPFilter))
	}
	return f
}

// rpfilterTables are where ip6tables reverse-path rules live.
var rpfilterTables = []string{"raw", "mangle"}

// gatherIPv6 reads the IPv6 observations: forwarding and the ip6tables
// rpfilter rules (nft ones are added from the ruleset by nftRPFilter6).
func gatherIPv6(ctx context.Context, sysctlRoot string, runners firewall.RunnerFactory) *IPv6Input {
	v6 := &IPv6Input{}
	var err error
	if v6.Forwarding, err = sysctl.Get(sysctlRoot, "net/ipv6/conf/all/forwarding"); err != nil {
		v6.Forwarding = -1
	}
	var errs []error
	for _, b := range []firewall.Backend{firewall.Legacy, firewall.NFT} {
		r, err := runners(b, firewall.IPv6)
		if errors.Is(err, firewall.ErrUnavailable) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, table := range rpfilterTables {
			if ctx.Err() != nil {
				return v6
			}
			// A legacy table that does not exist is not listed: listing
			// would create it.
			ok, err := r.TableExists(table)
			if err != nil || !ok {
				continue
			}
			lines, err := r.ListTable(table)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s -t %s: %w", toolName(b, firewall.IPv6), table, err))
				continue
			}
			t, err := firewall.ParseTable(lines)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s -t %s: %w", toolName(b, firewall.IPv6), table, err))
				continue
			}
			v6.RPFilter = append(v6.RPFilter, rpfilterRules(toolName(b, firewall.IPv6)+" "+table, t)...)
		}
	}
	if len(errs) > 0 {
		v6.RPFilterErr = errors.Join(errs...).Error()
	}
	return v6
}

// rpfilterRules finds the rules of t that use the rpfilter match.
func rpfilterRules(where string, t firewall.Table) []RPFilterRule {
	var out []RPFilterRule
	for _, chain := range t.Chains {
		for _, r := range t.Rules[chain] {
			for i := 0; i+1 < len(r.Args); i++ {
				if r.Args[i] == "-m" && r.Args[i+1] == "rpfilter" {
					out = append(out, RPFilterRule{Where: where + " " + chain, Rule: r.String(), Loose: slices.Contains(r.Args, "--loose")})
					break
				}
			}
		}
	}
	return out
}

// nftRPFilter6 finds reverse-path rules (`fib saddr ... oif missing`,
// `fib saddr ... oif 0`) in the base chains of the native nftables tables
// that see IPv6 (inet and ip6, except iptables-nft's own, which
// ip6tables-nft lists), from the rules' expressions as the kernel returns
// them (the agent's netlink reader, not `nft` output).
func nftRPFilter6(rs firewall.NftRuleset) []RPFilterRule {
	var out []RPFilterRule
	for _, t := range rs.Tables {
		if t.Family != nftables.TableFamilyINet && t.Family != nftables.TableFamilyIPv6 || t.OwnedByIptables() {
			continue
		}
		for _, c := range t.Chains {
			for _, r := range c.Rules {
				if rule, loose, ok := nftRPFilterRule(r.Exprs); ok {
					out = append(out, RPFilterRule{Where: "nft " + t.String() + " " + c.Name, Rule: rule, Loose: loose})
				}
			}
		}
	}
	return out
}

// nftRPFilterRule recognises `[meta nfproto ipv6] fib saddr [. mark] [.
// iif] oif missing|0 <verdict>` (nft 1.0 compiles `missing` to the fib
// expression's present flag, `0` to a plain oif lookup; both compare the
// result with zero) and spells it as nft prints it. A rule restricted to
// IPv4 (`meta nfproto ipv4`) is not an IPv6 check.
func nftRPFilterRule(exprs []expr.Any) (rule string, loose, ok bool) {
	var words []string
	var fib *expr.Fib
	for i, e := range exprs {
		switch e := e.(type) {
		case *expr.Meta:
			if e.Key == expr.MetaKeyNFPROTO && i+1 < len(exprs) {
				if c, isCmp := exprs[i+1].(*expr.Cmp); isCmp && c.Op == expr.CmpOpEq && len(c.Data) >= 1 {
					if c.Data[0] != unix.NFPROTO_IPV6 {
						return "", false, false
					}
					words = append(words, "meta nfproto ipv6")
				}
			}
		case *expr.Fib:
			if !e.FlagSADDR || !e.ResultOIF || i+1 >= len(exprs) {
				return "", false, false
			}
			c, isCmp := exprs[i+1].(*expr.Cmp)
			if !isCmp || c.Op != expr.CmpOpEq || slices.ContainsFunc(c.Data, func(b byte) bool { return b != 0 }) {
				return "", false, false
			}
			fib = e
			w := "fib saddr"
			if e.FlagMARK {
				w += " . mark"
			}
			if e.FlagIIF {
				w += " . iif"
			}
			if e.FlagPRESENT {
				w += " oif missing"
			} else {
				w += " oif 0"
			}
			words = append(words, w)
		case *expr.Counter:
			words = append(words, "counter")
		case *expr.Verdict:
			if fib != nil {
				words = append(words, nftVerdictName(e.Kind))
			}
		}
	}
	if fib == nil {
		return "", false, false
	}
	return strings.Join(words, " "), !fib.FlagIIF, true
}

func nftVerdictName(k expr.VerdictKind) string {
	switch k {
	case expr.VerdictDrop:
		return "drop"
	case expr.VerdictAccept:
		return "accept"
	case expr.VerdictReturn:
		return "return"
	case expr.VerdictJump:
		return "jump"
	case expr.VerdictGoto:
		return "goto"
	}
	return "continue"
}
