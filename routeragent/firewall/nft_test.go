package firewall

import (
	"context"
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/bgplb/bgplb/routeragent/config"
)

// Expression builders, written as nft 1.0 compiles the rules (checked with
// `nft --debug=netlink`).
func u32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

// ctState is `ct state S` for the state bit mask: ct load; AND; cmp neq 0.
func ctState(mask uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: u32(mask), Xor: u32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: u32(0)},
	}
}

// ctStateNot is `ct state != S`: cmp eq 0.
func ctStateNot(mask uint32) []expr.Any {
	e := ctState(mask)
	e[2] = &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: u32(0)}
	return e
}

func iifname(n string) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifnameData(n)}}
}

func verdict(k expr.VerdictKind) expr.Any { return &expr.Verdict{Kind: k} }
func jumpTo(c string) expr.Any            { return &expr.Verdict{Kind: expr.VerdictJump, Chain: c} }
func gotoTo(c string) expr.Any            { return &expr.Verdict{Kind: expr.VerdictGoto, Chain: c} }
func counter() expr.Any                   { return &expr.Counter{} }

func rule(parts ...any) NftRule {
	var r NftRule
	for _, p := range parts {
		switch x := p.(type) {
		case []expr.Any:
			r.Exprs = append(r.Exprs, x...)
		case expr.Any:
			r.Exprs = append(r.Exprs, x)
		}
	}
	return r
}

const (
	stInvalid     = expr.CtStateBitINVALID
	stEstablished = expr.CtStateBitESTABLISHED
	stRelated     = expr.CtStateBitRELATED
	stNew         = expr.CtStateBitNEW
)

// vmapLookup is `ct state vmap @name`.
func vmapLookup(name string) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: name},
	}
}

var stateVmap = map[string][]NftMapElem{
	"__map0": {
		{Key: u32(stEstablished), Verdict: expr.Verdict{Kind: expr.VerdictAccept}},
		{Key: u32(stInvalid), Verdict: expr.Verdict{Kind: expr.VerdictDrop}},
		{Key: u32(stRelated), Verdict: expr.Verdict{Kind: expr.VerdictAccept}},
	},
	"__map1": {
		{Key: u32(stEstablished), Verdict: expr.Verdict{Kind: expr.VerdictAccept}},
	},
	"__map2": {
		{Key: u32(stInvalid), Verdict: expr.Verdict{Kind: expr.VerdictJump, Chain: "bad"}},
	},
}

