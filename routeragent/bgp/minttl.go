package bgp

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// gtsmTTL is the TTL of GTSM (RFC 5082) for single-hop peers: a packet
// that crossed a router arrives with 254 or less.
const gtsmTTL = 255

// ttlSecurity is GoBGP's TTL security for n. GoBGP sends with TTL 255 and
// sets IP_MINTTL (IPV6_MINHOPCOUNT) on the session's socket, for address:
// neighbours and for dynamic ones alike (a dynamic peer copies its peer
// group's ttl-security config, oc.OverwriteNeighborConfigWithPeerGroup).
// On an accepted connection GoBGP does so only after accept (fsm active
// state, setPeerConnTTL): the handshake, and an OPEN the peer sent right
// after it, get through before that. setListenerMinTTL closes that gap.
func ttlSecurity(n Neighbor) *api.TtlSecurity {
	if !n.TTLSecurity {
		return nil
	}
	return &api.TtlSecurity{Enabled: true, TtlMin: gtsmTTL}
}

// listenerMinTTL is the minimum TTL the BGP listeners should demand: 255
// when every neighbour uses TTL security, else 0 (none). The kernel checks
// a listener's IP_MINTTL against each SYN (tcp_v4_rcv: below it the SYN is
// dropped and TcpExt TCPMinTTLDrop counted) and accepted sockets inherit it,
// but a listener is shared by all neighbours: with one neighbour without
// TTL security, only GoBGP's per-session setting applies (see ttlSecurity).
func listenerMinTTL(cfg Config) int {
	if len(cfg.Neighbors) == 0 {
		return 0
	}
	for _, n := range cfg.Neighbors {
		if !n.TTLSecurity {
			return 0
		}
	}
	return gtsmTTL
}

// applyListenerMinTTL sets the BGP listeners' minimum TTL for cfg and logs
// the outcome. GoBGP neither exposes its listening sockets nor sets a
// minimum TTL on them, so they are found among this process's file
// descriptors (see setListenerMinTTL).
func (s *Speaker) applyListenerMinTTL(cfg Config) {
	if cfg.ListenPort <= 0 {
		return
	}
	ttl := listenerMinTTL(cfg)
	n, err := setListenerMinTTL(int(cfg.ListenPort), s.ns, ttl)
	switch {
	case err != nil:
		s.log.Warn("cannot set the minimum TTL of the BGP listeners; GoBGP still sets it on each session", "ttl", ttl, "err", err)
	case n == 0:
		s.log.Warn("found no BGP listener to set the minimum TTL on; GoBGP still sets it on each session", "ttl", ttl, "port", cfg.ListenPort)
	default:
		s.log.Debug("set the minimum TTL of the BGP listeners", "ttl", ttl, "listeners", n)
	}
}

// setListenerMinTTL sets IP_MINTTL (IPv4) or IPV6_MINHOPCOUNT (IPv6) to ttl
// (0 turns it off) on every listening TCP socket of this process bound to
// port in network namespace ns (nil: the calling thread's). It returns how
// many it changed. Each descriptor is duplicated before it is examined, so
// a socket GoBGP closes meanwhile cannot be confused with a new one that
// reuses its number.
func setListenerMinTTL(port int, ns *netns.NsHandle, ttl int) (int, error) {
	want, err := nsID(ns)
	if err != nil {
		return 0, err
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, fmt.Errorf("list file descriptors: %w", err)
	}
	n := 0
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if link, err := os.Readlink("/proc/self/fd/" + e.Name()); err != nil || !strings.HasPrefix(link, "socket:") {
			continue
		}
		ok, err := setIfListener(fd, port, want, ttl)
		if err != nil {
			return n, err
		}
		if ok {
			n++
		}
	}
	return n, nil
}

// setIfListener sets the minimum TTL on fd (through a duplicate) when it is
// a listening TCP socket on port in the namespace want.
func setIfListener(fd, port int, want nsKey, ttl int) (bool, error) {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return false, nil // closed meanwhile
	}
	defer func() { _ = unix.Close(dup) }() // a duplicate: closing it cannot lose data
	if v, err := unix.GetsockoptInt(dup, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || v != 1 {
		return false, nil
	}
	if v, err := unix.GetsockoptInt(dup, unix.SOL_SOCKET, unix.SO_PROTOCOL); err != nil || v != unix.IPPROTO_TCP {
		return false, nil
	}
	sa, err := unix.Getsockname(dup)
	if err != nil {
		return false, nil
	}
	level, opt := unix.IPPROTO_IP, unix.IP_MINTTL
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		if a.Port != port {
			return false, nil
		}
	case *unix.SockaddrInet6:
		if a.Port != port {
			return false, nil
		}
		level, opt = unix.IPPROTO_IPV6, unix.IPV6_MINHOPCOUNT
	default:
		return false, nil
	}
	if ok, err := inNS(dup, want); err != nil || !ok {
		return false, err
	}
	if err := unix.SetsockoptInt(dup, level, opt, ttl); err != nil {
		return false, fmt.Errorf("set minimum TTL %d on the listener on port %d: %w", ttl, port, err)
	}
	return true, nil
}

// inNS reports whether socket fd lives in the network namespace want.
// SIOCGSKNS opens the socket's namespace: tests run several agents on port
// 179 in one process, one per namespace. It needs CAP_NET_ADMIN; without
// it (an unprivileged test) the socket is taken to be in want when want is
// the process's own namespace (want.strict false), where the agent runs.
func inNS(fd int, want nsKey) (bool, error) {
	nsfd, err := unix.IoctlRetInt(fd, unix.SIOCGSKNS)
	if errors.Is(err, unix.EPERM) && !want.strict {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("network namespace of a listener: %w", err)
	}
	var st unix.Stat_t
	err = unix.Fstat(nsfd, &st)
	_ = unix.Close(nsfd) // read-only namespace handle
	if err != nil {
		return false, fmt.Errorf("network namespace of a listener: %w", err)
	}
	return st.Dev == want.st.Dev && st.Ino == want.st.Ino, nil
}

// nsKey identifies a network namespace; strict when it was given (InNetNS)
// rather than the caller's own.
type nsKey struct {
	st     unix.Stat_t
	strict bool
}

// nsID identifies a network namespace (ns, or the calling thread's).
func nsID(ns *netns.NsHandle) (nsKey, error) {
	var k nsKey
	if ns != nil {
		k.strict = true
		if err := unix.Fstat(int(*ns), &k.st); err != nil {
			return k, fmt.Errorf("network namespace: %w", err)
		}
		return k, nil
	}
	if err := unix.Stat("/proc/thread-self/ns/net", &k.st); err != nil {
		return k, fmt.Errorf("network namespace: %w", err)
	}
	return k, nil
}
