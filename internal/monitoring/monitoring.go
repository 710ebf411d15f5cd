// Package monitoring reads the metric names that the Grafana dashboard and
// the alerting rules in config/monitoring use, and checks them against what
// a program's /metrics or registry serves. The programs' tests call it so
// that a renamed or removed metric cannot leave a dashboard panel or an
// alert silently empty.
package monitoring

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"sigs.k8s.io/yaml"
)

// The files, relative to the repository root.
const (
	DashboardFile = "config/monitoring/grafana-dashboard.json"
	RulesFile     = "config/monitoring/prometheus-rules.yaml"
)

// The programs, as Program names them.
const (
	Controller  = "bgplb-controller"
	Speaker     = "bgplb-speaker"
	RouterAgent = "bgplb-routeragent"
	All         = "all"
)

// Ref is one metric name written in a PromQL expression.
type Ref struct {
	// Name as written, e.g. bgplb_speaker_reconcile_seconds_bucket.
	Name string
	// Rate is true when the name is the argument of rate, irate or
	// increase, which are meaningful on counters (and histogram series) only.
	Rate bool
	// Where is the file the expression came from.
	Where string
}

var (
	// A small, honest extraction: bgplb metric identifiers, not a PromQL
	// parser. Label values and annotations are not expressions, so they are
	// not read.
	nameRE = regexp.MustCompile(`bgplb_[a-z0-9_]+`)
	rateRE = regexp.MustCompile(`\b(?:rate|irate|increase)\(\s*(bgplb_[a-z0-9_]+)`)
)

// Load reads the dashboard and the rules under root and returns every
// metric they name, sorted by name.
func Load(root string) ([]Ref, error) {
	var refs []Ref
	for _, f := range []string{DashboardFile, RulesFile} {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			return nil, err
		}
		exprs, err := Expressions(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		if len(exprs) == 0 {
			return nil, fmt.Errorf("%s: no expressions", f)
		}
		for _, e := range exprs {
			refs = append(refs, Refs(e, f)...)
		}
	}
	sort.SliceStable(refs, func(i, j int) bool { return refs[i].Name < refs[j].Name })
	return refs, nil
}

// Expressions returns the PromQL of a dashboard (JSON) or a rule file
// (YAML): the string values of every "expr" key, at any depth.
func Expressions(doc []byte) ([]string, error) {
	j, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return nil, err
	}
	var v any
	if err := json.Unmarshal(j, &v); err != nil {
		return nil, err
	}
	var out []string
	var walk func(any)
	walk = func(v any) {
		switch t := v.(type) {
		case map[string]any:
			for k, c := range t {
				if s, ok := c.(string); ok && k == "expr" {
					out = append(out, s)
					continue
				}
				walk(c)
			}
		case []any:
			for _, c := range t {
				walk(c)
			}
		}
	}
	walk(v)
	sort.Strings(out)
	return out, nil
}

// Refs returns the bgplb metric names in one PromQL expression.
func Refs(expr, where string) []Ref {
	rated := map[string]bool{}
	for _, m := range rateRE.FindAllStringSubmatch(expr, -1) {
		rated[m[1]] = true
	}
	var out []Ref
	for _, n := range nameRE.FindAllString(expr, -1) {
		out = append(out, Ref{Name: n, Rate: rated[n], Where: where})
	}
	return out
}

// Program says which program serves a metric: each program's metrics
// carry its prefix, except the controller's (bgplb_ippool_*,
// bgplb_service_*) and bgplb_build_info, which all three serve.
func Program(name string) string {
	switch {
	case name == "bgplb_build_info":
		return All
	case strings.HasPrefix(name, "bgplb_routeragent_"):
		return RouterAgent
	case strings.HasPrefix(name, "bgplb_speaker_"):
		return Speaker
	default:
		return Controller
	}
}

// Check returns one error per reference of program's (or of all programs)
// that families do not serve with a fitting type: the name must be a family,
// or a histogram's _bucket/_sum/_count series; a name under rate, irate or
// increase must be a counter or a histogram series.
func Check(refs []Ref, program string, families map[string]*dto.MetricFamily) []error {
	var errs []error
	for _, r := range refs {
		if p := Program(r.Name); p != program && p != All {
			continue
		}
		if err := check(r, families); err != nil {
			errs = append(errs, fmt.Errorf("%s (in %s): %w", r.Name, r.Where, err))
		}
	}
	return errs
}

func check(r Ref, families map[string]*dto.MetricFamily) error {
	if mf, ok := families[r.Name]; ok {
		if r.Rate && mf.GetType() != dto.MetricType_COUNTER {
			return fmt.Errorf("rate/increase of a %s, want a counter", mf.GetType())
		}
		return nil
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(r.Name, suffix)
		if !ok {
			continue
		}
		mf, ok := families[base]
		if !ok {
			break
		}
		if mf.GetType() != dto.MetricType_HISTOGRAM {
			return fmt.Errorf("%s is a %s, want a histogram", base, mf.GetType())
		}
		return nil
	}
	return fmt.Errorf("not served")
}

// Families indexes gathered metric families by name.
func Families(mfs []*dto.MetricFamily) map[string]*dto.MetricFamily {
	out := make(map[string]*dto.MetricFamily, len(mfs))
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// ParseText reads a /metrics response in Prometheus's text format.
func ParseText(r io.Reader) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.LegacyValidation)
	return p.TextToMetricFamilies(r)
}

// BuildInfoProgram returns the program label of bgplb_build_info in
// families, or "" when the metric is absent.
func BuildInfoProgram(families map[string]*dto.MetricFamily) string {
	for _, m := range families["bgplb_build_info"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "program" {
				return l.GetValue()
			}
		}
	}
	return ""
}
