package agent

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/internal/netnstest"
	spkbgp "github.com/bgplb/bgplb/speaker/bgp"
	"github.com/bgplb/bgplb/speaker/controller"
	"github.com/bgplb/bgplb/speaker/model"
)

// bgplbSpeakerRole is the real speaker's BGP side (speaker/bgp) with the
// session configuration a BGPPeer without gracefulRestart gets
// (controller.PeerConfig): what a node runs by default. Commands on stdin:
// "up" (wait for Established) and "announce PREFIX".
func bgplbSpeakerRole() int {
	ctx := context.Background()
	local := netip.MustParseAddr(os.Getenv("SPK_LOCAL"))
	peer := &v1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "router"},
		Spec: v1.BGPPeerSpec{PeerAddress: os.Getenv("SPK_ROUTER"), PeerASN: 64500, MyASN: 64512}}
	cfg, err := controller.PeerConfig(peer, local, "")
	if err != nil {
		fmt.Println("err:", err)
		return 1
	}
	m := spkbgp.NewManager(logr.Discard())
	if err := m.SetPeers(ctx, []spkbgp.PeerConfig{cfg}); err != nil {
		fmt.Println("err:", err)
		return 1
	}
	defer m.Shutdown(ctx, spkbgp.ShutdownOptions{})
	var ads []model.Advertisement
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 0 {
			continue
		}
		var err error
		switch f[0] {
		case "up":
			deadline := time.Now().Add(60 * time.Second)
			for {
				st := m.Status(ctx)
				if len(st) == 1 && st[0].State == v1.SessionStateEstablished {
					break
				}
				if time.Now().After(deadline) {
					err = fmt.Errorf("session not established after 60s: %+v", st)
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
		case "announce":
			ads = append(ads, model.Advertisement{Prefix: netip.MustParsePrefix(f[1]), NextHop: netip.IPv4Unspecified()})
			_, err = m.Set(ctx, "router", ads)
		default:
			err = fmt.Errorf("unknown command %q", f[0])
		}
		if err != nil {
			fmt.Println("err:", err)
		} else {
			fmt.Println("ok")
		}
	}
	return 0
}

func startBGPLBSpeaker(t testing.TB, l *lab, short, addr string) *speaker {
	t.Helper()
	return bgplbSpeakerIn(t, l.host(t, short, addr), addr)
}

// bgplbSpeakerIn runs bgplbSpeakerRole in ns with local address addr.
func bgplbSpeakerIn(t testing.TB, ns *netnstest.NS, addr string) *speaker {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	p := startRole(t, ns, "bgplbspeaker", []string{"SPK_LOCAL=" + addr, "SPK_ROUTER=192.168.2.1"}, inR, outW)
	t.Cleanup(func() { inW.Close(); outW.Close() })
	return &speaker{t: t, proc: p, in: inW, out: bufio.NewReader(outR)}
}

// TestRestartEndOfRIBFromSpeakers: three nodes run the real speaker with a
// default BGPPeer and announce one Service. The agent restarts while one
// node's speaker is gone. The other two come back, send End-of-RIB (the
// speaker's default since issue 21), and the dead node's next hop leaves the
// route then: the stale timeout is 10 minutes, so only End-of-RIB (and the
// reconnect spread after it) can explain the removal. The two live next
// hops are never removed over the restart. Then a live speaker is killed:
// its next hop goes with its session (no routes kept for it).
func TestRestartEndOfRIBFromSpeakers(t *testing.T) {
	l := newLab(t)
	cfg := l.writeConfigFrom(t, strings.Replace(baseConfig, "staleTimeout: 60s", "staleTimeout: 10m", 1), "firewall: {mode: \"off\"}\n")
	agent := l.startAgent(t, cfg)
	addrs := []string{"192.168.2.20", "192.168.2.21", "192.168.2.22"}
	var sps []*speaker
	for i, a := range addrs {
		sp := startBGPLBSpeaker(t, l, fmt.Sprintf("n%d", i), a)
		sp.do("up")
		sp.do("announce 192.168.254.1/32")
		sps = append(sps, sp)
	}
	waitFor(t, "the route over three nodes", func() bool { return l.hasRoute(t, "192.168.254.1/32", addrs...) })
	for _, a := range addrs {
		if p, ok := l.peer(t, a); !ok || !p.EndOfRIB {
			t.Fatalf("%s: no End-of-RIB from a speaker with a default BGPPeer (%+v)", a, p)
		}
	}

	agent.kill(syscall.SIGTERM)
	// The node dies while the agent is down. (Close its stdin first:
	// exec's copier from the pipe holds Wait until it ends.)
	sps[2].in.Close()
	sps[2].proc.kill(syscall.SIGKILL)
	evs := watchRoutes(t, l)
	start := time.Now()
	l.startAgent(t, cfg)
	var back time.Time // both live sessions Established with End-of-RIB
	waitFor(t, "the live sessions back with End-of-RIB", func() bool {
		for _, a := range addrs[:2] {
			if p, ok := l.peer(t, a); !ok || !p.Up || !p.EndOfRIB {
				return false
			}
		}
		back = time.Now()
		return true
	})
	if st := l.status(t); !l.hasRoute(t, "192.168.254.1/32", addrs...) && st.Routes.Stale == 0 {
		t.Logf("the dead next hop was already gone when the sessions were back")
	}
	waitFor(t, "the dead node's next hop removed", func() bool { return l.hasRoute(t, "192.168.254.1/32", addrs[:2]...) })
	gone := time.Now()
	t.Logf("agent start -> live sessions back with End-of-RIB: %v; -> dead next hop removed: %v (%v after the sessions' return)",
		back.Sub(start).Round(time.Millisecond), gone.Sub(start).Round(time.Millisecond), gone.Sub(back).Round(time.Millisecond))
	if st := l.status(t); st.Routes.Stale != 0 {
		t.Errorf("stale next hops still kept after the sweep: %d", st.Routes.Stale)
	}
	// The route is never deleted: it is replaced without the dead next hop
	// (plain multipath) or not touched at all while its resilient nexthop
	// group loses the dead member (routes.nexthopGroups auto, this kernel).
	got := evs.list()
	if slices.Contains(got, "del 192.168.254.1/32") || len(got) > 1 {
		t.Errorf("route changes over the restart: %v, want at most the replacement without .22", got)
	}

	// The capability carries no address family, so the agent (a graceful
	// restart helper) keeps nothing for a speaker that dies: killed (the
	// kernel closes its socket, no NOTIFICATION), its next hop goes with
	// its session, not after a restart time.
	sps[1].in.Close()
	sps[1].proc.kill(syscall.SIGKILL)
	waitFor(t, "the killed speaker's next hop gone with its session", func() bool { return l.hasRoute(t, "192.168.254.1/32", addrs[0]) })
}
