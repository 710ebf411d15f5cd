// Package config loads and validates the router agent's YAML configuration
// (/etc/bgplb/routeragent.yaml by default).
//
// Load decodes strictly (unknown keys are errors, so a typo never silently
// falls back to a default), applies defaults and validates. Every problem of
// a file is reported at once, each naming the key path and what is expected,
// with its line where the file has the key:
//
//	line 4: neighbours: unknown key; did you mean neighbors?
//	line 7: neighbors[0].holdTime: 9 is not a duration; write 9s
//	line 9: neighbors[1].prefix: "192.168.2.0/33" is not a valid CIDR
//	asn: is required (the router's AS number)
package config

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DefaultPath is where the packaged agent reads its configuration.
const DefaultPath = "/etc/bgplb/routeragent.yaml"

// MaxPrefixesHoldDown is how long a speaker torn down for going over
// maxPrefixes (action teardown) is refused: a session it opens meanwhile is
// closed at once and none of its paths is accepted.
const MaxPrefixesHoldDown = time.Minute

// DefaultProtocol is the kernel route protocol number that marks routes as
// ours. It is named "bgplb" in /etc/iproute2/rt_protos.d/bgplb.conf. It is
// none of the numbers iproute2 names and outside FRR's range (186-199; FRR's
// rt_protos.d names 196 "static" for staticd), so FRR and the agent can share
// a router.
const DefaultProtocol = 220

// RedirectsMode is icmpRedirects: what the agent does with send_redirects.
type RedirectsMode string

const (
	// RedirectsDisable sets send_redirects=0 on all, default and every LAN
	// interface and keeps it that way (the default).
	RedirectsDisable RedirectsMode = "disable"
	// RedirectsLeave never touches send_redirects (they are still reported).
	RedirectsLeave RedirectsMode = "leave"
)

// MaxPrefixesAction is what happens to a speaker over its maxPrefixes.
type MaxPrefixesAction string

const (
	// MaxPrefixesTeardown installs none of the speaker's paths, closes its
	// session and refuses it for MaxPrefixesHoldDown (the default).
	MaxPrefixesTeardown MaxPrefixesAction = "teardown"
	// MaxPrefixesReject keeps the earliest maxPrefixes paths and rejects
	// the rest; the session stays up.
	MaxPrefixesReject MaxPrefixesAction = "reject"
)

// FirewallMode is firewall.mode.
type FirewallMode string

const (
	// FirewallExempt installs the scoped exemptions (the default).
	FirewallExempt FirewallMode = "exempt"
	// FirewallOff leaves the firewall alone (and removes what we installed).
	FirewallOff FirewallMode = "off"
	// FirewallVerify adds no ACCEPT rule (and removes the exemptions a
	// previous mode installed): the nodes must send replies back through
	// the router (the speakers' returnPath: symmetric). The agent only
	// counts the INVALID service packets and watches conntrack, and
	// status and doctor report any flow whose reply bypassed the router.
	FirewallVerify FirewallMode = "verify"
)

// FirewallBackend is firewall.backend: which iptables backend gets the
// exemptions.
type FirewallBackend string

const (
	// BackendAuto picks the backend that holds the INVALID drop (the default).
	BackendAuto FirewallBackend = "auto"
	// BackendLegacy is the x_tables backend of the *-legacy tools (ferm, DebOps).
	BackendLegacy FirewallBackend = "legacy"
	// BackendNFT is the nf_tables backend of the *-nft tools (Debian's default).
	BackendNFT FirewallBackend = "nft"
	// BackendNftables is native nftables through netlink (Debian's
	// /etc/nftables.conf, nftables.service); not the iptables-nft tools.
	BackendNftables FirewallBackend = "nftables"
)

// LogFormat is log.format.
type LogFormat string

const (
	LogText LogFormat = "text" // the default; journald adds timestamps
	LogJSON LogFormat = "json"
)

// LogLevel is log.level.
type LogLevel string

const (
	LogDebug LogLevel = "debug"
	LogInfo  LogLevel = "info" // the default
	LogWarn  LogLevel = "warn"
	LogError LogLevel = "error"
)

// DefaultMaxDynamicPeers is maxDynamicPeers' default.
const DefaultMaxDynamicPeers = 256

// MetricsOff as metrics.address disables the Prometheus endpoint.
const MetricsOff = "off"

