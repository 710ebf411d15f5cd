package agent

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/symmetry"
)

// SymmetryInterval is how often verify mode looks at conntrack: a
// one-way flow is reported within the grace period plus this.
const SymmetryInterval = 2 * time.Second

// startSymmetryLoop runs symmetryLoop (when the deps can read conntrack)
// until the returned func is called.
func (a *Agent) startSymmetryLoop(ctx context.Context) (stop func()) {
	if a.deps.Conntrack == nil {
		return func() {}
	}
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(SymmetryInterval)
		defer t.Stop()
		var tr *symmetry.Tracker
		for {
			select {
			case <-sctx.Done():
				return
			case now := <-t.C:
				tr = a.observeSymmetry(tr, now)
			}
		}
	})
	return func() {
		cancel()
		wg.Wait()
	}
}

// observeSymmetry takes one look in verify mode (and clears the section
// in the other modes). It returns the tracker to use next time: a new one
// after a reload switched verify mode on.
func (a *Agent) observeSymmetry(tr *symmetry.Tracker, now time.Time) *symmetry.Tracker {
	cfg := a.config()
	if cfg.Firewall.Mode != config.FirewallVerify {
		a.mu.Lock()
		a.status.Symmetry = nil
		a.mu.Unlock()
		return nil
	}
	if tr == nil {
		tr = symmetry.NewTracker(symmetry.Config{})
	}
	flows, err := a.deps.Conntrack.Flows(cfg.ServicePrefixes())
	a.mu.Lock()
	fw, prev := a.status.Firewall, a.status.Symmetry
	a.mu.Unlock()
	if err != nil {
		// Keep the last look; a failed dump must not forget the
		// unreplied flows' ages.
		st := symmetry.Status{Verdict: symmetry.NoTraffic}
		if prev != nil {
			st = *prev
		}
		if st.LastError != err.Error() {
			a.log.Error("read conntrack for the symmetry check", "err", err)
		}
		st.LastError = err.Error()
		a.mu.Lock()
		a.status.Symmetry = &st
		a.mu.Unlock()
		return tr
	}
	var invalid uint64
	known := fw != nil && fw.Mode == config.FirewallVerify && fw.Invalid != nil && fw.LastError == ""
	if known {
		invalid = fw.InvalidTotal()
	}
	var installed map[netip.Prefix][]netip.Addr
	hops := func(addr netip.Addr) []netip.Addr {
		if installed == nil { // only when a flow is reported: O(routes)
			installed = a.deps.Routes.Installed()
		}
		return installed[netip.PrefixFrom(addr, addr.BitLen())]
	}
	st := tr.Observe(now, flows, invalid, known, hops)
	if prev == nil || prev.Verdict != st.Verdict {
		if st.Verdict == symmetry.Asymmetric {
			a.log.Warn("service traffic is asymmetric", "reason", st.Reason)
		} else {
			a.log.Info("service traffic symmetry", "verdict", st.Verdict, "reason", st.Reason)
		}
	}
	a.mu.Lock()
	a.status.Symmetry = &st
	a.mu.Unlock()
	return tr
}
