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
	// Mode is exempt (install the exemptions, the default) or off.
	Mode config.FirewallMode
	// Backend is auto (default: the backend holding the INVALID drop),
	// legacy or nft.
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
	case config.FirewallExempt, config.FirewallOff:
	default:
		errs = append(errs, fmt.Errorf("firewall.mode: %q is not one of exempt, off", c.Mode))
	}
	switch c.Backend {
	case "":
		c.Backend = config.BackendAuto
	case config.BackendAuto, config.BackendLegacy, config.BackendNFT:
	default:
		errs = append(errs, fmt.Errorf("firewall.backend: %q is not one of auto, legacy, nft", c.Backend))
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
	var ops []Op
	if !t.HasChain(ChainName) {
		ops = append(ops, Op{Kind: "new-chain", Chain: ChainName})
		for _, e := range want {
			ops = append(ops, Op{Kind: "append", Chain: ChainName, Args: e.Args()})
		}
	} else if !chainEquals(t.Rules[ChainName], want) {
		ops = append(ops, Op{Kind: "flush-chain", Chain: ChainName})
		for _, e := range want {
			ops = append(ops, Op{Kind: "append", Chain: ChainName, Args: e.Args()})
		}
	}
	fwd := t.Rules["FORWARD"]
	var jumps []Rule
	for _, r := range fwd {
		if r.Target() == ChainName {
			jumps = append(jumps, r)
		}
	}
	jumpOK := len(jumps) == 1 && len(fwd) > 0 && slices.Equal(fwd[0].Args, JumpArgs())
	if !jumpOK {
		// Delete every jump by its own spec (iptables -D deletes the first
		// match), then insert the one we want at the top.
		for _, j := range jumps {
			ops = append(ops, Op{Kind: "delete", Chain: "FORWARD", Args: j.Args})
		}
		ops = append(ops, Op{Kind: "insert", Chain: "FORWARD", Pos: 1, Args: JumpArgs()})
	}
	return ops
}

// PlanRemove returns the changes that remove our jumps and our chain from t,
// and nothing else.
func PlanRemove(t Table) []Op {
	var ops []Op
	for _, chain := range t.Chains {
		for _, r := range t.Rules[chain] {
			if r.Target() == ChainName && chain != ChainName {
				ops = append(ops, Op{Kind: "delete", Chain: chain, Args: r.Args})
			}
		}
	}
	if t.HasChain(ChainName) {
		ops = append(ops, Op{Kind: "flush-chain", Chain: ChainName}, Op{Kind: "delete-chain", Chain: ChainName})
	}
	return ops
}

func chainEquals(have []Rule, want []Exemption) bool {
	if len(have) != len(want) {
		return false
	}
	for i := range have {
		if !slices.Equal(have[i].Args, want[i].Args()) {
			return false
		}
	}
	return true
}
