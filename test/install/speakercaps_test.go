package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const sockoptChildEnv = "BGPLB_TEST_SOCKOPT_CHILD"

// The speaker's DaemonSet drops every capability. That is only right if
// what it does on its sockets needs none: it dials out (no port 179
// listener), sets TCP-MD5 keys (TCP_MD5SIG), the multihop TTL (IP_TTL) and
// GTSM's minimum TTL (IP_MINTTL), and binds a source address. This runs
// exactly that as user 65532 with no capability at all (setpriv), against
// an MD5-protected listener on 127.0.0.1: the TCP handshake only completes
// when both sides really sign the segments.
func TestSpeakerSocketOptionsNeedNoCapability(t *testing.T) {
	if addr := os.Getenv(sockoptChildEnv); addr != "" {
		if err := dialLikeSpeaker(addr); err != nil {
			t.Fatal(err)
		}
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to drop to an unprivileged user with setpriv (CI runs as root)")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatalf("setpriv is required (Debian package util-linux): %v", err)
	}

	// Plain TCP: since Go 1.24 listeners default to MPTCP where the kernel
	// has it, and MPTCP sockets refuse TCP_MD5SIG (ENOPROTOOPT).
	lc := net.ListenConfig{}
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	raw, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = setMD5(int(fd), [4]byte{127, 0, 0, 1}) }); err != nil || serr != nil {
		t.Fatalf("MD5 key on the listener: %v %v", err, serr)
	}
	accepted := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- err.Error()
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(io.LimitReader(c, 5))
		accepted <- string(b)
	}()

	// The test binary must be executable by the unprivileged user.
	dir, err := os.MkdirTemp("", "bgplb-sockopt-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "install.test")
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(setpriv, "--reuid=65532", "--regid=65532", "--clear-groups",
		"--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--no-new-privs",
		bin, "-test.run=^TestSpeakerSocketOptionsNeedNoCapability$", "-test.v")
	cmd.Dir = dir
	cmd.Env = []string{sockoptChildEnv + "=" + ln.Addr().String(), "PATH=/usr/bin:/bin"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("as user 65532 without capabilities: %v\n%s", err, out)
	}
	select {
	case got := <-accepted:
		if got != "hello" {
			t.Errorf("listener got %q", got)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no connection accepted")
	}
}

// dialLikeSpeaker does what GoBGP does for an active session with MD5 and
// multihop/GTSM, and proves it has no capability. (The listener sends with
// the default TTL, so the minimum TTL is set to 1: the point is that setting
// it is allowed.)
func dialLikeSpeaker(addr string) error {
	var hdr unix.CapUserHeader
	hdr.Version = unix.LINUX_CAPABILITY_VERSION_3
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return err
	}
	if data[0].Effective|data[0].Permitted|data[1].Effective|data[1].Permitted != 0 || os.Geteuid() == 0 {
		return fmt.Errorf("child is privileged: uid %d caps %+v", os.Geteuid(), data)
	}
	d := net.Dialer{
		Timeout:   10 * time.Second,
		LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)},
		Control: func(network, address string, c syscall.RawConn) error {
			var err error
			cerr := c.Control(func(fd uintptr) {
				err = errors.Join(
					wrap("TCP_MD5SIG", setMD5(int(fd), [4]byte{127, 0, 0, 1})),
					wrap("IP_TTL", unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, 2)),
					wrap("IP_MINTTL", unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MINTTL, 1)),
				)
			})
			return errors.Join(cerr, err)
		},
	}
	c, err := d.Dial("tcp4", addr)
	if err != nil {
		return fmt.Errorf("dial with MD5 as uid %d: %w", os.Geteuid(), err)
	}
	defer c.Close()
	_, err = io.Copy(c, strings.NewReader("hello"))
	return err
}

func wrap(what string, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

func setMD5(fd int, peer [4]byte) error {
	sig := unix.TCPMD5Sig{Keylen: uint16(len("bgplb-test"))}
	copy(sig.Key[:], "bgplb-test")
	// struct sockaddr_in inside a sockaddr_storage: family, port (0), address.
	sig.Addr.Family = unix.AF_INET
	copy(sig.Addr.Data[2:6], peer[:])
	return unix.SetsockoptTCPMD5Sig(fd, unix.IPPROTO_TCP, unix.TCP_MD5SIG, &sig)
}
