package firewall

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzParseTable: any text given as `iptables -t filter [-v] -S` output
// never panics; a parsed table printed back as -S lines (chains, policies,
// quoted arguments, `-c PKTS BYTES` counters) parses to the same table; and
// Analyze's answer is consistent with the table: the jumps to our chain and
// the other FORWARD rules add up, a drop it reports matches INVALID, sits in
// FORWARD or a declared chain and is reached from a FORWARD rule that is not
// our jump, and an INVALID drop put first in FORWARD is found at position 1.
// Seeds: testdata/fuzz/FuzzParseTable, among them the real `-S` and `-v -S`
// outputs of iptables-legacy and iptables-nft with a ferm/DebOps ruleset
// loaded (a stateful sub-chain, a LOG+DROP chain, our chain and comments
// with quotes).
func FuzzParseTable(f *testing.F) {
	for _, s := range []string{
		"-P INPUT ACCEPT\n-P FORWARD DROP\n-P OUTPUT ACCEPT\n-A FORWARD -m state --state INVALID -j DROP\n-A FORWARD -m state --state RELATED,ESTABLISHED -j ACCEPT\n-A FORWARD -i lan0 -m state --state NEW -j ACCEPT",
		"-P FORWARD DROP -c 0 0\n-N BGPLB-EXEMPT\n-A FORWARD -m comment --comment \"bgplb: conntrack-INVALID exemptions for service subnets\" -c 5 300 -j BGPLB-EXEMPT\n-A FORWARD -m state --state INVALID -c 7 280 -j DROP",
		"[7:280] -A FORWARD -m state --state INVALID -j DROP",
		"-A FORWARD -m comment --comment \"a \\\"q\\\" b\" -j ACCEPT",
		"-A FORWARD -m comment --comment \"open",
		"[1:2",
		"-N a\n-A a -j a\n-A FORWARD -j a",
		"-A FORWARD -m conntrack ! --ctstate INVALID -j DROP",
		"-A FORWARD -m conntrack --ctstate INVALID -j x\n-N x\n-A x -j REJECT",
		"-A FORWARD -g y\n-N y\n-A y -m state --state NEW,INVALID -j DROP",
		"-A X -c 1 x -c 2 3 \"\" -c",
		"# comment\n\n   \n-P",
		"-A FORWARD \"\\\\\" ' -j DROP",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		lines := strings.Split(s, "\n")
		tb, err := ParseTable(lines)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "line ") {
				t.Fatalf("error %q does not name the line", err)
			}
			return
		}
		if hasCounterArgs(tb) {
			// "-c P B" among a rule's arguments reads back as counters:
			// iptables -S prints -c only right after -A CHAIN, so the round
			// trip is no property of such input (found by fuzz-smoke).
			checkAnalysis(t, tb, Analyze(tb))
			return
		}
		printed := printTable(tb)
		back, err := ParseTable(printed)
		if err != nil {
			t.Fatalf("printed table does not parse: %v\n%s", err, strings.Join(printed, "\n"))
		}
		if d := cmp.Diff(normTable(tb), normTable(back)); d != "" {
			t.Fatalf("round trip (-parsed +reparsed):\n%s\nprinted:\n%s", d, strings.Join(printed, "\n"))
		}
		checkAnalysis(t, tb, Analyze(tb))

		// An INVALID drop first in FORWARD is found there.
		first := "-A FORWARD -m conntrack --ctstate INVALID -j DROP"
		tb2, err := ParseTable(append([]string{first}, lines...))
		if err != nil {
			t.Fatalf("prepending %q: %v", first, err)
		}
		a := Analyze(tb2)
		if a.Drop == nil || a.Drop.ForwardIndex != 1 || a.Drop.Chain != "FORWARD" {
			t.Fatalf("drop first in FORWARD not found at 1: %+v", a.Drop)
		}
	})
}

// printTable prints a table the way `iptables -v -S` does: chains first
// (-P for a built-in one, -N otherwise), then every chain's rules with
// legacy-style counters.
func printTable(t Table) []string {
	var out []string
	for _, c := range t.Chains {
		if p, ok := t.Policies[c]; ok {
			out = append(out, quoteArgs([]string{"-P", c, p}))
		} else {
			out = append(out, quoteArgs([]string{"-N", c}))
		}
	}
	// A -P line always lists its chain, so every policy is printed above.
	chains := make([]string, 0, len(t.Rules))
	for c := range t.Rules {
		chains = append(chains, c)
	}
	slices.Sort(chains)
	for _, c := range chains {
		for _, r := range t.Rules[c] {
			args := append([]string{"-A", c}, r.Args...)
			args = append(args, "-c", fmt.Sprint(r.Packets), fmt.Sprint(r.Bytes))
			out = append(out, quoteArgs(args))
		}
	}
	return out
}

// normTable drops the difference between a nil and an empty slice.
func normTable(t Table) Table {
	n := Table{Policies: t.Policies, Chains: t.Chains, Rules: map[string][]Rule{}}
	for c, rs := range t.Rules {
		for _, r := range rs {
			if r.Args == nil {
				r.Args = []string{}
			}
			n.Rules[c] = append(n.Rules[c], r)
		}
	}
	return n
}

func checkAnalysis(t *testing.T, tb Table, a Analysis) {
	t.Helper()
	fwd := tb.Rules["FORWARD"]
	if a.ForwardRules+len(a.JumpIndexes) != len(fwd) {
		t.Fatalf("%d other rules + %d jumps != %d FORWARD rules", a.ForwardRules, len(a.JumpIndexes), len(fwd))
	}
	for _, i := range a.JumpIndexes {
		if i < 1 || i > len(fwd) || fwd[i-1].Target() != ChainName {
			t.Fatalf("jump index %d is not a jump to %s", i, ChainName)
		}
	}
	if a.ForwardPolicy != tb.Policies["FORWARD"] || a.HasChain != tb.HasChain(ChainName) {
		t.Fatalf("policy %q / has chain %v disagree with the table", a.ForwardPolicy, a.HasChain)
	}
	if a.Drop == nil {
		return
	}
	d := a.Drop
	if d.ForwardIndex < 1 || d.ForwardIndex > len(fwd) || fwd[d.ForwardIndex-1].Target() == ChainName {
		t.Fatalf("drop reached through FORWARD rule %d of %d (or our own jump)", d.ForwardIndex, len(fwd))
	}
	if !d.Rule.matchesInvalid() {
		t.Fatalf("reported drop %q does not match INVALID", d.Rule)
	}
	if d.Chain != "FORWARD" && !tb.HasChain(d.Chain) || d.Chain == ChainName {
		t.Fatalf("drop in chain %q, not FORWARD or a declared chain", d.Chain)
	}
	if !slices.ContainsFunc(tb.Rules[d.Chain], func(r Rule) bool { return slices.Equal(r.Args, d.Rule.Args) }) {
		t.Fatalf("drop %q is not a rule of chain %q", d.Rule, d.Chain)
	}
}

// hasCounterArgs reports whether a rule keeps "-c" among its arguments.
func hasCounterArgs(tb Table) bool {
	for _, rules := range tb.Rules {
		for _, r := range rules {
			if slices.Contains(r.Args, "-c") {
				return true
			}
		}
	}
	return false
}
