package agent

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bgplb/bgplb/internal/netnstest"
	"github.com/bgplb/bgplb/internal/tcpmd5"
	"github.com/bgplb/bgplb/routeragent/policy"
)

// hostileConfig admits speakers from 192.168.2.16/28 only (.20 and .21 in
// these tests), with at most 3 prefixes each (action teardown, the default).
const hostileConfig = `asn: 64500
routerID: 192.168.2.1
neighbors:
  - prefix: 192.168.2.16/28
    asn: 64512
    allowUnauthenticated: true # the lab speakers have no secret
    maxPrefixes: 3
serviceSubnets: [192.168.254.0/24]
lanInterfaces: [lan0]
routes: {resyncInterval: 2s, staleTimeout: 60s}
metrics: {address: "off"}
log: {level: debug}
firewall: {mode: "off"}
`

// startSpeakerEnv is startSpeaker with extra environment (SPK_PASSWORD,
// SPK_NO_GR).
func startSpeakerEnv(t testing.TB, ns *netnstest.NS, local string, env ...string) *speaker {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	p := startRole(t, ns, "speaker", append([]string{"SPK_ASN=64512", "SPK_LOCAL=" + local, "SPK_ROUTER=192.168.2.1"}, env...), inR, outW)
	t.Cleanup(func() { inW.Close(); outW.Close() })
	return &speaker{t: t, proc: p, in: inW, out: bufio.NewReader(outR)}
}

func (l *lab) peer(t testing.TB, addr string) (PeerStatus, bool) {
	t.Helper()
	for _, p := range l.status(t).Peers {
		if p.Address == netip.MustParseAddr(addr) {
			return p, true
		}
	}
	return PeerStatus{}, false
}

// kernelCounter reads one counter of /proc/net/snmp or /proc/net/netstat
// (group "Tcp", "TcpExt", ...) inside the router namespace.
func (l *lab) kernelCounter(t testing.TB, file, group, name string) int {
	t.Helper()
	out := l.router.Exec("cat", file)
	var hdr []string
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, group+": ") {
			continue
		}
		if hdr == nil {
			hdr = strings.Fields(line)
			continue
		}
		val := strings.Fields(line)
		for i, h := range hdr {
			if h == name && i < len(val) {
				n, _ := strconv.Atoi(val[i])
				return n
			}
		}
	}
	t.Fatalf("no %s %s in %s", group, name, file)
	return 0
}

// TestHostilePeers: a speaker announcing a default route, the LAN subnet, a
// prefix outside serviceSubnets and paths with another next hop gets none
// of it installed, and every path is counted by reason; when it then goes
// over maxPrefixes its session is closed (Cease), none of its paths stays
// installed, and it is refused while in hold-down (its reconnection is
// closed again). A well-behaved speaker's routes are never touched
// throughout (no netlink delete or change).
func TestHostilePeers(t *testing.T) {
	l := newLab(t)
	badNS := l.host(t, "bad", "192.168.2.20")
	goodNS := l.host(t, "good", "192.168.2.21")
	cfg := l.writeConfigFrom(t, hostileConfig, "")
	l.startAgent(t, cfg)
	good := startSpeaker(t, goodNS, "192.168.2.21")
	bad := startSpeaker(t, badNS, "192.168.2.20")
	good.do("up")
	bad.do("up")
	good.do("announce 192.168.254.1/32")
	good.do("announce 192.168.254.2/32")
	waitFor(t, "the good speaker's routes", func() bool {
		return l.hasRoute(t, "192.168.254.1/32", "192.168.2.21") && l.hasRoute(t, "192.168.254.2/32", "192.168.2.21")
	})
	evs := watchRoutes(t, l)

	// Bad input, each counted under its reason, none installed.
	bad.do("announce 0.0.0.0/0")
	bad.do("announce 192.168.2.0/24")
	bad.do("announce 10.1.1.1/32")
	bad.do("announce 192.168.254.5/32 192.168.2.21") // the good peer's address as next hop
	bad.do("announce 192.168.254.6/32 192.168.2.99") // a next hop other than itself
	bad.do("announce 192.168.254.2/32 192.168.2.1")  // the router itself as next hop, for a live prefix
	want := map[policy.Reason]int{policy.RejectDefaultRoute: 1, policy.RejectNotHostRoute: 1,
		policy.RejectOutsideSubnets: 1, policy.RejectNextHopNotPeer: 3}
	var st PeerStatus
	waitFor(t, "six rejections of the bad speaker", func() bool { st, _ = l.peer(t, "192.168.2.20"); return sum(st.Rejected) == 6 })
	if d := cmp.Diff(want, st.Rejected); d != "" {
		t.Errorf("bad speaker's rejections (-want +got):\n%s", d)
	}
	for _, p := range []string{"10.1.1.1/32", "192.168.254.5/32", "192.168.254.6/32"} {
		if !l.hasRoute(t, p) {
			t.Errorf("%s installed from the bad speaker", p)
		}
	}
	if proto, _ := l.kernelRoute(t, "0.0.0.0/0"); proto != -1 {
		t.Errorf("a default route was installed (proto %d)", proto)
	}
	if !l.hasRoute(t, "192.168.254.2/32", "192.168.2.21") {
		t.Error("the bad speaker changed 254.2")
	}

	// Up to its limit (3) the bad speaker's host routes are accepted...
	for _, p := range []string{"192.168.254.10/32", "192.168.254.11/32", "192.168.254.12/32"} {
		bad.do("announce " + p)
	}
	waitFor(t, "three routes of the bad speaker", func() bool { return l.hasRoute(t, "192.168.254.12/32", "192.168.2.20") })
	// ...one more and its session is closed, all of its routes withdrawn.
	bad.do("announce 192.168.254.13/32")
	waitFor(t, "a max-prefix teardown", func() bool { st, _ = l.peer(t, "192.168.2.20"); return st.MaxPrefixTeardowns >= 1 })
	waitFor(t, "the bad speaker's routes gone", func() bool {
		return l.hasRoute(t, "192.168.254.10/32") && l.hasRoute(t, "192.168.254.11/32") && l.hasRoute(t, "192.168.254.12/32")
	})
	// It reconnects (its connect retry is 1 s) and is closed again: hold-down.
	waitFor(t, "the reconnection refused in hold-down", func() bool { st, _ = l.peer(t, "192.168.2.20"); return st.MaxPrefixTeardowns >= 2 })
	t.Logf("bad speaker after hold-down refusals: %+v", st)
	var out, errb bytes.Buffer
	if code := CLIMain([]string{"status", "--socket", l.socket()}, &out, &errb); code != 0 || !strings.Contains(out.String(), "over maxPrefixes") {
		t.Errorf("status (exit %d) does not show the teardown:\n%s%s", code, out.String(), errb.String())
	}
	for _, p := range []string{"192.168.254.10/32", "192.168.254.11/32", "192.168.254.12/32", "192.168.254.13/32"} {
		if !l.hasRoute(t, p) {
			t.Errorf("%s of the torn-down speaker is installed", p)
		}
	}

	// The good speaker never lost a route.
	if !l.hasRoute(t, "192.168.254.1/32", "192.168.2.21") || !l.hasRoute(t, "192.168.254.2/32", "192.168.2.21") {
		t.Error("the good speaker's routes changed")
	}
	if gp, _ := l.peer(t, "192.168.2.21"); !gp.Up || gp.Accepted != 2 || gp.MaxPrefixTeardowns != 0 {
		t.Errorf("good speaker: %+v", gp)
	}
	for _, e := range evs.list() {
		if strings.HasSuffix(e, " 192.168.254.1/32") || strings.HasSuffix(e, " 192.168.254.2/32") {
			t.Errorf("the good speaker's route changed: %s", e)
		}
	}
	t.Logf("route events meanwhile: %v", evs.list())
}

