package doctor

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/firewall"
	"github.com/bgplb/bgplb/routeragent/symmetry"
)

func find(fs []Finding, check string) []Finding {
	var out []Finding
	for _, f := range fs {
		if f.Check == check {
			out = append(out, f)
		}
	}
	return out
}

// TestVerifyMode: in verify mode the INVALID drop without our exemption is
// what we want; our exemption left in place fails; the symmetry check fails
// on asymmetric traffic with the fix, passes on assured flows, and warns
// while nothing is proven.
func TestVerifyMode(t *testing.T) {
	at := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	asym := &symmetry.Status{Verdict: symmetry.Asymmetric, Reason: "1 service flow(s) got no reply", Asymmetric: 1,
		Offenders:      []symmetry.Offender{{Protocol: "tcp", Client: "192.168.2.109:40000", Service: "192.168.254.1:3142", Nodes: []string{"192.168.2.20"}, FirstSeen: at, LastSeen: at}},
		InvalidPackets: 7, InvalidKnown: true}
	sym := &symmetry.Status{Verdict: symmetry.Symmetric, Reason: "3 service flow(s) assured", Assured: 3, InvalidKnown: true}
	for _, tc := range []struct {
		name          string
		legacy        Listing
		sym           *SymmetryInput
		fw, symStatus string
		symWords      []string
	}{
		{"asymmetric", listing(drop, estab), &SymmetryInput{Status: asym}, OK, Fail,
			[]string{"192.168.2.20", "returnPath: symmetric", "firewall.mode: exempt", "7 INVALID"}},
		{"symmetric", listing(drop, estab), &SymmetryInput{Status: sym}, OK, OK, []string{"symmetric"}},
		{"no traffic yet", listing(drop, estab), &SymmetryInput{Status: &symmetry.Status{Verdict: symmetry.NoTraffic, Reason: "no service flow seen yet"}}, OK, Warn, []string{"connect a client"}},
		{"exemptions left behind", listing("-N BGPLB-EXEMPT", jump, drop, estab, exempt), &SymmetryInput{Status: sym}, Fail, OK, nil},
		{"agent not in verify mode yet", listing(drop, estab), &SymmetryInput{}, OK, Warn, []string{"reload"}},
		{"agent down", listing(drop, estab), nil, OK, Warn, []string{"does not answer"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := healthy()
			in.FirewallMode = config.FirewallVerify
			in.Firewall = map[firewall.Backend]Listing{firewall.Legacy: tc.legacy, firewall.NFT: listing()}
			in.Symmetry = tc.sym
			fs := Run(context.Background(), in)
			fw := find(fs, "firewall")
			if len(fw) != 1 || fw[0].Status != tc.fw {
				t.Errorf("firewall findings %+v, want one %s", fw, tc.fw)
			}
			sy := find(fs, "symmetry")
			if len(sy) != 1 || sy[0].Status != tc.symStatus {
				t.Fatalf("symmetry findings %+v, want one %s", sy, tc.symStatus)
			}
			for _, w := range tc.symWords {
				if !strings.Contains(sy[0].Message+" "+sy[0].Fix, w) {
					t.Errorf("symmetry finding %+v lacks %q", sy[0], w)
				}
			}
		})
	}
	// Other modes have no symmetry check.
	if fs := find(Run(context.Background(), healthy()), "symmetry"); len(fs) != 0 {
		t.Errorf("exempt mode: %+v", fs)
	}
}
