package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v3"
)

// How Parse reports what the YAML decoder refuses.
//
// The strict decoder (KnownFields) stays the judge of what a file means;
// its own messages ("line 7: field neighbours not found in type
// config.Config", "cannot unmarshal !!int `9` into time.Duration") name Go
// types, not keys. So the same file is also parsed into a yaml.Node tree
// and walked against the Config type by a checker that says the same
// things in the file's terms: the key path, what was expected, what to
// write, and the line. Leaves are decoded by the yaml package itself, so
// the checker never refuses what the decoder accepts; whatever it misses
// still comes out, from the decoder's message (fromDecoder).

// TopLevel is the path of an error about the file as a whole.
const TopLevel = "(top level)"

const (
	// maxErrors bounds the list: past it a person stops reading, and a
	// file of aliases could otherwise produce millions.
	maxErrors = 100
	// maxVisits bounds the walk (aliases can expand a small file).
	maxVisits = 1 << 20
)

// SyntaxError is a file that is not YAML.
type SyntaxError struct {
	// Line is where the parser gave up (0 when it did not say).
	Line int
	// Msg is the parser's reason.
	Msg string
}

func (e *SyntaxError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: not valid YAML: %s", e.Line, e.Msg)
	}
	return "not valid YAML: " + e.Msg
}

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// splitLine splits the yaml package's "yaml: line 3: msg" into 3 and msg.
func splitLine(s string) (int, string) {
	if m := yamlLine.FindStringSubmatch(s); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n, m[2]
	}
	return 0, strings.TrimPrefix(s, "yaml: ")
}

// parseNode parses the first document of b into a node tree (nil for an
// empty file). extraLine is the line of a second document with content,
// which the decoder would silently ignore (0 when there is none).
func parseNode(b []byte) (root *yaml.Node, extraLine int, err error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, 0, nil
		}
		return nil, 0, syntaxError(b, err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, 0, syntaxError(b, err)
	case len(extra.Content) > 0 && !isNull(extra.Content[0]):
		extraLine = max(extra.Content[0].Line, 1)
	}
	if len(doc.Content) == 0 {
		return nil, extraLine, nil
	}
	return doc.Content[0], extraLine, nil
}

func syntaxError(b []byte, err error) error {
	line, msg := splitLine(err.Error())
	if strings.Contains(msg, "found character that cannot start any token") {
		// Usually a tab; the parser says no line for the first one.
		for i, l := range strings.Split(string(b), "\n") {
			if indent := l[:len(l)-len(strings.TrimLeft(l, " \t"))]; strings.Contains(indent, "\t") {
				if line == 0 || line == i+1 {
					line, msg = i+1, msg+" (a tab: YAML indents with spaces)"
				}
				break
			}
		}
	}
	return &SyntaxError{Line: line, Msg: msg}
}

// decodeStrict is the decoder's verdict: unknown keys are errors, so a typo
// never silently falls back to a default.
func decodeStrict(b []byte, c *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// checker walks a node tree against a Go type and collects what is wrong.
type checker struct {
	errs Errors
	// lines holds the line of every key path in the file.
	lines map[string]int
	// bad are the paths whose value was refused: validation errors at or
	// under them say nothing new.
	bad map[string]bool
	// suggested are the known keys offered for an unknown one ("did you
	// mean"): when the known key is absent, "is required" is the same
	// mistake said twice.
	suggested map[string]bool
	visits    int
	truncated bool
}

func newChecker() *checker {
	return &checker{lines: map[string]int{}, bad: map[string]bool{}, suggested: map[string]bool{}}
}

func (k *checker) add(path string, line int, format string, a ...any) {
	if len(k.errs) >= maxErrors {
		k.truncated = true
		return
	}
	k.errs = append(k.errs, Error{Path: path, Line: line, Msg: fmt.Sprintf(format, a...)})
}

// refuse records an error about the value at path.
func (k *checker) refuse(path string, line int, format string, a ...any) {
	k.bad[path] = true
	k.add(path, line, format, a...)
}

// finish returns the errors found, with a last one saying the list was cut.
func (k *checker) finish() Errors {
	if k.truncated {
		k.errs = append(k.errs, Error{Path: TopLevel, Msg: fmt.Sprintf("more problems; the first %d are listed", maxErrors)})
	}
	return k.errs
}

// document checks the root of the file against Config.
func (k *checker) document(root *yaml.Node, extraLine int) {
	if root != nil {
		k.value("", root, reflect.TypeFor[Config]())
	}
	if extraLine > 0 {
		k.add(TopLevel, extraLine, "a second YAML document (after ---) would be ignored; the file holds one")
	}
}

var durationType = reflect.TypeFor[time.Duration]()

// value checks the node n found at path against t.
func (k *checker) value(path string, n *yaml.Node, t reflect.Type) {
	if k.visits++; k.visits > maxVisits {
		return
	}
	n = resolve(n)
	if isNull(n) { // the decoder leaves the zero value: a default
		return
	}
	switch {
	case t == durationType:
		k.scalar(path, n, t)
	case t.Kind() == reflect.Pointer:
		k.value(path, n, t.Elem())
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			k.refuse(pathOrTop(path), n.Line, "expected a map (keys %s), got %s", strings.Join(fieldNames(t), ", "), describe(n))
			return
		}
		k.mapping(path, n, t, nil)
	case t.Kind() == reflect.Slice:
		k.sequence(path, n, t)
	default:
		k.scalar(path, n, t)
	}
}