// Config is the whole agent configuration.
type Config struct {
	// ASN is the router's own autonomous system number.
	ASN uint32 `yaml:"asn"`
	// RouterID is the BGP identifier (an IPv4 address).
	RouterID string `yaml:"routerID"`
	// Listen is where the embedded BGP speaker accepts sessions.
	Listen Listen `yaml:"listen"`
	// Neighbors lists the speakers allowed to connect: a prefix (dynamic
	// neighbours) or one address each.
	Neighbors []Neighbor `yaml:"neighbors"`
	// ServiceSubnets are the only prefixes speakers may announce /32s (/128s) from.
	ServiceSubnets []string `yaml:"serviceSubnets"`
	// LANInterfaces are the interfaces where clients and nodes share one L2.
	LANInterfaces []string `yaml:"lanInterfaces"`
	// Firewall configures the scoped conntrack-INVALID exemptions.
	Firewall Firewall `yaml:"firewall"`
	// ICMPRedirects is "disable" (default: send_redirects=0 on all, default
	// and every LAN interface, kept that way) or "leave" (never touch them).
	ICMPRedirects RedirectsMode `yaml:"icmpRedirects"`
	// Routes configures how accepted paths become kernel routes.
	Routes Routes `yaml:"routes"`
	// StatusSocket is the unix socket serving `status` as JSON.
	StatusSocket string `yaml:"statusSocket"`
	// StateDir holds what the agent must remember across restarts (the
	// sysctl values it replaced, so uninstall can restore them).
	StateDir string `yaml:"stateDir"`
	// Metrics configures the Prometheus endpoint.
	Metrics Metrics `yaml:"metrics"`
	// Log configures logging.
	Log Log `yaml:"log"`
	// MaxDynamicPeers bounds the speakers of prefix: entries whose
	// max-prefix teardown state (count, hold-down) the agent keeps after
	// their session and paths are gone (default 256). Status rows and
	// metric series of such speakers are dropped when they go; their
	// hold-downs stay until they end, the earliest-ending forgotten first
	// beyond this number, so addresses a LAN host makes up cannot grow
	// the agent's memory.
	MaxDynamicPeers int `yaml:"maxDynamicPeers"`

	// Parsed forms, filled by Validate.
	routerID       netip.Addr
	serviceSubnets []netip.Prefix
}

// Listen is the BGP listener.
type Listen struct {
	// Address to listen on. Unset (the default), BGP listens on the
	// addresses lanInterfaces have when the agent starts, so no other
	// interface (the WAN) ever sees port 179; 0.0.0.0 listens on every
	// address (GoBGP also binds ::).
	Address string `yaml:"address"`
	// Port to listen on (default 179).
	Port int `yaml:"port"`
}

// Neighbor is one allowed speaker or range of speakers.
type Neighbor struct {
	// Prefix admits any speaker whose address is in this CIDR (dynamic neighbours).
	Prefix string `yaml:"prefix"`
	// Address admits exactly one speaker.
	Address string `yaml:"address"`
	// ASN the speaker must use.
	ASN uint32 `yaml:"asn"`
	// PasswordFile holds the TCP-MD5 password, the same secret as the
	// speakers' BGPPeer passwordSecret (surrounding whitespace is trimmed).
	// A prefix: entry requires it unless AllowUnauthenticated is set.
	PasswordFile string `yaml:"passwordFile"`
	// AllowUnauthenticated lets a prefix: entry run without passwordFile:
	// then any host in the prefix that speaks BGP with the right ASN can
	// peer and attract the Services' traffic. Only for labs and trusted,
	// node-only subnets.
	AllowUnauthenticated bool `yaml:"allowUnauthenticated"`
	// HoldTime is the BGP hold time we offer (default 9s; the session uses the
	// smaller of both sides').
	HoldTime time.Duration `yaml:"holdTime"`
	// KeepaliveTime is the keepalive interval (default HoldTime/3).
	KeepaliveTime time.Duration `yaml:"keepaliveTime"`
	// MaxPrefixes is how many acceptable prefixes one speaker of this entry
	// may announce (default 1000). What happens beyond it is MaxPrefixesAction.
	MaxPrefixes int `yaml:"maxPrefixes"`
	// MaxPrefixesAction is teardown (default: a speaker that goes over
	// maxPrefixes has none of its paths installed, its session is closed
	// with a Cease, and it is refused for MaxPrefixesHoldDown) or reject
	// (the earliest maxPrefixes paths are kept, the rest rejected and
	// counted; the session stays up).
	MaxPrefixesAction MaxPrefixesAction `yaml:"maxPrefixesAction"`
	// GracefulRestart enables the graceful-restart helper for speakers that
	// ask for it (default true).
	GracefulRestart *bool `yaml:"gracefulRestart"`
	// TTLSecurity is GTSM (RFC 5082), default true: the agent sends with
	// TTL 255 and the kernel drops every packet of these speakers that
	// arrives with a lower TTL, so only a host on the LAN segment itself
	// (no hop in between) can talk BGP to the agent. The speakers must
	// send TTL 255 too (BGPPeer spec.ttlSecurity, on by default; FRR
	// "neighbor X ttl-security hops 1", BIRD "ttl security on"), else their
	// connections are dropped silently (counted in /proc/net/netstat
	// TcpExt TCPMinTTLDrop). Set false only for speakers that cannot.
	TTLSecurity *bool `yaml:"ttlSecurity"`
	// BFD runs Bidirectional Forwarding Detection (RFC 5880/5881, single
	// hop, UDP 3784) with each established speaker of this entry. Off by
	// default: the speakers must run BFD too (BGPPeer spec.bfd, FRR
	// "neighbor X bfd"), else the session never comes Up. When a session
	// that was Up goes Down, the speaker's next hops leave the kernel
	// routes at once and its BGP session is reset, instead of waiting for
	// the hold timer.
	BFD *BFD `yaml:"bfd"`

	password string
}

