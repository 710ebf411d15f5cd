package firewall

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/bgplb/bgplb/routeragent/config"
)

func TestRedirectBlockNftExprs(t *testing.T) {
	head := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV6}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{58}},
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{137}},
	}
	tail := []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}}
	dest := &expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 24, Len: 16}
	cat := func(parts ...[]expr.Any) []expr.Any {
		var out []expr.Any
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	for _, tc := range []struct {
		subnet string
		want   []expr.Any
	}{
		{"2001:db8:254::/64", cat(head, []expr.Any{dest,
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 16,
				Mask: []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0}, Xor: make([]byte, 16)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: netip.MustParseAddr("2001:db8:254::").AsSlice()},
		}, tail)},
		{"2001:db8:254:1:8000::/65", cat(head, []expr.Any{dest,
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 16,
				Mask: []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0}, Xor: make([]byte, 16)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: netip.MustParseAddr("2001:db8:254:1:8000::").AsSlice()},
		}, tail)},
		// A host route needs no mask.
		{"2001:db8:255::7/128", cat(head, []expr.Any{dest,
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: netip.MustParseAddr("2001:db8:255::7").AsSlice()},
		}, tail)},
		// ::/0: every Redirect, no field test.
		{"::/0", cat(head, tail)},
	} {
		t.Run(tc.subnet, func(t *testing.T) {
			got := RedirectBlock{Subnet: netip.MustParsePrefix(tc.subnet)}.NftExprs()
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func redirectRule(subnet string) NftRule {
	r := RedirectBlock{Subnet: netip.MustParsePrefix(subnet)}
	return NftRule{Handle: 7, Exprs: r.NftExprs(), UserData: NftOp{Comment: r.Comment()}.UserData()}
}

func redirectTableWith(c NftChain) NftTable {
	return NftTable{Family: nftables.TableFamilyINet, Name: NftRedirectTable, Chains: []NftChain{c}}
}

func TestPlanNftRedirects(t *testing.T) {
	blocks := func(ss ...string) []RedirectBlock {
		var out []RedirectBlock
		for _, s := range ss {
			out = append(out, RedirectBlock{Subnet: netip.MustParsePrefix(s)})
		}
		return out
	}
	c64 := `comment "bgplb: no ICMPv6 redirect about 2001:db8:254::/64, asymmetric return path"`
	c48 := `comment "bgplb: no ICMPv6 redirect about fd00:1::/48, asymmetric return path"`
	ours := NftChain{Name: NftRedirectChain, Hook: nftables.ChainHookOutput, Rules: []NftRule{redirectRule("2001:db8:254::/64")}}
	for _, tc := range []struct {
		name string
		rs   NftRuleset
		want []RedirectBlock
		ops  []string
	}{
		{"nothing yet", router(), blocks("2001:db8:254::/64", "fd00:1::/48"), []string{
			"add-table inet bgplb",
			"add-chain inet bgplb noredirect6 hook output",
			"add-rule inet bgplb noredirect6 " + c64,
			"add-rule inet bgplb noredirect6 " + c48,
		}},
		{"in place", NftRuleset{Tables: []NftTable{redirectTableWith(ours)}}, blocks("2001:db8:254::/64"), nil},
		{"a subnet more", NftRuleset{Tables: []NftTable{redirectTableWith(ours)}}, blocks("2001:db8:254::/64", "fd00:1::/48"), []string{
			"flush-chain inet bgplb noredirect6",
			"add-rule inet bgplb noredirect6 " + c64,
			"add-rule inet bgplb noredirect6 " + c48,
		}},
		{"rule deleted by hand", NftRuleset{Tables: []NftTable{redirectTableWith(NftChain{Name: NftRedirectChain, Hook: nftables.ChainHookOutput})}}, blocks("2001:db8:254::/64"), []string{
			"flush-chain inet bgplb noredirect6",
			"add-rule inet bgplb noredirect6 " + c64,
		}},
		{"chain not at the output hook", NftRuleset{Tables: []NftTable{redirectTableWith(NftChain{Name: NftRedirectChain, Rules: ours.Rules})}}, blocks("2001:db8:254::/64"), []string{
			"flush-chain inet bgplb noredirect6",
			"delete-chain inet bgplb noredirect6",
			"add-chain inet bgplb noredirect6 hook output",
			"add-rule inet bgplb noredirect6 " + c64,
		}},
		{"table without the chain", NftRuleset{Tables: []NftTable{{Family: nftables.TableFamilyINet, Name: NftRedirectTable}}}, blocks("2001:db8:254::/64"), []string{
			"add-chain inet bgplb noredirect6 hook output",
			"add-rule inet bgplb noredirect6 " + c64,
		}},
		{"no IPv6 subnet: our table goes", NftRuleset{Tables: append(router().Tables, redirectTableWith(ours))}, nil, []string{
			"delete-table inet bgplb",
		}},
		{"no IPv6 subnet, nothing of ours", router(), nil, nil},
		{"someone's chain in our table stays", NftRuleset{Tables: []NftTable{{Family: nftables.TableFamilyINet, Name: NftRedirectTable,
			Chains: []NftChain{ours, {Name: "theirs"}}}}}, nil, []string{
			"flush-chain inet bgplb noredirect6",
			"delete-chain inet bgplb noredirect6",
		}},
		{"an ip6 table called bgplb is not ours", NftRuleset{Tables: []NftTable{{Family: nftables.TableFamilyIPv6, Name: NftRedirectTable,
			Chains: []NftChain{ours}}}}, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, op := range PlanNftRedirects(tc.rs, tc.want) {
				got = append(got, op.String())
			}
			if d := cmp.Diff(tc.ops, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func TestRedirectsInNative(t *testing.T) {
	want := []RedirectBlock{{Subnet: netip.MustParsePrefix("2001:db8:254::/64")}}
	for _, tc := range []struct {
		name            string
		backend         config.FirewallBackend
		want            []RedirectBlock
		targets         []Backend
		chose           bool
		native, decided bool
	}{
		{"configured nftables", config.BackendNftables, want, nil, false, true, true},
		{"configured legacy", config.BackendLegacy, want, []Backend{Legacy}, true, false, true},
		{"auto, forward path is native nftables", config.BackendAuto, want, nil, true, true, true},
		{"auto, ip6tables-legacy drops invalid", config.BackendAuto, want, []Backend{Legacy}, true, false, true},
		{"auto, drops in both ip6tables backends", config.BackendAuto, want, []Backend{Legacy, NFT}, true, false, true},
		{"auto, IPv6 pass failed before choosing", config.BackendAuto, want, nil, false, false, false},
		{"auto, no IPv6 subnet", config.BackendAuto, nil, nil, false, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			native, decided := RedirectsInNative(tc.backend, tc.want, tc.targets, tc.chose)
			if native != tc.native || decided != tc.decided {
				t.Errorf("native, decided = %v, %v; want %v, %v", native, decided, tc.native, tc.decided)
			}
		})
	}
}

// TestNftRedirectsWithoutDrop: with backend nftables the redirect table is
// installed even where no forward chain drops INVALID packets (Debian's
// default ruleset): the redirects leave the router all the same.
func TestNftRedirectsWithoutDrop(t *testing.T) {
	f := NewNftFake(debianDefault())
	m := newNftManager(t, nftCfg, f, fakes{})
	st, err := m.Ensure(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"inet filter input: ", "inet filter forward: ", "inet filter output: ",
		"inet bgplb noredirect6: bgplb: no ICMPv6 redirect about 2001:db8:254::/64, asymmetric return path",
	}
	if d := cmp.Diff(want, summary(f.Ruleset())); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	if st.Backend != "" || len(st.Rules) != 0 || len(st.Redirects) != 1 {
		t.Errorf("status %+v", st)
	}
}

// setRedirectCounter sets the packets of our first redirect rule in the
// fake, as traffic would (the generation does not change).
func setRedirectCounter(f *NftFake, packets uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for ti := range f.rs.Tables {
		if c := f.rs.Tables[ti].Chain(NftRedirectChain); c != nil && isRedirectTable(f.rs.Tables[ti]) {
			exprs := append([]expr.Any(nil), c.Rules[0].Exprs...)
			for i, x := range exprs {
				if _, ok := x.(*expr.Counter); ok {
					exprs[i] = &expr.Counter{Packets: packets, Bytes: packets * 100}
				}
			}
			c.Rules[0].Exprs = exprs
		}
	}
}

// TestNftRedirectsAuto: in auto mode the suppression lives in one place,
// the backend in force for IPv6: native nftables when its forward chain
// holds the drop and ip6tables none, ip6tables-legacy when that holds an
// IPv6 drop (our native table then goes). Counters come through steady
// passes that read only our chains; a rule deleted by hand is repaired.
func TestNftRedirectsAuto(t *testing.T) {
	ctx := context.Background()
	cfg := nftCfg
	cfg.Backend = config.BackendAuto
	f := NewNftFake(router())
	fs := fakes{{Legacy, IPv4}: NewFake(), {NFT, IPv4}: NewFake(), {Legacy, IPv6}: NewFake(), {NFT, IPv6}: NewFake()}
	m := newNftManager(t, cfg, f, fs)
	st, err := m.Ensure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]RedirectStatus{{Subnet: "2001:db8:254::/64", Backend: "nftables"}}, st.Redirects); d != "" {
		t.Errorf("redirects (-want +got):\n%s", d)
	}
	for k, r := range fs {
		if r.exists(RedirectChainName) || r.exists(ChainName) {
			t.Errorf("%v got a chain of ours", k)
		}
	}
	// Steady: once a full listing saw the generation the agent left,
	// counters are read through the generation shortcut.
	if _, err := m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	setRedirectCounter(f, 3)
	lists := f.Lists
	if st, err = m.Ensure(ctx); err != nil || len(st.Redirects) != 1 || st.Redirects[0].Packets != 3 || st.Redirects[0].Bytes != 300 {
		t.Fatalf("steady pass: %v %+v", err, st.Redirects)
	}
	if f.Lists != lists {
		t.Errorf("steady pass listed the whole ruleset")
	}
	// Our rule deleted by hand (`nft flush chain inet bgplb noredirect6`).
	rs := f.Ruleset()
	rs.redirectTable().Chain(NftRedirectChain).Rules = nil
	f.Set(rs)
	if st, err = m.Ensure(ctx); err != nil || st.Repairs != 1 {
		t.Fatalf("repair: %v %+v", err, st)
	}
	if _, _, ok := NftRedirectCounters(f.Ruleset(), DesiredRedirectBlocks(cfg)[0]); !ok {
		t.Errorf("rule not repaired: %v", summary(f.Ruleset()))
	}

	// An IPv6 INVALID drop appears in ip6tables-legacy (ferm): the
	// suppression moves there at the next full look, and our native table
	// goes.
	ferm(fs[runnerKey{Legacy, IPv6}])
	m.now = func() func() time.Time { n := time.Now().Add(2 * RescanInterval); return func() time.Time { return n } }()
	if st, err = m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]RedirectStatus{{Subnet: "2001:db8:254::/64", Backend: "legacy"}}, st.Redirects); d != "" {
		t.Errorf("redirects (-want +got):\n%s", d)
	}
	if !fs[runnerKey{Legacy, IPv6}].exists(RedirectChainName) {
		t.Errorf("ip6tables-legacy lacks %s", RedirectChainName)
	}
	if f.Ruleset().redirectTable() != nil {
		t.Errorf("our native redirect table stayed: %v", summary(f.Ruleset()))
	}

	// Uninstall leaves the native ruleset as it was.
	if err := m.Uninstall(ctx); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(summary(router()), summary(f.Ruleset())); d != "" {
		t.Errorf("after Uninstall (-want +got):\n%s", d)
	}
}

// TestNftRedirectsRemovedForIptables: configured for an iptables backend,
// the first pass takes our native redirect table away.
func TestNftRedirectsRemovedForIptables(t *testing.T) {
	rs := router()
	rs.Tables = append(rs.Tables, redirectTableWith(NftChain{Name: NftRedirectChain, Hook: nftables.ChainHookOutput, Rules: []NftRule{redirectRule("2001:db8:254::/64")}}))
	f := NewNftFake(rs)
	cfg := nftCfg
	cfg.Backend = config.BackendLegacy
	fs := fakes{{Legacy, IPv4}: NewFake(), {Legacy, IPv6}: NewFake()}
	m := newNftManager(t, cfg, f, fs)
	st, err := m.Ensure(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if f.Ruleset().redirectTable() != nil {
		t.Errorf("our native redirect table stayed")
	}
	if d := cmp.Diff([]RedirectStatus{{Subnet: "2001:db8:254::/64", Backend: "legacy"}}, st.Redirects); d != "" {
		t.Errorf("redirects (-want +got):\n%s", d)
	}
}

func TestRedirectBlockNftText(t *testing.T) {
	for _, tc := range []struct{ subnet, want string }{
		{"2001:db8:254::/64", "icmpv6 type nd-redirect @th,192,128 & 0xffffffffffffffff0000000000000000 == 0x20010db8025400000000000000000000 counter drop"},
		{"fd00:1::/48", "icmpv6 type nd-redirect @th,192,128 & 0xffffffffffff00000000000000000000 == 0xfd000001000000000000000000000000 counter drop"},
		{"2001:db8:255::7/128", "icmpv6 type nd-redirect @th,192,128 0x20010db8025500000000000000000007 counter drop"},
		{"::/0", "icmpv6 type nd-redirect counter drop"},
	} {
		r := RedirectBlock{Subnet: netip.MustParsePrefix(tc.subnet)}
		if d := cmp.Diff(tc.want+" comment \""+r.Comment()+"\"", r.NftText()); d != "" {
			t.Errorf("%s (-want +got):\n%s", tc.subnet, d)
		}
	}
}