// mapping checks the keys of a map for the struct t. done is nil for a map
// written in place; for a map merged in with "<<" it holds the keys already
// set, which the decoder skips (the map's own keys win, then earlier
// merges over later ones).
func (k *checker) mapping(path string, n *yaml.Node, t reflect.Type, done map[string]bool) {
	fields := fieldTypes(t)
	k.duplicates(path, n)
	seen := map[string]int{}
	var merge *yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		if isMerge(kn) {
			merge = vn // as the decoder: the last "<<" is the one merged
			continue
		}
		name, ok := keyName(kn)
		if !ok {
			k.add(pathOrTop(path), kn.Line, "a key must be a name, got %s", describe(resolve(kn)))
			continue
		}
		if done != nil {
			if done[name] {
				continue
			}
			done[name] = true
		}
		p := joinKey(path, name)
		ft, known := fields[name]
		if !known {
			if s := k.unknown(path, p, name, kn.Line, t); s != "" {
				// Check the value as the key it is likely meant to be:
				// its mistakes are the next run's otherwise.
				k.value(p, vn, fields[s])
			}
			continue
		}
		if first, dup := seen[name]; dup {
			if !sameKeyBefore(n, i) { // else said by duplicates
				k.add(p, kn.Line, "set twice (first on line %d)", first)
			}
			continue
		}
		seen[name] = kn.Line
		if _, ok := k.lines[p]; !ok {
			k.lines[p] = kn.Line
		}
		k.value(p, vn, ft)
	}
	if merge == nil {
		return
	}
	if done == nil {
		done = map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if name, ok := keyName(n.Content[i]); ok && !isMerge(n.Content[i]) {
				done[name] = true
			}
		}
	}
	k.merge(path, merge, t, done)
}

// duplicates reports keys written twice in one map. The decoder then
// decodes none of the map, so validation has nothing to say about it.
func (k *checker) duplicates(path string, n *yaml.Node) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		for j := i + 2; j+1 < len(n.Content); j += 2 {
			a, b := n.Content[i], n.Content[j]
			if a.Kind == b.Kind && a.Value == b.Value {
				p := pathOrTop(path)
				if a.Kind == yaml.ScalarNode {
					p = strings.TrimPrefix(path+"."+b.Value, ".")
					if !isMerge(b) {
						p = joinKey(path, b.Value)
					}
				}
				k.bad[pathOrTop(path)] = true
				k.add(p, b.Line, "set twice (first on line %d)", a.Line)
				break
			}
		}
	}
}

// sameKeyBefore says whether the key at n.Content[i] is written the same
// as an earlier one.
func sameKeyBefore(n *yaml.Node, i int) bool {
	for j := 0; j < i; j += 2 {
		if n.Content[j].Kind == n.Content[i].Kind && n.Content[j].Value == n.Content[i].Value {
			return true
		}
	}
	return false
}

// merge checks the value of a "<<" key: a map, or a list of maps.
func (k *checker) merge(path string, n *yaml.Node, t reflect.Type, done map[string]bool) {
	n = resolve(n)
	items := []*yaml.Node{n}
	if n.Kind == yaml.SequenceNode {
		items = n.Content
	}
	for _, m := range items {
		if m = resolve(m); m.Kind != yaml.MappingNode {
			k.refuse(strings.TrimPrefix(path+".<<", "."), m.Line, "a merge takes a map or a list of maps, got %s", describe(m))
			return
		}
		k.mapping(path, m, t, done)
	}
}

