package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bgplb/bgplb/internal/netnstest"
	"github.com/bgplb/bgplb/internal/tcpmd5"
)

// gtsmConfig is hostileConfig with the recommended setup: the TCP-MD5
// secret at pw on the prefix: entry, ttlSecurity left at its default
// (true), plus extra neighbour entries and the metrics endpoint.
func gtsmConfig(pw, extraNeighbors, metrics string) string {
	c := strings.Replace(hostileConfig, "maxPrefixes: 3", "maxPrefixes: 3\n    passwordFile: "+pw+extraNeighbors, 1)
	return strings.Replace(c, `metrics: {address: "off"}`, `metrics: {address: "`+metrics+`"}`, 1)
}

func writeSecret(t *testing.T, l *lab) string {
	t.Helper()
	pw := filepath.Join(l.dir, "md5.secret")
	if err := os.WriteFile(pw, []byte("right-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return pw
}

// droppedTTL reads bgplb_routeragent_tcp_segments_dropped_total{reason=
// "ttl_below_minimum"} from the agent's /metrics.
func droppedTTL(t *testing.T, l *lab, addr string) float64 {
	t.Helper()
	mf := scrape(t, l, addr)["bgplb_routeragent_tcp_segments_dropped_total"]
	if mf == nil {
		t.Fatal("no bgplb_routeragent_tcp_segments_dropped_total")
	}
	for _, m := range mf.GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == "reason" && lp.GetValue() == "ttl_below_minimum" {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatal("no reason=ttl_below_minimum series")
	return 0
}

// TestHostileLowTTL: hosts that know the password and use a node's ASN, a
// prefix: neighbour (.21) and an address: neighbour (.40), but send with
// TTL 254, as a host one router away would, get no TCP connection at all:
// with every neighbour on GTSM the router's kernel drops their SYNs at the
// listener (TCPMinTTLDrop counts them, and so does the agent's metric) and
// accepts none (PassiveOpens unchanged). Nothing of theirs is installed;
// the node with TTL 255 keeps its session and route. A host in the range
// with TTL 255 but no password (.22) gets no connection either (the kernel
// drops its unsigned segments: TCPMD5NotFound, md5_missing).
func TestHostileLowTTL(t *testing.T) {
	netnstest.RequirePrecondition(t, tcpmd5.ListenerSupported(), "this kernel has no TCP-MD5")
	l := newLab(t)
	goodNS := l.host(t, "good", "192.168.2.20")
	farNS := l.host(t, "far", "192.168.2.21")
	farAddrNS := l.host(t, "fara", "192.168.2.40")
	noPwNS := l.host(t, "nopw", "192.168.2.22")
	pw := writeSecret(t, l)
	const metrics = "127.0.0.1:9482"
	cfg := l.writeConfigFrom(t, gtsmConfig(pw, "\n  - {address: 192.168.2.40, asn: 64512, passwordFile: "+pw+"}", metrics), "")
	l.startAgent(t, cfg)
	good := startSpeakerEnv(t, goodNS, "192.168.2.20", "SPK_PASSWORD=right-secret")
	good.do("up")
	good.do("announce 192.168.254.1/32")
	waitFor(t, "the node's route", func() bool { return l.hasRoute(t, "192.168.254.1/32", "192.168.2.20") })

	drops := l.kernelCounter(t, "/proc/net/netstat", "TcpExt", "TCPMinTTLDrop")
	unsigned := l.kernelCounter(t, "/proc/net/netstat", "TcpExt", "TCPMD5NotFound")
	metricDrops := droppedTTL(t, l, metrics)
	opens := l.kernelCounter(t, "/proc/net/snmp", "Tcp", "PassiveOpens")
	noPw := startSpeakerEnv(t, noPwNS, "192.168.2.22")
	noPw.do("announce 192.168.254.11/32")
	far := startSpeakerEnv(t, farNS, "192.168.2.21", "SPK_PASSWORD=right-secret", "SPK_TTL=254")
	farAddr := startSpeakerEnv(t, farAddrNS, "192.168.2.40", "SPK_PASSWORD=right-secret", "SPK_TTL=254")
	far.do("announce 192.168.254.1/32")
	far.do("announce 192.168.254.9/32")
	farAddr.do("announce 192.168.254.10/32")
	waitFor(t, "six SYNs below TTL 255 dropped", func() bool {
		return l.kernelCounter(t, "/proc/net/netstat", "TcpExt", "TCPMinTTLDrop")-drops >= 6
	})
	waitFor(t, "three unsigned segments dropped", func() bool {
		return l.kernelCounter(t, "/proc/net/netstat", "TcpExt", "TCPMD5NotFound")-unsigned >= 3
	})
	if n := l.kernelCounter(t, "/proc/net/snmp", "Tcp", "PassiveOpens") - opens; n != 0 {
		t.Errorf("%d connections accepted from the TTL-254 and password-less hosts", n)
	}
	if d := droppedTTL(t, l, metrics) - metricDrops; d < 6 {
		t.Errorf("the agent's metric counted %v TTL drops, the kernel at least 6", d)
	}
	for _, a := range []string{"192.168.2.21", "192.168.2.40", "192.168.2.22"} {
		if p, ok := l.peer(t, a); ok && p.Up {
			t.Errorf("session with the TTL-254 host %s: %+v", a, p)
		}
	}
	for _, p := range []string{"192.168.254.9/32", "192.168.254.10/32", "192.168.254.11/32"} {
		if !l.hasRoute(t, p) {
			t.Errorf("%s of a hostile host installed", p)
		}
	}
	if !l.hasRoute(t, "192.168.254.1/32", "192.168.2.20") {
		t.Error("the node's route changed")
	}
	if gp, _ := l.peer(t, "192.168.2.20"); !gp.Up {
		t.Errorf("the node: %+v", gp)
	}
}

// TestHostileLowTTLMixed: with one neighbour that opts out (ttlSecurity:
// false, for a speaker that cannot send TTL 255) the shared listener cannot
// drop low-TTL SYNs, so a TTL-254 host's connections are accepted
// (PassiveOpens), but GoBGP's per-session minimum TTL drops its next
// segments (TCPMinTTLDrop): no session, nothing installed. The opted-out
// speaker, which sends without GTSM, peers.
func TestHostileLowTTLMixed(t *testing.T) {
	netnstest.RequirePrecondition(t, tcpmd5.ListenerSupported(), "this kernel has no TCP-MD5")
	l := newLab(t)
	plainNS := l.host(t, "plain", "192.168.2.40")
	farNS := l.host(t, "far", "192.168.2.21")
	pw := writeSecret(t, l)
	cfg := l.writeConfigFrom(t, gtsmConfig(pw, "\n  - {address: 192.168.2.40, asn: 64512, passwordFile: "+pw+", ttlSecurity: false}", "off"), "")
	l.startAgent(t, cfg)
	plain := startSpeakerEnv(t, plainNS, "192.168.2.40", "SPK_PASSWORD=right-secret", "SPK_NO_GTSM=1")
	plain.do("up")
	plain.do("announce 192.168.254.1/32")
	waitFor(t, "the opted-out speaker's route", func() bool { return l.hasRoute(t, "192.168.254.1/32", "192.168.2.40") })

	drops := l.kernelCounter(t, "/proc/net/netstat", "TcpExt", "TCPMinTTLDrop")
	opens := l.kernelCounter(t, "/proc/net/snmp", "Tcp", "PassiveOpens")
	far := startSpeakerEnv(t, farNS, "192.168.2.21", "SPK_PASSWORD=right-secret", "SPK_TTL=254")
	far.do("announce 192.168.254.9/32")
	waitFor(t, "two connections from the TTL-254 host accepted and their segments dropped", func() bool {
		return l.kernelCounter(t, "/proc/net/snmp", "Tcp", "PassiveOpens")-opens >= 2 &&
			l.kernelCounter(t, "/proc/net/netstat", "TcpExt", "TCPMinTTLDrop")-drops >= 3
	})
	if p, ok := l.peer(t, "192.168.2.21"); ok && p.Up {
		t.Errorf("session with the TTL-254 host: %+v", p)
	}
	if !l.hasRoute(t, "192.168.254.9/32") {
		t.Error("the TTL-254 host's route is installed")
	}
	if !l.hasRoute(t, "192.168.254.1/32", "192.168.2.40") {
		t.Error("the opted-out speaker's route changed")
	}
}