// BFD timer defaults and bounds (neighbors[].bfd), those of FRR and MetalLB.
const (
	DefaultBFDInterval         = 300 * time.Millisecond
	DefaultBFDDetectMultiplier = 3
	MinBFDInterval             = 10 * time.Millisecond
	MaxBFDInterval             = 60 * time.Second
	MaxBFDDetectMultiplier     = 255
)

// BFD is neighbors[].bfd.
type BFD struct {
	// Enabled runs BFD with this entry's speakers (default false).
	Enabled bool `yaml:"enabled"`
	// ReceiveInterval is the minimum interval between control packets we
	// ask the speaker to keep (Required Min RX; default 300ms, 10ms-60s).
	ReceiveInterval time.Duration `yaml:"receiveInterval"`
	// TransmitInterval is the interval at which we would like to send
	// (Desired Min TX; default 300ms, 10ms-60s). The speaker's receive
	// interval may slow it down.
	TransmitInterval time.Duration `yaml:"transmitInterval"`
	// DetectMultiplier is how many intervals without a packet declare the
	// session Down (default 3, 1-255): the speaker detects us failed after
	// DetectMultiplier x max(TransmitInterval, its receive interval).
	DetectMultiplier int `yaml:"detectMultiplier"`
}

// BFDEnabled says whether the entry runs BFD.
func (n *Neighbor) BFDEnabled() bool { return n.BFD != nil && n.BFD.Enabled }

// AnyBFD says whether some neighbor entry runs BFD.
func (c *Config) AnyBFD() bool {
	for i := range c.Neighbors {
		if c.Neighbors[i].BFDEnabled() {
			return true
		}
	}
	return false
}

// Firewall configures the conntrack-INVALID exemptions.
type Firewall struct {
	// Mode is exempt (insert the scoped exemptions, the default), off
	// (touch nothing), or verify (no exemption; count INVALID service
	// packets and report asymmetric flows: for nodes with a symmetric
	// return path).
	Mode FirewallMode `yaml:"mode"`
	// Backend is auto (every one holding the INVALID drop), legacy, nft
	// (the iptables-nft tools) or nftables (native nftables).
	Backend FirewallBackend `yaml:"backend"`
	// Protocols exempted (default [tcp]).
	Protocols []string `yaml:"protocols"`
}

