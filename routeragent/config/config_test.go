package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const minimal = `
asn: 64500
routerID: 192.168.2.1
neighbors:
  - prefix: 192.168.2.0/24
    asn: 64512
    allowUnauthenticated: true
serviceSubnets: [192.168.254.0/24]
lanInterfaces: [enp1s0.2]
`

func TestDefaults(t *testing.T) {
	c, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	yes, linger := true, DefaultPinLinger
	want := &Config{
		ASN: 64500, RouterID: "192.168.2.1",
		Listen: Listen{Port: 179}, // no address: the LAN interfaces' addresses
		Neighbors: []Neighbor{{Prefix: "192.168.2.0/24", ASN: 64512, HoldTime: 9 * time.Second,
			KeepaliveTime: 3 * time.Second, MaxPrefixes: 1000, MaxPrefixesAction: "teardown", AllowUnauthenticated: true, GracefulRestart: &yes, TTLSecurity: &yes}},
		ServiceSubnets: []string{"192.168.254.0/24"},
		LANInterfaces:  []string{"enp1s0.2"},
		Firewall:       Firewall{Mode: "exempt", Backend: "auto", Protocols: []string{"tcp"}},
		ICMPRedirects:  "disable",
		Routes: Routes{Table: 254, Protocol: 220, ResyncInterval: 30 * time.Second, StaleTimeout: 120 * time.Second, NexthopGroups: NexthopGroupsAuto,
			PinConnections: &yes, PinLinger: &linger},
		StatusSocket:    "/run/bgplb/routeragent.sock",
		StateDir:        "/var/lib/bgplb",
		Metrics:         Metrics{Address: "127.0.0.1:9479"},
		Log:             Log{Format: "text", Level: "info"},
		MaxDynamicPeers: DefaultMaxDynamicPeers,
	}
	if d := cmp.Diff(want, c, cmp.AllowUnexported(Config{}, Neighbor{}), cmp.FilterPath(func(p cmp.Path) bool {
		return strings.HasPrefix(p.Last().String(), ".routerID") || strings.HasPrefix(p.Last().String(), ".serviceSubnets")
	}, cmp.Ignore())); d != "" {
		t.Errorf("defaults (-want +got):\n%s", d)
	}
	if v4, v6 := c.Families(); !v4 || v6 {
		t.Errorf("Families() = %v, %v; want true, false", v4, v6)
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "md5")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		yaml string
		want []string // error substrings, each "path: message"
	}{
		{name: "ok", yaml: minimal},
		{name: "ok full", yaml: `
asn: 64500
routerID: 192.168.2.1
listen: {address: 192.168.2.1, port: 1179}
neighbors:
  - prefix: 192.168.2.0/24
    asn: 64512
    passwordFile: ` + pw + `
    holdTime: 30s
    keepaliveTime: 10s
    maxPrefixes: 50
    gracefulRestart: false
  - address: 2001:db8::5
    asn: 64513
serviceSubnets: [192.168.254.0/24, "2001:db8:254::/64"]
lanInterfaces: [enp1s0.2, br0]
firewall: {mode: off, backend: legacy, protocols: [tcp, udp]}
routes: {table: 100, metric: 20, protocol: 201, resyncInterval: 10s, staleTimeout: 60s}
statusSocket: /tmp/x.sock
metrics: {address: ":9100"}
log: {format: json, level: debug}
`},
		{name: "bad neighbor cidr", yaml: strings.Replace(minimal, "192.168.2.0/24", "192.168.2.0/33", 1),
			want: []string{`neighbors[0].prefix: "192.168.2.0/33" is not a valid CIDR`}},
		{name: "host bits", yaml: strings.Replace(minimal, "192.168.2.0/24", "192.168.2.7/24", 1),
			want: []string{`neighbors[0].prefix: "192.168.2.7/24" has host bits set`}},
		{name: "unknown key", yaml: minimal + "bogus: 1\n", want: []string{"bogus: unknown key; expected one of asn, routerID, listen,"}},
		{name: "missing", yaml: "lanInterfaces: [x]\n", want: []string{"asn: is required", "routerID: is required",
			"neighbors: at least one", "serviceSubnets: at least one"}},
		{name: "default route subnet", yaml: strings.Replace(minimal, "192.168.254.0/24", "0.0.0.0/0", 1),
			want: []string{`serviceSubnets[0]: "0.0.0.0/0" would accept any route`}},
		{name: "frr protocol", yaml: minimal + "routes: {protocol: 186}\n", want: []string{"routes.protocol: 186 is used by bgp (FRR)"}},
		{name: "kernel protocol", yaml: minimal + "routes: {protocol: 4}\n", want: []string{"routes.protocol: 4 is reserved"}},
		{name: "nexthop groups", yaml: minimal + "routes: {nexthopGroups: ecmp}\n",
			want: []string{`routes.nexthopGroups: "ecmp" is not one of auto, resilient, multipath`}},
		{name: "firewall", yaml: minimal + "firewall: {mode: open, backend: pf, protocols: [icmp]}\n",
			want: []string{`firewall.mode: "open"`, `firewall.backend: "pf"`, `firewall.protocols[0]: "icmp"`}},
		{name: "icmp redirects", yaml: minimal + "icmpRedirects: keep\n", want: []string{`icmpRedirects: "keep" is not one of disable, leave`}},
		{name: "timers", yaml: strings.Replace(minimal, "asn: 64512", "asn: 64512\n    holdTime: 2s", 1),
			want: []string{"neighbors[0].holdTime: 2s is below the BGP minimum"}},
		{name: "keepalive above hold", yaml: strings.Replace(minimal, "asn: 64512", "asn: 64512\n    keepaliveTime: 20s", 1),
			want: []string{"neighbors[0].keepaliveTime: 20s must be between 1s and holdTime (9s)"}},
		{name: "both prefix and address", yaml: strings.Replace(minimal, "asn: 64512", "asn: 64512\n    address: 192.168.2.3", 1),
			want: []string{"neighbors[0]: set either prefix or address, not both"}},
		{name: "password file missing", yaml: strings.Replace(minimal, "asn: 64512", "asn: 64512\n    passwordFile: /nonexistent/x", 1),
			want: []string{"neighbors[0].passwordFile: cannot read"}},
		{name: "password file empty", yaml: strings.Replace(minimal, "asn: 64512", "asn: 64512\n    passwordFile: "+empty, 1),
			want: []string{"neighbors[0].passwordFile: " + empty + " is empty"}},
		{name: "duplicate neighbors", yaml: strings.Replace(minimal, "serviceSubnets", "  - prefix: 192.168.2.0/24\n    asn: 1\nserviceSubnets", 1),
			want: []string{"neighbors[1]: same speakers as neighbors[0]"}},
		{name: "bad hold type", yaml: strings.Replace(minimal, "asn: 64512", "asn: 64512\n    holdTime: soon", 1),
			want: []string{`neighbors[0].holdTime: "soon" is not a duration`}},
		{name: "max prefixes action", yaml: strings.Replace(minimal, "asn: 64512", "asn: 64512\n    maxPrefixesAction: warn", 1),
			want: []string{`neighbors[0].maxPrefixesAction: "warn" is not one of teardown, reject`}},
		{name: "bad metrics", yaml: minimal + "metrics: {address: nowhere}\n", want: []string{`metrics.address: "nowhere"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestNeighborFor(t *testing.T) {
	_, err := Parse([]byte(minimal + "  - address: 192.168.2.20\n    asn: 65000\n"))
	if err == nil {
		t.Fatal("want error: neighbors list appended after lanInterfaces is not a list item")
	}
	c, err := Parse([]byte(strings.Replace(minimal, "serviceSubnets", "  - address: 192.168.2.20\n    asn: 65000\nserviceSubnets", 1)))
	if err != nil {
		t.Fatal(err)
	}
	n, ok := c.NeighborFor(mustAddr("192.168.2.20"))
	if !ok || n.ASN != 65000 {
		t.Errorf("NeighborFor(.20) = %+v, %v; want the address entry", n, ok)
	}
	n, ok = c.NeighborFor(mustAddr("192.168.2.21"))
	if !ok || n.ASN != 64512 {
		t.Errorf("NeighborFor(.21) = %+v, %v; want the prefix entry", n, ok)
	}
	if _, ok := c.NeighborFor(mustAddr("10.0.0.1")); ok {
		t.Error("NeighborFor(10.0.0.1) found an entry")
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// TestFirewallBackends: every documented firewall.backend is accepted,
// nftables (native, issue 18) among them; anything else names the choices.
func TestFirewallBackends(t *testing.T) {
	for _, b := range []string{"auto", "legacy", "nft", "nftables"} {
		c, err := Parse([]byte(minimal + "firewall: {backend: " + b + "}\n"))
		if err != nil || string(c.Firewall.Backend) != b {
			t.Errorf("backend %s: %v %+v", b, err, c)
		}
	}
	_, err := Parse([]byte(minimal + "firewall: {backend: iptables}\n"))
	if err == nil || !strings.Contains(err.Error(), "auto, legacy, nft, nftables") {
		t.Errorf("backend iptables: %v", err)
	}
}
