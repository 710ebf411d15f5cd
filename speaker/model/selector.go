package model

import "slices"

// Operator of a label selector requirement, as in metav1.LabelSelector.
type Operator string

// Selector operators.
const (
	OpIn           Operator = "In"
	OpNotIn        Operator = "NotIn"
	OpExists       Operator = "Exists"
	OpDoesNotExist Operator = "DoesNotExist"
)

// Requirement is one matchExpressions entry.
type Requirement struct {
	Key      string
	Operator Operator
	Values   []string
}

// LabelSelector mirrors metav1.LabelSelector. The zero value matches every
// label set, like an empty selector in Kubernetes.
type LabelSelector struct {
	MatchLabels      map[string]string
	MatchExpressions []Requirement
	// Invalid marks a selector that could not be converted (an unknown
	// operator); it matches nothing, like Kubernetes' labels.Nothing().
	Invalid bool
}

// Matches reports whether the label set satisfies the selector.
func (s LabelSelector) Matches(labels map[string]string) bool {
	if s.Invalid {
		return false
	}
	for k, v := range s.MatchLabels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	for _, r := range s.MatchExpressions {
		v, ok := labels[r.Key]
		switch r.Operator {
		case OpIn:
			if !ok || !slices.Contains(r.Values, v) {
				return false
			}
		case OpNotIn:
			if ok && slices.Contains(r.Values, v) {
				return false
			}
		case OpExists:
			if !ok {
				return false
			}
		case OpDoesNotExist:
			if ok {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// matchesAny is the semantics of every selector list in our API: an empty
// list selects everything, otherwise any one selector must match.
func matchesAny(sels []LabelSelector, labels map[string]string) bool {
	if len(sels) == 0 {
		return true
	}
	for _, s := range sels {
		if s.Matches(labels) {
			return true
		}
	}
	return false
}