// Routes configures kernel route programming.
type Routes struct {
	// Table is the routing table (default 254, main).
	Table int `yaml:"table"`
	// Metric is the route priority (default 0).
	Metric int `yaml:"metric"`
	// Protocol is the route protocol number that marks our routes (default 220).
	Protocol int `yaml:"protocol"`
	// ResyncInterval is how often the kernel is compared with the desired
	// routes even without events (default 30s).
	ResyncInterval time.Duration `yaml:"resyncInterval"`
	// StaleTimeout is how long routes found at start are kept for a peer that
	// has not sent End-of-RIB (default 120s).
	StaleTimeout time.Duration `yaml:"staleTimeout"`
	// NexthopGroups is how a route reaches the kernel: resilient (through
	// nexthop objects and a resilient nexthop group, so a next hop that
	// leaves moves only its own flows), multipath (a plain multipath
	// route, which re-hashes flows when its next hops change) or auto
	// (default: resilient where the kernel has it, Linux 5.13).
	NexthopGroups NexthopGroups `yaml:"nexthopGroups"`
	// PinConnections keeps an established forwarded connection to a
	// service subnet on the next hop it started on while the route's next
	// hops change (a drain's GRACEFUL_SHUTDOWN, a weight change), through
	// an nftables flow map, a fib rule and a routing table per next hop
	// (package pinning). Default true.
	PinConnections *bool `yaml:"pinConnections"`
	// PinLinger is how long a withdrawn next hop that is still reachable
	// keeps its connections (a restarting speaker withdraws while its node
	// still serves). Default 60s; 0 unpins at the withdrawal.
	PinLinger *time.Duration `yaml:"pinLinger"`
}

// DefaultPinLinger is routes.pinLinger's default.
const DefaultPinLinger = 60 * time.Second

// Pinning reports whether routes.pinConnections is on.
func (r Routes) Pinning() bool { return r.PinConnections == nil || *r.PinConnections }

// Linger returns routes.pinLinger (its default when unset).
func (r Routes) Linger() time.Duration {
	if r.PinLinger == nil {
		return DefaultPinLinger
	}
	return *r.PinLinger
}

// NexthopGroups is routes.nexthopGroups.
type NexthopGroups string

// routes.nexthopGroups values.
const (
	NexthopGroupsAuto      NexthopGroups = "auto"
	NexthopGroupsResilient NexthopGroups = "resilient"
	NexthopGroupsMultipath NexthopGroups = "multipath"
)

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	// Address to serve /metrics on (default 127.0.0.1:9479; "off" disables).
	Address string `yaml:"address"`
}

// Log configures logging.
type Log struct {
	// Format is json or text (default text; journald adds timestamps).
	Format LogFormat `yaml:"format"`
	// Level is debug, info, warn or error (default info).
	Level LogLevel `yaml:"level"`
}

// Error is one invalid key.
type Error struct {
	// Path is the key path, e.g. neighbors[1].prefix, or TopLevel.
	Path string
	// Line is the key's line in the file (0: not in the file, or not known).
	Line int
	// Msg says what is wrong and what is expected.
	Msg string
}

func (e Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %s: %s", e.Line, e.Path, e.Msg)
	}
	return e.Path + ": " + e.Msg
}

// Errors is every problem found in one config.
type Errors []Error

func (es Errors) Error() string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Error()
	}
	return strings.Join(s, "; ")
}

// Load reads, decodes, defaults and validates the file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes, defaults and validates YAML. Password files are read. A
// file that is not YAML is a *SyntaxError; any other refusal is Errors,
// every problem of the file: the keys and values the decoder refuses, and
// the validation errors they do not already explain, in the order of the
// file's lines (problems with no line, such as a missing key, last).
func Parse(b []byte) (*Config, error) {
	root, extraLine, err := parseNode(b)
	if err != nil {
		return nil, err
	}
	k := newChecker()
	k.document(root, extraLine)
	es := k.finish()

	c := &Config{}
	if derr := decodeStrict(b, c); derr != nil {
		if len(es) == 0 { // the checker missed it: say it as the decoder does
			es = fromDecoder(derr, k.lines)
			for _, e := range es {
				k.bad[e.Path] = true
			}
		}
		if !isTypeError(derr) { // the decoder stopped: nothing to validate
			return nil, es
		}
	}
	c.SetDefaults()
	var ves Errors
	if err := c.Validate(); errors.As(err, &ves) {
		es = append(es, k.placeValidation(ves)...)
	}
	if len(es) > 0 {
		slices.SortStableFunc(es, byLine)
		return nil, es
	}
	return c, nil
}

// byLine orders errors by line, those without one last.
func byLine(a, b Error) int {
	switch {
	case a.Line == b.Line:
		return 0
	case a.Line == 0:
		return 1
	case b.Line == 0:
		return -1
	}
	return cmp.Compare(a.Line, b.Line)
}

// placeValidation adds the file's line to each validation error and drops
// those the decoding errors already explain.
func (k *checker) placeValidation(ves Errors) Errors {
	var out Errors
	for _, e := range ves {
		if k.explains(e.Path) {
			continue
		}
		e.Line = k.lineOf(e.Path)
		out = append(out, e)
	}
	return out
}

