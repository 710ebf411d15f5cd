package firewall

import (
	"fmt"
	"slices"
	"sync"
)

// Fake is an in-memory Runner for tests of code that uses a Manager. It
// keeps one filter table, prints it like `iptables -v -S`, and can simulate
// a busy xtables lock.
type Fake struct {
	mu       sync.Mutex
	policies map[string]string
	chains   []string // user chains in creation order
	rules    map[string][]Rule
	// LockedCalls makes the next N calls fail as if another process held
	// the xtables lock.
	LockedCalls int
	// NoTable makes TableExists report false until a chain is created.
	NoTable bool
	// Calls counts every call, Mutations the calls that changed something.
	Calls, Mutations int
}

// NewFake returns a Fake with the built-in filter chains, policy ACCEPT.
func NewFake() *Fake {
	return &Fake{
		policies: map[string]string{"INPUT": "ACCEPT", "FORWARD": "ACCEPT", "OUTPUT": "ACCEPT"},
		rules:    map[string][]Rule{},
	}
}

// FakeError is what Fake returns; it carries the exit status iptables would.
type FakeError struct {
	Status   int
	Msg      string
	NotExist bool
}

func (e *FakeError) Error() string    { return fmt.Sprintf("exit status %d: %s", e.Status, e.Msg) }
func (e *FakeError) ExitStatus() int  { return e.Status }
func (e *FakeError) IsNotExist() bool { return e.NotExist }
func notExist(what string) *FakeError {
	return &FakeError{Status: 1, Msg: what + ": No chain/target/match by that name.", NotExist: true}
}
func (f *Fake) builtin(c string) bool { _, ok := f.policies[c]; return ok }
func (f *Fake) exists(c string) bool  { return f.builtin(c) || slices.Contains(f.chains, c) }

func (f *Fake) enter(mutation bool) error {
	f.Calls++
	if f.LockedCalls > 0 {
		f.LockedCalls--
		return &FakeError{Status: 4, Msg: "Another app is currently holding the xtables lock. Stopped waiting after 1s."}
	}
	if mutation {
		f.Mutations++
	}
	return nil
}

// AddRule appends a rule given as iptables arguments (setup helper).
func (f *Fake) AddRule(chain string, args ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.exists(chain) {
		f.chains = append(f.chains, chain)
	}
	f.rules[chain] = append(f.rules[chain], Rule{Args: args})
}

// SetPolicy sets a built-in chain's policy (setup helper).
func (f *Fake) SetPolicy(chain, policy string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.policies[chain] = policy
}

// SetCounters sets the counters of rule i (0-based) of chain.
func (f *Fake) SetCounters(chain string, i int, packets, bytes uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules[chain][i].Packets, f.rules[chain][i].Bytes = packets, bytes
}

// FlushAll simulates `iptables -F; iptables -X` (what a ferm reload does
// before loading its own rules).
func (f *Fake) FlushAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.chains = nil
	f.rules = map[string][]Rule{}
}

// Lines returns the table as `iptables -S` prints it, without counters.
func (f *Fake) Lines() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lines(false)
}

func (f *Fake) lines(counters bool) []string {
	var out []string
	for _, c := range []string{"INPUT", "FORWARD", "OUTPUT"} {
		l := "-P " + c + " " + f.policies[c]
		if counters {
			l += " -c 0 0"
		}
		out = append(out, l)
	}
	for _, c := range f.chains {
		out = append(out, "-N "+c)
	}
	for _, c := range append([]string{"INPUT", "FORWARD", "OUTPUT"}, f.chains...) {
		for _, r := range f.rules[c] {
			args := r.Args
			if counters {
				// legacy prints the counters before the target
				args = slices.Clone(r.Args)
				at := len(args)
				for i := range args {
					if args[i] == "-j" || args[i] == "-g" {
						at = i
					}
				}
				args = slices.Insert(args, at, "-c", fmt.Sprint(r.Packets), fmt.Sprint(r.Bytes))
			}
			out = append(out, "-A "+c+" "+quoteArgs(args))
		}
	}
	return out
}

func (f *Fake) TableExists(table string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.NoTable, nil
}

func (f *Fake) ListTable(table string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter(false); err != nil {
		return nil, err
	}
	return f.lines(true), nil
}

func (f *Fake) NewChain(table, chain string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter(true); err != nil {
		return err
	}
	f.NoTable = false
	if f.exists(chain) {
		return &FakeError{Status: 1, Msg: "iptables: Chain already exists."}
	}
	f.chains = append(f.chains, chain)
	return nil
}

func (f *Fake) ClearChain(table, chain string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter(true); err != nil {
		return err
	}
	if !f.exists(chain) {
		f.chains = append(f.chains, chain)
	}
	delete(f.rules, chain)
	return nil
}

func (f *Fake) DeleteChain(table, chain string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter(true); err != nil {
		return err
	}
	i := slices.Index(f.chains, chain)
	if i < 0 {
		return notExist(chain)
	}
	if len(f.rules[chain]) > 0 {
		return &FakeError{Status: 1, Msg: "iptables: Directory not empty."}
	}
	for _, rs := range f.rules {
		for _, r := range rs {
			if r.Target() == chain {
				return &FakeError{Status: 1, Msg: "iptables: Too many links."}
			}
		}
	}
	f.chains = slices.Delete(f.chains, i, i+1)
	delete(f.rules, chain)
	return nil
}

func (f *Fake) Append(table, chain string, rulespec ...string) error {
	return f.Insert(table, chain, -1, rulespec...)
}

func (f *Fake) Insert(table, chain string, pos int, rulespec ...string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter(true); err != nil {
		return err
	}
	if !f.exists(chain) {
		return notExist(chain)
	}
	r := Rule{Args: slices.Clone(rulespec)}
	if t := r.Target(); t != "" && t != "ACCEPT" && t != "DROP" && t != "REJECT" && t != "LOG" && t != "RETURN" && !f.exists(t) {
		return notExist(t)
	}
	if pos < 0 || pos > len(f.rules[chain]) {
		f.rules[chain] = append(f.rules[chain], r)
		return nil
	}
	f.rules[chain] = slices.Insert(f.rules[chain], pos-1, r)
	return nil
}

func (f *Fake) Delete(table, chain string, rulespec ...string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter(true); err != nil {
		return err
	}
	for i, r := range f.rules[chain] {
		if slices.Equal(r.Args, rulespec) {
			f.rules[chain] = slices.Delete(f.rules[chain], i, i+1)
			return nil
		}
	}
	return &FakeError{Status: 1, Msg: "iptables: Bad rule (does a matching rule exist in that chain?).", NotExist: true}
}
