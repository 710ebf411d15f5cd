package firewall

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bgplb/bgplb/internal/netnstest"
	"github.com/bgplb/bgplb/routeragent/config"
)

// BenchmarkEnsure measures one Ensure pass in a namespace holding a
// ferm-like iptables-legacy ruleset: "steady" on an already-correct ruleset
// (the cost the agent pays every second), "repair" after a ferm-style
// reload that replaced the whole table (only the Ensure is timed). auto
// lists the other backend too, but only every RescanInterval.
func BenchmarkEnsure(b *testing.B) {
	for _, backend := range []config.FirewallBackend{config.BackendAuto, config.BackendLegacy} {
		for _, kind := range []string{"steady", "steady-2000rules", "repair"} {
			b.Run(string(backend)+"/"+kind, func(b *testing.B) {
				ns := netnstest.New(b, "fwbench")
				ruleset := fermRuleset
				if kind == "steady-2000rules" {
					ruleset = largeRuleset(2000)
				}
				restore(b, ns, "iptables-legacy", ruleset)
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
					cpu0 := cpuTime(b)
					var excluded time.Duration // CPU of the reloads, not ours
					for i := 0; i < b.N; i++ {
						if kind == "repair" {
							b.StopTimer()
							c0 := cpuTime(b)
							// What a ferm reload does: replace the whole table.
							cmd := exec.Command("iptables-legacy-restore")
							cmd.Stdin = strings.NewReader(fermRuleset)
							if out, err := cmd.CombinedOutput(); err != nil {
								b.Fatalf("%v: %s", err, out)
							}
							excluded += cpuTime(b) - c0
							b.StartTimer()
						}
						if _, err := m.Ensure(ctx); err != nil {
							return err
						}
					}
					// CPU (ours plus the iptables children), which unlike
					// wall time does not grow when other jobs load the machine.
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

// largeRuleset is fermRuleset plus n more FORWARD rules (a big firewall:
// the listing grows with it).
func largeRuleset(n int) string {
	var sb strings.Builder
	sb.WriteString(strings.TrimSuffix(fermRuleset, "COMMIT\n"))
	for i := 0; i < n; i++ {
		fmt.Fprintf(&sb, "-A FORWARD -s 10.%d.%d.0/24 -p tcp --dport %d -j ACCEPT\n", i/256, i%256, 1024+i)
	}
	sb.WriteString("COMMIT\n")
	return sb.String()
}

// BenchmarkPlan is the pure part of a steady-state pass: parse a listing
// of a 2000-rule table, analyse it, and plan (nothing to do).
func BenchmarkPlan(b *testing.B) {
	want := Desired(Config{Interfaces: []string{"lan0"}, Subnets: mustPrefixes("192.168.254.0/24")}, IPv4)
	lines := []string{"-P INPUT ACCEPT -c 0 0", "-P FORWARD DROP -c 0 0", "-P OUTPUT ACCEPT -c 0 0", "-N BGPLB-EXEMPT",
		"-A FORWARD " + quoteArgs(JumpArgs()), "-A FORWARD -m state --state INVALID -c 3 120 -j DROP"}
	for i := 0; i < 2000; i++ {
		lines = append(lines, fmt.Sprintf("-A FORWARD -s 10.%d.%d.0/24 -p tcp -m tcp --dport %d -c 0 0 -j ACCEPT", i/256, i%256, 1024+i))
	}
	lines = append(lines, "-A BGPLB-EXEMPT "+quoteArgs(want[0].Args()))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		t, err := ParseTable(lines)
		if err != nil {
			b.Fatal(err)
		}
		_ = Analyze(t)
		if ops := PlanInstall(t, want); len(ops) != 0 {
			b.Fatalf("ops %v", ops)
		}
	}
}

// cpuTime is the user+system CPU used so far by this process and its
// waited-for children.
func cpuTime(b *testing.B) time.Duration {
	var self, kids syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &self); err != nil {
		b.Fatal(err)
	}
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids); err != nil {
		b.Fatal(err)
	}
	tv := func(t syscall.Timeval) time.Duration { return time.Duration(t.Nano()) }
	return tv(self.Utime) + tv(self.Stime) + tv(kids.Utime) + tv(kids.Stime)
}