// SetDefaults fills every unset key with its default.
func (c *Config) SetDefaults() {
	if c.Listen.Port == 0 {
		c.Listen.Port = 179
	}
	for i := range c.Neighbors {
		n := &c.Neighbors[i]
		if n.HoldTime == 0 {
			n.HoldTime = 9 * time.Second
		}
		if n.KeepaliveTime == 0 {
			n.KeepaliveTime = n.HoldTime / 3
		}
		if n.MaxPrefixes == 0 {
			n.MaxPrefixes = 1000
		}
		if n.MaxPrefixesAction == "" {
			n.MaxPrefixesAction = MaxPrefixesTeardown
		}
		if n.GracefulRestart == nil {
			t := true
			n.GracefulRestart = &t
		}
		if n.TTLSecurity == nil {
			t := true
			n.TTLSecurity = &t
		}
		if b := n.BFD; b != nil {
			if b.ReceiveInterval == 0 {
				b.ReceiveInterval = DefaultBFDInterval
			}
			if b.TransmitInterval == 0 {
				b.TransmitInterval = DefaultBFDInterval
			}
			if b.DetectMultiplier == 0 {
				b.DetectMultiplier = DefaultBFDDetectMultiplier
			}
		}
	}
	if c.ICMPRedirects == "" {
		c.ICMPRedirects = RedirectsDisable
	}
	if c.Firewall.Mode == "" {
		c.Firewall.Mode = FirewallExempt
	}
	if c.Firewall.Backend == "" {
		c.Firewall.Backend = BackendAuto
	}
	if len(c.Firewall.Protocols) == 0 {
		c.Firewall.Protocols = []string{"tcp"}
	}
	if c.Routes.Table == 0 {
		c.Routes.Table = 254
	}
	if c.MaxDynamicPeers == 0 {
		c.MaxDynamicPeers = DefaultMaxDynamicPeers
	}
	if c.Routes.Protocol == 0 {
		c.Routes.Protocol = DefaultProtocol
	}
	if c.Routes.ResyncInterval == 0 {
		c.Routes.ResyncInterval = 30 * time.Second
	}
	if c.Routes.NexthopGroups == "" {
		c.Routes.NexthopGroups = NexthopGroupsAuto
	}
	if c.Routes.StaleTimeout == 0 {
		c.Routes.StaleTimeout = 120 * time.Second
	}
	if c.Routes.PinConnections == nil {
		on := true
		c.Routes.PinConnections = &on
	}
	if c.Routes.PinLinger == nil {
		l := DefaultPinLinger
		c.Routes.PinLinger = &l
	}
	if c.StatusSocket == "" {
		c.StatusSocket = "/run/bgplb/routeragent.sock"
	}
	if c.StateDir == "" {
		c.StateDir = "/var/lib/bgplb"
	}
	if c.Metrics.Address == "" {
		c.Metrics.Address = "127.0.0.1:9479"
	}
	if c.Log.Format == "" {
		c.Log.Format = LogText
	}
	if c.Log.Level == "" {
		c.Log.Level = LogInfo
	}
}

// reservedProtocols are route protocol numbers the kernel or other daemons
// use (iproute2's rt_protos): taking one would make their routes look ours.
var reservedProtocols = map[int]string{
	42: "babel", 99: "openr", 186: "bgp (FRR)", 187: "isis (FRR)", 188: "ospf (FRR)",
	189: "rip (FRR)", 190: "ripng (FRR)", 191: "nhrp (FRR)", 192: "eigrp (FRR)",
	193: "ldp (FRR)", 194: "sharp (FRR)", 195: "pbr (FRR)", 196: "static (FRR staticd)",
	197: "openfabric (FRR)", 198: "srte (FRR)", 199: "FRR (reserved)",
}

