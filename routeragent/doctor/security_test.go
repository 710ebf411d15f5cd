package doctor

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bgplb/bgplb/routeragent/tcpstat"
)

// secure is the recommended setup: a prefix neighbour with its password,
// BGP on the LAN only, service subnets off the LAN, a 0600 secret.
func secure() SecurityInput {
	return SecurityInput{
		Neighbors:      []SecurityNeighbor{{Index: 0, Range: netip.MustParsePrefix("192.168.2.0/24"), Password: true, TTLSecurity: true}},
		ServiceSubnets: []netip.Prefix{netip.MustParsePrefix("192.168.254.0/24")},
		RouterID:       netip.MustParseAddr("192.168.2.1"),
		LANInterfaces:  []string{"lan0"},
		Interfaces: map[string][]netip.Prefix{
			"lan0": {netip.MustParsePrefix("192.168.2.1/24"), netip.MustParsePrefix("fe80::1/64")},
			"wan0": {netip.MustParsePrefix("203.0.113.7/24")},
			"lo":   {netip.MustParsePrefix("127.0.0.1/8")},
		},
		PasswordFiles: []PasswordFile{{Path: "/etc/bgplb/md5.secret", Mode: 0o600}},
	}
}

func TestSecurity(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(in *SecurityInput)
		want   []Finding
	}{
		{"secure", func(*SecurityInput) {}, nil},
		{"unauthenticated prefix", func(in *SecurityInput) { in.Neighbors[0].Password = false }, []Finding{{Check: "authentication", Status: Warn,
			Message: "neighbors[0] (192.168.2.0/24) has no password (allowUnauthenticated: true): any host in 192.168.2.0/24 that speaks BGP can peer and attract the service traffic",
			Fix:     "set neighbors[0].passwordFile to a file holding the speakers' BGPPeer passwordSecret (mode 0600) and remove allowUnauthenticated"}}},
		{"unauthenticated address", func(in *SecurityInput) {
			in.Neighbors = append(in.Neighbors, SecurityNeighbor{Index: 1, Range: netip.MustParsePrefix("192.168.2.30/32"), Single: true, TTLSecurity: true})
		}, []Finding{{Check: "authentication", Status: Warn,
			Message: "neighbors[1] (192.168.2.30) has no password: a host that takes over 192.168.2.30 can peer and attract the service traffic",
			Fix:     "set neighbors[1].passwordFile to a file holding the speakers' BGPPeer passwordSecret (mode 0600)"}}},
		{"prefix without GTSM", func(in *SecurityInput) { in.Neighbors[0].TTLSecurity = false }, []Finding{{Check: "ttl-security", Status: Warn,
			Message: "neighbors[0] (192.168.2.0/24) has ttlSecurity: false: BGP packets from beyond the LAN segment are accepted, and the listener cannot drop them before the handshake",
			Fix:     `remove neighbors[0].ttlSecurity (default true) and make its speakers send TTL 255 (BGPPeer spec.ttlSecurity, FRR "neighbor X ttl-security hops 1", BIRD "ttl security on")`}}},
		{"address without GTSM", func(in *SecurityInput) {
			in.Neighbors = append(in.Neighbors, SecurityNeighbor{Index: 1, Range: netip.MustParsePrefix("192.168.2.30/32"), Single: true, Password: true})
		}, []Finding{{Check: "ttl-security", Status: Warn,
			Message: "neighbors[1] (192.168.2.30) has ttlSecurity: false: BGP packets from beyond the LAN segment are accepted, and the listener cannot drop them before the handshake",
			Fix:     `remove neighbors[1].ttlSecurity (default true) and make its speakers send TTL 255 (BGPPeer spec.ttlSecurity, FRR "neighbor X ttl-security hops 1", BIRD "ttl security on")`}}},
		{"range wider than the LAN", func(in *SecurityInput) { in.Neighbors[0].Range = netip.MustParsePrefix("192.168.0.0/16") }, []Finding{{Check: "neighbor-range", Status: Warn,
			Message: "neighbors[0].prefix 192.168.0.0/16 is wider than the LAN subnet 192.168.2.0/24 of lan0: hosts beyond the LAN may peer",
			Fix:     "narrow neighbors[0].prefix to 192.168.2.0/24, or better to the nodes' range"},
			// The service subnet is now inside the speakers' range too.
			{Check: "service-subnets", Status: Fail,
				Message: "serviceSubnets[0] 192.168.254.0/24 overlaps neighbors[0] (192.168.0.0/16), the nodes' addresses: a speaker could take over another LAN host's address",
				Fix:     "give the IPPools and serviceSubnets[0] a subnet no LAN host uses"}}},
		{"range off the LAN", func(in *SecurityInput) { in.Neighbors[0].Range = netip.MustParsePrefix("203.0.113.0/24") }, []Finding{{Check: "neighbor-range", Status: Warn,
			Message: "neighbors[0].prefix 203.0.113.0/24 is on no LAN interface (lan0): its speakers reach the router through another interface",
			Fix:     "set neighbors[0].prefix to the nodes' range on the LAN, or add their interface to lanInterfaces"}}},
		{"LAN interface without address: ranges not judged", func(in *SecurityInput) {
			in.LANInterfaces = []string{"lan9"}
			in.Neighbors[0].Range = netip.MustParsePrefix("10.0.0.0/8")
		}, nil},
		{"service subnet on the LAN", func(in *SecurityInput) {
			in.ServiceSubnets = []netip.Prefix{netip.MustParsePrefix("192.168.2.240/28")}
		}, []Finding{
			{Check: "service-subnets", Status: Fail,
				Message: "serviceSubnets[0] 192.168.2.240/28 overlaps neighbors[0] (192.168.2.0/24), the nodes' addresses: a speaker could take over another LAN host's address",
				Fix:     "give the IPPools and serviceSubnets[0] a subnet no LAN host uses"},
			{Check: "service-subnets", Status: Fail,
				Message: "serviceSubnets[0] 192.168.2.240/28 overlaps the LAN subnet 192.168.2.0/24 of lan0: a speaker could take over another LAN host's address",
				Fix:     "give the IPPools and serviceSubnets[0] a subnet no LAN host uses"},
		}},
		{"service subnet on a LAN the neighbours do not name", func(in *SecurityInput) {
			in.Neighbors[0].Range = netip.MustParsePrefix("192.168.2.16/28")
			in.RouterID = netip.MustParseAddr("10.0.0.1")
			in.ServiceSubnets = []netip.Prefix{netip.MustParsePrefix("192.168.2.128/25")}
		}, []Finding{{Check: "service-subnets", Status: Fail,
			Message: "serviceSubnets[0] 192.168.2.128/25 overlaps the LAN subnet 192.168.2.0/24 of lan0: a speaker could take over another LAN host's address",
			Fix:     "give the IPPools and serviceSubnets[0] a subnet no LAN host uses"}}},
		{"wildcard interface", func(in *SecurityInput) { in.LANInterfaces = append(in.LANInterfaces, "eth+") }, []Finding{{Check: "lan-interfaces", Status: Warn,
			Message: `lanInterfaces[1] "eth+" is taken literally: lanInterfaces has no wildcards`,
			Fix:     `list each LAN interface by its name instead of "eth+" (ip -br link)`}}},
		{"listen everywhere", func(in *SecurityInput) { in.ListenAddress = "0.0.0.0" }, []Finding{{Check: "listen", Status: Warn,
			Message: "BGP listens on every address (listen.address 0.0.0.0), the WAN's included",
			Fix:     "remove listen.address (the default listens on the addresses of lanInterfaces only), and allow TCP 179 from the nodes only (docs/install.md)"}}},
		{"listen on the WAN", func(in *SecurityInput) { in.ListenAddress = "203.0.113.7" }, []Finding{{Check: "listen", Status: Warn,
			Message: "BGP listens on 203.0.113.7, an address of wan0, which is not in lanInterfaces: BGP is reachable from there",
			Fix:     "remove listen.address (the default listens on the addresses of lanInterfaces only) or set it to a LAN address"}}},
		{"listen on no interface", func(in *SecurityInput) { in.ListenAddress = "198.51.100.1" }, []Finding{{Check: "listen", Status: Warn,
			Message: "listen.address 198.51.100.1 is on no interface of this host: the agent cannot listen",
			Fix:     "remove listen.address (the default listens on the addresses of lanInterfaces only)"}}},
		{"world-readable secret", func(in *SecurityInput) { in.PasswordFiles[0].Mode = 0o644 }, []Finding{{Check: "password-file", Status: Fail,
			Message: "/etc/bgplb/md5.secret is readable by every user (mode 0644): any local user can peer as a node",
			Fix:     "chmod 0600 /etc/bgplb/md5.secret"}}},
		{"group-readable secret", func(in *SecurityInput) { in.PasswordFiles[0].Mode = 0o640 }, []Finding{{Check: "password-file", Status: Warn,
			Message: "/etc/bgplb/md5.secret is readable by its group (mode 0640)",
			Fix:     "chmod 0600 /etc/bgplb/md5.secret (or keep 0640 with a group only the agent is in)"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := secure()
			tc.change(&in)
			var got []Finding
			for _, f := range Security(in) {
				if f.Section != SectionSecurity {
					t.Errorf("%s: section %q", f.Check, f.Section)
				}
				if f.Status != OK {
					f.Section = ""
					got = append(got, f)
				}
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("findings (-want +got):\n%s", d)
			}
		})
	}
}

