package bfd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// Transport opens the UDP sockets of RFC 5881. It is the Manager's only
// side-effect boundary besides timers; tests wrap it to open the sockets
// inside a network namespace.
type Transport interface {
	// ListenControl opens the receive socket of one address family on
	// UDP port 3784, reporting each packet's TTL or hop limit.
	ListenControl(ipv6 bool) (PacketReader, error)
	// OpenSender opens a socket to send one session's packets from local,
	// from a source port in 49152–65535 with TTL 255, bound to iface when
	// it is set.
	OpenSender(local netip.Addr, iface string) (PacketWriter, error)
}

// PacketReader reads control packets. ReadPacket must not allocate.
type PacketReader interface {
	// ReadPacket reads one packet into b and returns its length, source
	// and the TTL (hop limit) it arrived with (-1 when unknown).
	ReadPacket(b []byte) (n int, src netip.AddrPort, ttl int, err error)
	Close() error
}

// PacketWriter sends control packets. WritePacket must not allocate.
type PacketWriter interface {
	WritePacket(b []byte, dst netip.AddrPort) error
	Close() error
}

// Port numbers of RFC 5881 section 4.
const (
	ControlPort   = 3784
	srcPortMin    = 49152
	srcPortMax    = 65535
	requiredTTL   = 255
	oobBufferSize = 64
)

// KernelTransport is the Transport over the kernel's UDP sockets.
type KernelTransport struct{}

var _ Transport = KernelTransport{}

// ListenControl implements Transport.
func (KernelTransport) ListenControl(ipv6 bool) (PacketReader, error) {
	network, addr := "udp4", fmt.Sprintf("0.0.0.0:%d", ControlPort)
	if ipv6 {
		// Go sets IPV6_V6ONLY on udp6 sockets, so this does not take the
		// IPv4 packets of the other socket.
		network, addr = "udp6", fmt.Sprintf("[::]:%d", ControlPort)
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		return setsockopt(c, func(fd int) error {
			// RFC 5881 section 5: the TTL/hop limit of every received
			// packet is checked to be 255, so the kernel reports it.
			if ipv6 {
				return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, 1)
			}
			return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_RECVTTL, 1)
		})
	}}
	pc, err := lc.ListenPacket(context.Background(), network, addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s %s: %w", network, addr, err)
	}
	return &udpReader{c: pc.(*net.UDPConn), oob: make([]byte, oobBufferSize)}, nil
}

// OpenSender implements Transport.
func (KernelTransport) OpenSender(local netip.Addr, iface string) (PacketWriter, error) {
	network := "udp4"
	if local.Is6() && !local.Is4In6() {
		network = "udp6"
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		return setsockopt(c, func(fd int) error {
			// RFC 5881 section 5: sent with TTL/hop limit 255, so that the
			// peer can tell the packet comes from the link itself.
			if network == "udp6" {
				if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, requiredTTL); err != nil {
					return fmt.Errorf("IPV6_UNICAST_HOPS: %w", err)
				}
			} else if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TTL, requiredTTL); err != nil {
				return fmt.Errorf("IP_TTL: %w", err)
			}
			if iface != "" {
				if err := unix.BindToDevice(fd, iface); err != nil {
					return fmt.Errorf("SO_BINDTODEVICE %s: %w", iface, err)
				}
			}
			return nil
		})
	}}
	// RFC 5881 section 4: the source port MUST be in 49152–65535 and the
	// same for all packets of a session. Pick one at random and try
	// another when it is taken.
	var lastErr error
	for range 64 {
		port := srcPortMin + rand.IntN(srcPortMax-srcPortMin+1)
		addr := netip.AddrPortFrom(local, uint16(port))
		pc, err := lc.ListenPacket(context.Background(), network, addr.String())
		if err == nil {
			return &udpWriter{c: pc.(*net.UDPConn)}, nil
		}
		lastErr = err
		if !errors.Is(err, unix.EADDRINUSE) {
			break
		}
	}
	return nil, fmt.Errorf("open BFD sender on %s: %w", local, lastErr)
}

func setsockopt(c syscall.RawConn, f func(fd int) error) error {
	var serr error
	if err := c.Control(func(fd uintptr) { serr = f(int(fd)) }); err != nil {
		return err
	}
	return serr
}

type udpReader struct {
	c   *net.UDPConn
	oob []byte
}

// ReadPacket implements PacketReader. ReadMsgUDPAddrPort returns the source
// as a netip.AddrPort and does not allocate; the control message is parsed
// in place (unix.ParseSocketControlMessage would allocate a slice).
func (r *udpReader) ReadPacket(b []byte) (int, netip.AddrPort, int, error) {
	n, oobn, _, src, err := r.c.ReadMsgUDPAddrPort(b, r.oob)
	if err != nil {
		return 0, netip.AddrPort{}, -1, err
	}
	return n, src, ttlFromOOB(r.oob[:oobn]), nil
}

func (r *udpReader) Close() error { return r.c.Close() }

// ttlFromOOB finds the IP_TTL or IPV6_HOPLIMIT control message (an int)
// and returns its value, or -1 without one.
func ttlFromOOB(oob []byte) int {
	for len(oob) >= unix.SizeofCmsghdr {
		// struct cmsghdr on 64-bit Linux: size_t len, int level, int type.
		l := int(binary.NativeEndian.Uint64(oob[0:]))
		level := int32(binary.NativeEndian.Uint32(oob[8:]))
		typ := int32(binary.NativeEndian.Uint32(oob[12:]))
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return -1
		}
		data := oob[unix.CmsgLen(0):l]
		if len(data) >= 4 && ((level == unix.IPPROTO_IP && typ == unix.IP_TTL) ||
			(level == unix.IPPROTO_IPV6 && typ == unix.IPV6_HOPLIMIT)) {
			return int(int32(binary.NativeEndian.Uint32(data)))
		}
		next := unix.CmsgSpace(l - unix.CmsgLen(0))
		if next > len(oob) {
			return -1
		}
		oob = oob[next:]
	}
	return -1
}

type udpWriter struct {
	c *net.UDPConn
}

// WritePacket implements PacketWriter; WriteToUDPAddrPort does not allocate.
func (w *udpWriter) WritePacket(b []byte, dst netip.AddrPort) error {
	_, err := w.c.WriteToUDPAddrPort(b, dst)
	return err
}

func (w *udpWriter) Close() error { return w.c.Close() }
