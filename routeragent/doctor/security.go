package doctor

import (
	"fmt"
	"io/fs"
	"net/netip"
	"slices"
	"strings"

	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/tcpstat"
)

// SectionSecurity is the Section of the security findings.
const SectionSecurity = "security"

// SecurityInput is what the security checks look at: the configuration and,
// when known (doctor, not check-config), the host's interfaces.
type SecurityInput struct {
	Neighbors      []SecurityNeighbor
	ServiceSubnets []netip.Prefix
	RouterID       netip.Addr
	LANInterfaces  []string
	// ListenAddress is listen.address; "" listens on the LAN interfaces'
	// addresses.
	ListenAddress string
	// Interfaces maps every interface of the host to its addresses (with
	// their prefix length); nil when not known (check-config).
	Interfaces map[string][]netip.Prefix
	// PasswordFiles are the neighbours' password files as found.
	PasswordFiles []PasswordFile
	// TCPDrops are the kernel's counters of segments refused for TCP-MD5
	// or a low TTL; nil when not known (check-config, the start log).
	TCPDrops *tcpstat.Drops
}

// SecurityNeighbor is one neighbors[] entry.
type SecurityNeighbor struct {
	// Index is the entry's position in neighbors.
	Index int
	// Range is the speakers it admits (a /32 or /128 for address:).
	Range netip.Prefix
	// Single is true for an address: entry.
	Single bool
	// Password is true when it has a passwordFile.
	Password bool
	// TTLSecurity is true when it uses GTSM (ttlSecurity, the default).
	TTLSecurity bool
}

// PasswordFile is one passwordFile's permissions.
type PasswordFile struct {
	Path string
	Mode fs.FileMode
}

// SecurityInputFor is the part of SecurityInput a validated config gives;
// the caller adds Interfaces and PasswordFiles.
func SecurityInputFor(c *config.Config) SecurityInput {
	in := SecurityInput{ServiceSubnets: c.ServicePrefixes(), RouterID: c.RouterIDAddr(),
		LANInterfaces: c.LANInterfaces, ListenAddress: c.Listen.Address}
	for i := range c.Neighbors {
		n := &c.Neighbors[i]
		in.Neighbors = append(in.Neighbors, SecurityNeighbor{Index: i, Range: n.NeighborPrefix(),
			Single: n.Address != "", Password: n.PasswordFile != "", TTLSecurity: n.TTLSecurity == nil || *n.TTLSecurity})
	}
	return in
}

// Security evaluates who can reach and steer the router's BGP. It does no
// I/O. Every finding is in SectionSecurity and says what to change.
func Security(in SecurityInput) []Finding {
	var out []Finding
	out = append(out, checkAuthentication(in)...)
	out = append(out, checkTTLSecurity(in)...)
	out = append(out, checkNeighborRanges(in)...)
	out = append(out, checkServiceSubnets(in)...)
	out = append(out, checkLANWildcards(in)...)
	out = append(out, checkListen(in))
	out = append(out, checkPasswordFiles(in)...)
	out = append(out, checkRefusedSegments(in)...)
	for i := range out {
		out[i].Section = SectionSecurity
	}
	return out
}

// lanSubnets are the subnets of the LAN interfaces, by interface (only
// what Interfaces holds: nil when not known).
func lanSubnets(in SecurityInput) map[string][]netip.Prefix {
	if in.Interfaces == nil {
		return nil
	}
	out := map[string][]netip.Prefix{}
	for _, name := range in.LANInterfaces {
		for _, p := range in.Interfaces[name] {
			if !p.Addr().IsLinkLocalUnicast() {
				out[name] = append(out[name], p.Masked())
			}
		}
	}
	return out
}

func checkAuthentication(in SecurityInput) []Finding {
	var out []Finding
	for _, n := range in.Neighbors {
		if n.Password {
			continue
		}
		f := Finding{Check: "authentication", Status: Warn}
		if n.Single {
			f.Message = fmt.Sprintf("neighbors[%d] (%s) has no password: a host that takes over %s can peer and attract the service traffic",
				n.Index, n.Range.Addr(), n.Range.Addr())
		} else {
			f.Message = fmt.Sprintf("neighbors[%d] (%s) has no password (allowUnauthenticated: true): any host in %s that speaks BGP can peer and attract the service traffic",
				n.Index, n.Range, n.Range)
		}
		f.Fix = fmt.Sprintf("set neighbors[%d].passwordFile to a file holding the speakers' BGPPeer passwordSecret (mode 0600)", n.Index)
		if !n.Single {
			f.Fix += " and remove allowUnauthenticated"
		}
		out = append(out, f)
	}
	if len(out) == 0 {
		return []Finding{{Check: "authentication", Status: OK, Message: "every neighbor needs the TCP-MD5 password"}}
	}
	return out
}

