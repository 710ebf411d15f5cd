package config

import (
	"strings"
	"testing"
	"time"
)

// TestPinConnections: routes.pinConnections is on with a 60 s linger
// unless set; a bad linger or a non-boolean is refused naming the key.
func TestPinConnections(t *testing.T) {
	c, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Routes.Pinning() || c.Routes.Linger() != DefaultPinLinger || DefaultPinLinger != 60*time.Second {
		t.Fatalf("defaults: pinning %v, linger %s", c.Routes.Pinning(), c.Routes.Linger())
	}
	c, err = Parse([]byte(minimal + "routes: {pinConnections: false, pinLinger: 0s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Routes.Pinning() || c.Routes.Linger() != 0 {
		t.Fatalf("off: pinning %v, linger %s", c.Routes.Pinning(), c.Routes.Linger())
	}
	c, err = Parse([]byte(minimal + "routes: {pinLinger: 5s}\n"))
	if err != nil || !c.Routes.Pinning() || c.Routes.Linger() != 5*time.Second {
		t.Fatalf("linger 5s: %v", err)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"routes: {pinLinger: -1s}\n", "line 10: routes.pinLinger: -1s is not between 0s and 24h"},
		{"routes: {pinLinger: 48h}\n", "routes.pinLinger: 48h0m0s is not between 0s and 24h"},
		{"routes: {pinLinger: soon}\n", `routes.pinLinger: "soon" is not a duration`},
		{"routes: {pinConnections: maybe}\n", "routes.pinConnections:"},
		{"routes: {pinConection: true}\n", "did you mean pinConnections?"},
	} {
		_, err := Parse([]byte(minimal + tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.yaml, err, tc.want)
		}
	}
}
