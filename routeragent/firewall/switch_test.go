package firewall

import (
	"context"
	"slices"
	"testing"

	"github.com/bgplb/bgplb/routeragent/config"
)

// TestBackendSwitchRemovesTheOther: a reload (a new manager) from one
// explicit iptables backend to the other moves our chain and jump: the
// backend no longer configured is cleaned once, and its own rules stay.
func TestBackendSwitchRemovesTheOther(t *testing.T) {
	ctx := context.Background()
	legacy, nft := ferm(NewFake()), ferm(NewFake())
	fs := fakes{{Legacy, IPv4}: legacy, {NFT, IPv4}: nft}
	ours := func(f *Fake) bool { return slices.Contains(f.Lines(), "-N "+ChainName) }
	pass := func(b config.FirewallBackend) Status {
		t.Helper()
		cfg := testCfg
		cfg.Backend = b
		st, err := newTestManager(t, cfg, fs).Ensure(ctx)
		if err != nil {
			t.Fatalf("backend %s: %v", b, err)
		}
		return st
	}

	for _, step := range []struct {
		backend     config.FirewallBackend
		in, notIn   *Fake
		inN, notInN string
	}{
		{config.BackendLegacy, legacy, nft, "legacy", "nft"},
		{config.BackendNFT, nft, legacy, "nft", "legacy"},
		{config.BackendLegacy, legacy, nft, "legacy", "nft"},
	} {
		st := pass(step.backend)
		if !ours(step.in) {
			t.Errorf("backend %s: no chain in %s: %v", step.backend, step.inN, step.in.Lines())
		}
		if ours(step.notIn) {
			t.Errorf("backend %s: our chain left in %s: %v", step.backend, step.notInN, step.notIn.Lines())
		}
		if st.Backend != step.inN {
			t.Errorf("backend %s: status backend %q", step.backend, st.Backend)
		}
		// The router's own rules are untouched in both.
		for _, f := range []*Fake{legacy, nft} {
			if !slices.Contains(f.Lines(), "-A FORWARD -m state --state INVALID -j DROP") {
				t.Errorf("backend %s: the router's INVALID drop is gone: %v", step.backend, f.Lines())
			}
		}
	}
}
