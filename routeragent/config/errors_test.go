package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// withNeighbor is minimal with extra lines in its neighbors[0] (which
// starts on line 5; its asn is on line 6, what is added from line 7).
func withNeighbor(lines string) string {
	return strings.Replace(minimal, "asn: 64512", "asn: 64512\n"+lines, 1)
}

func messages(err error) []string {
	var es Errors
	if !errors.As(err, &es) {
		return []string{"not Errors: " + err.Error()}
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Error())
	}
	return out
}

// TestParseErrors: each class of mistake names the key path, says what is
// expected, gives the line, and every problem of the file comes at once.
func TestParseErrors(t *testing.T) {
	const top = "asn, routerID, listen, neighbors, serviceSubnets, lanInterfaces, firewall, icmpRedirects, routes, statusSocket, stateDir, metrics, log, maxDynamicPeers"
	for _, tc := range []struct {
		name string
		yaml string
		want []string
	}{
		// Unknown keys, with the closest known key at that level.
		{"unknown key suggested", strings.Replace(minimal, "neighbors:", "neighbours:", 1), []string{
			// neighbors: at least one ... is not said: it is the same mistake.
			"line 4: neighbours: unknown key; did you mean neighbors?",
		}},
		{"unknown key case", strings.Replace(minimal, "routerID:", "routerId:", 1), []string{
			"line 3: routerId: unknown key; did you mean routerID?",
		}},
		{"unknown nested key", minimal + "firewall:\n  backnd: nft\n", []string{
			"line 11: firewall.backnd: unknown key; did you mean backend?",
		}},
		{"unknown key in a list entry", strings.Replace(minimal, "serviceSubnets", "  - address: 192.168.2.9\n    asn: 1\n    passwrdFile: /etc/x\nserviceSubnets", 1), []string{
			"line 10: neighbors[1].passwrdFile: unknown key; did you mean passwordFile?",
		}},
		{"unknown key begun", withNeighbor("    hold: 30s"), []string{
			"line 7: neighbors[0].hold: unknown key; did you mean holdTime?",
		}},
		{"unknown key far from any", minimal + "bogus: 1\n", []string{
			"line 10: bogus: unknown key; expected one of " + top,
		}},
		{"unknown key not a plain name", minimal + "\"\": 1\n\"a b\": 2\n", []string{
			`line 10: "": unknown key; expected one of ` + top,
			`line 11: "a b": unknown key; expected one of ` + top,
		}},
		{"value under a misspelt key checked as the key meant", strings.Replace(withNeighbor("    holdTime: 9"), "neighbors:", "neighbours:", 1), []string{
			"line 4: neighbours: unknown key; did you mean neighbors?",
			"line 7: neighbours[0].holdTime: 9 is not a duration; write 9s",
		}},
		{"key not a name", minimal + "? [a]\n: 1\n", []string{
			"line 10: (top level): a key must be a name, got a list",
		}},
		{"key twice", minimal + "asn: 64501\n", []string{
			// The decoder decodes none of a map with a key twice: no
			// "is required" for the keys it holds.
			"line 10: asn: set twice (first on line 2)",
		}},
		{"key twice nested", minimal + "listen: {port: 1, port: 2, bogus: 3}\n", []string{
			"line 10: listen.port: set twice (first on line 10)",
			"line 10: listen.bogus: unknown key; expected one of address, port",
		}},
		{"key twice through an alias", minimal + "x: &k port\nlisten: {port: 1, *k : 2}\n", []string{
			"line 10: x: unknown key; expected one of " + top,
			"line 11: listen.port: set twice (first on line 11)",
		}},

		// Wrong types.
		{"duration without unit", withNeighbor("    holdTime: 9"), []string{
			"line 7: neighbors[0].holdTime: 9 is not a duration; write 9s",
		}},
		{"duration word", minimal + "routes: {resyncInterval: soon}\n", []string{
			`line 10: routes.resyncInterval: "soon" is not a duration (write a number and a unit: 9s, 500ms, 2m)`,
		}},
		{"not a number", strings.Replace(minimal, "asn: 64500", `asn: "x"`, 1), []string{
			`line 2: asn: "x" is not a number`,
		}},
		{"number in quotes", strings.Replace(minimal, "asn: 64500", `asn: "64500"`, 1), []string{
			`line 2: asn: "64500" is a string; write 64500 without quotes`,
		}},
		{"negative unsigned", strings.Replace(minimal, "asn: 64500", "asn: -1", 1), []string{
			"line 2: asn: -1 is negative",
		}},
		{"too large", withNeighbor("    maxPrefixes: 99999999999999999999") + "routes: {table: 4294967296}\n", []string{
			"line 7: neighbors[0].maxPrefixes: 99999999999999999999 is too large",
			"line 11: routes.table: 4294967296 is not a usable routing table (1-4294967294, not 255 local)",
		}},
		{"asn too large", strings.Replace(minimal, "asn: 64512", "asn: 4294967296", 1), []string{
			"line 6: neighbors[0].asn: 4294967296 is too large (at most 4294967295)",
		}},
		{"fraction", minimal + "routes: {metric: 1.5, table: 1e2}\n", []string{
			// 1e2 is a whole number and decodes as 100.
			"line 10: routes.metric: 1.5 is not a whole number",
		}},
		{"not a boolean", withNeighbor("    gracefulRestart: maybe"), []string{
			`line 7: neighbors[0].gracefulRestart: "maybe" is not true or false`,
		}},
		{"boolean in quotes", withNeighbor(`    gracefulRestart: "false"`), []string{
			`line 7: neighbors[0].gracefulRestart: "false" is a string; write false without quotes`,
		}},
		{"list where a map is expected", minimal + "listen: [0.0.0.0, 179]\n", []string{
			"line 10: listen: expected a map (keys address, port), got a list",
		}},
		{"map where a list is expected", strings.Replace(minimal, "  - prefix", "    prefix", 1), []string{
			// neighbors: at least one ... is not said: the decoder left the list empty.
			`line 5: neighbors: expected a list, got a map; start each entry with "- "`,
		}},
		{"string where a list is expected", strings.Replace(minimal, "[enp1s0.2]", "enp1s0.2", 1), []string{
			`line 9: lanInterfaces: expected a list, got "enp1s0.2"; write [enp1s0.2]`,
		}},
		{"list where a string is expected", minimal + "firewall: {mode: [off]}\n", []string{
			"line 10: firewall.mode: expected a string, got a list",
		}},
		{"map where a number is expected", minimal + "listen: {port: {n: 1}}\n", []string{
			"line 10: listen.port: expected a number, got a map",
		}},
		{"list entry of the wrong kind", strings.Replace(minimal, "serviceSubnets", "  - 192.168.2.9\nserviceSubnets", 1), []string{
			// The decoder drops the entry, so validation's neighbors[i] would not be the file's.
			`line 8: neighbors[1]: expected a map (keys prefix, address, asn, passwordFile, allowUnauthenticated, holdTime, keepaliveTime, maxPrefixes, maxPrefixesAction, gracefulRestart, ttlSecurity, bfd), got "192.168.2.9"`,
		}},
		{"not a map at all", "- asn: 1\n", []string{
			"line 1: (top level): expected a map (keys " + top + "), got a list",
		}},
		{"second document", minimal + "---\nasn: 1\n", []string{
			"line 11: (top level): a second YAML document (after ---) would be ignored; the file holds one",
		}},

		// Merges follow the decoder: explicit keys win, a bad merge is named.
		{"merge", minimal + "x: &l {port: 1179, adress: 1.2.3.4}\nlisten: {<<: *l, port: 179}\n", []string{
			"line 10: x: unknown key; expected one of " + top,
			"line 10: listen.adress: unknown key; did you mean address?",
		}},
		{"merge of a scalar", minimal + "listen: {<<: 5}\n", []string{
			`line 10: listen.<<: a merge takes a map or a list of maps, got "5"`,
		}},

		// Interface names the kernel refuses (dev_valid_name).
		{"interface names", strings.Replace(minimal, "[enp1s0.2]", `[enp1s0.2, "", "br 0", "tab\there", a/b, eth0:1, ".", "..", enp1s0.2-abcdefg, enp1s0.2-abcdef]`, 1), []string{
			`line 9: lanInterfaces[1]: "" is not an interface name: it is empty`,
			`line 9: lanInterfaces[2]: "br 0" is not an interface name: it contains whitespace`,
			`line 9: lanInterfaces[3]: "tab\there" is not an interface name: it contains whitespace`,
			`line 9: lanInterfaces[4]: "a/b" is not an interface name: it contains '/'`,
			`line 9: lanInterfaces[5]: "eth0:1" is not an interface name: it contains ':' (an address label such as eth0:1 is not an interface)`,
			`line 9: lanInterfaces[6]: "." is not an interface name: the kernel refuses . and ..`,
			`line 9: lanInterfaces[7]: ".." is not an interface name: the kernel refuses . and ..`,
			`line 9: lanInterfaces[8]: "enp1s0.2-abcdefg" is not an interface name: it is 16 bytes long, the kernel allows at most 15`,
		}},
		{"interface name with 0xa0", strings.Replace(minimal, "[enp1s0.2]", `["lan\u00a0"]`, 1), []string{
			// U+00A0 is c2 a0 in UTF-8; the kernel's isspace(0xa0) is true.
			`line 9: lanInterfaces[0]: "lan\u00a0" is not an interface name: it contains whitespace`,
		}},

		// Everything at once, in the file's order; what has no line last.
		{"all at once", `
routerID: 192.168.2.300
neighbors:
  - prefix: 192.168.2.0/33
    asn: x
    holdTime: 9
lanInterfaces: [lan0]
routes: {protocol: 186, tabel: 100}
`, []string{
			`line 2: routerID: "192.168.2.300" is not an IPv4 address`,
			`line 4: neighbors[0].prefix: "192.168.2.0/33" is not a valid CIDR`,
			`line 5: neighbors[0].asn: "x" is not a number`,
			"line 6: neighbors[0].holdTime: 9 is not a duration; write 9s",
			"line 8: routes.tabel: unknown key; did you mean table?",
			"line 8: routes.protocol: 186 is used by bgp (FRR); pick a number of our own (default 220)",
			"asn: is required (the router's AS number)",
			"serviceSubnets: at least one service subnet is required (the only prefixes speakers may announce)",
		}},
		{"validation error placed at its entry", strings.Replace(minimal, "serviceSubnets", "  - prefix: 192.168.2.0/24\n    asn: 1\n    allowUnauthenticated: true\nserviceSubnets", 1), []string{
			"line 8: neighbors[1]: same speakers as neighbors[0] (192.168.2.0/24)",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			if d := cmp.Diff(tc.want, messages(err)); d != "" {
				t.Errorf("errors (-want +got):\n%s", d)
			}
		})
	}
}