func sum(m map[policy.Reason]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// TestUnknownAndWrongPasswordPeers: with a TCP-MD5 password on the
// neighbour range, a speaker with the password gets a session across the
// veths (so the kernel really signs), one with a wrong password gets none
// (the router's kernel drops its segments: TCPMD5Failure counts them), and
// one outside the neighbour prefixes gets none either (its connections
// reach the router, which closes them).
func TestUnknownAndWrongPasswordPeers(t *testing.T) {
	netnstest.RequirePrecondition(t, tcpmd5.ListenerSupported(), "this kernel has no TCP-MD5")
	l := newLab(t)
	rightNS := l.host(t, "md5ok", "192.168.2.20")
	wrongNS := l.host(t, "md5no", "192.168.2.21")
	outNS := l.host(t, "out", "192.168.2.50")
	pw := filepath.Join(l.dir, "md5.secret")
	if err := os.WriteFile(pw, []byte("right-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := l.writeConfigFrom(t, strings.Replace(hostileConfig, "maxPrefixes: 3", "maxPrefixes: 3\n    passwordFile: "+pw, 1), "")
	l.startAgent(t, cfg)
	right := startSpeakerEnv(t, rightNS, "192.168.2.20", "SPK_PASSWORD=right-secret")
	right.do("up")
	right.do("announce 192.168.254.1/32")
	waitFor(t, "the route of the speaker with the password", func() bool { return l.hasRoute(t, "192.168.254.1/32", "192.168.2.20") })

	md5fail := l.kernelCounter(t, "/proc/net/netstat", "TcpExt", "TCPMD5Failure")
	opens := l.kernelCounter(t, "/proc/net/snmp", "Tcp", "PassiveOpens")
	wrong := startSpeakerEnv(t, wrongNS, "192.168.2.21", "SPK_PASSWORD=wrong-secret")
	waitFor(t, "three segments with a wrong MD5 signature dropped", func() bool {
		return l.kernelCounter(t, "/proc/net/netstat", "TcpExt", "TCPMD5Failure")-md5fail >= 3
	})
	if p, ok := l.peer(t, "192.168.2.21"); ok && p.State != "idle" && p.State != "active" {
		t.Errorf("wrong password: peer state %q", p.State)
	}
	if n := l.kernelCounter(t, "/proc/net/snmp", "Tcp", "PassiveOpens") - opens; n != 0 {
		t.Errorf("%d connections accepted while only the wrong-password speaker dialled", n)
	}
	_ = wrong

	out := startSpeakerEnv(t, outNS, "192.168.2.50")
	waitFor(t, "three connections from the outsider accepted and closed", func() bool {
		return l.kernelCounter(t, "/proc/net/snmp", "Tcp", "PassiveOpens")-opens >= 3
	})
	_ = out
	for _, p := range l.status(t).Peers {
		if p.Address == netip.MustParseAddr("192.168.2.50") || (p.Address == netip.MustParseAddr("192.168.2.21") && p.Up) {
			t.Errorf("session state for a refused speaker: %+v", p)
		}
	}
	if !l.hasRoute(t, "192.168.254.1/32", "192.168.2.20") {
		t.Error("the good speaker's route is gone")
	}
	if gp, _ := l.peer(t, "192.168.2.20"); !gp.Up {
		t.Errorf("the speaker with the password: %+v", gp)
	}
	t.Logf("peers: %s", fmt.Sprint(slices.Collect(func(yield func(string) bool) {
		for _, p := range l.status(t).Peers {
			if !yield(p.Address.String() + "=" + p.State) {
				return
			}
		}
	})))
}
