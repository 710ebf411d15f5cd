package firewall

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRedirectBlockArgs(t *testing.T) {
	const tail = `-m comment --comment "bgplb: no ICMPv6 redirect about %s, asymmetric return path" -j DROP`
	for _, tc := range []struct {
		subnet string
		u32    string // "" for none
	}{
		// 64 = 0x40: 40 (IPv6 header) + 8 (ICMPv6 header) + 16 (Target).
		{"2001:db8:254::/64", "0x40=0x20010db8&&0x44=0x2540000"},
		{"2001:db8:254::/48", "0x40=0x20010db8&&0x44&0xffff0000=0x2540000"},
		{"2001:db8::/32", "0x40=0x20010db8"},
		{"fd00::/8", "0x40&0xff000000=0xfd000000"},
		{"2001:db8:254::1/128", "0x40=0x20010db8&&0x44=0x2540000&&0x48=0x0&&0x4c=0x1"},
		{"2001:db8:254:1:8000::/65", "0x40=0x20010db8&&0x44=0x2540001&&0x48&0x80000000=0x80000000"},
		{"::/0", ""},
	} {
		t.Run(tc.subnet, func(t *testing.T) {
			p := netip.MustParsePrefix(tc.subnet)
			want := "-p ipv6-icmp -m icmp6 --icmpv6-type 137 "
			if tc.u32 != "" {
				want += `-m u32 --u32 ` + tc.u32 + " "
			}
			want += strings.Replace(tail, "%s", tc.subnet, 1)
			if d := cmp.Diff(want, quoteArgs(RedirectBlock{Subnet: p}.Args())); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func TestDesiredRedirectBlocks(t *testing.T) {
	cfg := Config{Subnets: mustPrefixes("192.168.254.0/24", "2001:db8:254::/64", "10.0.0.0/8", "fd00:1::/48")}
	want := []RedirectBlock{{netip.MustParsePrefix("2001:db8:254::/64")}, {netip.MustParsePrefix("fd00:1::/48")}}
	if d := cmp.Diff(want, DesiredRedirectBlocks(cfg), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	if got := DesiredRedirectBlocks(Config{Subnets: mustPrefixes("192.168.254.0/24")}); got != nil {
		t.Errorf("IPv4 only: %v", got)
	}
}

func TestPlanRedirectInstall(t *testing.T) {
	want := []RedirectBlock{{netip.MustParsePrefix("2001:db8:254::/64")}}
	rule := "-A " + RedirectChainName + " " + quoteArgs(want[0].Args())
	jump := "-A OUTPUT " + quoteArgs(RedirectJumpArgs())
	newChain := Op{Kind: "new-chain", Chain: RedirectChainName}
	flush := Op{Kind: "flush-chain", Chain: RedirectChainName}
	app := Op{Kind: "append", Chain: RedirectChainName, Args: want[0].Args()}
	ins := Op{Kind: "insert", Chain: "OUTPUT", Pos: 1, Args: RedirectJumpArgs()}
	del := Op{Kind: "delete", Chain: "OUTPUT", Args: RedirectJumpArgs()}
	for _, tc := range []struct {
		name  string
		lines []string
		want  []Op
	}{
		{"empty", nil, []Op{newChain, app, ins}},
		{"in place", []string{"-N " + RedirectChainName, jump, "-A OUTPUT -j ACCEPT", rule}, nil},
		{"jump below another rule", []string{"-N " + RedirectChainName, "-A OUTPUT -j ACCEPT", jump, rule}, []Op{del, ins}},
		{"hand-edited chain", []string{"-N " + RedirectChainName, jump, "-A " + RedirectChainName + " -j DROP"}, []Op{flush, app}},
		// The exemptions' FORWARD jump does not count as ours here.
		{"only the exemption chain", []string{"-N " + ChainName, "-A FORWARD " + quoteArgs(JumpArgs())}, []Op{newChain, app, ins}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, PlanRedirectInstall(mustTable(t, tc.lines...), want)); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
	// No IPv6 subnet left: the chain and its jump go.
	got := PlanRedirectInstall(mustTable(t, "-N "+RedirectChainName, jump, rule), nil)
	if d := cmp.Diff([]Op{del, flush, {Kind: "delete-chain", Chain: RedirectChainName}}, got); d != "" {
		t.Errorf("removal (-want +got):\n%s", d)
	}
}

// TestRedirectSuppressionLifecycle: the IPv6 target backend gets the
// redirect chain and OUTPUT jump with the exemptions; a ferm reload is
// repaired; status reports it with counters; uninstall leaves the table as
// it was; IPv4 gets nothing of it.
func TestRedirectSuppressionLifecycle(t *testing.T) {
	ctx := context.Background()
	legacy4, legacy6 := ferm(NewFake()), ferm(NewFake())
	legacy6.AddRule("OUTPUT", "-o", "lo", "-j", "ACCEPT")
	before6 := legacy6.Lines()
	cfg := testCfg
	cfg.Subnets = append(slices.Clone(cfg.Subnets), netip.MustParsePrefix("2001:db8:254::/64"))
	m := newTestManager(t, cfg, fakes{{Legacy, IPv4}: legacy4, {Legacy, IPv6}: legacy6})
	st, err := m.Ensure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	block := RedirectBlock{Subnet: netip.MustParsePrefix("2001:db8:254::/64")}
	want := []string{
		"-A OUTPUT " + quoteArgs(RedirectJumpArgs()),
		"-A OUTPUT -o lo -j ACCEPT",
		"-A " + RedirectChainName + " " + quoteArgs(block.Args()),
	}
	outputAndOurs := func(f *Fake) []string {
		var out []string
		for _, l := range f.Lines() {
			if strings.HasPrefix(l, "-A OUTPUT") || strings.HasPrefix(l, "-A "+RedirectChainName) {
				out = append(out, l)
			}
		}
		return out
	}
	if d := cmp.Diff(want, outputAndOurs(legacy6)); d != "" {
		t.Errorf("ipv6 OUTPUT (-want +got):\n%s", d)
	}
	if got := outputAndOurs(legacy4); got != nil {
		t.Errorf("ipv4 got redirect rules: %v", got)
	}
	if d := cmp.Diff([]RedirectStatus{{Subnet: "2001:db8:254::/64", Backend: "legacy"}}, st.Redirects); d != "" {
		t.Errorf("status (-want +got):\n%s", d)
	}

	// Counters come back in the status on the next pass.
	legacy6.SetCounters(RedirectChainName, 0, 3, 216)
	st, err = m.Ensure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Redirects) != 1 || st.Redirects[0].Packets != 3 || st.Repairs != 0 {
		t.Errorf("status after counting: %+v", st)
	}

	// ferm reload: every chain gone; the next pass puts ours back.
	legacy6.FlushAll()
	ferm(legacy6)
	legacy6.AddRule("OUTPUT", "-o", "lo", "-j", "ACCEPT")
	if st, err = m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, outputAndOurs(legacy6)); d != "" {
		t.Errorf("after reload (-want +got):\n%s", d)
	}
	if st.Repairs != 1 {
		t.Errorf("repairs = %d, want 1", st.Repairs)
	}

	if err := m.Uninstall(ctx); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(before6, legacy6.Lines()); d != "" {
		t.Errorf("after uninstall (-want +got):\n%s", d)
	}
	if st := m.Status(); st.Redirects != nil {
		t.Errorf("status after uninstall: %+v", st.Redirects)
	}
}