// Validate checks every key and fills the parsed forms. It reads password
// files, so a missing one is reported at start and on reload.
func (c *Config) Validate() error {
	var es Errors
	add := func(path, format string, a ...any) {
		es = append(es, Error{Path: path, Msg: fmt.Sprintf(format, a...)})
	}

	if c.ASN == 0 {
		add("asn", "is required (the router's AS number)")
	}
	if c.RouterID == "" {
		add("routerID", "is required (an IPv4 address)")
	} else if a, err := netip.ParseAddr(c.RouterID); err != nil || !a.Is4() {
		add("routerID", "%q is not an IPv4 address", c.RouterID)
	} else {
		c.routerID = a
	}
	if _, err := netip.ParseAddr(c.Listen.Address); c.Listen.Address != "" && err != nil {
		add("listen.address", "%q is not an IP address", c.Listen.Address)
	}
	if c.Listen.Port < 1 || c.Listen.Port > 65535 {
		add("listen.port", "%d is not a TCP port (1-65535)", c.Listen.Port)
	}

	if len(c.Neighbors) == 0 {
		add("neighbors", "at least one neighbor (prefix or address) is required")
	}
	seen := map[netip.Prefix]int{}
	for i := range c.Neighbors {
		n := &c.Neighbors[i]
		p := fmt.Sprintf("neighbors[%d]", i)
		var pfx netip.Prefix
		switch {
		case n.Prefix != "" && n.Address != "":
			add(p, "set either prefix or address, not both")
		case n.Prefix != "":
			q, err := netip.ParsePrefix(n.Prefix)
			if err != nil {
				add(p+".prefix", "%q is not a valid CIDR", n.Prefix)
			} else if q.Masked() != q {
				add(p+".prefix", "%q has host bits set (did you mean %s?)", n.Prefix, q.Masked())
			} else {
				pfx = q
			}
		case n.Address != "":
			a, err := netip.ParseAddr(n.Address)
			if err != nil {
				add(p+".address", "%q is not an IP address", n.Address)
			} else {
				pfx = netip.PrefixFrom(a, a.BitLen())
			}
		default:
			add(p, "one of prefix or address is required")
		}
		if pfx.IsValid() {
			if j, dup := seen[pfx]; dup {
				add(p, "same speakers as neighbors[%d] (%s)", j, pfx)
			}
			seen[pfx] = i
		}
		if n.Address == "" && pfx.IsValid() && n.PasswordFile == "" && !n.AllowUnauthenticated {
			add(p, "a prefix neighbor accepts any host in %s that speaks BGP; set passwordFile (the same secret as "+
				"the speakers' BGPPeer passwordSecret), or allowUnauthenticated: true to accept that risk", pfx)
		}
		if n.ASN == 0 {
			add(p+".asn", "is required (the speakers' AS number)")
		}
		if n.HoldTime != 0 && n.HoldTime < 3*time.Second {
			add(p+".holdTime", "%s is below the BGP minimum of 3s", n.HoldTime)
		}
		if n.HoldTime%time.Second != 0 || n.KeepaliveTime%time.Second != 0 {
			add(p+".holdTime", "BGP timers are whole seconds (holdTime %s, keepaliveTime %s)", n.HoldTime, n.KeepaliveTime)
		}
		if n.KeepaliveTime < time.Second || n.KeepaliveTime > n.HoldTime {
			add(p+".keepaliveTime", "%s must be between 1s and holdTime (%s)", n.KeepaliveTime, n.HoldTime)
		}
		if n.MaxPrefixes < 0 {
			add(p+".maxPrefixes", "%d is negative", n.MaxPrefixes)
		}
		if n.MaxPrefixesAction != MaxPrefixesTeardown && n.MaxPrefixesAction != MaxPrefixesReject {
			add(p+".maxPrefixesAction", "%q is not one of teardown, reject", n.MaxPrefixesAction)
		}
		if n.BFD != nil {
			validateBFD(n.BFD, p+".bfd", add)
		}
		n.password = ""
		if n.PasswordFile != "" {
			b, err := readSmallFile(n.PasswordFile)
			if err != nil {
				add(p+".passwordFile", "cannot read: %v", err)
			} else if pw := strings.TrimSpace(string(b)); pw == "" {
				add(p+".passwordFile", "%s is empty", n.PasswordFile)
			} else if len(pw) > 80 {
				add(p+".passwordFile", "TCP-MD5 keys are at most 80 bytes, %s has %d", n.PasswordFile, len(pw))
			} else {
				n.password = pw
			}
		}
	}

	c.serviceSubnets = nil
	if len(c.ServiceSubnets) == 0 {
		add("serviceSubnets", "at least one service subnet is required (the only prefixes speakers may announce)")
	}
	for i, s := range c.ServiceSubnets {
		p := fmt.Sprintf("serviceSubnets[%d]", i)
		q, err := netip.ParsePrefix(s)
		switch {
		case err != nil:
			add(p, "%q is not a valid CIDR", s)
		case q.Masked() != q:
			add(p, "%q has host bits set (did you mean %s?)", s, q.Masked())
		case q.Bits() == 0:
			add(p, "%q would accept any route, including a default route", s)
		default:
			c.serviceSubnets = append(c.serviceSubnets, q)
		}
	}
	if len(c.LANInterfaces) == 0 {
		add("lanInterfaces", "at least one LAN interface is required")
	}
	for i, ifc := range c.LANInterfaces {
		if why := ifaceNameProblem(ifc); why != "" {
			add(fmt.Sprintf("lanInterfaces[%d]", i), "%q is not an interface name: %s", ifc, why)
		}
	}

	switch c.ICMPRedirects {
	case RedirectsDisable, RedirectsLeave:
	default:
		add("icmpRedirects", "%q is not one of disable, leave", c.ICMPRedirects)
	}
	switch c.Firewall.Mode {
	case FirewallExempt, FirewallOff, FirewallVerify:
	default:
		add("firewall.mode", "%q is not one of exempt, off, verify", c.Firewall.Mode)
	}
	switch c.Firewall.Backend {
	case BackendAuto, BackendLegacy, BackendNFT, BackendNftables:
	default:
		add("firewall.backend", "%q is not one of auto, legacy, nft, nftables", c.Firewall.Backend)
	}
	for i, pr := range c.Firewall.Protocols {
		switch pr {
		case "tcp", "udp", "sctp":
		default:
			add(fmt.Sprintf("firewall.protocols[%d]", i), "%q is not one of tcp, udp, sctp", pr)
		}
	}

	if c.MaxDynamicPeers < 0 {
		add("maxDynamicPeers", "%d is negative", c.MaxDynamicPeers)
	}
	if c.Routes.Table < 1 || c.Routes.Table > 0xfffffffe || c.Routes.Table == 255 {
		add("routes.table", "%d is not a usable routing table (1-4294967294, not 255 local)", c.Routes.Table)
	}
	if c.Routes.Metric < 0 || int64(c.Routes.Metric) > 0xffffffff {
		add("routes.metric", "%d is not a route metric (0-4294967295)", c.Routes.Metric)
	}
	if pr := c.Routes.Protocol; pr < 19 || pr > 255 {
		add("routes.protocol", "%d is reserved or out of range (use 19-255, default %d)", pr, DefaultProtocol)
	} else if who, ok := reservedProtocols[pr]; ok {
		add("routes.protocol", "%d is used by %s; pick a number of our own (default %d)", pr, who, DefaultProtocol)
	}
	if c.Routes.ResyncInterval < time.Second {
		add("routes.resyncInterval", "%s is shorter than 1s", c.Routes.ResyncInterval)
	}
	switch c.Routes.NexthopGroups {
	case NexthopGroupsAuto, NexthopGroupsResilient, NexthopGroupsMultipath:
	default:
		add("routes.nexthopGroups", "%q is not one of auto, resilient, multipath", c.Routes.NexthopGroups)
	}
	if c.Routes.StaleTimeout < 0 {
		add("routes.staleTimeout", "%s is negative", c.Routes.StaleTimeout)
	}
	if l := c.Routes.Linger(); l < 0 || l > 24*time.Hour {
		add("routes.pinLinger", "%s is not between 0s and 24h", l)
	}
	if !strings.HasPrefix(c.StatusSocket, "/") {
		add("statusSocket", "%q is not an absolute path", c.StatusSocket)
	}
	if !strings.HasPrefix(c.StateDir, "/") {
		add("stateDir", "%q is not an absolute path", c.StateDir)
	}
	if c.Metrics.Address != MetricsOff {
		if _, err := netip.ParseAddrPort(c.Metrics.Address); err != nil {
			if host, port, ok := strings.Cut(c.Metrics.Address, ":"); !ok || host != "" || !isPort(port) {
				add("metrics.address", "%q is not host:port (or off)", c.Metrics.Address)
			}
		}
	}
	switch c.Log.Format {
	case LogJSON, LogText:
	default:
		add("log.format", "%q is not one of json, text", c.Log.Format)
	}
	switch c.Log.Level {
	case LogDebug, LogInfo, LogWarn, LogError:
	default:
		add("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	if len(es) > 0 {
		return es
	}
	return nil
}

// validateBFD checks a neighbor's bfd block (defaults applied), enabled or
// not: a disabled block with a wrong value would fail the day it is enabled.
func validateBFD(b *BFD, p string, add func(path, format string, a ...any)) {
	for _, iv := range []struct {
		key string
		d   time.Duration
	}{{"receiveInterval", b.ReceiveInterval}, {"transmitInterval", b.TransmitInterval}} {
		if iv.d < MinBFDInterval || iv.d > MaxBFDInterval {
			add(p+"."+iv.key, "%s is outside %s-%s (default %s)", iv.d, MinBFDInterval, MaxBFDInterval, DefaultBFDInterval)
		} else if iv.d%time.Microsecond != 0 {
			add(p+"."+iv.key, "%s is finer than BFD's microseconds", iv.d)
		}
	}
	if m := b.DetectMultiplier; m < 1 || m > MaxBFDDetectMultiplier {
		add(p+".detectMultiplier", "%d is outside 1-%d (default %d)", m, MaxBFDDetectMultiplier, DefaultBFDDetectMultiplier)
	}
}

// readSmallFile reads a regular file of at most 4 KiB: a password file
// that is a device (/dev/zero), a FIFO or huge must not hang or bloat the
// agent at start or on reload.
func readSmallFile(path string) ([]byte, error) {
	// Stat first: opening a FIFO blocks until a writer comes.
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 4097))
	if err != nil {
		return nil, err
	}
	if len(b) > 4096 {
		return nil, fmt.Errorf("%s is larger than 4 KiB", path)
	}
	return b, nil
}