// unknown reports the key name, unknown at parent, suggesting the closest
// known key when it is close; it returns the suggestion.
func (k *checker) unknown(parent, path, name string, line int, t reflect.Type) string {
	known := fieldNames(t)
	if s := suggest(name, known); s != "" {
		k.suggested[joinKey(parent, s)] = true
		k.add(path, line, "unknown key; did you mean %s?", s)
		return s
	}
	k.add(path, line, "unknown key; expected one of %s", strings.Join(known, ", "))
	return ""
}

// sequence checks a list of t.Elem().
func (k *checker) sequence(path string, n *yaml.Node, t reflect.Type) {
	if n.Kind != yaml.SequenceNode {
		msg := "expected a list, got " + describe(n)
		switch et := t.Elem(); {
		case n.Kind == yaml.ScalarNode && et.Kind() == reflect.String:
			msg += fmt.Sprintf("; write [%s]", n.Value)
		case n.Kind == yaml.MappingNode && et.Kind() == reflect.Struct:
			msg += `; start each entry with "- "`
		}
		k.refuse(path, n.Line, "%s", msg)
		return
	}
	for i, e := range n.Content {
		p := fmt.Sprintf("%s[%d]", path, i)
		k.lines[p] = e.Line
		k.value(p, e, t.Elem())
		if k.bad[p] {
			// The decoder drops a refused entry: the later ones move up,
			// and validation's indexes no longer match the file's.
			k.bad[path] = true
		}
	}
}

// scalar checks a number, duration, boolean or string by decoding it as
// the decoder will.
func (k *checker) scalar(path string, n *yaml.Node, t reflect.Type) {
	if n.Kind != yaml.ScalarNode {
		k.refuse(path, n.Line, "expected %s, got %s", expected(t), describe(n))
		return
	}
	if err := n.Decode(reflect.New(t).Interface()); err != nil {
		k.refuse(path, n.Line, "%s", scalarProblem(n, t, err))
		return
	}
	if isInteger(t) && t != durationType && n.ShortTag() == "!!float" {
		// The decoder truncates 1.5 to 1 without a word.
		if f, err := strconv.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), 64); err == nil && f != math.Trunc(f) {
			k.refuse(path, n.Line, "%s is not a whole number", n.Value)
		}
	}
}

func isInteger(t reflect.Type) bool {
	return t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64
}

var (
	integer = regexp.MustCompile(`^[-+]?[0-9][0-9_]*$`)
	decimal = regexp.MustCompile(`^[-+]?([0-9][0-9_]*)?\.?[0-9]+([eE][-+]?[0-9]+)?$`)
)

// scalarProblem says why the scalar n is not a t, and what to write.
func scalarProblem(n *yaml.Node, t reflect.Type, err error) string {
	tag := n.ShortTag()
	if tag == "!!str" && n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 && t != durationType {
		// "64500" or "true" in quotes: the right value, made a string.
		var probe yaml.Node
		if yaml.Unmarshal([]byte(n.Value), &probe) == nil && len(probe.Content) == 1 &&
			probe.Content[0].Kind == yaml.ScalarNode && probe.Content[0].Decode(reflect.New(t).Interface()) == nil {
			return fmt.Sprintf("%q is a string; write %s without quotes", n.Value, n.Value)
		}
	}
	switch {
	case isInteger(t):
		if t == durationType {
			if tag == "!!int" || tag == "!!float" {
				return fmt.Sprintf("%s is not a duration; write %ss", n.Value, n.Value)
			}
			return fmt.Sprintf("%q is not a duration (write a number and a unit: 9s, 500ms, 2m)", n.Value)
		}
		switch {
		case tag == "!!int" || tag == "!!float" && integer.MatchString(n.Value):
			return outOfRange(n.Value, t)
		case tag == "!!float" || decimal.MatchString(n.Value):
			return fmt.Sprintf("%s is not a whole number", n.Value)
		}
		return fmt.Sprintf("%q is not a number", n.Value)
	case t.Kind() == reflect.Bool:
		return fmt.Sprintf("%q is not true or false", n.Value)
	}
	_, msg := splitLine(strings.TrimPrefix(err.Error(), "yaml: unmarshal errors:\n  "))
	return msg
}

