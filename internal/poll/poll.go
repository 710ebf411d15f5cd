// Package poll waits in tests for a condition that the system under test
// reaches asynchronously (a reconcile, a BGP session, a kernel route).
package poll

import (
	"testing"
	"time"
)

// Until calls f every interval until it returns nil. The bound only keeps a
// broken test from hanging: it is not a timing assertion, so pick it well
// above anything a loaded machine needs. On timeout the test fails with what
// and f's last error.
func Until(t testing.TB, bound, interval time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v (after %v)", what, err, bound)
		}
		time.Sleep(interval)
	}
}
