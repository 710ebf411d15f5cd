package firewall

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/bgplb/bgplb/internal/netnstest"
)

// BenchmarkEnsure measures one Ensure pass in a namespace holding a
// ferm-like iptables-legacy ruleset: "steady" on an already-correct ruleset
// (the cost the agent pays every second), "repair" after a ferm-style
// reload that replaced the whole table (only the Ensure is timed). auto
// lists the other backend too, but only every RescanInterval.
func BenchmarkEnsure(b *testing.B) {
	for _, backend := range []string{"auto", "legacy"} {
		for _, kind := range []string{"steady", "repair"} {
			b.Run(backend+"/"+kind, func(b *testing.B) {
				ns := netnstest.New(b, "fwbench")
				restore(b, ns, "iptables-legacy", fermRuleset)
				m, err := New(Config{Backend: backend, Interfaces: []string{"lan0"}, Subnets: mustPrefixes("192.168.254.0/24")}, nil)
				if err != nil {
					b.Fatal(err)
				}
				ctx := context.Background()
				err = ns.Do(func() error {
					if _, err := m.Ensure(ctx); err != nil {
						return err
					}
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						if kind == "repair" {
							b.StopTimer()
							// What a ferm reload does: replace the whole table.
							cmd := exec.Command("iptables-legacy-restore")
							cmd.Stdin = strings.NewReader(fermRuleset)
							if out, err := cmd.CombinedOutput(); err != nil {
								b.Fatalf("%v: %s", err, out)
							}
							b.StartTimer()
						}
						if _, err := m.Ensure(ctx); err != nil {
							return err
						}
					}
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
