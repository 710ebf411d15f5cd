package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/bgplb/bgplb/routeragent/config"
)

const (
	// ChainName is the chain the agent owns in the filter table.
	ChainName = "BGPLB-EXEMPT"
	// TableName is the table that holds the chain.
	TableName = "filter"
	// JumpComment marks the single jump from FORWARD to ChainName.
	JumpComment = "bgplb: conntrack-INVALID exemptions for service subnets"
	// RedirectChainName is the chain the agent owns in the ip6tables
	// filter table for the ICMPv6 Redirect suppression.
	RedirectChainName = "BGPLB-NOREDIRECT6"
	// RedirectJumpComment marks the single jump from OUTPUT to
	// RedirectChainName.
	RedirectJumpComment = "bgplb: no ICMPv6 redirects for service subnets"
)

// Backend names an iptables backend the tools talk to (legacy or nft);
// config.FirewallBackend is the configured choice, which may also be auto.
type Backend string

const (
	// Legacy is the x_tables backend of the *-legacy tools (ferm, DebOps).
	Legacy = Backend(config.BackendLegacy)
	// NFT is the nf_tables backend of the *-nft tools (Debian's default).
	NFT = Backend(config.BackendNFT)
)

// Family is an address family: one set of tools per family.
type Family string

const (
	IPv4 Family = "ipv4"
	IPv6 Family = "ipv6"
)

// Config says which exemptions to install.
type Config struct {
	// Mode is exempt (install the exemptions, the default), off, or
	// verify (no exemption; count INVALID service packets, see verify.go).
	Mode config.FirewallMode
	// Backend is auto (default: every backend holding the INVALID drop),
	// legacy, nft (iptables-nft tools) or nftables (native, netlink).
	Backend config.FirewallBackend
	// Interfaces are the LAN interfaces where clients and nodes share an L2.
	Interfaces []string
	// Subnets are the service subnets; each must be a masked prefix.
	Subnets []netip.Prefix
	// Protocols are the exempted IP protocols; default ["tcp"].
	Protocols []string
}

var allowedProtocols = []string{"tcp", "udp", "sctp"}

// normalize validates cfg and fills in defaults.
func (c Config) normalize() (Config, error) {
	var errs []error
	switch c.Mode {
	case "":
		c.Mode = config.FirewallExempt
	case config.FirewallExempt, config.FirewallOff, config.FirewallVerify:
	default:
		errs = append(errs, fmt.Errorf("firewall.mode: %q is not one of exempt, off, verify", c.Mode))
	}
	switch c.Backend {
	case "":
		c.Backend = config.BackendAuto
	case config.BackendAuto, config.BackendLegacy, config.BackendNFT, config.BackendNftables:
	default:
		errs = append(errs, fmt.Errorf("firewall.backend: %q is not one of auto, legacy, nft, nftables", c.Backend))
	}
	if len(c.Protocols) == 0 {
		c.Protocols = []string{"tcp"}
	}
	for _, p := range c.Protocols {
		if !slices.Contains(allowedProtocols, p) {
			errs = append(errs, fmt.Errorf("firewall.protocols: %q is not one of %s", p, strings.Join(allowedProtocols, ", ")))
		}
	}
	for _, i := range c.Interfaces {
		if err := validIfaceName(i); err != nil {
			errs = append(errs, fmt.Errorf("lanInterfaces: %w", err))
		}
	}
	for _, p := range c.Subnets {
		if !p.IsValid() {
			errs = append(errs, errors.New("serviceSubnets: invalid prefix"))
		} else if p != p.Masked() {
			errs = append(errs, fmt.Errorf("serviceSubnets: %s has host bits set (did you mean %s?)", p, p.Masked()))
		}
	}
	if c.Mode == config.FirewallVerify && len(c.Subnets) == 0 {
		errs = append(errs, errors.New("serviceSubnets: firewall mode verify needs at least one service subnet"))
	}
	if c.Mode == config.FirewallExempt {
		if len(c.Interfaces) == 0 {
			errs = append(errs, errors.New("lanInterfaces: firewall mode exempt needs at least one LAN interface"))
		}
		if len(c.Subnets) == 0 {
			errs = append(errs, errors.New("serviceSubnets: firewall mode exempt needs at least one service subnet"))
		}
	}
	return c, errors.Join(errs...)
}

func validIfaceName(n string) error {
	if n == "" || len(n) > 15 {
		return fmt.Errorf("interface name %q must have 1 to 15 characters", n)
	}
	for _, c := range n {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._-@:+", c)
		if !ok {
			return fmt.Errorf("interface name %q has character %q", n, c)
		}
	}
	return nil
}

// Exemption is one desired rule of our chain.
type Exemption struct {
	Interface string
	Subnet    netip.Prefix
	Protocol  string
}

