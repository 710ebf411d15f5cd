package doctor

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCheckBFD(t *testing.T) {
	a := netip.MustParseAddr
	up := BFDSession{Peer: a("192.168.2.10"), State: "up"}
	down := BFDSession{Peer: a("192.168.2.11"), State: "down", Diag: "control detection time expired"}
	for _, tc := range []struct {
		name string
		in   BFDInput
		want []string // "status: message prefix"
	}{
		{name: "off", in: BFDInput{AgentAnswered: true, Sessions: []BFDSession{down}}},
		{name: "agent silent", in: BFDInput{Enabled: true}},
		{name: "no session yet", in: BFDInput{Enabled: true, AgentAnswered: true}, want: []string{"ok: BFD enabled; no speaker"}},
		{name: "all up", in: BFDInput{Enabled: true, AgentAnswered: true, Sessions: []BFDSession{up}, RxPackets: 9, Bound: true},
			want: []string{"ok: 1 BFD session(s) Up on UDP 3784"}},
		{name: "one down", in: BFDInput{Enabled: true, AgentAnswered: true, Sessions: []BFDSession{up, down}, RxPackets: 9, Bound: true},
			want: []string{"warn: 1 of 2 BFD sessions not Up: 192.168.2.11 down (control detection time expired)"}},
		{name: "nothing received", in: BFDInput{Enabled: true, AgentAnswered: true, Sessions: []BFDSession{{Peer: a("192.168.2.11"), State: "down"}}, Bound: true},
			want: []string{"warn: no BFD control packet received on UDP 3784 from any of 1 speaker(s)", "warn: 1 of 1 BFD sessions not Up: 192.168.2.11 down"}},
		{name: "not bound", in: BFDInput{Enabled: true, AgentAnswered: true, Sessions: []BFDSession{up}, RxPackets: 1},
			want: []string{"fail: the agent has 1 BFD session(s) but nothing on this host is bound to UDP 3784"}},
		{name: "bound unknown", in: BFDInput{Enabled: true, AgentAnswered: true, Sessions: []BFDSession{up}, RxPackets: 1, BoundErr: errors.New("no /proc")},
			want: []string{"warn: cannot tell whether UDP 3784 is bound: no /proc"}},
		{name: "could not start", in: BFDInput{Enabled: true, AgentAnswered: true, Missing: []netip.Addr{a("192.168.2.12")}},
			want: []string{"fail: no BFD session for 192.168.2.12 although BFD is enabled and BGP is established"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := CheckBFD(tc.in)
			var got []string
			for i, f := range fs {
				got = append(got, f.Status+": "+f.Message)
				if i < len(tc.want) && strings.HasPrefix(got[i], tc.want[i]) {
					got[i] = tc.want[i]
				}
				if f.Status != OK && f.Fix == "" {
					t.Errorf("%s has no fix", f.Message)
				}
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("findings (-want +got):\n%s", d)
			}
		})
	}
}

func TestUDPTableHasPort(t *testing.T) {
	table := `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  591: 00000000:0EC8 00000000:0000 07 00000000:00000000 00:00000000 00000000   107        0 41870 2 0000000000000000 0
  702: 3500007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 17213 2 0000000000000000 0
`
	for port, want := range map[int]bool{3784: true, 53: true, 4784: false} {
		if got, err := udpTableHasPort(strings.NewReader(table), port); err != nil || got != want {
			t.Errorf("port %d: %v %v, want %v", port, got, err, want)
		}
	}
}
