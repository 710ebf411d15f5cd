package cli

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/bgplb/bgplb/routeragent/agent"
	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/doctor"
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

// bfdInput is doctor's BFD check input: the config, the agent's status
// (answered: it was read) and whether UDP 3784 is bound here.
func bfdInput(c *config.Config, st agent.Status, answered bool) doctor.BFDInput {
	in := doctor.BFDInput{Enabled: c.AnyBFD(), AgentAnswered: answered}
	if !in.Enabled || !answered {
		return in
	}
	in.Bound, in.BoundErr = doctor.UDPPortBound(doctor.BFDControlPort)
	if st.BFD != nil {
		in.Missing, in.RxPackets = st.BFD.Missing, st.BFD.Counters.RxPackets
	}
	for _, p := range st.Peers {
		if p.BFD != nil {
			in.Sessions = append(in.Sessions, doctor.BFDSession{Peer: p.Address, State: p.BFD.State, Diag: p.BFD.Diag})
		}
	}
	return in
}

// printBFD is status's BFD section: one line per session.
func printBFD(w io.Writer, peers []agent.PeerStatus, sum *agent.BFDSummary) {
	if sum == nil {
		return
	}
	fmt.Fprintf(w, "\nbfd: %d up, %d down, %d init; %d down events, %d BGP resets since start\n",
		sum.Sessions["up"], sum.Sessions["down"]+sum.Sessions["adminDown"], sum.Sessions["init"], sum.DownEvents, sum.Resets)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  PEER\tSTATE\tREMOTE\tDIAG\tTIMERS (RX/TX/MULT)\tTX\tDETECT\tRESETS\tNEXT HOPS\n")
	for _, p := range peers {
		b := p.BFD
		if b == nil {
			continue
		}
		diag := b.Diag
		if diag == "" {
			diag = "-"
		}
		nh := "in use"
		if b.Withdrawn {
			nh = "WITHDRAWN (BFD down)"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s/%s/%d\t%s\t%s\t%d\t%s\n", p.Address, b.State, b.RemoteState, diag,
			b.ReceiveInterval, b.TransmitInterval, b.DetectMultiplier, b.TxInterval, b.DetectTime, b.Resets, nh)
	}
	for _, a := range sum.Missing {
		fmt.Fprintf(tw, "  %s\tnone\t-\t-\t-\t-\t-\t-\tin use (BFD could not start; see the log)\n", a)
	}
	tw.Flush()
}