// Without the live interfaces (check-config) only what the config shows is
// judged; the secure setup says so in its ok findings.
func TestSecurityWithoutInterfaces(t *testing.T) {
	in := secure()
	in.Interfaces = nil
	in.ListenAddress = "192.168.2.1"
	want := []Finding{
		{Check: "authentication", Status: OK, Message: "every neighbor needs the TCP-MD5 password", Section: SectionSecurity},
		{Check: "ttl-security", Status: OK, Message: "every neighbor must send with TTL 255 (GTSM): packets from beyond the LAN segment are dropped", Section: SectionSecurity},
		{Check: "service-subnets", Status: OK, Message: "no service subnet overlaps the neighbors and the routerID", Section: SectionSecurity},
		{Check: "listen", Status: OK, Message: "BGP listens on 192.168.2.1 only (doctor checks that it is a LAN address)", Section: SectionSecurity},
		{Check: "password-file", Status: OK, Message: "the password files are readable by their owner only", Section: SectionSecurity},
	}
	if d := cmp.Diff(want, Security(in)); d != "" {
		t.Errorf("findings (-want +got):\n%s", d)
	}
}

// The kernel's refusal counters are reported when doctor read them (never
// as a warning: they run since boot).
func TestSecurityRefusedSegments(t *testing.T) {
	only := func(in SecurityInput) []Finding {
		var out []Finding
		for _, f := range Security(in) {
			if f.Check == "refused-segments" {
				out = append(out, f)
			}
		}
		return out
	}
	in := secure()
	if got := only(in); got != nil {
		t.Errorf("without counters: %+v", got)
	}
	in.TCPDrops = &tcpstat.Drops{}
	want := []Finding{{Check: "refused-segments", Status: OK, Section: SectionSecurity,
		Message: "since boot the kernel refused no TCP segment for a missing or wrong TCP-MD5 signature or a TTL below 255"}}
	if d := cmp.Diff(want, only(in)); d != "" {
		t.Errorf("none refused (-want +got):\n%s", d)
	}
	in.TCPDrops = &tcpstat.Drops{MD5NotFound: 3, MD5Failure: 4, MD5Unexpected: 1, MinTTL: 6}
	want = []Finding{{Check: "refused-segments", Status: OK, Section: SectionSecurity,
		Message: "since boot the kernel refused 8 TCP segments without the TCP-MD5 password (3 unsigned, 4 wrong signature, 1 unexpected) and 6 below the minimum TTL (sent from beyond the LAN segment, or by a peer without GTSM); the agent cannot see who sent them",
		Fix:     "if a node's session is down, compare its password and ttlSecurity with the neighbour's; tcpdump -vni <lan interface> 'tcp port 179' shows who sends, with which TTL (bgplb_routeragent_tcp_segments_dropped_total tracks the counts)"}}
	if d := cmp.Diff(want, only(in)); d != "" {
		t.Errorf("refused (-want +got):\n%s", d)
	}
}