func TestSyntaxError(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"asn: 1\n  x: 2\n", "line 2: not valid YAML: mapping values are not allowed in this context"},
		{"asn: 1\nlisten:\n\tport: 1\n", "line 3: not valid YAML: found character that cannot start any token (a tab: YAML indents with spaces)"},
		{"\tasn: 1\n", "line 1: not valid YAML: found character that cannot start any token (a tab: YAML indents with spaces)"},
	} {
		_, err := Parse([]byte(tc.yaml))
		var se *SyntaxError
		if !errors.As(err, &se) || err.Error() != tc.want {
			t.Errorf("Parse(%q) = %v, want SyntaxError %q", tc.yaml, err, tc.want)
		}
	}
}

func TestSuggest(t *testing.T) {
	known := []string{"prefix", "address", "asn", "passwordFile", "allowUnauthenticated", "holdTime", "keepaliveTime", "maxPrefixes", "maxPrefixesAction", "gracefulRestart", "ttlSecurity"}
	var got []string
	for _, name := range []string{"asm", "adress", "adresss", "passwrdFile", "holdtime", "hold", "keepalive", "maxPrefix", "max", "prefx", "perfix", "bogus", "gracefullRestart", "AS"} {
		got = append(got, name+"="+suggest(name, known))
	}
	want := []string{"asm=asn", "adress=address", "adresss=address", "passwrdFile=passwordFile", "holdtime=holdTime", "hold=holdTime",
		"keepalive=keepaliveTime", "maxPrefix=maxPrefixes", "max=", "prefx=prefix", "perfix=prefix", "bogus=", "gracefullRestart=gracefulRestart", "AS=asn"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("suggestions (-want +got):\n%s", d)
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{{"", "", 0}, {"", "abc", 3}, {"abc", "", 3}, {"neighbours", "neighbors", 1}, {"perfix", "prefix", 1}, {"kitten", "sitting", 3}, {"ca", "abc", 3}} {
		if got := editDistance(tc.a, tc.b); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

// TestUnauthenticatedNeighbors: a prefix: entry admits any host of its
// range, so it needs the TCP-MD5 secret or an explicit acceptance of the
// risk; an address: entry may run without one (check-config warns).
func TestUnauthenticatedNeighbors(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "md5")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const head = "asn: 64500\nrouterID: 192.168.2.1\nserviceSubnets: [192.168.254.0/24]\nlanInterfaces: [lan0]\nneighbors:\n"
	for _, tc := range []struct {
		name, neighbors string
		want            []string
	}{
		{"prefix without password", "  - {prefix: 192.168.2.0/24, asn: 64512}\n", []string{
			"line 6: neighbors[0]: a prefix neighbor accepts any host in 192.168.2.0/24 that speaks BGP; set passwordFile " +
				"(the same secret as the speakers' BGPPeer passwordSecret), or allowUnauthenticated: true to accept that risk",
		}},
		{"second prefix without password", "  - {prefix: 192.168.2.0/28, asn: 64512, passwordFile: " + pw + "}\n" +
			"  - prefix: \"2001:db8:2::/64\"\n    asn: 64512\n", []string{
			"line 7: neighbors[1]: a prefix neighbor accepts any host in 2001:db8:2::/64 that speaks BGP; set passwordFile " +
				"(the same secret as the speakers' BGPPeer passwordSecret), or allowUnauthenticated: true to accept that risk",
		}},
		{"allowUnauthenticated false is no acceptance", "  - {prefix: 192.168.2.0/24, asn: 64512, allowUnauthenticated: false}\n", []string{
			"line 6: neighbors[0]: a prefix neighbor accepts any host in 192.168.2.0/24 that speaks BGP; set passwordFile " +
				"(the same secret as the speakers' BGPPeer passwordSecret), or allowUnauthenticated: true to accept that risk",
		}},
		{"prefix with password", "  - {prefix: 192.168.2.0/24, asn: 64512, passwordFile: " + pw + "}\n", nil},
		{"prefix accepting the risk", "  - {prefix: 192.168.2.0/24, asn: 64512, allowUnauthenticated: true}\n", nil},
		{"address without password", "  - {address: 192.168.2.21, asn: 64512}\n", nil},
		{"invalid prefix: only the CIDR error", "  - {prefix: 192.168.2.0/33, asn: 64512}\n", []string{
			`line 6: neighbors[0].prefix: "192.168.2.0/33" is not a valid CIDR`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(head + tc.neighbors))
			var got []string
			if err != nil {
				got = messages(err)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("errors (-want +got):\n%s", d)
			}
		})
	}
}
