package cli

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/bgplb/bgplb/routeragent/agent"
	"github.com/bgplb/bgplb/routeragent/bgp"
	"github.com/bgplb/bgplb/routeragent/doctor"
)

func TestAgentFindings(t *testing.T) {
	p := netip.MustParsePrefix
	peer := func(up bool) agent.PeerStatus { return agent.PeerStatus{PeerState: bgp.PeerState{Up: up}} }
	routes := agent.RouteSummary{Desired: 4, Installed: 2, List: []agent.RouteStatus{
		{Prefix: p("192.168.254.1/32"), State: "installed"},
		{Prefix: p("192.168.254.2/32"), State: "stale"},
		{Prefix: p("192.168.254.3/32"), State: "conflict"},
		{Prefix: p("192.168.254.4/32"), State: "pending"},
	}}
	cfg := agent.StatusConfig{ASN: 64500, ListenPort: 179}
	for _, tc := range []struct {
		name       string
		st         agent.Status
		err        error
		want       []doctor.Finding
		wantRoutes *doctor.Routes
	}{
		{
			name: "agent down",
			err:  errors.New("connection refused"),
			want: []doctor.Finding{{Check: "agent", Status: doctor.Fail,
				Message: "the agent does not answer on /run/x.sock: connection refused",
				Fix:     "systemctl start bgplb-routeragent; journalctl -u bgplb-routeragent"}},
		},
		{
			name: "no session",
			st:   agent.Status{Config: cfg, Peers: []agent.PeerStatus{peer(false)}},
			want: []doctor.Finding{{Check: "bgp", Status: doctor.Warn, Message: "no speaker has an established session",
				Fix: "check the speakers' BGPPeer (router address, port 179, ASN 64500) and that TCP 179 reaches this router"}},
			wantRoutes: &doctor.Routes{},
		},
		{
			name:       "sessions and routes",
			st:         agent.Status{Config: cfg, Peers: []agent.PeerStatus{peer(true), peer(false), peer(true)}, Routes: routes},
			want:       []doctor.Finding{{Check: "bgp", Status: doctor.OK, Message: "2 of 3 speakers established"}},
			wantRoutes: &doctor.Routes{Desired: 4, Installed: 2, Missing: []netip.Prefix{p("192.168.254.3/32"), p("192.168.254.4/32")}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, rts := agentFindings("/run/x.sock", tc.st, tc.err)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("findings (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantRoutes, rts, cmpopts.EquateComparable(netip.Prefix{})); diff != "" {
				t.Errorf("routes (-want +got):\n%s", diff)
			}
		})
	}
}
