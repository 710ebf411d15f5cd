package trace

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/bgplb/bgplb/routeragent/firewall"
)

// Mark starts the comment of every temporary counting rule of trace,
// followed by " pid=N" (the trace that owns it) and " all" or " invalid".
// Only rules with this mark are ever removed.
const Mark = "bgplb-trace"

// Iptables is Firewall over the iptables tools of both backends (legacy
// and nf_tables). The counting rules go to the top of FORWARD in the mangle
// table, which the kernel runs before the filter table (priority -150
// against 0) in either backend: they see every forwarded packet before any
// ACCEPT or DROP, and the filter table, where the firewall and the agent's
// jump live, is never touched (a rule above the agent's jump would make it
// "repair" its position). They have no target: they count and change
// nothing. They go to the backend that holds the INVALID drop, else the
// first with a filter table, else the system default.
type Iptables struct {
	// Runners opens a backend's tool (firewall.XtablesRunners).
	Runners firewall.RunnerFactory
	// Family of the traced address.
	Family firewall.Family
	// PID goes into the mark (os.Getpid()).
	PID int
	// Default is the backend used when no backend has a filter table.
	Default func() firewall.Backend

	installed []installedRule
}

type installedRule struct {
	r    firewall.Runner
	spec []string
}

var backends = []firewall.Backend{firewall.Legacy, firewall.NFT}

// countTable holds the counting rules.
const countTable = "mangle"

func (p *Iptables) mark() string { return fmt.Sprintf("%s pid=%d", Mark, p.PID) }

