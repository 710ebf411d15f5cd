package config

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// withBFD is minimal with a bfd block (indented under neighbors[0]).
func withBFD(block string) string {
	return strings.Replace(minimal, "asn: 64512", "asn: 64512\n    bfd:\n"+block, 1)
}

// TestBFDDefaults: no block is no BFD; an enabled block without timers
// gets 300ms/300ms/3; given values are kept.
func TestBFDDefaults(t *testing.T) {
	for _, tc := range []struct {
		name    string
		yaml    string
		want    *BFD
		enabled bool
	}{
		{name: "absent", yaml: minimal},
		{name: "enabled", yaml: withBFD("      enabled: true\n"), enabled: true,
			want: &BFD{Enabled: true, ReceiveInterval: 300 * time.Millisecond, TransmitInterval: 300 * time.Millisecond, DetectMultiplier: 3}},
		{name: "disabled block", yaml: withBFD("      enabled: false\n"),
			want: &BFD{ReceiveInterval: 300 * time.Millisecond, TransmitInterval: 300 * time.Millisecond, DetectMultiplier: 3}},
		{name: "all set", yaml: withBFD("      enabled: true\n      receiveInterval: 100ms\n      transmitInterval: 50ms\n      detectMultiplier: 5\n"),
			enabled: true, want: &BFD{Enabled: true, ReceiveInterval: 100 * time.Millisecond, TransmitInterval: 50 * time.Millisecond, DetectMultiplier: 5}},
		{name: "flow style", yaml: withBFD("      {enabled: true, receiveInterval: 1s}\n"), enabled: true,
			want: &BFD{Enabled: true, ReceiveInterval: time.Second, TransmitInterval: 300 * time.Millisecond, DetectMultiplier: 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			n := &c.Neighbors[0]
			if d := cmp.Diff(tc.want, n.BFD); d != "" {
				t.Errorf("bfd (-want +got):\n%s", d)
			}
			if n.BFDEnabled() != tc.enabled || c.AnyBFD() != tc.enabled {
				t.Errorf("BFDEnabled %v AnyBFD %v, want %v", n.BFDEnabled(), c.AnyBFD(), tc.enabled)
			}
		})
	}
}

// TestBFDValidate: each bad value is refused with the key path, its line
// and the allowed range.
func TestBFDValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		block string
		want  []string
	}{
		{name: "edges ok", block: "      enabled: true\n      receiveInterval: 10ms\n      transmitInterval: 60s\n      detectMultiplier: 255\n"},
		{name: "multiplier 1 ok", block: "      enabled: true\n      detectMultiplier: 1\n"},
		{name: "receive too short", block: "      enabled: true\n      receiveInterval: 5ms\n",
			want: []string{"line 9: neighbors[0].bfd.receiveInterval: 5ms is outside 10ms-1m0s (default 300ms)"}},
		{name: "transmit too long", block: "      enabled: true\n      transmitInterval: 2m\n",
			want: []string{"line 9: neighbors[0].bfd.transmitInterval: 2m0s is outside 10ms-1m0s"}},
		{name: "negative interval", block: "      enabled: true\n      transmitInterval: -1s\n",
			want: []string{"neighbors[0].bfd.transmitInterval: -1s is outside"}},
		{name: "sub-microsecond", block: "      enabled: true\n      receiveInterval: 10000500ns\n",
			want: []string{"neighbors[0].bfd.receiveInterval: 10.0005ms is finer than BFD's microseconds"}},
		{name: "multiplier too large", block: "      enabled: true\n      detectMultiplier: 256\n",
			want: []string{"line 9: neighbors[0].bfd.detectMultiplier: 256 is outside 1-255 (default 3)"}},
		{name: "multiplier negative", block: "      enabled: true\n      detectMultiplier: -2\n",
			want: []string{"neighbors[0].bfd.detectMultiplier: -2 is outside 1-255"}},
		{name: "checked when disabled", block: "      enabled: false\n      detectMultiplier: 300\n",
			want: []string{"neighbors[0].bfd.detectMultiplier: 300 is outside 1-255"}},
		{name: "interval without unit", block: "      enabled: true\n      receiveInterval: 300\n",
			want: []string{"line 9: neighbors[0].bfd.receiveInterval: 300 is not a duration; write 300s"}},
		{name: "enabled not bool", block: "      enabled: yes please\n",
			want: []string{`line 8: neighbors[0].bfd.enabled: "yes please" is not true or false`}},
		{name: "typo", block: "      enabled: true\n      detectMultiplyer: 3\n",
			want: []string{"line 9: neighbors[0].bfd.detectMultiplyer: unknown key; did you mean detectMultiplier?"}},
		{name: "echo not offered", block: "      enabled: true\n      echo: true\n",
			want: []string{"neighbors[0].bfd.echo: unknown key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(withBFD(tc.block)))
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	// A bfd value that is not a map.
	_, err := Parse([]byte(strings.Replace(minimal, "asn: 64512", "asn: 64512\n    bfd: true", 1)))
	if err == nil || !strings.Contains(err.Error(), "neighbors[0].bfd: expected a map (keys enabled, receiveInterval, transmitInterval, detectMultiplier)") {
		t.Errorf("bfd: true: %v", err)
	}
}
