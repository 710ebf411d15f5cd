package config

import (
	"errors"
	"strings"
	"testing"
)

// TestFirewallModes: verify is accepted next to exempt and off; anything
// else is refused naming the key and the three modes.
func TestFirewallModes(t *testing.T) {
	for _, mode := range []FirewallMode{FirewallExempt, FirewallOff, FirewallVerify} {
		c, err := Parse([]byte(minimal + "firewall:\n  mode: " + string(mode) + "\n"))
		if err != nil {
			t.Fatalf("mode %s: %v", mode, err)
		}
		if c.Firewall.Mode != mode {
			t.Errorf("mode %s parsed as %q", mode, c.Firewall.Mode)
		}
	}
	_, err := Parse([]byte(minimal + "firewall:\n  mode: verfy\n"))
	var es Errors
	if !errors.As(err, &es) || len(es) != 1 {
		t.Fatalf("mode verfy: %v, want one error", err)
	}
	if es[0].Path != "firewall.mode" || !strings.Contains(es[0].Msg, "exempt, off, verify") || es[0].Line == 0 {
		t.Errorf("error %+v, want firewall.mode with its line and the three modes", es[0])
	}
}
