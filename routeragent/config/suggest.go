package config

import "strings"

// suggest returns the known key closest to name by edit distance (case
// ignored, a swap of two neighbouring letters counting as one edit), or ""
// when none is close: at most one edit per three letters of the known key,
// and at least one. Ties go to the key declared first. Failing that, the
// one known key that name (three letters or more) begins: hold, holdTime.
func suggest(name string, known []string) string {
	lower := strings.ToLower(name)
	best, bestD := "", -1
	var prefixed []string
	for _, k := range known {
		lk := strings.ToLower(k)
		if len(lower) >= 3 && strings.HasPrefix(lk, lower) {
			prefixed = append(prefixed, k)
		}
		d := editDistance(lower, lk)
		if d > max(1, len(k)/3) {
			continue
		}
		if bestD < 0 || d < bestD {
			best, bestD = k, d
		}
	}
	if best == "" && len(prefixed) == 1 {
		return prefixed[0]
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b
// (bytes): insertions, deletions, substitutions and adjacent transpositions.
func editDistance(a, b string) int {
	// Three rows: the one two back is needed for transpositions.
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
