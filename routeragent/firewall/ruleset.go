package firewall

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// Table is one iptables table as printed by `iptables -t TABLE -v -S`: the
// chains in the order they were declared and every rule, with counters.
type Table struct {
	// Policies maps each built-in chain to its policy (ACCEPT, DROP).
	Policies map[string]string
	// Chains lists every chain, built-in first, in listing order.
	Chains []string
	// Rules maps a chain name to its rules in order.
	Rules map[string][]Rule
}

// Rule is one rule of a chain: its arguments as iptables prints them (without
// `-A CHAIN` and without counters, quotes removed) and its counters.
type Rule struct {
	Args    []string
	Packets uint64
	Bytes   uint64
}

// Target returns the rule's -j (or -g) target, "" when it has none.
func (r Rule) Target() string {
	for i := 0; i+1 < len(r.Args); i++ {
		if r.Args[i] == "-j" || r.Args[i] == "-g" || r.Args[i] == "--jump" || r.Args[i] == "--goto" {
			return r.Args[i+1]
		}
	}
	return ""
}

// String renders the rule's arguments the way iptables -S does (quoting
// arguments with spaces), for logs and findings.
func (r Rule) String() string { return quoteArgs(r.Args) }

// HasChain reports whether the table declares chain.
func (t Table) HasChain(chain string) bool {
	if _, ok := t.Policies[chain]; ok {
		return true
	}
	for _, c := range t.Chains {
		if c == chain {
			return true
		}
	}
	return false
}

// ParseTable parses the output lines of `iptables -t TABLE [-v] -S`. Both
// counter styles are understood: legacy's `-c PKTS BYTES` inside the rule and
// some iptables-nft versions' `[PKTS:BYTES]` prefix.
func ParseTable(lines []string) (Table, error) {
	t := Table{Policies: map[string]string{}, Rules: map[string][]Rule{}}
	for n, line := range lines {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		var pk, by uint64
		if strings.HasPrefix(line, "[") {
			end := strings.IndexByte(line, ']')
			if end < 0 {
				return Table{}, fmt.Errorf("line %d: unterminated counter prefix: %q", n+1, line)
			}
			var err error
			pk, by, err = parseCounterPair(line[1:end])
			if err != nil {
				return Table{}, fmt.Errorf("line %d: %w", n+1, err)
			}
			line = strings.TrimSpace(line[end+1:])
		}
		toks, err := splitArgs(line)
		if err != nil {
			return Table{}, fmt.Errorf("line %d: %w", n+1, err)
		}
		if len(toks) < 2 {
			return Table{}, fmt.Errorf("line %d: too short: %q", n+1, line)
		}
		switch toks[0] {
		case "-P":
			if len(toks) < 3 {
				return Table{}, fmt.Errorf("line %d: policy without target: %q", n+1, line)
			}
			t.Policies[toks[1]] = toks[2]
			t.Chains = append(t.Chains, toks[1])
		case "-N":
			t.Chains = append(t.Chains, toks[1])
		case "-A":
			chain := toks[1]
			args := make([]string, 0, len(toks)-2)
			rest := toks[2:]
			for i := 0; i < len(rest); i++ {
				if (rest[i] == "-c" || rest[i] == "--set-counters") && i+2 < len(rest) {
					p, err1 := strconv.ParseUint(rest[i+1], 10, 64)
					b, err2 := strconv.ParseUint(rest[i+2], 10, 64)
					if err1 == nil && err2 == nil {
						pk, by = p, b
						i += 2
						continue
					}
				}
				args = append(args, rest[i])
			}
			t.Rules[chain] = append(t.Rules[chain], Rule{Args: args, Packets: pk, Bytes: by})
		default:
			return Table{}, fmt.Errorf("line %d: unexpected %q", n+1, toks[0])
		}
	}
	return t, nil
}

func parseCounterPair(s string) (uint64, uint64, error) {
	a, b, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0, fmt.Errorf("bad counters %q", s)
	}
	p, err := strconv.ParseUint(a, 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("bad packet counter %q: %w", a, err)
	}
	by, err := strconv.ParseUint(b, 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("bad byte counter %q: %w", b, err)
	}
	return p, by, nil
}

// splitArgs splits an iptables -S line into arguments. iptables quotes an
// argument that contains spaces or quotes with double quotes and escapes
// `"` and `\` inside it with a backslash.
func splitArgs(s string) ([]string, error) {
	if !strings.ContainsRune(s, '"') {
		return strings.Fields(s), nil // the common case, without copies
	}
	var out []string
	var cur strings.Builder
	inTok, inQuote := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inQuote && c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case inQuote && c == '"':
			inQuote = false
		case !inQuote && c == '"':
			inQuote, inTok = true, true
		case !inQuote && (c == ' ' || c == '\t'):
			if inTok {
				out = append(out, cur.String())
				cur.Reset()
				inTok = false
			}
		default:
			cur.WriteByte(c)
			inTok = true
		}
	}
	if inQuote {
		return nil, fmt.Errorf("unterminated quote in %q", s)
	}
	if inTok {
		out = append(out, cur.String())
	}
	return out, nil
}