// checkTTLSecurity: without GTSM a host anywhere that can route packets to
// the router (and spoof or own a node's address) can reach its BGP.
func checkTTLSecurity(in SecurityInput) []Finding {
	var out []Finding
	for _, n := range in.Neighbors {
		if n.TTLSecurity {
			continue
		}
		what := n.Range.String()
		if n.Single {
			what = n.Range.Addr().String()
		}
		out = append(out, Finding{Check: "ttl-security", Status: Warn,
			Message: fmt.Sprintf("neighbors[%d] (%s) has ttlSecurity: false: BGP packets from beyond the LAN segment are accepted, and the listener cannot drop them before the handshake", n.Index, what),
			Fix:     fmt.Sprintf("remove neighbors[%d].ttlSecurity (default true) and make its speakers send TTL 255 (BGPPeer spec.ttlSecurity, FRR \"neighbor X ttl-security hops 1\", BIRD \"ttl security on\")", n.Index)})
	}
	if len(out) == 0 && len(in.Neighbors) > 0 {
		return []Finding{{Check: "ttl-security", Status: OK, Message: "every neighbor must send with TTL 255 (GTSM): packets from beyond the LAN segment are dropped"}}
	}
	return out
}

// checkNeighborRanges: a prefix: entry wider than the LAN subnet it lies in
// admits hosts routed in from elsewhere. Only with the live interfaces.
func checkNeighborRanges(in SecurityInput) []Finding {
	lans := lanSubnets(in)
	if len(lans) == 0 {
		// Not known (check-config), or the LAN interfaces have no address
		// here (the other checks report missing interfaces).
		return nil
	}
	var out []Finding
	for _, n := range in.Neighbors {
		if n.Single || !n.Range.IsValid() {
			continue
		}
		inside := false
		for _, name := range in.LANInterfaces {
			for _, lan := range lans[name] {
				switch {
				case n.Range.Bits() < lan.Bits() && n.Range.Contains(lan.Addr()):
					out = append(out, Finding{Check: "neighbor-range", Status: Warn,
						Message: fmt.Sprintf("neighbors[%d].prefix %s is wider than the LAN subnet %s of %s: hosts beyond the LAN may peer", n.Index, n.Range, lan, name),
						Fix:     fmt.Sprintf("narrow neighbors[%d].prefix to %s, or better to the nodes' range", n.Index, lan)})
					inside = true
				case n.Range.Overlaps(lan):
					inside = true
				}
			}
		}
		if !inside {
			out = append(out, Finding{Check: "neighbor-range", Status: Warn,
				Message: fmt.Sprintf("neighbors[%d].prefix %s is on no LAN interface (%s): its speakers reach the router through another interface", n.Index, n.Range, strings.Join(in.LANInterfaces, ", ")),
				Fix:     fmt.Sprintf("set neighbors[%d].prefix to the nodes' range on the LAN, or add their interface to lanInterfaces", n.Index)})
		}
	}
	if len(out) == 0 {
		return []Finding{{Check: "neighbor-range", Status: OK, Message: "every neighbor range lies within a LAN subnet"}}
	}
	return out
}

// checkServiceSubnets: a service subnet overlapping the LAN lets a speaker
// announce another LAN host's address and take its traffic. check-config
// knows the LAN only through the neighbours and routerID; doctor also
// through the live interfaces.
func checkServiceSubnets(in SecurityInput) []Finding {
	var out []Finding
	fail := func(i int, s netip.Prefix, what string) {
		out = append(out, Finding{Check: "service-subnets", Status: Fail,
			Message: fmt.Sprintf("serviceSubnets[%d] %s overlaps %s: a speaker could take over another LAN host's address", i, s, what),
			Fix:     fmt.Sprintf("give the IPPools and serviceSubnets[%d] a subnet no LAN host uses", i)})
	}
	lans := lanSubnets(in)
	for i, s := range in.ServiceSubnets {
		if in.RouterID.IsValid() && s.Contains(in.RouterID) {
			fail(i, s, "the routerID "+in.RouterID.String())
		}
		for _, n := range in.Neighbors {
			if n.Range.IsValid() && s.Overlaps(n.Range) {
				fail(i, s, fmt.Sprintf("neighbors[%d] (%s), the nodes' addresses", n.Index, n.Range))
			}
		}
		for _, name := range in.LANInterfaces {
			for _, lan := range lans[name] {
				if s.Overlaps(lan) {
					fail(i, s, fmt.Sprintf("the LAN subnet %s of %s", lan, name))
				}
			}
		}
	}
	if len(out) == 0 {
		what := "the neighbors and the routerID"
		if lans != nil {
			what = "the LAN subnets"
		}
		return []Finding{{Check: "service-subnets", Status: OK, Message: "no service subnet overlaps " + what}}
	}
	return out
}

// checkLANWildcards: lanInterfaces names are exact (the kernel's names);
// iptables' "eth+" or a shell's "eth*" matches no interface.
func checkLANWildcards(in SecurityInput) []Finding {
	var out []Finding
	for i, name := range in.LANInterfaces {
		if strings.ContainsAny(name, "*+?") {
			out = append(out, Finding{Check: "lan-interfaces", Status: Warn,
				Message: fmt.Sprintf("lanInterfaces[%d] %q is taken literally: lanInterfaces has no wildcards", i, name),
				Fix:     fmt.Sprintf("list each LAN interface by its name instead of %q (ip -br link)", name)})
		}
	}
	return out
}

