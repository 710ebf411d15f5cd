package firewall

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bgplb/bgplb/internal/netnstest"
	"github.com/bgplb/bgplb/routeragent/config"
)

// BenchmarkEnsureNftables measures one Ensure pass of the native nftables
// backend in a namespace holding testdata/nftables/router.conf (loaded with
// nft -f): "steady" on a correct ruleset (what the agent pays every second
// and on every nftables event), "steady-2000rules" with 2000 more forward
// rules, "repair" after `nft -f router.conf` (flush ruleset, load; only the
// Ensure is timed). auto also lists the iptables backends, which hold no
// drop here.
func BenchmarkEnsureNftables(b *testing.B) {
	for _, backend := range []config.FirewallBackend{config.BackendNftables, config.BackendAuto} {
		for _, kind := range []string{"steady", "steady-2000rules", "repair"} {
			b.Run(string(backend)+"/"+kind, func(b *testing.B) {
				ns := netnstest.New(b, "nftbench")
				conf := nftConf("router.conf")
				if kind == "steady-2000rules" {
					conf = largeNftRuleset(b, 2000)
				}
				if out, err := ns.Try("nft", "-f", conf); err != nil {
					b.Fatalf("nft -f: %v\n%s", err, out)
				}
				m := nftManager(b, backend)
				ctx := context.Background()
				err := ns.Do(func() error {
					if _, err := m.Ensure(ctx); err != nil {
						return err
					}
					b.ResetTimer()
					cpu0 := cpuTime(b)
					var excluded time.Duration
					for i := 0; i < b.N; i++ {
						if kind == "repair" {
							b.StopTimer()
							c0 := cpuTime(b)
							if out, err := ns.Try("nft", "-f", conf); err != nil {
								b.Fatalf("nft -f: %v\n%s", err, out)
							}
							excluded += cpuTime(b) - c0
							b.StartTimer()
						}
						if _, err := m.Ensure(ctx); err != nil {
							return err
						}
					}
					b.ReportMetric(float64((cpuTime(b)-cpu0-excluded).Nanoseconds())/float64(b.N), "cpu-ns/op")
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
				if kind == "repair" && m.Status().Repairs != b.N {
					b.Fatalf("repairs %d, want %d", m.Status().Repairs, b.N)
				}
			})
		}
	}
}

// largeNftRuleset writes router.conf with n more forward rules.
func largeNftRuleset(b *testing.B, n int) string {
	base, err := os.ReadFile(nftConf("router.conf"))
	if err != nil {
		b.Fatal(err)
	}
	var sb strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&sb, "\t\tip saddr 10.%d.%d.0/24 tcp dport %d accept\n", i/256, i%256, 1024+i)
	}
	s := strings.Replace(string(base), "\t\tiifname \"lan0\" ct state new accept\n", "\t\tiifname \"lan0\" ct state new accept\n"+sb.String(), 1)
	p := filepath.Join(b.TempDir(), "large.conf")
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		b.Fatal(err)
	}
	return p
}
