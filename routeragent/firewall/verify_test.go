package firewall

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"

	"github.com/bgplb/bgplb/routeragent/config"
)

// TestVerifyModeRemovesExemptionsAndCounts: exempt installs the
// exemptions; a manager in verify mode (what a reload builds) removes
// them from iptables and keeps only a counting table in native nftables,
// the redirect suppression untouched; back in exempt the counting table
// goes.
func TestVerifyModeRemovesExemptionsAndCounts(t *testing.T) {
	ctx := context.Background()
	legacy := ferm(NewFake())
	fermLines := legacy.Lines()
	nft := NewNftFake(NftRuleset{})
	open := WithNftables(func() (NftConn, error) { return nft, nil })
	fs := fakes{{Legacy, IPv4}: legacy}

	exempt, err := New(testCfg, nil, WithRunners(fs.factory), WithSystemDefault(NFT), open)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exempt.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(legacy.Lines(), "-N "+ChainName) {
		t.Fatalf("exempt mode installed no chain: %v", legacy.Lines())
	}

	vcfg := testCfg
	vcfg.Mode = config.FirewallVerify
	verify, err := New(vcfg, nil, WithRunners(fs.factory), WithSystemDefault(NFT), open)
	if err != nil {
		t.Fatal(err)
	}
	st, err := verify.Ensure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(fermLines, legacy.Lines()); d != "" {
		t.Errorf("verify left exemptions in iptables (-want +got):\n%s", d)
	}
	if st.Mode != config.FirewallVerify || len(st.Rules) != 0 || st.Table != "inet "+NftVerifyTable {
		t.Errorf("status %+v", st)
	}
	want := []InvalidCount{{Subnet: "192.168.254.0/24", Direction: "to"}, {Subnet: "192.168.254.0/24", Direction: "from"}}
	if d := cmp.Diff(want, st.Invalid); d != "" {
		t.Errorf("counters (-want +got):\n%s", d)
	}
	rs := nft.Ruleset()
	if len(rs.Tables) != 1 || !isVerifyTable(rs.Tables[0]) {
		t.Fatalf("nftables tables %+v, want only ours", rs.Tables)
	}
	ch := rs.Tables[0].Chain(NftVerifyChain)
	if ch == nil || ch.Hook == nil || *ch.Hook != *nftables.ChainHookForward || ch.Priority != NftVerifyPriority {
		t.Fatalf("counting chain %+v", ch)
	}
	for _, r := range ch.Rules {
		if eff := ClassifyNftRule(r.Exprs, nil); eff.HasVerdict {
			t.Errorf("counting rule %q has a verdict: %+v", r.Comment(), eff)
		}
	}

	// Steady state: nothing changes, no repair.
	calls := legacy.Mutations
	if st, err = verify.Ensure(ctx); err != nil || st.Repairs != 0 || legacy.Mutations != calls {
		t.Errorf("second verify pass: %+v, %v (mutations %d -> %d)", st, err, calls, legacy.Mutations)
	}
	// Someone deletes the table: it is back, as a repair.
	nft.Set(NftRuleset{})
	if st, err = verify.Ensure(ctx); err != nil || st.Repairs != 1 || len(nft.Ruleset().Tables) != 1 {
		t.Errorf("after nft flush ruleset: %+v, %v", st, err)
	}

	// Back to exempt: the counting table goes, the exemptions return.
	back, err := New(testCfg, nil, WithRunners(fs.factory), WithSystemDefault(NFT), open)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := back.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tb := range nft.Ruleset().Tables {
		if isVerifyTable(tb) {
			t.Errorf("exempt mode kept the counting table")
		}
	}
	if !slices.Contains(legacy.Lines(), "-N "+ChainName) {
		t.Errorf("exempt mode after verify: no chain")
	}
}

func TestVerifyCountersText(t *testing.T) {
	got := DesiredInvalidCounters(mustPrefixes("192.168.254.0/24", "2001:db8:254::/64"))
	var lines []string
	for _, c := range got {
		lines = append(lines, c.NftText())
	}
	want := []string{
		`ip daddr 192.168.254.0/24 ct state invalid counter comment "bgplb: INVALID packets to 192.168.254.0/24"`,
		`ip saddr 192.168.254.0/24 ct state invalid counter comment "bgplb: INVALID packets from 192.168.254.0/24"`,
		`ip6 daddr 2001:db8:254::/64 ct state invalid counter comment "bgplb: INVALID packets to 2001:db8:254::/64"`,
		`ip6 saddr 2001:db8:254::/64 ct state invalid counter comment "bgplb: INVALID packets from 2001:db8:254::/64"`,
	}
	if d := cmp.Diff(want, lines); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	if cmds := VerifyNftCommands(mustPrefixes("192.168.254.0/24")); len(cmds) != 4 || !strings.Contains(cmds[1], "priority -10") {
		t.Errorf("commands %q", cmds)
	}
}

// TestVerifyModeKeepsRedirectSuppression: with an IPv6 service subnet,
// verify mode moves the ICMPv6 Redirect suppression to native nftables
// (next to the counting table) and takes the exemptions and ip6tables'
// copy away.
func TestVerifyModeKeepsRedirectSuppression(t *testing.T) {
	ctx := context.Background()
	legacy6 := ferm(NewFake())
	nft := NewNftFake(NftRuleset{})
	open := WithNftables(func() (NftConn, error) { return nft, nil })
	fs := fakes{{Legacy, IPv6}: legacy6}
	cfg := Config{Interfaces: []string{"lan0"}, Subnets: mustPrefixes("2001:db8:254::/64")}

	exempt, err := New(cfg, nil, WithRunners(fs.factory), WithSystemDefault(NFT), open)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exempt.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(legacy6.Lines(), "-N "+RedirectChainName) {
		t.Fatalf("exempt mode: no redirect chain in %v", legacy6.Lines())
	}

	cfg.Mode = config.FirewallVerify
	verify, err := New(cfg, nil, WithRunners(fs.factory), WithSystemDefault(NFT), open)
	if err != nil {
		t.Fatal(err)
	}
	st, err := verify.Ensure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range legacy6.Lines() {
		if strings.Contains(l, "BGPLB") {
			t.Errorf("ip6tables still has %q", l)
		}
	}
	if len(st.Redirects) != 1 || st.Redirects[0].Backend != string(Nftables) {
		t.Errorf("redirects %+v, want one in nftables", st.Redirects)
	}
	var names []string
	for _, tb := range nft.Ruleset().Tables {
		names = append(names, tb.String())
	}
	slices.Sort(names)
	if d := cmp.Diff([]string{"inet " + NftRedirectTable, "inet " + NftVerifyTable}, names); d != "" {
		t.Errorf("nftables tables (-want +got):\n%s", d)
	}
	// Steady state.
	if st, err = verify.Ensure(ctx); err != nil || st.Repairs != 0 || len(st.Redirects) != 1 {
		t.Errorf("second pass: %+v, %v", st, err)
	}
}
