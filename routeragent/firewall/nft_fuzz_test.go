package firewall

import (
	"reflect"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// fuzzExprs decodes bytes into an expression list: each step picks an
// expression kind and its registers, keys and data from the next bytes,
// so the fuzzer explores register data flows nft would and would not
// generate.
func fuzzExprs(data []byte) []expr.Any {
	next := func() byte {
		if len(data) == 0 {
			return 0
		}
		b := data[0]
		data = data[1:]
		return b
	}
	bytesN := func(n int) []byte {
		out := make([]byte, n)
		for i := range out {
			out[i] = next()
		}
		return out
	}
	// Not 23 nor 4 (which covers 20-23): the property tests put their own
	// ct state match there.
	regs := []uint32{0, 1, 2, 3, 8, 9, 11, 12, 19, 30}
	reg := func() uint32 { return regs[int(next())%len(regs)] }
	chains := []string{"sub", "forward", "nosuch", NftChainName}
	verdicts := []expr.VerdictKind{expr.VerdictDrop, expr.VerdictAccept, expr.VerdictJump, expr.VerdictGoto, expr.VerdictReturn, expr.VerdictContinue, expr.VerdictQueue}
	var out []expr.Any
	for len(data) > 0 && len(out) < 32 {
		switch next() % 10 {
		case 0:
			key := expr.CtKeySTATE
			if next()%4 == 0 {
				key = expr.CtKey(next() % 20)
			}
			out = append(out, &expr.Ct{Key: key, Register: reg(), SourceRegister: next()%8 == 0})
		case 1:
			src, dst := reg(), reg()
			n, ml, xl := uint32(4), 4, 4 // as nft writes it, unless:
			if next()%8 == 0 {
				n, ml, xl = uint32(next()%20), int(next()%6), int(next()%6)
			}
			out = append(out, &expr.Bitwise{SourceRegister: src, DestRegister: dst, Len: n, Mask: bytesN(ml), Xor: bytesN(xl)})
		case 2:
			op, r := expr.CmpOp(next()%6), reg()
			n := 4
			if next()%8 == 0 {
				n = int(next() % 17)
			}
			out = append(out, &expr.Cmp{Op: op, Register: r, Data: bytesN(n)})
		case 3:
			names := []string{"m0", "m1", "m2", "nosuch"}
			out = append(out, &expr.Lookup{SourceRegister: reg(), DestRegister: reg(), IsDestRegSet: next()%2 == 0, SetName: names[int(next())%len(names)], Invert: next()%8 == 0})
		case 4:
			out = append(out, &expr.Verdict{Kind: verdicts[int(next())%len(verdicts)], Chain: chains[int(next())%len(chains)]})
		case 5:
			out = append(out, &expr.Reject{})
		case 6:
			out = append(out, &expr.Counter{})
		case 7:
			out = append(out, &expr.Meta{Key: expr.MetaKey(next() % 30), Register: reg(), SourceRegister: next()%8 == 0})
		case 8:
			out = append(out, &expr.Payload{OperationType: expr.PayloadOperationType(next() % 2), DestRegister: reg(), Len: uint32(next() % 20)})
		case 9:
			out = append(out, &expr.Immediate{Register: reg(), Data: bytesN(int(next() % 20))})
		}
	}
	return out
}

var fuzzMaps = map[string][]NftMapElem{
	"m0": {
		{Key: u32(stEstablished), Verdict: expr.Verdict{Kind: expr.VerdictAccept}},
		{Key: u32(stInvalid), Verdict: expr.Verdict{Kind: expr.VerdictDrop}},
	},
	"m1": {{Key: u32(stInvalid), Verdict: expr.Verdict{Kind: expr.VerdictJump, Chain: "sub"}}},
	"m2": {{Key: []byte{1}, Verdict: expr.Verdict{Kind: expr.VerdictDrop}}},
}

// FuzzNftDropsInvalid fuzzes the analysis that decides "this rule drops
// INVALID packets" (ClassifyNftRule, AnalyzeNft) and the plan built on it:
//   - a counter in front changes nothing;
//   - a `ct state invalid` test in front (in a register the rule does not
//     use: a rule reading a register it never loaded sees what came
//     before, as in the kernel) makes a rule that does not exclude INVALID
//     packets match them, with the same verdict;
//   - in a forward chain (fwd) that can jump to a chain (sub), installing
//     our chain and jump leaves the analysis's drops as they were, puts our
//     jump first in every chain with a drop, is idempotent (a second plan
//     is empty), and removing ours restores the ruleset exactly.
//
// Seeds: testdata/fuzz/FuzzNftDropsInvalid (the shapes nft compiles for
// ct state invalid drop, != invalid, vmaps, jumps).
func FuzzNftDropsInvalid(f *testing.F) {
	f.Fuzz(func(t *testing.T, a, b []byte) {
		fwdRule, subRule := fuzzExprs(a), fuzzExprs(b)

		eff := ClassifyNftRule(fwdRule, fuzzMaps)
		if got := ClassifyNftRule(append([]expr.Any{&expr.Counter{}}, fwdRule...), fuzzMaps); got != eff {
			t.Fatalf("a counter in front changed %+v to %+v", eff, got)
		}
		pre := append([]expr.Any{
			&expr.Ct{Key: expr.CtKeySTATE, Register: 23},
			&expr.Bitwise{SourceRegister: 23, DestRegister: 23, Len: 4, Mask: u32(stInvalid), Xor: u32(0)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 23, Data: u32(0)},
		}, fwdRule...)
		if got := ClassifyNftRule(pre, fuzzMaps); eff.Invalid != MatchNotInvalid &&
			(got.Invalid != MatchInvalid || got.Verdict != eff.Verdict || got.HasVerdict != eff.HasVerdict || got.Chain != eff.Chain) {
			t.Fatalf("ct state invalid in front of %+v gave %+v", eff, got)
		}

		if refersToUs(fwdRule) || refersToUs(subRule) {
			return // a hand-made jump to our chain is ours to move
		}
		rs := NftRuleset{Tables: []NftTable{{Family: nftables.TableFamilyINet, Name: "t", VerdictMaps: fuzzMaps, Chains: []NftChain{
			{Name: "fwd", Hook: nftables.ChainHookForward, Rules: []NftRule{{Exprs: fwdRule}, {Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: "sub"}}}}},
			{Name: "sub", Rules: []NftRule{{Exprs: subRule}}},
		}}}}
		fake := NewNftFake(rs)
		orig := fake.Ruleset()
		before := AnalyzeNft(orig)
		want := Desired(Config{Interfaces: []string{"lan0"}, Subnets: mustPrefixes("192.168.254.0/24", "2001:db8::/64")}, IPv4)
		if err := fake.Apply(PlanNft(orig, before, want)); err != nil {
			t.Fatalf("apply plan: %v", err)
		}
		installed := fake.Ruleset()
		after := AnalyzeNft(installed)
		strip := func(ds []NftDrop) []NftDrop {
			out := slices.Clone(ds)
			for i := range out {
				out[i].OurJumpIndex = 0
			}
			return out
		}
		if d := cmp.Diff(strip(before.Drops), strip(after.Drops)); d != "" {
			t.Fatalf("installing ours changed the drops (-before +after):\n%s", d)
		}
		for _, d := range after.Drops {
			if d.OurJumpIndex != 1 {
				t.Fatalf("drop %+v: our jump is not first", d)
			}
		}
		if ops := PlanNft(installed, after, want); len(ops) > 0 {
			t.Fatalf("second plan not empty: %v", ops)
		}
		if err := fake.Apply(PlanNftRemove(installed)); err != nil {
			t.Fatalf("apply removal: %v", err)
		}
		if got := fake.Ruleset(); !reflect.DeepEqual(orig, got) {
			t.Fatalf("removal did not restore the ruleset:\n%s", cmp.Diff(summary(orig), summary(got)))
		}
	})
}

func refersToUs(exprs []expr.Any) bool {
	return slices.ContainsFunc(exprs, func(x expr.Any) bool {
		v, ok := x.(*expr.Verdict)
		return ok && v.Chain == NftChainName
	})
}
