package doctor

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// BFDControlPort is RFC 5881's UDP port for single-hop BFD control packets.
const BFDControlPort = 3784

// BFDInput is what the BFD check looks at (neighbors[].bfd, issue 21).
type BFDInput struct {
	// Enabled: some neighbour entry enables BFD.
	Enabled bool
	// AgentAnswered: the running agent's status was read; the rest of
	// the agent's view is empty otherwise.
	AgentAnswered bool
	// Sessions are the agent's BFD sessions.
	Sessions []BFDSession
	// Missing are peers with BFD enabled and an established BGP session
	// but no BFD session (it could not start; the agent logs why).
	Missing []netip.Addr
	// RxPackets counts the control packets the agent received.
	RxPackets uint64
	// Bound says whether a socket on this host is bound to UDP 3784
	// (IPv4 or IPv6); BoundErr is why it could not be read.
	Bound    bool
	BoundErr error
}

// BFDSession is one of the agent's sessions.
type BFDSession struct {
	Peer  netip.Addr
	State string // up, down, init, adminDown
	Diag  string
}

// CheckBFD checks that BFD runs where it is enabled: UDP 3784 bound, a
// session for every established speaker, packets arriving, sessions Up.
// Pure.
func CheckBFD(in BFDInput) []Finding {
	if !in.Enabled || !in.AgentAnswered {
		return nil // the agent check already says it does not answer
	}
	const fixSpeakers = "the speakers must run BFD too (BGPPeer spec.bfd; FRR: \"neighbor ROUTER bfd\"), with the " +
		"router's address as peer; the firewall must accept UDP 3784 from the LAN (ferm: proto udp dport 3784 ACCEPT)"
	var out []Finding
	if len(in.Missing) > 0 {
		out = append(out, Finding{Check: "bfd", Status: Fail,
			Message: fmt.Sprintf("no BFD session for %s although BFD is enabled and BGP is established: the session could not start", addrList(in.Missing)),
			Fix:     "journalctl -u bgplb-routeragent | grep bfd; ss -ulpn 'sport = :3784' (another BFD daemon, such as FRR's bfdd, may hold the port)"})
	}
	if len(in.Sessions) == 0 {
		if len(in.Missing) == 0 {
			out = append(out, Finding{Check: "bfd", Status: OK, Message: "BFD enabled; no speaker has an established BGP session yet"})
		}
		return out
	}
	switch {
	case in.BoundErr != nil:
		out = append(out, Finding{Check: "bfd", Status: Warn, Message: fmt.Sprintf("cannot tell whether UDP %d is bound: %v", BFDControlPort, in.BoundErr),
			Fix: "ss -ulpn 'sport = :3784'"})
	case !in.Bound:
		out = append(out, Finding{Check: "bfd", Status: Fail,
			Message: fmt.Sprintf("the agent has %d BFD session(s) but nothing on this host is bound to UDP %d", len(in.Sessions), BFDControlPort),
			Fix:     "systemctl restart bgplb-routeragent; journalctl -u bgplb-routeragent | grep bfd"})
	}
	if in.RxPackets == 0 {
		out = append(out, Finding{Check: "bfd", Status: Warn,
			Message: fmt.Sprintf("no BFD control packet received on UDP %d from any of %d speaker(s)", BFDControlPort, len(in.Sessions)),
			Fix:     fixSpeakers})
	}
	var notUp []string
	for _, s := range in.Sessions {
		if s.State != "up" {
			d := s.Peer.String() + " " + s.State
			if s.Diag != "" {
				d += " (" + s.Diag + ")"
			}
			notUp = append(notUp, d)
		}
	}
	if len(notUp) > 0 {
		out = append(out, Finding{Check: "bfd", Status: Warn,
			Message: fmt.Sprintf("%d of %d BFD sessions not Up: %s", len(notUp), len(in.Sessions), strings.Join(first(notUp, 10), ", ")),
			Fix:     fixSpeakers})
	}
	if len(out) == 0 {
		out = append(out, Finding{Check: "bfd", Status: OK,
			Message: fmt.Sprintf("%d BFD session(s) Up on UDP %d", len(in.Sessions), BFDControlPort)})
	}
	return out
}

func addrList(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(first(s, 10), ", ")
}

func first(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("… %d more", len(s)-n))
	}
	return s
}

// UDPPortBound reports whether a UDP socket of this network namespace is
// bound to port, from /proc/net/udp and /proc/net/udp6 (a host without
// IPv6 has no udp6).
func UDPPortBound(port int) (bool, error) {
	for _, p := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return false, err
		}
		bound, err := udpTableHasPort(f, port)
		f.Close()
		if err != nil {
			return false, fmt.Errorf("%s: %w", p, err)
		}
		if bound {
			return true, nil
		}
	}
	return false, nil
}

// udpTableHasPort reads a /proc/net/udp table: after a header line, each
// line's second field is local_address as HEXADDR:HEXPORT.
func udpTableHasPort(r io.Reader, port int) (bool, error) {
	sc := bufio.NewScanner(r)
	sc.Scan() // header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		_, hexPort, ok := strings.Cut(f[1], ":")
		if !ok {
			continue
		}
		if p, err := strconv.ParseUint(hexPort, 16, 16); err == nil && int(p) == port {
			return true, nil
		}
	}
	return false, sc.Err()
}