// outOfRange says which way the integer v misses t. (Each key's own range,
// narrower, is validation's to say once the number decodes.)
func outOfRange(v string, t reflect.Type) string {
	unsigned := t.Kind() >= reflect.Uint
	switch {
	case strings.HasPrefix(v, "-") && unsigned:
		return v + " is negative"
	case strings.HasPrefix(v, "-"):
		return v + " is too small"
	case unsigned:
		return fmt.Sprintf("%s is too large (at most %d)", v, uint64(math.MaxUint64)>>(64-t.Bits()))
	}
	return v + " is too large"
}

// expected names what a value of t is written as.
func expected(t reflect.Type) string {
	switch {
	case t == durationType:
		return "a duration such as 9s"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Slice:
		return "a list"
	case t.Kind() == reflect.Struct:
		return "a map"
	}
	return "a number"
}

// describe names what a node is, for "expected X, got Y".
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a map"
	case yaml.SequenceNode:
		return "a list"
	}
	return strconv.Quote(n.Value)
}

// resolve follows an alias to its anchored node.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == 0 || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// isMerge is the decoder's test for a "<<" key.
func isMerge(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Value == "<<" && (n.Tag == "" || n.Tag == "!" || n.ShortTag() == "!!merge")
}

// keyName is the name the decoder matches a key by (a null key is "").
func keyName(n *yaml.Node) (string, bool) {
	n = resolve(n)
	switch {
	case isNull(n):
		return "", true
	case n.Kind == yaml.ScalarNode:
		return n.Value, true
	}
	return "", false
}

var plainKey = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// joinKey is the path of key name under parent: neighbors[1].prefix. A
// name that is not plain is quoted, so that no path is empty.
func joinKey(parent, name string) string {
	if !plainKey.MatchString(name) {
		name = strconv.Quote(name)
	}
	if parent == "" {
		return name
	}
	return parent + "." + name
}

func pathOrTop(path string) string {
	if path == "" {
		return TopLevel
	}
	return path
}

// fieldNames are the keys of struct t, in declaration order.
func fieldNames(t reflect.Type) []string {
	var names []string
	for f := range t.Fields() {
		if name := yamlName(f); name != "" {
			names = append(names, name)
		}
	}
	return names
}

func fieldTypes(t reflect.Type) map[string]reflect.Type {
	m := map[string]reflect.Type{}
	for f := range t.Fields() {
		if name := yamlName(f); name != "" {
			m[name] = f.Type
		}
	}
	return m
}

func yamlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return ""
	}
	if name == "" {
		return strings.ToLower(f.Name)
	}
	return name
}

// isTypeError says whether the decoder went on after err (it keeps
// decoding past type errors and unknown keys, and stops at anything else).
func isTypeError(err error) bool {
	var te *yaml.TypeError
	return errors.As(err, &te)
}

// fromDecoder turns an error of the strict decoder the checker did not
// explain into Errors, placing each at the deepest key on its line.
func fromDecoder(err error, lines map[string]int) Errors {
	msgs := []string{err.Error()}
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	}
	var es Errors
	for _, m := range msgs {
		line, msg := splitLine(m)
		path := TopLevel
		for p, l := range lines {
			if l == line && line > 0 && (path == TopLevel || len(p) > len(path) || len(p) == len(path) && p < path) {
				path = p
			}
		}
		es = append(es, Error{Path: path, Line: line, Msg: msg})
	}
	return es
}

// explains says whether the checker's findings cover a validation error at
// path: its value was refused, or it is the known key suggested for a
// misspelt one and absent from the file.
func (k *checker) explains(path string) bool {
	if _, present := k.lines[path]; k.suggested[path] && !present || k.bad[TopLevel] {
		return true
	}
	for p := path; p != ""; p = parentPath(p) {
		if k.bad[p] {
			return true
		}
	}
	return false
}

// lineOf is the line of path, or of its closest ancestor in the file.
func (k *checker) lineOf(path string) int {
	for p := path; p != ""; p = parentPath(p) {
		if l, ok := k.lines[p]; ok {
			return l
		}
	}
	return 0
}

// parentPath drops the last key or index: neighbors[1].asn -> neighbors[1]
// -> neighbors -> "".
func parentPath(p string) string {
	if i := strings.LastIndexAny(p, ".["); i >= 0 {
		return p[:i]
	}
	return ""
}