func TestClassifyNftRule(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    NftRule
		want RuleEffect
	}{
		{"ct state invalid drop", rule(ctState(stInvalid), verdict(expr.VerdictDrop)),
			RuleEffect{Invalid: MatchInvalid, Verdict: expr.VerdictDrop, HasVerdict: true}},
		{"ct state invalid counter drop", rule(ctState(stInvalid), counter(), verdict(expr.VerdictDrop)),
			RuleEffect{Invalid: MatchInvalid, Verdict: expr.VerdictDrop, HasVerdict: true}},
		{"ct state invalid reject", rule(ctState(stInvalid), &expr.Reject{}),
			RuleEffect{Invalid: MatchInvalid, Verdict: expr.VerdictDrop, HasVerdict: true}},
		{"ct state { invalid, new } drop", rule(ctState(stInvalid|stNew), verdict(expr.VerdictDrop)),
			RuleEffect{Invalid: MatchInvalid, Verdict: expr.VerdictDrop, HasVerdict: true}},
		{"ct state established,related accept", rule(ctState(stEstablished|stRelated), verdict(expr.VerdictAccept)),
			RuleEffect{Invalid: MatchNotInvalid, Verdict: expr.VerdictAccept, HasVerdict: true}},
		{"ct state != invalid drop", rule(ctStateNot(stInvalid), verdict(expr.VerdictDrop)),
			RuleEffect{Invalid: MatchNotInvalid, Verdict: expr.VerdictDrop, HasVerdict: true}},
		{"ct state == invalid (cmp eq 1)", rule(&expr.Ct{Key: expr.CtKeySTATE, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: u32(1)}, verdict(expr.VerdictDrop)),
			RuleEffect{Invalid: MatchInvalid, Verdict: expr.VerdictDrop, HasVerdict: true}},
		{"iifname wan0 ct state invalid drop", rule(iifname("wan0"), ctState(stInvalid), verdict(expr.VerdictDrop)),
			RuleEffect{Invalid: MatchInvalid, Verdict: expr.VerdictDrop, HasVerdict: true}},
		{"ct state invalid jump bad", rule(ctState(stInvalid), jumpTo("bad")),
			RuleEffect{Invalid: MatchInvalid, Verdict: expr.VerdictJump, HasVerdict: true, Chain: "bad"}},
		{"jump sub (no state test)", rule(jumpTo("sub")),
			RuleEffect{Invalid: MatchAny, Verdict: expr.VerdictJump, HasVerdict: true, Chain: "sub"}},
		{"plain drop", rule(verdict(expr.VerdictDrop)),
			RuleEffect{Invalid: MatchAny, Verdict: expr.VerdictDrop, HasVerdict: true}},
		{"counter only", rule(counter()), RuleEffect{}},
		{"ct state overwritten by iifname load", rule(&expr.Ct{Key: expr.CtKeySTATE, Register: 1}, iifname("lan0"), verdict(expr.VerdictDrop)),
			RuleEffect{Invalid: MatchAny, Verdict: expr.VerdictDrop, HasVerdict: true}},
		{"ct mark, not state", rule(&expr.Ct{Key: expr.CtKeyMARK, Register: 1}, &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: u32(0)}, verdict(expr.VerdictDrop)),
			RuleEffect{Invalid: MatchAny, Verdict: expr.VerdictDrop, HasVerdict: true}},
		{"state in a 32-bit register", rule(&expr.Ct{Key: expr.CtKeySTATE, Register: 8},
			&expr.Bitwise{SourceRegister: 8, DestRegister: 8, Len: 4, Mask: u32(1), Xor: u32(0)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: u32(0)}, verdict(expr.VerdictDrop)),
			RuleEffect{Invalid: MatchInvalid, Verdict: expr.VerdictDrop, HasVerdict: true}},
		{"vmap invalid : drop", rule(vmapLookup("__map0")),
			RuleEffect{Invalid: MatchInvalid, Verdict: expr.VerdictDrop, HasVerdict: true}},
		{"vmap without invalid", rule(vmapLookup("__map1")), RuleEffect{Invalid: MatchNotInvalid}},
		{"vmap invalid : jump bad", rule(vmapLookup("__map2")),
			RuleEffect{Invalid: MatchInvalid, Verdict: expr.VerdictJump, HasVerdict: true, Chain: "bad"}},
		{"vmap unknown", rule(vmapLookup("nosuch")), RuleEffect{}},
		{"our exemption", NftRule{Exprs: Exemption{Interface: "lan0", Subnet: mustPrefixes("192.168.254.0/24")[0], Protocol: "tcp"}.NftExprs()},
			RuleEffect{Invalid: MatchInvalid, Verdict: expr.VerdictAccept, HasVerdict: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, ClassifyNftRule(tc.r.Exprs, stateVmap)); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func fwdChain(name string, rules ...NftRule) NftChain {
	return NftChain{Name: name, Hook: nftables.ChainHookForward, Rules: rules}
}

func inetFilter(chains ...NftChain) NftTable {
	return NftTable{Family: nftables.TableFamilyINet, Name: "filter", Chains: chains, VerdictMaps: stateVmap}
}

// debianDefault is Debian's /etc/nftables.conf: accept-everything base
// chains, no drop.
func debianDefault() NftRuleset {
	return NftRuleset{Tables: []NftTable{{Family: nftables.TableFamilyINet, Name: "filter", Chains: []NftChain{
		{Name: "input", Hook: nftables.ChainHookInput},
		fwdChain("forward"),
		{Name: "output", Hook: nftables.ChainHookOutput},
	}}}}
}

// router is a typical router: forward drops invalid, accepts established
// and the LAN's new connections.
func router() NftRuleset {
	return NftRuleset{Tables: []NftTable{inetFilter(
		NftChain{Name: "input", Hook: nftables.ChainHookInput, Rules: []NftRule{rule(ctState(stInvalid), verdict(expr.VerdictDrop))}},
		fwdChain("forward",
			rule(ctState(stEstablished|stRelated), verdict(expr.VerdictAccept)),
			rule(ctState(stInvalid), counter(), verdict(expr.VerdictDrop)),
			rule(iifname("lan0"), verdict(expr.VerdictAccept))),
	)}}
}

func TestAnalyzeNft(t *testing.T) {
	iptNft := NftTable{Family: nftables.TableFamilyIPv4, Name: "filter", Chains: []NftChain{fwdChain("FORWARD", rule(ctState(stInvalid), verdict(expr.VerdictDrop)))}}
	for _, tc := range []struct {
		name string
		rs   NftRuleset
		want NftAnalysis
	}{
		{"empty", NftRuleset{}, NftAnalysis{}},
		{"debian default", debianDefault(), NftAnalysis{ForwardChains: 1}},
		{"router", router(), NftAnalysis{ForwardChains: 1, Drops: []NftDrop{{Table: "inet filter", BaseChain: "forward", Chain: "forward", BaseIndex: 2}}}},
		{"drop in a jumped-to chain", NftRuleset{Tables: []NftTable{inetFilter(
			fwdChain("forward", rule(iifname("lan0"), jumpTo("lan_in")), rule(jumpTo("state"))),
			NftChain{Name: "lan_in", Rules: []NftRule{rule(verdict(expr.VerdictAccept))}},
			NftChain{Name: "state", Rules: []NftRule{rule(ctState(stEstablished), verdict(expr.VerdictAccept)), rule(ctState(stInvalid), verdict(expr.VerdictDrop))}},
		)}}, NftAnalysis{ForwardChains: 1, Drops: []NftDrop{{Table: "inet filter", BaseChain: "forward", Chain: "state", BaseIndex: 2}}}},
		{"ct state invalid jump to a dropping chain", NftRuleset{Tables: []NftTable{inetFilter(
			fwdChain("forward", rule(ctState(stInvalid), jumpTo("bad"))),
			NftChain{Name: "bad", Rules: []NftRule{rule(counter()), rule(verdict(expr.VerdictDrop))}},
		)}}, NftAnalysis{ForwardChains: 1, Drops: []NftDrop{{Table: "inet filter", BaseChain: "forward", Chain: "forward", BaseIndex: 1}}}},
		{"goto cycle", NftRuleset{Tables: []NftTable{inetFilter(
			fwdChain("forward", rule(gotoTo("a"))),
			NftChain{Name: "a", Rules: []NftRule{rule(jumpTo("b"))}},
			NftChain{Name: "b", Rules: []NftRule{rule(jumpTo("a"))}},
		)}}, NftAnalysis{ForwardChains: 1}},
		{"vmap", NftRuleset{Tables: []NftTable{inetFilter(fwdChain("forward", rule(vmapLookup("__map0"))))}},
			NftAnalysis{ForwardChains: 1, Drops: []NftDrop{{Table: "inet filter", BaseChain: "forward", Chain: "forward", BaseIndex: 1}}}},
		{"iptables-nft's table is not native", NftRuleset{Tables: []NftTable{iptNft}}, NftAnalysis{}},
		{"firewalld", NftRuleset{Tables: []NftTable{{Family: nftables.TableFamilyINet, Name: "firewalld", Chains: []NftChain{fwdChain("filter_FORWARD")}}}},
			NftAnalysis{Firewalld: true}},
		{"input drop only", NftRuleset{Tables: []NftTable{inetFilter(NftChain{Name: "input", Hook: nftables.ChainHookInput, Rules: []NftRule{rule(ctState(stInvalid), verdict(expr.VerdictDrop))}})}},
			NftAnalysis{}},
		{"ip and ip6 tables", NftRuleset{Tables: []NftTable{
			{Family: nftables.TableFamilyIPv4, Name: "fw4", Chains: []NftChain{fwdChain("fwd", rule(ctState(stInvalid), verdict(expr.VerdictDrop)))}},
			{Family: nftables.TableFamilyIPv6, Name: "fw6", Chains: []NftChain{fwdChain("fwd", rule(ctState(stInvalid), verdict(expr.VerdictDrop)))}},
		}}, NftAnalysis{ForwardChains: 2, Drops: []NftDrop{
			{Table: "ip fw4", BaseChain: "fwd", Chain: "fwd", BaseIndex: 1},
			{Table: "ip6 fw6", BaseChain: "fwd", Chain: "fwd", BaseIndex: 1},
		}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, AnalyzeNft(tc.rs)); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

var nftCfg = Config{Backend: config.BackendNftables, Interfaces: []string{"lan0"}, Subnets: mustPrefixes("192.168.254.0/24", "2001:db8:254::/64")}

func newNftManager(t *testing.T, cfg Config, f *NftFake, fs fakes) *Manager {
	t.Helper()
	m, err := New(cfg, nil, WithRunners(fs.factory), WithSystemDefault(NFT), WithNftables(func() (NftConn, error) { return f, nil }))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// summary lists each chain as "table chain: comment|verdict ..." for
// comparisons that do not depend on handles.
func summary(rs NftRuleset) []string {
	var out []string
	for _, t := range rs.Tables {
		for _, c := range t.Chains {
			var rules []string
			for _, r := range c.Rules {
				s := r.Comment()
				if s == "" {
					eff := ClassifyNftRule(r.Exprs, t.VerdictMaps)
					s = eff.Chain
				}
				rules = append(rules, s)
			}
			out = append(out, t.String()+" "+c.Name+": "+strings.Join(rules, " | "))
		}
	}
	return out
}

func TestNftEnsureInstallsRepairsUninstalls(t *testing.T) {
	f := NewNftFake(router())
	before := f.Ruleset()
	m := newNftManager(t, nftCfg, f, fakes{})
	ctx := context.Background()
	st, err := m.Ensure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Backend != "nftables" || !strings.Contains(st.Reason, "inet filter chain forward rule 2") {
		t.Errorf("status %+v", st)
	}
	want := []string{
		"inet filter input: ",
		"inet filter forward: " + NftJumpComment + " |  |  | ",
		"inet filter bgplb_exempt: bgplb: tcp from lan0 to 192.168.254.0/24, asymmetric return path | bgplb: tcp from lan0 to 2001:db8:254::/64, asymmetric return path",
		"inet bgplb noredirect6: bgplb: no ICMPv6 redirect about 2001:db8:254::/64, asymmetric return path",
	}
	if d := cmp.Diff(want, summary(f.Ruleset())); d != "" {
		t.Errorf("after Ensure (-want +got):\n%s", d)
	}
	if len(st.Rules) != 2 || st.Rules[0].Table != "inet filter" || st.Rules[0].Backend != "nftables" {
		t.Errorf("rules %+v", st.Rules)
	}
	if d := cmp.Diff([]RedirectStatus{{Subnet: "2001:db8:254::/64", Backend: "nftables"}}, st.Redirects); d != "" {
		t.Errorf("redirects (-want +got):\n%s", d)
	}
	// Steady state: no change; once a full listing saw the generation the
	// agent left, later passes read only the generation and our chain.
	applies := f.Applies
	if st, err = m.Ensure(ctx); err != nil || f.Applies != applies || st.Repairs != 0 {
		t.Fatalf("steady pass changed something: %v %+v", err, st)
	}
	lists := f.Lists
	for range 3 {
		if st, err = m.Ensure(ctx); err != nil || f.Applies != applies || st.Repairs != 0 || len(st.Rules) != 2 {
			t.Fatalf("steady pass: %v %+v", err, st)
		}
	}
	if f.Lists != lists {
		t.Errorf("%d full listings in 3 passes of an unchanged generation", f.Lists-lists)
	}
	// `nft -f /etc/nftables.conf`: flush ruleset, load: ours are gone.
	f.Set(router())
	if st, err = m.Ensure(ctx); err != nil || st.Repairs != 1 {
		t.Fatalf("repair: %v %+v", err, st)
	}
	if d := cmp.Diff(want, summary(f.Ruleset())); d != "" {
		t.Errorf("after repair (-want +got):\n%s", d)
	}
	// A second jump added by hand, and ours moved down: back to one, first.
	rs := f.Ruleset()
	fwd := rs.Tables[0].Chain("forward")
	fwd.Rules = append(fwd.Rules[1:], fwd.Rules[0], NftRule{Exprs: jumpExprs()})
	f.Set(rs)
	if _, err = m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, summary(f.Ruleset())); d != "" {
		t.Errorf("after moving the jump (-want +got):\n%s", d)
	}
	// Uninstall: exactly what was there before.
	if err := m.Uninstall(ctx); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(summary(before), summary(f.Ruleset())); d != "" {
		t.Errorf("after Uninstall (-before +after):\n%s", d)
	}
}

func TestNftNothingToDo(t *testing.T) {
	f := NewNftFake(debianDefault())
	cfg := nftCfg
	cfg.Subnets = mustPrefixes("192.168.254.0/24") // IPv6 needs the redirect table: TestNftRedirectsWithoutDrop
	m := newNftManager(t, cfg, f, fakes{})
	st, err := m.Ensure(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if f.Applies != 0 || st.Backend != "" || !strings.Contains(st.Reason, "drop no INVALID packets: nothing to do") {
		t.Errorf("applies %d, status %+v", f.Applies, st)
	}
}

func TestNftFirewalldRefused(t *testing.T) {
	f := NewNftFake(NftRuleset{Tables: []NftTable{{Family: nftables.TableFamilyINet, Name: "firewalld", Chains: []NftChain{fwdChain("filter_FORWARD", rule(ctState(stInvalid), verdict(expr.VerdictDrop)))}}}})
	m := newNftManager(t, nftCfg, f, fakes{})
	_, err := m.Ensure(context.Background())
	if err == nil || !strings.Contains(err.Error(), "systemctl disable --now firewalld") {
		t.Fatalf("err %v", err)
	}
	if f.Applies != 0 {
		t.Errorf("changed firewalld's ruleset")
	}
}

// TestAutoAcrossAllThree: drops in iptables-legacy and native nftables at
// once: a packet must pass both, so both get the exemption; an
// iptables-nft without a drop gets nothing.
func TestAutoAcrossAllThree(t *testing.T) {
	f := NewNftFake(router())
	fs := fakes{{Legacy, IPv4}: ferm(NewFake()), {NFT, IPv4}: NewFake()}
	cfg := nftCfg
	cfg.Backend = config.BackendAuto
	cfg.Subnets = mustPrefixes("192.168.254.0/24")
	m := newNftManager(t, cfg, f, fs)
	st, err := m.Ensure(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Backend != "nftables+legacy" {
		t.Errorf("backend %q, reason %q", st.Backend, st.Reason)
	}
	if !fs[runnerKey{Legacy, IPv4}].exists(ChainName) || fs[runnerKey{NFT, IPv4}].exists(ChainName) {
		t.Errorf("legacy should hold our chain, iptables-nft not")
	}
	if f.Ruleset().Tables[0].Chain(NftChainName) == nil {
		t.Errorf("native nftables has no chain of ours")
	}

	// Native nftables only, no drop in iptables: iptables gets nothing
	// (before, auto put the exemption into the system default).
	f2 := NewNftFake(router())
	fs2 := fakes{{Legacy, IPv4}: NewFake(), {NFT, IPv4}: NewFake()}
	m = newNftManager(t, cfg, f2, fs2)
	if st, err = m.Ensure(context.Background()); err != nil || st.Backend != "nftables" {
		t.Fatalf("%v %+v", err, st)
	}
	if fs2[runnerKey{NFT, IPv4}].exists(ChainName) || fs2[runnerKey{Legacy, IPv4}].exists(ChainName) {
		t.Errorf("an iptables backend got our chain though native nftables holds the only drop")
	}
	if !strings.Contains(st.Reason, "the forward path is native nftables") {
		t.Errorf("reason %q", st.Reason)
	}
	// While the drop is native nftables' and iptables showed none, the
	// iptables backends are listed only every RescanInterval; a drop that
	// appears there is exempted at the next full look.
	now := time.Now()
	m.now = func() time.Time { return now }
	legacy := fs2[runnerKey{Legacy, IPv4}]
	calls := legacy.Calls
	if _, err := m.Ensure(context.Background()); err != nil || legacy.Calls != calls {
		t.Fatalf("iptables listed again within RescanInterval: %v, %d calls", err, legacy.Calls-calls)
	}
	ferm(legacy)
	now = now.Add(RescanInterval)
	if st, err = m.Ensure(context.Background()); err != nil || st.Backend != "nftables+legacy" || !legacy.exists(ChainName) {
		t.Fatalf("after the rescan: %v %+v", err, st)
	}
}

// TestPlanNftFamilies: an ip table holds the IPv4 exemptions only, an ip6
// table the IPv6 ones.
func TestPlanNftFamilies(t *testing.T) {
	rs := NftRuleset{Tables: []NftTable{
		{Family: nftables.TableFamilyIPv4, Name: "fw4", Chains: []NftChain{fwdChain("fwd", rule(ctState(stInvalid), verdict(expr.VerdictDrop)))}},
		{Family: nftables.TableFamilyIPv6, Name: "fw6", Chains: []NftChain{fwdChain("fwd", rule(ctState(stInvalid), verdict(expr.VerdictDrop)))}},
	}}
	want := append(Desired(nftCfg, IPv4), Desired(nftCfg, IPv6)...)
	var got []string
	for _, op := range PlanNft(rs, AnalyzeNft(rs), want) {
		got = append(got, op.String())
	}
	wantOps := []string{
		"add-chain ip fw4 bgplb_exempt",
		`add-rule ip fw4 bgplb_exempt comment "bgplb: tcp from lan0 to 192.168.254.0/24, asymmetric return path"`,
		`insert-rule ip fw4 fwd comment "bgplb: conntrack-INVALID exemptions for service subnets"`,
		"add-chain ip6 fw6 bgplb_exempt",
		`add-rule ip6 fw6 bgplb_exempt comment "bgplb: tcp from lan0 to 2001:db8:254::/64, asymmetric return path"`,
		`insert-rule ip6 fw6 fwd comment "bgplb: conntrack-INVALID exemptions for service subnets"`,
	}
	if d := cmp.Diff(wantOps, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}
