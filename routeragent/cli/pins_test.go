package cli

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/bgplb/bgplb/routeragent/agent"
)

func TestPrintPins(t *testing.T) {
	var b strings.Builder
	printPins(&b, nil)
	if b.Len() != 0 {
		t.Fatalf("pinning off printed %q", b.String())
	}
	until := time.Now().Add(42 * time.Second)
	w := time.Now()
	printPins(&b, &agent.PinStatus{Overflow: 1, Error: "nft: busy", Pinned: []agent.PinnedNextHop{
		{NextHop: netip.MustParseAddr("192.168.2.20"), Slot: 2, Mark: 2 << 24, Table: 0x62700002, Withdrawn: &w, LingerUntil: &until},
		{NextHop: netip.MustParseAddr("192.168.2.21"), Slot: 1, Mark: 1 << 24, Table: 0x62700001},
	}})
	out := b.String()
	for _, want := range []string{"connection pinning: 2 next hops pinned, 1 left unpinned", "ERROR: nft: busy",
		"192.168.2.20  2     0x2000000  1651507202  withdrawn, lingers 4", "192.168.2.21  1     0x1000000  1651507201  announced"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
}
