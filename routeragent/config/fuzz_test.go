package config

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	yaml "go.yaml.in/yaml/v3"
)

// FuzzParse feeds arbitrary bytes to the config parser and validator: it
// never panics, a refused config always says which key is wrong, and a
// config that validates survives a round trip (marshal, parse again) with
// the same meaning. The seed corpus is in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		minimal,
		minimal + "routes: {table: 100, metric: 20, protocol: 201, resyncInterval: 10s, staleTimeout: 0s}\n",
		strings.Replace(minimal, "asn: 64512", "asn: 64512\n    holdTime: 30s\n    keepaliveTime: 10s\n    maxPrefixes: 5\n    gracefulRestart: false", 1),
		strings.Replace(minimal, "192.168.254.0/24", "\"2001:db8:254::/64\"", 1),
		strings.Replace(minimal, "prefix: 192.168.2.0/24", "address: \"2001:db8::5\"", 1),
		minimal + "firewall: {mode: off, backend: legacy, protocols: [tcp, udp, sctp]}\nmetrics: {address: \":9100\"}\n",
		"",
		"asn: -1\n",
		"neighbors: {}\n",
		"routes: {table: 4294967296}\n",
		"listen: {port: 99999999999999999999}\n",
		"a: &a [*a, *a]\nb: *a\n",
		"serviceSubnets: [0.0.0.0/0, 10.0.0.1/8, ::/0]\n",
		strings.Replace(minimal, "neighbors:", "neighbours:", 1) + "firewall: {backnd: nft}\n",
		minimal + "x: &l {port: 1179}\nlisten: {<<: [*l, {address: \"::\"}], port: 179}\n",
		minimal + "listen: {port: 1, port: 2}\nasn: \"1\"\n? [a]\n: 1\n",
		minimal + "routes: {metric: 1.5, table: 1e2, resyncInterval: 30}\n---\nasn: 1\n",
		"neighbors: [1, {prefix: 10.0.0.0/8, holdTime: 9}]\nlanInterfaces: [\"br 0\", eth0:1, ..]\n",
	} {
		f.Add([]byte(s))
	}
	opts := cmp.Options{cmp.AllowUnexported(Config{}, Neighbor{}),
		cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
		cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 64<<10 {
			return
		}
		c, err := Parse(b)
		if err != nil {
			if se := (*SyntaxError)(nil); errors.As(err, &se) && se.Msg == "" {
				t.Fatalf("syntax error without a message: %#v", se)
			}
			if es := (Errors)(nil); errors.As(err, &es) {
				for _, e := range es {
					if e.Path == "" || e.Msg == "" {
						t.Fatalf("error without key or message: %#v", e)
					}
				}
			}
			return
		}
		// A valid config's parsed forms agree with its text.
		if len(c.ServicePrefixes()) != len(c.ServiceSubnets) {
			t.Fatalf("%d service subnets parsed from %d", len(c.ServicePrefixes()), len(c.ServiceSubnets))
		}
		for _, p := range c.ServicePrefixes() {
			if p.Bits() == 0 || p.Masked() != p {
				t.Fatalf("accepted service subnet %s", p)
			}
		}
		for i := range c.Neighbors {
			n := &c.Neighbors[i]
			if !n.NeighborPrefix().IsValid() || n.MaxPrefixes < 0 || n.KeepaliveTime > n.HoldTime {
				t.Fatalf("accepted neighbor %+v", *n)
			}
		}
		out, err := yaml.Marshal(c)
		if err != nil {
			t.Fatalf("marshal a valid config: %v", err)
		}
		c2, err := Parse(out)
		if err != nil {
			t.Fatalf("a valid config does not parse again: %v\n%s", err, out)
		}
		if d := cmp.Diff(c, c2, opts); d != "" {
			t.Fatalf("round trip changed the config (-first +second):\n%s\n%s", d, out)
		}
	})
}
