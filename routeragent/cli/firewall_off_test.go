package cli

import (
	"io"
	"log/slog"
	"slices"
	"testing"

	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/firewall"
)

// TestFirewallOffRemovesOurs: firewall.mode off gets a manager like the
// other modes (the agent's NewFirewall, at start and on reload), and its
// first pass removes what exempt and verify installed: the exemption chain
// and jump, and verify mode's counting table; status says mode off.
func TestFirewallOffRemovesOurs(t *testing.T) {
	legacy := firewall.NewFake()
	legacy.SetPolicy("FORWARD", "DROP")
	legacy.AddRule("FORWARD", "-m", "state", "--state", "INVALID", "-j", "DROP")
	nft := firewall.NewNftFake(firewall.NftRuleset{})
	newFW := firewallFactory(slog.New(slog.NewTextHandler(io.Discard, nil)),
		firewall.WithRunners(func(b firewall.Backend, f firewall.Family) (firewall.Runner, error) {
			if b == firewall.Legacy && f == firewall.IPv4 {
				return legacy, nil
			}
			return nil, firewall.ErrUnavailable
		}),
		firewall.WithNftables(func() (firewall.NftConn, error) { return nft, nil }))
	cfg, err := config.Parse([]byte(`asn: 64500
routerID: 192.168.2.1
neighbors: [{prefix: 192.168.2.0/24, asn: 64512, allowUnauthenticated: true}]
serviceSubnets: [192.168.254.0/24]
lanInterfaces: [lan0]
`))
	if err != nil {
		t.Fatal(err)
	}
	ours := func() (chain, verifyTable bool) {
		chain = slices.Contains(legacy.Lines(), "-N "+firewall.ChainName)
		for _, tb := range nft.Ruleset().Tables {
			verifyTable = verifyTable || tb.Name == firewall.NftVerifyTable
		}
		return chain, verifyTable
	}
	pass := func(mode config.FirewallMode) firewall.Status {
		t.Helper()
		c := *cfg
		c.Firewall.Mode = mode
		fw, err := newFW(&c)
		if err != nil {
			t.Fatalf("mode %s: %v", mode, err)
		}
		if fw == nil {
			t.Fatalf("mode %s: no firewall manager", mode)
		}
		st, err := fw.Ensure(t.Context())
		if err != nil {
			t.Fatalf("mode %s: %v", mode, err)
		}
		return st
	}

	pass(config.FirewallExempt)
	if chain, _ := ours(); !chain {
		t.Fatalf("exempt: no chain in %v", legacy.Lines())
	}
	// exempt -> off: the exemptions go.
	st := pass(config.FirewallOff)
	if chain, _ := ours(); chain {
		t.Errorf("off kept the exemptions: %v", legacy.Lines())
	}
	if st.Mode != config.FirewallOff || len(st.Rules) != 0 || st.LastError != "" {
		t.Errorf("off status: %+v", st)
	}

	// verify -> off: the counting table goes.
	pass(config.FirewallVerify)
	if _, table := ours(); !table {
		t.Fatalf("verify: no counting table in %+v", nft.Ruleset())
	}
	st = pass(config.FirewallOff)
	if chain, table := ours(); chain || table {
		t.Errorf("off after verify kept chain %v, counting table %v", chain, table)
	}
	if st.Mode != config.FirewallOff || len(st.Invalid) != 0 || st.LastError != "" {
		t.Errorf("off status: %+v", st)
	}
}
