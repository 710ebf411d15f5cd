//go:build !race

package agent

// raceEnabled reports whether the test binary was built with -race.
const raceEnabled = false
