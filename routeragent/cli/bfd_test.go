package cli

import (
	"bytes"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/bgplb/bgplb/routeragent/agent"
	"github.com/bgplb/bgplb/routeragent/bgp"
)

// check-config prints the BFD timers in force for each entry that runs
// BFD (defaults filled), and nothing about entries that do not.
func TestCheckConfigPrintsBFD(t *testing.T) {
	p := writeConfig(t, `asn: 64500
routerID: 192.168.2.1
neighbors:
  - {prefix: 192.168.2.0/24, asn: 64512, allowUnauthenticated: true, bfd: {enabled: true}}
  - {address: 192.168.3.7, asn: 64513, bfd: {enabled: true, receiveInterval: 100ms, detectMultiplier: 5}}
  - {address: 192.168.3.8, asn: 64513, bfd: {enabled: false}}
serviceSubnets: [192.168.254.0/24]
lanInterfaces: [lan0]
`)
	var out, errb bytes.Buffer
	if code := Main([]string{"check-config", "--config", p}, &out, &errb); code != ExitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{
		"bfd (the speakers must run BFD too):\n" +
			"  neighbors[0] (192.168.2.0/24): receiveInterval 300ms, transmitInterval 300ms, detectMultiplier 3\n" +
			"  neighbors[1] (192.168.3.7): receiveInterval 100ms, transmitInterval 300ms, detectMultiplier 5\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("stdout lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "neighbors[2] (192.168.3.8): receive") {
		t.Errorf("disabled entry printed:\n%s", out.String())
	}
}

// status prints one BFD line per peer with a session: state, diag, the
// timers and whether its next hops are withdrawn.
func TestPrintBFD(t *testing.T) {
	a := netip.MustParseAddr
	peers := []agent.PeerStatus{
		{PeerState: bgp.PeerState{Address: a("192.168.2.10")}, BFD: &agent.PeerBFD{State: "up", RemoteState: "up",
			ReceiveInterval: "300ms", TransmitInterval: "300ms", DetectMultiplier: 3, TxInterval: "300ms", DetectTime: "900ms"}},
		{PeerState: bgp.PeerState{Address: a("192.168.2.11")}, BFD: &agent.PeerBFD{State: "down", RemoteState: "down",
			Diag: "control detection time expired", ReceiveInterval: "300ms", TransmitInterval: "300ms", DetectMultiplier: 3,
			TxInterval: "1s", DetectTime: "0s", Resets: 1, Withdrawn: true}},
		{PeerState: bgp.PeerState{Address: a("192.168.2.12")}},
	}
	sum := &agent.BFDSummary{Sessions: map[string]int{"up": 1, "down": 1}, DownEvents: 1, Resets: 1, Missing: []netip.Addr{a("192.168.2.13")}}
	var b bytes.Buffer
	printBFD(&b, peers, sum)
	out := b.String()
	if !strings.Contains(out, "bfd: 1 up, 1 down, 0 init; 1 down events, 1 BGP resets since start\n") {
		t.Errorf("no summary line:\n%s", out)
	}
	var rows []string
	for _, l := range strings.Split(out, "\n") {
		rows = append(rows, strings.Join(strings.Fields(l), " "))
	}
	for _, want := range []string{
		"192.168.2.10 up up - 300ms/300ms/3 300ms 900ms 0 in use",
		"192.168.2.11 down down control detection time expired 300ms/300ms/3 1s 0s 1 WITHDRAWN (BFD down)",
		"192.168.2.13 none - - - - - - in use (BFD could not start; see the log)",
	} {
		if !slices.Contains(rows, want) {
			t.Errorf("no row %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "192.168.2.12") {
		t.Errorf("a peer without BFD printed:\n%s", out)
	}
	b.Reset()
	printBFD(&b, peers, nil)
	if b.Len() != 0 {
		t.Errorf("printed without BFD: %q", b.String())
	}
}
