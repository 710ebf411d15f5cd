package doctor

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzCheckNftables: any text given as `nft list ruleset` never panics the
// native-nftables scan; every finding is a warning naming a table other
// than iptables-nft's `ip filter`/`ip6 filter` and carries one `nft insert
// rule` per LAN interface and service subnet; an INVALID drop appended in an
// `ip filter` table changes nothing, one appended in a native table adds
// exactly that finding; and lines that mention neither a table, a chain nor
// "invalid" do not matter (dropping them leaves the findings as they were).
// Seeds: testdata/fuzz/FuzzCheckNftables, among them the real `nft list
// ruleset` of a namespace holding iptables-nft's ferm-like ruleset (with a
// stateful sub-chain) and a native inet table with `ct state invalid drop`
// and a verdict map.
func FuzzCheckNftables(f *testing.F) {
	for _, s := range []string{
		"table inet filter {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy drop;\n\t\tct state invalid counter packets 0 bytes 0 drop\n\t}\n}\n",
		"table ip filter {\n\tchain FORWARD {\n\t\tct state invalid counter packets 7 bytes 280 drop\n\t}\n}\n",
		"table ip6 filter {\n\tchain FORWARD {\n\t\tct state invalid reject\n\t}\n}\ntable ip6 mangle {\n\tchain PREROUTING {\n\t\tct state invalid drop\n\t}\n}\n",
		"table inet fw {\n\tchain input {\n\t\tct state vmap { invalid : drop, established : accept, related : accept }\n\t}\n}\n",
		"ct state invalid drop\n",
		"table\nchain\ntable inet\nchain x y z\n\tct state invalid drop\n",
		"table netdev t {\n\tchain c {\n\t\tct state != invalid accept\n\t}\n}\n",
		"",
	} {
		f.Add(s)
	}
	ifaces := []string{"lan0", "eth0.2"}
	subnets := []netip.Prefix{netip.MustParsePrefix("192.168.254.0/24"), netip.MustParsePrefix("2001:db8:254::/64")}
	scan := func(ruleset string) []Finding {
		return checkNftables(Input{NftRuleset: ruleset, LANInterfaces: ifaces, ServiceSubnets: subnets})
	}
	f.Fuzz(func(t *testing.T, ruleset string) {
		got := scan(ruleset)
		for _, fd := range got {
			if fd.Check != "nftables" || fd.Status != Warn {
				t.Fatalf("finding %+v is not an nftables warning", fd)
			}
			if strings.HasPrefix(fd.Message, `native nftables table "ip filter"`) || strings.HasPrefix(fd.Message, `native nftables table "ip6 filter"`) {
				t.Fatalf("finding about iptables-nft's own table: %s", fd.Message)
			}
			if n := strings.Count(fd.Fix, "nft insert rule "); n != len(ifaces)*len(subnets) {
				t.Fatalf("fix has %d nft commands, want %d: %s", n, len(ifaces)*len(subnets), fd.Fix)
			}
		}
		if ruleset == "" {
			return
		}

		// nft lists a ruleset with a newline at the end; add one where the
		// input has none so the appended table starts on its own line.
		base := ruleset
		if !strings.HasSuffix(base, "\n") {
			base += "\n"
		}
		ipf := scan(base + "table ip filter {\n\tchain FORWARD {\n\t\tct state invalid counter packets 1 bytes 40 drop\n\t}\n}\n")
		if d := cmp.Diff(scan(base), ipf); d != "" {
			t.Fatalf("an INVALID drop in iptables-nft's table changed the findings (-before +after):\n%s", d)
		}
		native := scan(base + "table inet fuzz {\n\tchain fwd {\n\t\tct state invalid counter packets 1 bytes 40 drop\n\t}\n}\n")
		if len(native) != len(got)+1 || !strings.HasPrefix(native[len(native)-1].Message, `native nftables table "inet fuzz" chain "fwd" drops INVALID packets`) {
			t.Fatalf("an INVALID drop in a native table: %d findings before, after %+v", len(got), native)
		}

		var kept []string
		for _, l := range strings.Split(ruleset, "\n") {
			if strings.Contains(l, "invalid") || strings.Contains(l, "table") || strings.Contains(l, "chain") {
				kept = append(kept, l)
			}
		}
		if d := cmp.Diff(got, scan(strings.Join(kept, "\n"))); d != "" {
			t.Fatalf("lines without table, chain or invalid changed the findings (-all +kept):\n%s", d)
		}
	})
}