// Args returns the rule's arguments exactly in the order and form that
// `iptables -S` prints them, so a listing can be compared with ==.
func (e Exemption) Args() []string {
	return []string{
		"-d", e.Subnet.String(),
		"-i", e.Interface,
		"-p", e.Protocol,
		"-m", "conntrack", "--ctstate", "INVALID",
		"-m", "comment", "--comment", e.Comment(),
		"-j", "ACCEPT",
	}
}

// Comment is the rule comment that marks the rule ours and says why it is there.
func (e Exemption) Comment() string {
	return fmt.Sprintf("bgplb: %s from %s to %s, asymmetric return path", e.Protocol, e.Interface, e.Subnet)
}

// JumpArgs are the arguments of our jump rule in FORWARD, as iptables -S prints them.
func JumpArgs() []string {
	return []string{"-m", "comment", "--comment", JumpComment, "-j", ChainName}
}

// Desired returns the rules our chain must hold for one family: one per
// interface × subnet × protocol, in configuration order. Nothing broader.
func Desired(cfg Config, fam Family) []Exemption {
	if len(cfg.Protocols) == 0 {
		cfg.Protocols = []string{"tcp"}
	}
	var out []Exemption
	for _, ifc := range cfg.Interfaces {
		for _, s := range cfg.Subnets {
			if familyOf(s) != fam {
				continue
			}
			for _, p := range cfg.Protocols {
				out = append(out, Exemption{Interface: ifc, Subnet: s, Protocol: p})
			}
		}
	}
	return out
}

// RedirectBlock is one desired ICMPv6 Redirect suppression: the router
// must not send Redirects (type 137) whose Destination Address lies in
// Subnet.
//
// Why: IPv6 has no send_redirects sysctl. A Linux router forwarding a
// packet back out of the link it came in on sends an ICMPv6 Redirect when
// the route's next hop is link-local or the destination is on-link
// (ip6_forward, ndisc_send_redirect; a global next hop is never a
// redirect target). A client that obeys it sends straight to the node and
// the router's conntrack state for that flow goes stale, as with IPv4's
// redirects in the seed. The Destination Address field says which flow the
// redirect is about, so the suppression can be scoped to the service
// subnets and leaves every other redirect of the router alone.
//
// It is its own kind in the desired model: each backend renders it in its
// own way (ip6tables: a u32 match on the field, see Args).
type RedirectBlock struct {
	Subnet netip.Prefix
}

// DesiredRedirectBlocks returns the redirect suppressions the router needs:
// one per IPv6 service subnet, in configuration order. IPv4 subnets need
// none (send_redirects=0 does it).
func DesiredRedirectBlocks(cfg Config) []RedirectBlock {
	var out []RedirectBlock
	for _, s := range cfg.Subnets {
		if familyOf(s) == IPv6 {
			out = append(out, RedirectBlock{Subnet: s})
		}
	}
	return out
}

// Offset of the Redirect's Destination Address from the start of the IPv6
// header: 40 (fixed header; the kernel builds redirects without extension
// headers) + 8 (ICMPv6 type, code, checksum, reserved) + 16 (Target
// Address). RFC 4861 section 4.5.
const redirectDestOffset = 40 + 8 + 16

// Args returns the ip6tables rule's arguments in the order and form that
// `ip6tables -S` prints them. ip6tables has no match on a field of the
// ICMPv6 body, so the prefix is compared 32 bits at a time with u32, which
// reads from the start of the IPv6 header.
func (r RedirectBlock) Args() []string {
	args := []string{"-p", "ipv6-icmp", "-m", "icmp6", "--icmpv6-type", "137"}
	if u := r.u32(); u != "" {
		args = append(args, "-m", "u32", "--u32", u)
	}
	return append(args, "-m", "comment", "--comment", r.Comment(), "-j", "DROP")
}

// u32 renders the prefix test exactly as the u32 extension prints it back:
// hex offsets and values, "&MASK" only on a partial last word, "&&" between
// words. A /0 needs no test.
func (r RedirectBlock) u32() string {
	a := r.Subnet.Addr().As16()
	var parts []string
	for w, bits := 0, r.Subnet.Bits(); bits > 0; w, bits = w+1, bits-32 {
		v := uint32(a[4*w])<<24 | uint32(a[4*w+1])<<16 | uint32(a[4*w+2])<<8 | uint32(a[4*w+3])
		off := redirectDestOffset + 4*w
		if bits >= 32 {
			parts = append(parts, fmt.Sprintf("0x%x=0x%x", off, v))
			continue
		}
		mask := ^uint32(0) << (32 - bits)
		parts = append(parts, fmt.Sprintf("0x%x&0x%x=0x%x", off, mask, v&mask))
	}
	return strings.Join(parts, "&&")
}

