// Package tcpmd5 probes whether this machine can put a TCP-MD5 (RFC 2385)
// key on a socket. GoBGP sets the keys itself and, when the kernel refuses
// them, only logs: a session with a password then never comes up (the
// speaker, which dials) or runs unsigned (the router agent's listener). Both
// programs probe first and report a clear error instead. It imports no
// GoBGP.
package tcpmd5

import (
	"context"
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// KernelSupported reports whether the kernel accepts TCP-MD5 keys
// (CONFIG_TCP_MD5SIG), on a plain TCP socket.
func KernelSupported() error {
	// Since Go 1.24 listeners default to MPTCP, which refuses TCP_MD5SIG
	// and would make every kernel look unsupported.
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	if err := probe(lc); err != nil {
		return fmt.Errorf("the kernel does not support TCP-MD5 (CONFIG_TCP_MD5SIG): %w", err)
	}
	return nil
}

// ListenerSupported reports whether a listener made with this binary's
// defaults, as GoBGP makes its BGP listener, takes a TCP-MD5 key. It fails
// when the kernel lacks CONFIG_TCP_MD5SIG and when Go makes listeners MPTCP
// (the default since Go 1.24; MPTCP sockets refuse TCP_MD5SIG): such a
// binary must be built with `//go:debug multipathtcp=0`.
func ListenerSupported() error {
	if err := probe(net.ListenConfig{}); err != nil {
		return fmt.Errorf("cannot set a TCP-MD5 key on a BGP listener (kernel without CONFIG_TCP_MD5SIG, or an MPTCP listener: build with //go:debug multipathtcp=0): %w", err)
	}
	return nil
}

// probe sets a key for 127.0.0.2 on a loopback listener made with lc. No
// packet is sent.
func probe(lc net.ListenConfig) error {
	l, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("probe listener: %w", err)
	}
	defer l.Close()
	rc, err := l.(*net.TCPListener).SyscallConn()
	if err != nil {
		return fmt.Errorf("probe listener: %w", err)
	}
	sig := &unix.TCPMD5Sig{Keylen: 5}
	sig.Addr.Family = unix.AF_INET
	copy(sig.Addr.Data[2:], []byte{127, 0, 0, 2})
	copy(sig.Key[:], "probe")
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptTCPMD5Sig(int(fd), unix.IPPROTO_TCP, unix.TCP_MD5SIG, sig)
	}); err != nil {
		return fmt.Errorf("probe listener: %w", err)
	}
	return serr
}
