package router

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/bgplb/bgplb/internal/netnstest"
	"github.com/bgplb/bgplb/routeragent/bgp/bgptest"
)

// The test binary doubles as a node's BGP speaker (GoBGP, as
// bgplb-speaker embeds it), run inside the node's namespace with
// `ip netns exec`: one process lives in one namespace.
const roleEnv = "BGPLB_TEST_ROLE"

func TestMain(m *testing.M) {
	if os.Getenv(roleEnv) == "speaker" {
		os.Exit(speakerRole())
	}
	os.Exit(m.Run())
}

// speakerRole peers with the router at SPK_ROUTER from SPK_LOCAL (AS 64512,
// GTSM and graceful restart as bgplb-speaker) and obeys lines on stdin:
// "up" (wait for the session), "announce PREFIX", "withdraw PREFIX". Each
// answers "ok" or "err: ...".
func speakerRole() int {
	ctx := context.Background()
	local := netip.MustParseAddr(os.Getenv("SPK_LOCAL"))
	sp, err := bgptest.Start(ctx, bgptest.Config{
		ASN: 64512, RouterID: local.String(), Local: local,
		Router: netip.MustParseAddr(os.Getenv("SPK_ROUTER")), RouterASN: 64500,
		GracefulRestart: true, HoldTime: 9,
	})
	if err != nil {
		fmt.Println("err:", err)
		return 1
	}
	defer sp.Stop()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 0 {
			continue
		}
		var err error
		switch {
		case f[0] == "up":
			deadline := time.Now().Add(60 * time.Second)
			for !sp.Established(ctx) && err == nil {
				if time.Now().After(deadline) {
					err = fmt.Errorf("session not established after 60s")
				}
				time.Sleep(50 * time.Millisecond)
			}
		case f[0] == "announce" && len(f) == 2:
			err = sp.Announce(ctx, netip.MustParsePrefix(f[1]), netip.Addr{})
		case f[0] == "withdraw" && len(f) == 2:
			err = sp.Withdraw(ctx, netip.MustParsePrefix(f[1]))
		default:
			err = fmt.Errorf("unknown command %q", in.Text())
		}
		if err != nil {
			fmt.Println("err:", err)
		} else {
			fmt.Println("ok")
		}
	}
	return 0
}

// speaker is a node's speaker process, killed by its pid when the test ends.
type speaker struct {
	t   testing.TB
	in  io.WriteCloser
	out *bufio.Scanner
}

func startSpeaker(t testing.TB, node *netnstest.NS, local, router string) *speaker {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", node.Name, self)
	cmd.Env = append(os.Environ(), roleEnv+"=speaker", "SPK_LOCAL="+local, "SPK_ROUTER="+router)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the speaker in %s: %v", node.Name, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return &speaker{t: t, in: in, out: bufio.NewScanner(out)}
}

// do sends one command and fails the test unless it answers ok.
func (s *speaker) do(line string) {
	s.t.Helper()
	if _, err := fmt.Fprintln(s.in, line); err != nil {
		s.t.Fatalf("speaker %q: %v", line, err)
	}
	if !s.out.Scan() {
		s.t.Fatalf("speaker %q: no answer (exited?)", line)
	}
	if got := s.out.Text(); got != "ok" {
		s.t.Fatalf("speaker %q: %s", line, got)
	}
}
