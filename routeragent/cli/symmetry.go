package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bgplb/bgplb/routeragent/agent"
	"github.com/bgplb/bgplb/routeragent/doctor"
	"github.com/bgplb/bgplb/routeragent/firewall"
	"github.com/bgplb/bgplb/routeragent/symmetry"
)

// printInvalidCounters prints verify mode's INVALID counters under the
// firewall line.
func printInvalidCounters(w io.Writer, f *firewall.Status) {
	if len(f.Invalid) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  INVALID (COUNTED, NOT ACCEPTED)\tSUBNET\tPACKETS\tBYTES\n")
	for _, c := range f.Invalid {
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\n", c.Direction, c.Subnet, c.Packets, c.Bytes)
	}
	tw.Flush()
}

// printSymmetry prints verify mode's symmetry section.
func printSymmetry(w io.Writer, s *symmetry.Status) {
	if s == nil {
		return
	}
	fmt.Fprintf(w, "symmetry: %s (%s)\n", strings.ToUpper(s.Verdict), s.Reason)
	inv := "unknown"
	if s.InvalidKnown {
		inv = fmt.Sprint(s.InvalidPackets)
		if !s.LastInvalidRise.IsZero() {
			inv += fmt.Sprintf(", last rise %s ago", time.Since(s.LastInvalidRise).Round(time.Second))
		}
	}
	fmt.Fprintf(w, "  service flows %d: assured %d, replied %d, unreplied %d, asymmetric %d; INVALID service packets %s\n",
		s.Flows, s.Assured, s.Replied, s.Unreplied, s.Asymmetric, inv)
	if s.Untracked > 0 {
		fmt.Fprintf(w, "  %d unreplied flows not tracked (over the limit)\n", s.Untracked)
	}
	if s.LastError != "" {
		fmt.Fprintf(w, "  ERROR %s\n", s.LastError)
	}
	if len(s.Offenders) == 0 {
		fmt.Fprintln(w)
		return
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  ASYMMETRIC FLOWS (newest first)\tPROTO\tSERVICE\tNODE\tLAST SEEN\n")
	for _, o := range s.Offenders {
		node := strings.Join(o.Nodes, ",")
		if node == "" {
			node = "-"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", o.Client, o.Protocol, o.Service, node, o.LastSeen.Format(time.RFC3339))
	}
	tw.Flush()
	fmt.Fprintln(w)
}

// symmetryInput is what doctor's symmetry check needs from the running
// agent's status (nil when it does not answer).
func symmetryInput(st agent.Status, err error) *doctor.SymmetryInput {
	if err != nil {
		return nil
	}
	return &doctor.SymmetryInput{Status: st.Symmetry}
}