// checkListen: BGP should be reachable from the LAN only.
func checkListen(in SecurityInput) Finding {
	f := Finding{Check: "listen"}
	addr, err := netip.ParseAddr(in.ListenAddress)
	switch {
	case in.ListenAddress == "":
		f.Status, f.Message = OK, "BGP listens on the addresses of lanInterfaces only"
	case err != nil: // config validation refuses it
		f.Status, f.Message = Fail, fmt.Sprintf("listen.address %q is not an IP address", in.ListenAddress)
		f.Fix = "remove listen.address: BGP then listens on the addresses of lanInterfaces"
	case addr.IsUnspecified():
		f.Status = Warn
		f.Message = fmt.Sprintf("BGP listens on every address (listen.address %s), the WAN's included", addr)
		f.Fix = "remove listen.address (the default listens on the addresses of lanInterfaces only), and allow TCP 179 from the nodes only (docs/install.md)"
	case in.Interfaces == nil:
		f.Status, f.Message = OK, fmt.Sprintf("BGP listens on %s only (doctor checks that it is a LAN address)", addr)
	default:
		f = listenOn(in, addr)
	}
	return f
}

// listenOn says which interface holds the explicit listen address.
func listenOn(in SecurityInput, addr netip.Addr) Finding {
	names := make([]string, 0, len(in.Interfaces))
	for name := range in.Interfaces {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if !slices.ContainsFunc(in.Interfaces[name], func(p netip.Prefix) bool { return p.Addr() == addr }) {
			continue
		}
		if slices.Contains(in.LANInterfaces, name) {
			return Finding{Check: "listen", Status: OK, Message: fmt.Sprintf("BGP listens on %s, on LAN interface %s", addr, name)}
		}
		return Finding{Check: "listen", Status: Warn,
			Message: fmt.Sprintf("BGP listens on %s, an address of %s, which is not in lanInterfaces: BGP is reachable from there", addr, name),
			Fix:     "remove listen.address (the default listens on the addresses of lanInterfaces only) or set it to a LAN address"}
	}
	return Finding{Check: "listen", Status: Warn,
		Message: fmt.Sprintf("listen.address %s is on no interface of this host: the agent cannot listen", addr),
		Fix:     "remove listen.address (the default listens on the addresses of lanInterfaces only)"}
}

// checkPasswordFiles: the TCP-MD5 secret is as good as who can read it.
func checkPasswordFiles(in SecurityInput) []Finding {
	var out []Finding
	for _, pf := range in.PasswordFiles {
		perm := pf.Mode.Perm()
		switch {
		case perm&0o004 != 0:
			out = append(out, Finding{Check: "password-file", Status: Fail,
				Message: fmt.Sprintf("%s is readable by every user (mode %#o): any local user can peer as a node", pf.Path, perm),
				Fix:     "chmod 0600 " + pf.Path})
		case perm&0o040 != 0:
			out = append(out, Finding{Check: "password-file", Status: Warn,
				Message: fmt.Sprintf("%s is readable by its group (mode %#o)", pf.Path, perm),
				Fix:     "chmod 0600 " + pf.Path + " (or keep 0640 with a group only the agent is in)"})
		}
	}
	if len(out) == 0 && len(in.PasswordFiles) > 0 {
		return []Finding{{Check: "password-file", Status: OK, Message: "the password files are readable by their owner only"}}
	}
	return out
}

// checkRefusedSegments reports what the kernel refused before GoBGP could
// see it: segments without or with a wrong TCP-MD5 signature and segments
// below the minimum TTL (GTSM). Nothing else records these attempts. The
// counters run since boot and cover the whole namespace, so they inform
// rather than warn.
func checkRefusedSegments(in SecurityInput) []Finding {
	d := in.TCPDrops
	if d == nil {
		return nil
	}
	md5 := d.MD5NotFound + d.MD5Unexpected + d.MD5Failure
	if md5 == 0 && d.MinTTL == 0 {
		return []Finding{{Check: "refused-segments", Status: OK, Message: "since boot the kernel refused no TCP segment for a missing or wrong TCP-MD5 signature or a TTL below 255"}}
	}
	return []Finding{{Check: "refused-segments", Status: OK,
		Message: fmt.Sprintf("since boot the kernel refused %d TCP segments without the TCP-MD5 password (%d unsigned, %d wrong signature, %d unexpected) and %d below the minimum TTL (sent from beyond the LAN segment, or by a peer without GTSM); the agent cannot see who sent them",
			md5, d.MD5NotFound, d.MD5Failure, d.MD5Unexpected, d.MinTTL),
		Fix: "if a node's session is down, compare its password and ttlSecurity with the neighbour's; tcpdump -vni <lan interface> 'tcp port 179' shows who sends, with which TTL (bgplb_routeragent_tcp_segments_dropped_total tracks the counts)"}}
}
