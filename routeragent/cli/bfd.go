package cli

import (
	"fmt"
	"io"

	"github.com/bgplb/bgplb/routeragent/config"
)

// printBFDConfig is check-config's view of neighbors[].bfd: one line per
// entry that runs BFD, with the timers in force (defaults filled), so
// that the values the speakers must match are in front of the operator.
func printBFDConfig(w io.Writer, c *config.Config) {
	if !c.AnyBFD() {
		return
	}
	fmt.Fprintln(w, "bfd (the speakers must run BFD too):")
	for i := range c.Neighbors {
		n := &c.Neighbors[i]
		if !n.BFDEnabled() {
			continue
		}
		what := n.Address
		if what == "" {
			what = n.Prefix
		}
		b := n.BFD
		fmt.Fprintf(w, "  neighbors[%d] (%s): receiveInterval %s, transmitInterval %s, detectMultiplier %d\n",
			i, what, b.ReceiveInterval, b.TransmitInterval, b.DetectMultiplier)
	}
}
