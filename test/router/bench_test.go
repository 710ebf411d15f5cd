package router

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// BenchmarkFermReloadHook: on the booted router, how long the exemption is
// gone after `systemctl reload ferm` (ferm.service of Debian, with the
// package's post hook /etc/ferm/ferm.d/bgplb.conf, which pokes the agent),
// and for comparison after a ferm run without the hook (only the agent's
// 1 s drift check repairs). gone-* is from the last look that saw our jump
// to the first that saw it back (it includes ferm's own work after its
// iptables-restore of the IPv4 filter table: the IPv6 restore and the
// hook); after-ferm-* is how long after the ferm command returned the
// jump was back (0: before). poke-* is the hook's own part: our chain and
// jump deleted by hand as ferm deletes them, then the hook's command
// (`bgplb-routeragent poke`, run in the machine) at once; poke-gone is from
// before the deletion to the jump back. Run with -benchtime Nx (the setup boots the
// router and builds the .debs: about 2 minutes).
func BenchmarkFermReloadHook(b *testing.B) {
	r := bootRouter(b)
	m := r.m
	m.run("dpkg", "-i", r.debNew)
	if err := os.WriteFile(m.path(confPath), []byte(agentConfig()), 0o640); err != nil {
		b.Fatal(err)
	}
	m.run("systemctl", "start", unit)
	m.waitActive(unit)
	waitFor(b, "the exemption", func() bool { return r.exemption(svcSubnet) })
	nohook := strings.Replace(fermConf, "@include ferm.d/;\n", "", 1)
	if err := os.WriteFile(m.path("/root/ferm-nohook.conf"), []byte(nohook), 0o644); err != nil {
		b.Fatal(err)
	}

	measure := func(n int, args ...string) (gone, after []time.Duration) {
		for i := 0; i < n; i++ {
			before := r.repairs()
			x := r.measureRepair(before, func() { m.run(args...) })
			waitFor(b, "the repair", func() bool { return r.repairs() > before && r.exemption(svcSubnet) })
			if !x.seen {
				b.Logf("%s: %v", strings.Join(args, " "), x)
				continue
			}
			gone, after = append(gone, x.gone), append(after, x.afterFerm)
		}
		slices.Sort(gone)
		slices.Sort(after)
		return gone, after
	}
	b.ResetTimer()
	gone, after := measure(b.N, "systemctl", "reload", "ferm.service")
	b.StopTimer()
	n := b.N
	if n < 5 {
		n = 5
	}
	dGone, dAfter := measure(n, "ferm", "/root/ferm-nohook.conf")
	// The hook's own part: our chain and jump deleted as ferm deletes
	// them, then the hook's command (`bgplb-routeragent poke`) at once.
	var pGone, pAfter []time.Duration
	for i := 0; i < n; i++ {
		before := r.repairs()
		x := r.measureRepair(before, func() {
			r.nsRun("sh", "-c", "iptables-legacy -w -D FORWARD -m comment --comment 'bgplb: conntrack-INVALID exemptions for service subnets' -j BGPLB-EXEMPT && iptables-legacy -w -F BGPLB-EXEMPT && iptables-legacy -w -X BGPLB-EXEMPT")
			m.run("bgplb-routeragent", "poke")
		})
		waitFor(b, "the repair", func() bool { return r.repairs() > before && r.exemption(svcSubnet) })
		if x.seen {
			pGone, pAfter = append(pGone, x.gone), append(pAfter, x.afterFerm)
		}
	}
	slices.Sort(pGone)
	slices.Sort(pAfter)
	report := func(d []time.Duration, name string) {
		if len(d) == 0 {
			return
		}
		b.ReportMetric(ms(d[len(d)/2]), name+"-p50-ms")
		b.ReportMetric(ms(d[len(d)-1]), name+"-max-ms")
	}
	report(gone, "gone")
	report(after, "after-ferm")
	report(dGone, "nohook-gone")
	report(dAfter, "nohook-after-ferm")
	report(pGone, "poke-gone")
	report(pAfter, "poke-after")
	b.Logf("hook: gone %v, after ferm %v; without the hook: gone %v, after ferm %v; delete+poke: gone %v, after poke %v", gone, after, dGone, dAfter, pGone, pAfter)
}