// ifaceNameProblem says why the kernel would refuse name as an interface
// name, or "" when it would not. The rules are dev_valid_name's
// (net/core/dev.c): not empty, shorter than IFNAMSIZ (16, with the NUL),
// not "." or "..", and no '/', ':' or isspace() byte, where the kernel's
// isspace is \t \n \v \f \r, space and 0xa0 (lib/ctype.c: Latin-1).
func ifaceNameProblem(name string) string {
	switch {
	case name == "":
		return "it is empty"
	case len(name) > 15:
		return fmt.Sprintf("it is %d bytes long, the kernel allows at most 15", len(name))
	case name == "." || name == "..":
		return "the kernel refuses . and .."
	}
	for i := 0; i < len(name); i++ {
		switch b := name[i]; {
		case b == '/':
			return "it contains '/'"
		case b == ':':
			return "it contains ':' (an address label such as eth0:1 is not an interface)"
		case b == 0:
			return "it contains a NUL byte"
		case b == ' ' || b >= '\t' && b <= '\r' || b == 0xa0:
			return "it contains whitespace"
		}
	}
	return ""
}

func isPort(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n > 0 && n < 65536
}

// ListenOnLAN reports whether BGP listens on the LAN interfaces' addresses
// (listen.address unset) rather than on one address or every address.
func (c *Config) ListenOnLAN() bool { return c.Listen.Address == "" }

