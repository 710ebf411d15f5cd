package firewall

import (
	"fmt"
	"slices"
	"sync"

	"github.com/google/nftables"
)

// NftFake is an in-memory NftConn for tests: one ruleset, changed by Apply
// like the kernel would (all ops or none).
type NftFake struct {
	mu         sync.Mutex
	rs         NftRuleset
	nextHandle uint64
	gen        uint32
	// Calls counts every call, Lists the full listings, Applies the
	// non-empty Applies.
	Calls, Lists, Applies int
}

// NewNftFake returns a fake holding rs (handles are assigned where zero).
func NewNftFake(rs NftRuleset) *NftFake {
	f := &NftFake{nextHandle: 1000}
	f.Set(rs)
	return f
}

// Set replaces the whole ruleset (what `nft -f` with `flush ruleset` does).
func (f *NftFake) Set(rs NftRuleset) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rs = cloneRuleset(rs)
	f.gen++
	for ti := range f.rs.Tables {
		for ci := range f.rs.Tables[ti].Chains {
			for ri := range f.rs.Tables[ti].Chains[ci].Rules {
				if f.rs.Tables[ti].Chains[ci].Rules[ri].Handle == 0 {
					f.nextHandle++
					f.rs.Tables[ti].Chains[ci].Rules[ri].Handle = f.nextHandle
				}
			}
		}
	}
}

// Ruleset returns a copy of the current ruleset.
func (f *NftFake) Ruleset() NftRuleset {
	f.mu.Lock()
	defer f.mu.Unlock()
	return cloneRuleset(f.rs)
}

func cloneRuleset(rs NftRuleset) NftRuleset {
	out := NftRuleset{Tables: slices.Clone(rs.Tables)}
	for ti := range out.Tables {
		out.Tables[ti].Chains = slices.Clone(out.Tables[ti].Chains)
		for ci := range out.Tables[ti].Chains {
			out.Tables[ti].Chains[ci].Rules = slices.Clone(out.Tables[ti].Chains[ci].Rules)
		}
	}
	return out
}

func (f *NftFake) List() (NftRuleset, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Calls++
	f.Lists++
	return cloneRuleset(f.rs), nil
}

func (f *NftFake) Apply(ops []NftOp) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Calls++
	if len(ops) == 0 {
		return nil
	}
	next := cloneRuleset(f.rs)
	h := f.nextHandle
	for _, op := range ops {
		if err := fakeApply(&next, op, &h); err != nil {
			return fmt.Errorf("%s: %w", op, err) // nothing applied
		}
	}
	f.rs, f.nextHandle = next, h
	f.gen++
	f.Applies++
	return nil
}

func fakeApply(rs *NftRuleset, op NftOp, handle *uint64) error {
	ti := slices.IndexFunc(rs.Tables, func(t NftTable) bool { return t.Family == op.Family && t.Name == op.Table })
	switch {
	case op.Kind == "add-table":
		if ti < 0 {
			rs.Tables = append(rs.Tables, NftTable{Family: op.Family, Name: op.Table})
		}
		return nil
	case ti < 0:
		return fmt.Errorf("no such table")
	case op.Kind == "delete-table":
		rs.Tables = slices.Delete(rs.Tables, ti, ti+1)
		return nil
	}
	t := &rs.Tables[ti]
	if op.Kind == "add-chain" {
		if t.Chain(op.Chain) == nil {
			nc := NftChain{Name: op.Chain, Hook: op.Hook}
			if op.Priority != nil {
				nc.Priority = int32(*op.Priority)
			}
			t.Chains = append(t.Chains, nc)
		}
		return nil
	}
	c := t.Chain(op.Chain)
	if c == nil {
		return fmt.Errorf("no such chain")
	}
	rule := func() NftRule {
		*handle++
		return NftRule{Handle: *handle, Exprs: op.Exprs, UserData: op.UserData()}
	}
	switch op.Kind {
	case "flush-chain":
		c.Rules = nil
	case "delete-chain":
		if len(c.Rules) > 0 {
			return fmt.Errorf("chain not empty")
		}
		t.Chains = slices.DeleteFunc(t.Chains, func(x NftChain) bool { return x.Name == op.Chain })
	case "add-rule":
		c.Rules = append(c.Rules, rule())
	case "insert-rule":
		c.Rules = slices.Insert(c.Rules, 0, rule())
	case "delete-rule":
		i := slices.IndexFunc(c.Rules, func(r NftRule) bool { return r.Handle == op.Handle })
		if i < 0 {
			return fmt.Errorf("no rule with handle %d", op.Handle)
		}
		c.Rules = slices.Delete(c.Rules, i, i+1)
	default:
		return fmt.Errorf("unknown op")
	}
	return nil
}

func (f *NftFake) Generation() (uint32, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Calls++
	return f.gen, nil
}

func (f *NftFake) Rules(fam nftables.TableFamily, table, chain string) ([]NftRule, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Calls++
	for _, t := range f.rs.Tables {
		if t.Family == fam && t.Name == table {
			if c := t.Chain(chain); c != nil {
				return slices.Clone(c.Rules), nil
			}
		}
	}
	return nil, fmt.Errorf("no chain %s in %s %s", chain, FamilyName(fam), table)
}

// compile-time check
var _ NftConn = (*NftFake)(nil)
