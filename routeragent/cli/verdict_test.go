package cli

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bgplb/bgplb/routeragent/agent"
	"github.com/bgplb/bgplb/routeragent/bgp"
)

// TestPrintPeersVerdicts: status shows per neighbour how many verdicts it
// was sent, or that it cannot receive them, or nothing while it is down;
// the JSON carries the same.
func TestPrintPeersVerdicts(t *testing.T) {
	peers := []agent.PeerStatus{
		{PeerState: bgp.PeerState{Address: netip.MustParseAddr("192.168.2.20"), ASN: 64512, State: "established"},
			Accepted: 3, Verdicts: &agent.PeerVerdicts{Sent: 3, AddPathReceive: true}},
		{PeerState: bgp.PeerState{Address: netip.MustParseAddr("192.168.2.21"), ASN: 64512, State: "established"},
			Accepted: 1, Verdicts: &agent.PeerVerdicts{}},
		{PeerState: bgp.PeerState{Address: netip.MustParseAddr("192.168.2.22"), ASN: 64512, State: "idle"}},
	}
	var b bytes.Buffer
	printPeers(&b, peers)
	want := []string{
		"PEER ASN STATE SINCE EOR RECEIVED ACCEPTED VERDICTS REJECTED",
		"192.168.2.20 64512 established - false 0 3 3",
		"192.168.2.21 64512 established - false 0 1 no add-path",
		"192.168.2.22 64512 idle - false 0 0 -",
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		got = append(got, squeeze(l))
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	js, err := json.Marshal(peers[0])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(js), `"verdicts":{"sent":3,"addPathReceive":true}`) {
		t.Errorf("JSON %s has no verdicts", js)
	}
}