// Comment marks the rule ours and says why it is there.
func (r RedirectBlock) Comment() string {
	return fmt.Sprintf("bgplb: no ICMPv6 redirect about %s, asymmetric return path", r.Subnet)
}

// RedirectJumpArgs are the arguments of our jump rule in OUTPUT, as
// ip6tables -S prints them.
func RedirectJumpArgs() []string {
	return []string{"-m", "comment", "--comment", RedirectJumpComment, "-j", RedirectChainName}
}

func familyOf(p netip.Prefix) Family {
	if p.Addr().Is4() {
		return IPv4
	}
	return IPv6
}

// Op is one iptables change.
type Op struct {
	// Kind is one of new-chain, flush-chain, delete-chain, append, insert, delete.
	Kind  string
	Chain string
	Pos   int
	Args  []string
}

func (o Op) String() string {
	s := o.Kind + " " + o.Chain
	if o.Pos > 0 {
		s += fmt.Sprintf(" %d", o.Pos)
	}
	if len(o.Args) > 0 {
		s += " " + quoteArgs(o.Args)
	}
	return s
}

// PlanInstall returns the changes that bring t to: our chain holding exactly
// want (in order) and exactly one jump to it, at position 1 of FORWARD. It
// returns nil when t is already right. The chain is rewritten as a whole
// when its content differs.
func PlanInstall(t Table, want []Exemption) []Op {
	rules := make([][]string, len(want))
	for i, e := range want {
		rules[i] = e.Args()
	}
	return planOwned(t, ChainName, "FORWARD", JumpArgs(), rules)
}

// PlanRedirectInstall is PlanInstall for the ICMPv6 Redirect suppression:
// RedirectChainName holding exactly want and one jump to it at position 1
// of OUTPUT. With want empty it plans the chain's removal.
func PlanRedirectInstall(t Table, want []RedirectBlock) []Op {
	if len(want) == 0 {
		return planRemoveChain(t, RedirectChainName)
	}
	rules := make([][]string, len(want))
	for i, r := range want {
		rules[i] = r.Args()
	}
	return planOwned(t, RedirectChainName, "OUTPUT", RedirectJumpArgs(), rules)
}

// planOwned plans one owned chain holding exactly rules and one jump to it
// (jumpArgs) at the top of the built-in chain hook.
func planOwned(t Table, chain, hook string, jumpArgs []string, rules [][]string) []Op {
	var ops []Op
	if !t.HasChain(chain) {
		ops = append(ops, Op{Kind: "new-chain", Chain: chain})
		for _, r := range rules {
			ops = append(ops, Op{Kind: "append", Chain: chain, Args: r})
		}
	} else if !chainEquals(t.Rules[chain], rules) {
		ops = append(ops, Op{Kind: "flush-chain", Chain: chain})
		for _, r := range rules {
			ops = append(ops, Op{Kind: "append", Chain: chain, Args: r})
		}
	}
	in := t.Rules[hook]
	var jumps []Rule
	for _, r := range in {
		if r.Target() == chain {
			jumps = append(jumps, r)
		}
	}
	jumpOK := len(jumps) == 1 && len(in) > 0 && slices.Equal(in[0].Args, jumpArgs)
	if !jumpOK {
		// Delete every jump by its own spec (iptables -D deletes the first
		// match), then insert the one we want at the top.
		for _, j := range jumps {
			ops = append(ops, Op{Kind: "delete", Chain: hook, Args: j.Args})
		}
		ops = append(ops, Op{Kind: "insert", Chain: hook, Pos: 1, Args: jumpArgs})
	}
	return ops
}

// PlanRemove returns the changes that remove our jumps and our chains
// (the exemptions' and the redirect suppression's) from t, and nothing
// else.
func PlanRemove(t Table) []Op {
	return append(planRemoveChain(t, ChainName), planRemoveChain(t, RedirectChainName)...)
}

func planRemoveChain(t Table, owned string) []Op {
	var ops []Op
	for _, chain := range t.Chains {
		for _, r := range t.Rules[chain] {
			if r.Target() == owned && chain != owned {
				ops = append(ops, Op{Kind: "delete", Chain: chain, Args: r.Args})
			}
		}
	}
	if t.HasChain(owned) {
		ops = append(ops, Op{Kind: "flush-chain", Chain: owned}, Op{Kind: "delete-chain", Chain: owned})
	}
	return ops
}

func chainEquals(have []Rule, want [][]string) bool {
	if len(have) != len(want) {
		return false
	}
	for i := range have {
		if !slices.Equal(have[i].Args, want[i]) {
			return false
		}
	}
	return true
}
