package bgp

import (
	"context"
	"fmt"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// MD5Supported reports whether the kernel accepts TCP-MD5 keys
// (CONFIG_TCP_MD5SIG). Without it GoBGP cannot dial a session that has a
// password, and only says so in debug logs; the speaker reports it instead.
func MD5Supported() error {
	// A plain TCP socket: since Go 1.24 listeners default to MPTCP, which
	// refuses TCP_MD5SIG and would make every kernel look unsupported.
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	l, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("probe TCP-MD5 support: %w", err)
	}
	defer l.Close()
	rc, err := l.(*net.TCPListener).SyscallConn()
	if err != nil {
		return fmt.Errorf("probe TCP-MD5 support: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		var sig unix.TCPMD5Sig
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&sig.Addr))
		sa.Family = syscall.AF_INET
		sa.Addr = [4]byte{127, 0, 0, 1}
		sig.Keylen = 5
		copy(sig.Key[:], "probe")
		serr = unix.SetsockoptTCPMD5Sig(int(fd), unix.IPPROTO_TCP, unix.TCP_MD5SIG, &sig)
	}); err != nil {
		return fmt.Errorf("probe TCP-MD5 support: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("the kernel does not support TCP-MD5 (CONFIG_TCP_MD5SIG): %w", serr)
	}
	return nil
}