// tables lists one table (filter or mangle) of every available backend
// that has it.
func (p *Iptables) tables(name string) (map[firewall.Backend]firewall.Runner, map[firewall.Backend]firewall.Table, error) {
	runners := map[firewall.Backend]firewall.Runner{}
	tables := map[firewall.Backend]firewall.Table{}
	for _, b := range backends {
		r, err := p.Runners(b, p.Family)
		if errors.Is(err, firewall.ErrUnavailable) {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		runners[b] = r
		// Listing a legacy table that does not exist would create it.
		if ok, err := r.TableExists(name); err != nil || !ok {
			continue
		}
		lines, err := r.ListTable(name)
		if err != nil {
			return nil, nil, fmt.Errorf("list %s %s: %w", b, name, err)
		}
		t, err := firewall.ParseTable(lines)
		if err != nil {
			return nil, nil, fmt.Errorf("parse %s %s: %w", b, name, err)
		}
		tables[b] = t
	}
	return runners, tables, nil
}

// Install inserts the two counting rules (all packets, INVALID packets)
// for scope, after removing the leftovers of killed traces.
func (p *Iptables) Install(ctx context.Context, scope Scope) error {
	if _, err := p.Sweep(ctx, alive); err != nil {
		return err
	}
	runners, tables, err := p.tables(firewall.TableName)
	if err != nil {
		return err
	}
	b := p.host(tables)
	r, ok := runners[b]
	if !ok {
		return fmt.Errorf("no iptables tool for backend %s: %w", b, firewall.ErrUnavailable)
	}
	match := scopeArgs(scope)
	for _, kind := range []string{"invalid", "all"} {
		spec := slices.Clone(match)
		if kind == "invalid" {
			spec = append(spec, "-m", "conntrack", "--ctstate", "INVALID")
		}
		spec = append(spec, "-m", "comment", "--comment", p.mark()+" "+kind)
		if err := r.Insert(countTable, "FORWARD", 1, spec...); err != nil {
			return fmt.Errorf("insert counting rule in %s mangle FORWARD: %w", b, err)
		}
		p.installed = append(p.installed, installedRule{r: r, spec: spec})
	}
	return nil
}

// host chooses the backend for the counting rules.
func (p *Iptables) host(tables map[firewall.Backend]firewall.Table) firewall.Backend {
	for _, b := range backends {
		if t, ok := tables[b]; ok && firewall.Analyze(t).Drop != nil {
			return b
		}
	}
	for _, b := range backends {
		if _, ok := tables[b]; ok {
			return b
		}
	}
	if p.Default != nil {
		return p.Default()
	}
	return firewall.SystemDefault()
}

func scopeArgs(s Scope) []string {
	bits := "32"
	if s.Service.Addr().Is6() {
		bits = "128"
	}
	args := []string{"-d", s.Service.Addr().String() + "/" + bits, "-p", "tcp"}
	if s.Service.Port() != 0 {
		args = append(args, "--dport", strconv.Itoa(int(s.Service.Port())))
	}
	if s.Client.IsValid() {
		args = append(args, "-s", s.Client.String()+"/"+bits)
	}
	return args
}

// Remove deletes the rules Install inserted.
func (p *Iptables) Remove(context.Context) error {
	var errs []error
	for _, ir := range p.installed {
		if err := ir.r.Delete(countTable, "FORWARD", ir.spec...); err != nil {
			errs = append(errs, err)
		}
	}
	p.installed = nil
	return errors.Join(errs...)
}

// Read returns the counting rules' counters, the INVALID drop of each
// backend and our exemptions.
func (p *Iptables) Read(context.Context) (Counters, error) {
	_, filters, err := p.tables(firewall.TableName)
	if err != nil {
		return Counters{}, err
	}
	_, mangles, err := p.tables(countTable)
	if err != nil {
		return Counters{}, err
	}
	var c Counters
	for _, b := range backends {
		readCounting(&c, mangles[b], p.mark())
		if t, ok := filters[b]; ok {
			readFilter(&c, string(b), t)
		}
	}
	return c, nil
}

// readCounting adds our counting rules' counters (in a mangle table) to c.
func readCounting(c *Counters, t firewall.Table, mark string) {
	for _, r := range t.Rules["FORWARD"] {
		switch comment(r) {
		case mark + " all":
			c.Packets += r.Packets
		case mark + " invalid":
			c.Invalid += r.Packets
		}
	}
}

// readFilter adds one backend's INVALID drop and our exemptions to c.
func readFilter(c *Counters, backend string, t firewall.Table) {
	if d := firewall.Analyze(t).Drop; d != nil {
		n := ruleNumber(t.Rules[d.Chain], d.Rule)
		c.Drops = append(c.Drops, RuleCount{RuleRef: RuleRef{Backend: backend, Chain: d.Chain, Number: n, Spec: d.Rule.String()}, Packets: d.Rule.Packets})
	}
	for i, r := range t.Rules[firewall.ChainName] {
		c.Exemptions = append(c.Exemptions, RuleCount{RuleRef: RuleRef{Backend: backend, Chain: firewall.ChainName, Number: i + 1, Spec: r.String()}, Packets: r.Packets})
	}
}

// ruleNumber is the 1-based position of r in rules.
func ruleNumber(rules []firewall.Rule, r firewall.Rule) int {
	return slices.IndexFunc(rules, func(x firewall.Rule) bool { return slices.Equal(x.Args, r.Args) }) + 1
}

// comment returns the rule's --comment, "" without one.
func comment(r firewall.Rule) string {
	for i := 0; i+1 < len(r.Args); i++ {
		if r.Args[i] == "--comment" {
			return r.Args[i+1]
		}
	}
	return ""
}

// ownerPID parses the pid out of a mark, 0 when the comment is not ours.
func ownerPID(c string) int {
	rest, ok := strings.CutPrefix(c, Mark+" pid=")
	if !ok {
		return 0
	}
	pid, _ := strconv.Atoi(strings.Fields(rest + " ")[0])
	return pid
}

// alive reports whether process pid exists (a trace killed by SIGKILL
// leaves its rules behind; its pid is then gone, or reused by a process
// that is not a trace, which a live trace's own rules never are).
func alive(pid int) bool {
	if pid == os.Getpid() {
		return true
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// Sweep removes the counting rules of traces that no longer run, in both
// backends, and returns how many it removed. trace runs it before
// installing its own, and the agent at start.
func (p *Iptables) Sweep(_ context.Context, alive func(pid int) bool) (int, error) {
	runners, tables, err := p.tables(countTable)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, b := range backends {
		for _, r := range tables[b].Rules["FORWARD"] {
			pid := ownerPID(comment(r))
			if pid == 0 || alive(pid) {
				continue
			}
			if err := runners[b].Delete(countTable, "FORWARD", r.Args...); err != nil {
				errs = append(errs, fmt.Errorf("remove leftover %q from %s: %w", r.String(), b, err))
				continue
			}
			n++
		}
	}
	return n, errors.Join(errs...)
}

// SweepLeftovers removes the counting rules of every trace that no longer
// runs (both families, both backends): the agent calls it at start, so that
// a trace killed with SIGKILL leaves nothing behind for long.
func SweepLeftovers(ctx context.Context, runners firewall.RunnerFactory) (int, error) {
	total := 0
	var errs []error
	for _, fam := range []firewall.Family{firewall.IPv4, firewall.IPv6} {
		p := &Iptables{Runners: runners, Family: fam}
		n, err := p.Sweep(ctx, alive)
		total += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	return total, errors.Join(errs...)
}