// quoteArgs is the inverse of splitArgs. It quotes every argument that
// holds whitespace of any kind, not only spaces and tabs: splitArgs splits an
// unquoted line with strings.Fields (found by FuzzParseTable: an argument
// "0\v0" came back as two).
func quoteArgs(args []string) string {
	var b strings.Builder
	for i, a := range args {
		if i > 0 {
			b.WriteByte(' ')
		}
		if a == "" || strings.ContainsAny(a, "\"\\'") || strings.IndexFunc(a, unicode.IsSpace) >= 0 {
			b.WriteByte('"')
			for j := 0; j < len(a); j++ {
				if a[j] == '"' || a[j] == '\\' {
					b.WriteByte('\\')
				}
				b.WriteByte(a[j])
			}
			b.WriteByte('"')
			continue
		}
		b.WriteString(a)
	}
	return b.String()
}

// matchesInvalid reports whether the rule matches conntrack state INVALID
// (`-m conntrack --ctstate ...INVALID...` or `-m state --state ...INVALID...`)
// without negating it.
func (r Rule) matchesInvalid() bool {
	for i := 0; i+1 < len(r.Args); i++ {
		if r.Args[i] != "--ctstate" && r.Args[i] != "--state" {
			continue
		}
		if i > 0 && r.Args[i-1] == "!" {
			continue
		}
		for _, s := range strings.Split(r.Args[i+1], ",") {
			if s == "INVALID" {
				return true
			}
		}
	}
	return false
}

// InvalidDrop says where a table drops conntrack-INVALID forwarded packets.
type InvalidDrop struct {
	// Chain is the chain holding the rule that matches INVALID.
	Chain string
	// Rule is that rule.
	Rule Rule
	// ForwardIndex is the 1-based position in FORWARD of the rule through
	// which forwarded packets reach the drop (the drop itself when it is in
	// FORWARD, else the jump towards its chain).
	ForwardIndex int
}

// Analysis is what the firewall logic needs to know about one backend's
// filter table.
type Analysis struct {
	// Drop is the first INVALID drop reachable from FORWARD, nil if none.
	Drop *InvalidDrop
	// ForwardRules counts the rules in FORWARD (ours excluded).
	ForwardRules int
	// ForwardPolicy is FORWARD's policy.
	ForwardPolicy string
	// JumpIndexes are the 1-based positions of jumps to our chain in FORWARD.
	JumpIndexes []int
	// HasChain reports whether our chain exists.
	HasChain bool
}

// Analyze looks at a filter table: where (if anywhere) forwarded INVALID
// packets are dropped, and where our chain and jumps are. It follows jumps
// from FORWARD into user chains (not into ours), so ferm/DebOps layouts that
// move the state rules into a sub-chain are found too.
func Analyze(t Table) Analysis {
	a := Analysis{ForwardPolicy: t.Policies["FORWARD"], HasChain: t.HasChain(ChainName)}
	for i, r := range t.Rules["FORWARD"] {
		if r.Target() == ChainName {
			a.JumpIndexes = append(a.JumpIndexes, i+1)
			continue
		}
		a.ForwardRules++
		if a.Drop != nil {
			continue
		}
		if chain, rule, ok := dropsInvalid(t, "FORWARD", r, map[string]bool{"FORWARD": true}); ok {
			a.Drop = &InvalidDrop{Chain: chain, Rule: rule, ForwardIndex: i + 1}
		}
	}
	return a
}

// dropsInvalid reports whether rule r (in chain) drops INVALID packets,
// directly or through the user chain it jumps to.
func dropsInvalid(t Table, chain string, r Rule, seen map[string]bool) (string, Rule, bool) {
	target := r.Target()
	if r.matchesInvalid() {
		switch target {
		case "DROP", "REJECT":
			return chain, r, true
		}
		// `--ctstate INVALID -j some_drop_chain`: count it when that chain
		// drops or rejects.
		if t.HasChain(target) && !seen[target] && target != ChainName {
			for _, sub := range t.Rules[target] {
				if tg := sub.Target(); tg == "DROP" || tg == "REJECT" {
					return chain, r, true
				}
			}
		}
		return "", Rule{}, false
	}
	if target == "" || target == ChainName || seen[target] || !t.HasChain(target) {
		return "", Rule{}, false
	}
	if _, builtin := t.Policies[target]; builtin {
		return "", Rule{}, false
	}
	seen[target] = true
	for _, sub := range t.Rules[target] {
		if c, rr, ok := dropsInvalid(t, target, sub, seen); ok {
			return c, rr, true
		}
	}
	return "", Rule{}, false
}