// RouterIDAddr is the parsed routerID (valid after Validate).
func (c *Config) RouterIDAddr() netip.Addr { return c.routerID }

// ServicePrefixes are the parsed serviceSubnets (valid after Validate).
func (c *Config) ServicePrefixes() []netip.Prefix { return c.serviceSubnets }

// NeighborPrefix is the range of speakers an entry admits (a /32 or /128 for
// address:), valid after Validate.
func (n *Neighbor) NeighborPrefix() netip.Prefix {
	if n.Address != "" {
		a, _ := netip.ParseAddr(n.Address)
		return netip.PrefixFrom(a, a.BitLen())
	}
	p, _ := netip.ParsePrefix(n.Prefix)
	return p
}

// Password is the TCP-MD5 password read from PasswordFile (valid after Validate).
func (n *Neighbor) Password() string { return n.password }

// Families says which address families the service subnets need.
func (c *Config) Families() (v4, v6 bool) {
	for _, p := range c.serviceSubnets {
		if p.Addr().Is4() {
			v4 = true
		} else {
			v6 = true
		}
	}
	return v4, v6
}

// NeighborFor returns the most specific neighbor entry admitting addr.
func (c *Config) NeighborFor(addr netip.Addr) (*Neighbor, bool) {
	var best *Neighbor
	bits := -1
	for i := range c.Neighbors {
		p := c.Neighbors[i].NeighborPrefix()
		if p.IsValid() && p.Contains(addr) && p.Bits() > bits {
			best, bits = &c.Neighbors[i], p.Bits()
		}
	}
	return best, best != nil
}
