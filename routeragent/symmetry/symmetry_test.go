package symmetry

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var (
	t0      = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	service = netip.MustParseAddrPort("192.168.254.1:3142")
	node    = netip.MustParseAddr("192.168.2.20")
)

func hops(a netip.Addr) []netip.Addr {
	if a == service.Addr() {
		return []netip.Addr{node}
	}
	return nil
}

func flow(client string, reply, assured bool) Flow {
	return Flow{Protocol: 6, Client: netip.MustParseAddrPort(client), Service: service, ReplySource: service.Addr(),
		SeenReply: reply, Assured: assured}
}

func TestVerdicts(t *testing.T) {
	tr := NewTracker(Config{})
	st := tr.Observe(t0, nil, 0, true, hops)
	if st.Verdict != NoTraffic {
		t.Fatalf("empty: %+v", st)
	}
	// A SYN seen, no reply yet: within the grace period nothing is said.
	unreplied := flow("192.168.2.109:40000", false, false)
	st = tr.Observe(t0.Add(time.Second), []Flow{unreplied}, 0, true, hops)
	if st.Verdict != NoTraffic || st.Unreplied != 1 || st.Asymmetric != 0 {
		t.Fatalf("within grace: %+v", st)
	}
	// Still no reply after the grace period: asymmetric, naming the node.
	st = tr.Observe(t0.Add(7*time.Second), []Flow{unreplied}, 3, true, hops)
	if st.Verdict != Asymmetric || st.Asymmetric != 1 {
		t.Fatalf("after grace: %+v", st)
	}
	want := []Offender{{Protocol: "tcp", Client: "192.168.2.109:40000", Service: "192.168.254.1:3142", Nodes: []string{"192.168.2.20"},
		FirstSeen: t0.Add(time.Second), LastSeen: t0.Add(7 * time.Second)}}
	if d := cmp.Diff(want, st.Offenders); d != "" {
		t.Errorf("offenders (-want +got):\n%s", d)
	}
	if !strings.Contains(st.Reason, "192.168.2.20") {
		t.Errorf("reason %q does not name the node", st.Reason)
	}
	// The flow expired; the counter rose from its baseline 0 to 3 at the
	// last look: still asymmetric within the window.
	st = tr.Observe(t0.Add(30*time.Second), []Flow{flow("192.168.2.110:40001", true, true)}, 3, true, hops)
	if st.Verdict != Asymmetric || st.Assured != 1 {
		t.Fatalf("within the window: %+v", st)
	}
	// Once the window passed with a flat counter: symmetric.
	st = tr.Observe(t0.Add(10*time.Minute), []Flow{flow("192.168.2.110:40001", true, true)}, 3, true, hops)
	if st.Verdict != Symmetric || len(st.Offenders) != 1 {
		t.Fatalf("after the window: %+v", st)
	}
	// A rebuilt counting table (counter back to 0) is a new baseline.
	st = tr.Observe(t0.Add(11*time.Minute), nil, 0, true, hops)
	if st.Verdict != Symmetric {
		t.Fatalf("after a counter reset: %+v", st)
	}
}

func TestInvalidRiseAlone(t *testing.T) {
	tr := NewTracker(Config{})
	tr.Observe(t0, []Flow{flow("192.168.2.110:1", true, true)}, 10, true, hops)
	if st := tr.Observe(t0.Add(2*time.Second), nil, 10, true, hops); st.Verdict != Symmetric {
		t.Fatalf("flat: %+v", st)
	}
	st := tr.Observe(t0.Add(4*time.Second), nil, 11, true, hops)
	if st.Verdict != Asymmetric || !strings.Contains(st.Reason, "INVALID") {
		t.Fatalf("rise: %+v", st)
	}
	// Unknown counter: no rise is invented.
	tr2 := NewTracker(Config{})
	tr2.Observe(t0, []Flow{flow("192.168.2.110:1", true, true)}, 0, false, hops)
	if st := tr2.Observe(t0.Add(time.Second), nil, 0, false, hops); st.Verdict != Symmetric || st.InvalidKnown {
		t.Fatalf("unknown counter: %+v", st)
	}
}

// TestBounded: unreplied flows beyond MaxTracked are counted, not kept;
// the offenders list keeps the newest MaxOffenders.
func TestBounded(t *testing.T) {
	tr := NewTracker(Config{MaxTracked: 10, MaxOffenders: 3})
	var flows []Flow
	for i := range 25 {
		flows = append(flows, Flow{Protocol: 17, Client: netip.AddrPortFrom(netip.MustParseAddr("192.168.2.109"), uint16(1000+i)), Service: service})
	}
	st := tr.Observe(t0, flows, 0, true, hops)
	if st.Unreplied != 10 || st.Untracked != 15 || len(tr.pending) != 10 {
		t.Fatalf("first look: %+v, pending %d", st, len(tr.pending))
	}
	st = tr.Observe(t0.Add(time.Minute), flows, 0, true, hops)
	if st.Asymmetric != 10 || len(st.Offenders) != 3 || st.Offenders[0].Protocol != "udp" {
		t.Fatalf("second look: %+v", st)
	}
	// Flows gone: forgotten.
	tr.Observe(t0.Add(2*time.Minute), nil, 0, true, hops)
	if len(tr.pending) != 0 {
		t.Errorf("pending %d after the flows went", len(tr.pending))
	}
}

func TestInSubnets(t *testing.T) {
	in := []Flow{
		{Service: netip.MustParseAddrPort("192.168.254.2:80"), Client: netip.MustParseAddrPort("10.0.0.1:1")},
		{Service: netip.MustParseAddrPort("8.8.8.8:53"), Client: netip.MustParseAddrPort("10.0.0.1:2")},
		{Service: netip.MustParseAddrPort("192.168.254.1:80"), Client: netip.MustParseAddrPort("10.0.0.1:3")},
	}
	got := InSubnets(in, []netip.Prefix{netip.MustParsePrefix("192.168.254.0/24")})
	if len(got) != 2 || got[0].Service.Addr() != netip.MustParseAddr("192.168.254.1") {
		t.Errorf("%+v", got)
	}
}
