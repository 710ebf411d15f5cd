package cli

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/bgplb/bgplb/routeragent/agent"
)

// printPins writes the connection pinning section of status.
func printPins(w io.Writer, p *agent.PinStatus) {
	if p == nil {
		return
	}
	fmt.Fprintf(w, "\nconnection pinning: %d next hops pinned", len(p.Pinned))
	if p.Overflow > 0 {
		fmt.Fprintf(w, ", %d left unpinned (no free slot)", p.Overflow)
	}
	fmt.Fprintln(w)
	if p.Error != "" {
		fmt.Fprintf(w, "  ERROR: %s\n", p.Error)
	}
	if len(p.Pinned) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  NEXT HOP\tSLOT\tMARK\tTABLE\tSTATE\n")
	for _, n := range p.Pinned {
		state := "announced"
		if n.LingerUntil != nil {
			state = fmt.Sprintf("withdrawn, lingers %s", time.Until(*n.LingerUntil).Round(time.Second))
		}
		fmt.Fprintf(tw, "  %s\t%d\t%#x\t%d\t%s\n", n.NextHop, n.Slot, n.Mark, n.Table, state)
	}
	_ = tw.Flush()
}
