package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/bgplb/bgplb/routeragent/agent"
	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/firewall"
	"github.com/bgplb/bgplb/routeragent/symmetry"
)

// check-config accepts firewall.mode verify and says what it means.
func TestCheckConfigVerify(t *testing.T) {
	p := writeConfig(t, validConfig+"firewall: {mode: verify}\n")
	var out, errb bytes.Buffer
	if code := Main([]string{"check-config", "--config", p}, &out, &errb); code != ExitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, w := range []string{"adds no ACCEPT rule", "returnPath: symmetric", "inet bgplb_verify", p + ": ok"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("output lacks %q:\n%s", w, out.String())
		}
	}
}

// The status table of verify mode shows the counters, the verdict and the
// node of each asymmetric flow.
func TestPrintStatusVerify(t *testing.T) {
	at := time.Now()
	s := agent.Status{Config: agent.StatusConfig{FirewallMode: config.FirewallVerify},
		Firewall: &firewall.Status{Mode: config.FirewallVerify, Backend: "nftables", Table: "inet bgplb_verify", Chain: "count_invalid",
			Invalid: []firewall.InvalidCount{{Subnet: "192.168.254.0/24", Direction: "to", Packets: 5, Bytes: 260}}},
		Symmetry: &symmetry.Status{Verdict: symmetry.Asymmetric, Reason: "1 service flow(s) got no reply", Flows: 1, Asymmetric: 1,
			InvalidPackets: 5, InvalidKnown: true, LastInvalidRise: at,
			Offenders: []symmetry.Offender{{Protocol: "tcp", Client: "192.168.2.109:40000", Service: "192.168.254.1:3142",
				Nodes: []string{"192.168.2.20"}, FirstSeen: at, LastSeen: at}}},
	}
	var out bytes.Buffer
	PrintStatus(&out, s, false)
	for _, w := range []string{"INVALID (COUNTED, NOT ACCEPTED)", "symmetry: ASYMMETRIC", "asymmetric 1", "192.168.2.109:40000", "192.168.2.20", "INVALID service packets 5"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("status lacks %q:\n%s", w, out.String())
		}
	}
}
