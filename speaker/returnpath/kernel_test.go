package returnpath_test

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/bgplb/bgplb/internal/iprange"
	"github.com/bgplb/bgplb/internal/netnstest"
	"github.com/bgplb/bgplb/routeragent/symmetry"
	"github.com/bgplb/bgplb/speaker/returnpath"
)

// fermRules is a ferm/DebOps stateful router: FORWARD policy DROP, INVALID
// dropped, established accepted, new only from the LAN. No exemption.
const fermRules = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -m state --state INVALID -j DROP
-A FORWARD -m state --state RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -i lan0 -m state --state NEW -j ACCEPT
COMMIT
`

// kubeProxyIptables is kube-proxy's iptables mode for one LoadBalancer
// Service (the chains it writes, trimmed to one endpoint): with
// externalTrafficPolicy Cluster external traffic is marked for masquerade
// (KUBE-EXT -> KUBE-MARK-MASQ, then SNAT to the node in KUBE-POSTROUTING),
// with Local it goes straight to the local endpoint (KUBE-SVL) unNATed.
func kubeProxyIptables(svc, pod string, port, podPort int, cluster bool) string {
	ext := "-A KUBE-EXT-X -j KUBE-SVL-X\n-A KUBE-SVL-X -j KUBE-SEP-Y\n"
	if cluster {
		ext = "-A KUBE-EXT-X -j KUBE-MARK-MASQ\n-A KUBE-EXT-X -j KUBE-SVC-X\n-A KUBE-SVC-X -j KUBE-SEP-Y\n"
	}
	dst := pod + ":" + fmt.Sprint(podPort)
	if strings.Contains(pod, ":") {
		dst = "[" + pod + "]:" + fmt.Sprint(podPort)
	}
	return `*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-EXT-X - [0:0]
:KUBE-SVC-X - [0:0]
:KUBE-SVL-X - [0:0]
:KUBE-SEP-Y - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -j MASQUERADE --random-fully
-A KUBE-SERVICES -d ` + svc + ` -p tcp -m tcp --dport ` + fmt.Sprint(port) + ` -j KUBE-EXT-X
` + ext + `-A KUBE-SEP-Y -p tcp -m tcp -j DNAT --to-destination ` + dst + `
COMMIT
`
}

// kubeProxyNft is kube-proxy's nftables mode, same Service,
// externalTrafficPolicy Cluster (table ip kube-proxy, its chain names).
func kubeProxyNft(svc, pod string, port, podPort int) string {
	return fmt.Sprintf(`table ip kube-proxy {
	chain mark-for-masquerade {
		mark set mark or 0x4000
	}
	chain masquerading {
		type nat hook postrouting priority srcnat; policy accept;
		mark and 0x4000 == 0 return
		mark set mark xor 0x4000
		masquerade fully-random
	}
	chain endpoint-Y {
		meta l4proto tcp dnat to %s:%d
	}
	chain external-X {
		jump mark-for-masquerade
		goto endpoint-Y
	}
	chain nat-prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr %s tcp dport %d goto external-X
	}
	chain nat-output {
		type nat hook output priority -100; policy accept;
		ip daddr %s tcp dport %d goto external-X
	}
}
`, pod, podPort, svc, port, svc, port)
}

// lab is the seed's network: two clients, two routers and a node on one
// L2; each client's default gateway is one router; the node's Service
// address is DNATed by a kube-proxy stand-in to a pod behind the node's
// cni0 bridge.
type lab struct {
	clients, routers []*netnstest.NS
	node, pod        *netnstest.NS
	six              bool
	svc, svcAddr     string
	routerAddrs      []string
}

type family struct {
	six                 bool
	lan                 string // prefix length suffix
	client, router      [2]string
	node, svc, pod, gwP string
	podNet              string
}

var v4 = family{lan: "/24", client: [2]string{"192.168.2.109", "192.168.2.110"}, router: [2]string{"192.168.2.1", "192.168.2.2"},
	node: "192.168.2.20", svc: "192.168.254.1", pod: "10.244.0.5", gwP: "10.244.0.1", podNet: "/24"}

var v6 = family{six: true, lan: "/64", client: [2]string{"2001:db8:2::109", "2001:db8:2::110"}, router: [2]string{"2001:db8:2::1", "2001:db8:2::2"},
	node: "2001:db8:2::20", svc: "2001:db8:254::1", pod: "fd00:244::5", gwP: "fd00:244::1", podNet: "/64"}

func newLab(t testing.TB, f family, kubeProxy string) *lab {
	t.Helper()
	sw := netnstest.New(t, "sw")
	l := &lab{node: netnstest.New(t, "node"), pod: netnstest.New(t, "pod"), six: f.six, svcAddr: f.svc}
	l.svc = net.JoinHostPort(f.svc, "80")
	plug := netnstest.Bridge(t, sw, "br0")
	ip := []string{"ip"}
	if f.six {
		ip = []string{"ip", "-6"}
	}
	for i := range 2 {
		c, r := netnstest.New(t, fmt.Sprintf("cl%d", i)), netnstest.New(t, fmt.Sprintf("rt%d", i))
		l.clients, l.routers, l.routerAddrs = append(l.clients, c), append(l.routers, r), append(l.routerAddrs, f.router[i])
		for _, ns := range []*netnstest.NS{c, r} {
			netnstest.NoDAD(ns)
			// Before the links exist: a new interface takes conf/default,
			// and a redirect is sent if conf/all or conf/<if> says so (and
			// a host accepts one if either says so).
			ns.Exec("sysctl", "-qw", "net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.default.send_redirects=0",
				"net.ipv4.conf.all.accept_redirects=0", "net.ipv4.conf.default.accept_redirects=0",
				"net.ipv6.conf.all.accept_redirects=0", "net.ipv6.conf.default.accept_redirects=0")
		}
		plug(c, "eth0", f.client[i]+f.lan)
		plug(r, "lan0", f.router[i]+f.lan)
		c.Exec(append(ip, "route", "add", "default", "via", f.router[i])...)
		// The router: forwarding, no redirects (the agent's
		// icmpRedirects: disable), a route to the service via the node,
		// and ferm's stateful rules with no exemption.
		r.Exec("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1", "net.ipv4.conf.all.send_redirects=0")
		r.Exec(append(ip, "route", "add", f.svc, "via", f.node)...)
		restore := "iptables-legacy-restore"
		if f.six {
			restore = "ip6tables-legacy-restore"
		}
		cmd := r.Command(restore)
		cmd.Stdin = strings.NewReader(fermRules)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", restore, err, out)
		}
	}
	netnstest.NoDAD(l.node)
	netnstest.NoDAD(l.pod)
	l.node.Exec("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
		"net.ipv4.conf.all.accept_redirects=0", "net.ipv4.conf.default.accept_redirects=0",
		"net.ipv6.conf.all.accept_redirects=0", "net.ipv6.conf.default.accept_redirects=0")
	plug(l.node, "eth0", f.node+f.lan)
	// The pod behind the node's CNI bridge.
	l.node.Exec("ip", "link", "add", "cni0", "type", "bridge")
	l.node.Exec("ip", "addr", "add", f.gwP+f.podNet, "dev", "cni0")
	l.node.Exec("ip", "link", "set", "cni0", "up")
	netnstest.Veth(t, l.node, "veth0", "", l.pod, "eth0", f.pod+f.podNet)
	l.node.Exec("ip", "link", "set", "veth0", "master", "cni0")
	l.pod.Exec(append(ip, "route", "add", "default", "via", f.gwP)...)
	endpoint, server := f.pod, l.pod
	if kubeProxy == "iptables-cluster-remote" {
		// The endpoint is on a second node (its own pod subnet, routed
		// between the nodes as a host-gw CNI does): kube-proxy on the
		// first node DNATs to it and SNATs to the first node's address,
		// so the pod's reply comes back to the first node over eth0 and
		// leaves from there to the client.
		node2, pod2 := netnstest.New(t, "node2"), netnstest.New(t, "pod2")
		node2.Exec("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.accept_redirects=0", "net.ipv4.conf.default.accept_redirects=0")
		plug(node2, "eth0", "192.168.2.21"+f.lan)
		netnstest.Veth(t, node2, "veth0", "10.244.1.1/24", pod2, "eth0", "10.244.1.5/24")
		pod2.Exec("ip", "route", "add", "default", "via", "10.244.1.1")
		l.node.Exec("ip", "route", "add", "10.244.1.0/24", "via", "192.168.2.21")
		node2.Exec("ip", "route", "add", "10.244.0.0/24", "via", f.node)
		endpoint, server = "10.244.1.5", pod2
	}
	if kubeProxy == "iptables-hostnet" {
		// A host-network endpoint: kube-proxy DNATs to the node's own
		// address and the node's process answers (the output chain's
		// restore and the kernel's reroute on a changed mark).
		endpoint, server = f.node, l.node
	}
	switch kubeProxy {
	case "iptables-local", "iptables-cluster", "iptables-cluster-remote", "iptables-hostnet":
		restore := "iptables-legacy-restore"
		if f.six {
			restore = "ip6tables-legacy-restore"
		}
		cmd := l.node.Command(restore)
		cmd.Stdin = strings.NewReader(kubeProxyIptables(f.svc, endpoint, 80, 8080, kubeProxy != "iptables-local" && kubeProxy != "iptables-hostnet"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", restore, err, out)
		}
	case "nftables-cluster":
		cmd := l.node.Command("nft", "-f", "-")
		cmd.Stdin = strings.NewReader(kubeProxyNft(f.svc, f.pod, 80, 8080))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nft -f: %v\n%s", err, out)
		}
	default:
		t.Fatalf("unknown kube-proxy %q", kubeProxy)
	}
	serve(t, server, net.JoinHostPort(endpoint, "8080"))
	return l
}

// serve runs a ping/pong TCP responder in ns, which also answers the
// benchmark's "bulk <bytes>" with that many bytes.
func serve(t testing.TB, ns *netnstest.NS, addr string) {
	netnstest.ServePing(t, ns, addr, func(c net.Conn, l string) {
		var n int
		if scanBulk(l, &n) {
			_ = c.SetDeadline(time.Now().Add(time.Minute))
			_, _ = io.CopyN(c, zeros{}, int64(n))
		}
	})
}

// scanBulk parses the benchmark's request, "bulk <bytes>".
func scanBulk(l string, n *int) bool {
	k, err := fmt.Sscanf(l, "bulk %d\n", n)
	return k == 1 && err == nil
}

// restoredRe matches a restore rule that counted packets.
var restoredRe = regexp.MustCompile(`ct direction reply .* counter packets [1-9]`)

// zeros reads as an endless stream of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// exchange does one request/response: only a reply proves the path (the
// client "connects" either way, the SYN-ACK comes from the node directly).
func exchange(client *netnstest.NS, dst string) error { return netnstest.Ping(client, "", dst) }

// resolve makes the node talk to the routers once, as its BGP sessions do,
// so their neighbour entries exist.
func (l *lab) resolve(t testing.TB) {
	t.Helper()
	for _, r := range l.routerAddrs {
		if err := l.node.Do(func() error {
			c, err := net.Dial("udp", net.JoinHostPort(r, "9"))
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("x"))
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
}

func (l *lab) spec(services ...string) returnpath.Spec {
	var s returnpath.Spec
	for i, r := range l.routerAddrs {
		s.Peers = append(s.Peers, returnpath.Peer{Name: fmt.Sprintf("r%d", i), Address: netip.MustParseAddr(r)})
	}
	for _, svc := range services {
		rg, err := iprange.Parse(svc)
		if err != nil {
			panic(err)
		}
		s.Services = append(s.Services, rg)
	}
	return s
}

// set applies spec on the node until every peer is ready (the neighbour
// entries arrive with the routers' answers).
func (l *lab) set(t testing.TB, m *returnpath.Manager, spec returnpath.Spec) map[string]returnpath.PeerStatus {
	t.Helper()
	var st map[string]returnpath.PeerStatus
	for range 50 {
		if err := l.node.Do(func() error { m.Set(spec); m.Resync(); return nil }); err != nil {
			t.Fatal(err)
		}
		st = m.Status()
		ready := true
		for _, p := range spec.Peers {
			ready = ready && st[p.Name].Ready
		}
		if ready {
			return st
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("return path not ready: %+v", st)
	return nil
}

// assured returns the router's conntrack flows to the service.
func (l *lab) flows(t testing.TB, router *netnstest.NS) []symmetry.Flow {
	t.Helper()
	p := netip.PrefixFrom(netip.MustParseAddr(l.svcAddr), netip.MustParseAddr(l.svcAddr).BitLen())
	var fs []symmetry.Flow
	if err := router.Do(func() error {
		var err error
		fs, err = symmetry.Conntrack{}.Flows([]netip.Prefix{p})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return fs
}

func runSymmetric(t *testing.T, f family, kubeProxy string) {
	l := newLab(t, f, kubeProxy)

	// Direct (the default): the node answers around the router, whose
	// firewall drops the client's next packets as INVALID.
	if err := exchange(l.clients[0], l.svc); err == nil {
		t.Fatalf("direct return path: the exchange worked through a router with an INVALID drop and no exemption\n%s\n%s\n%s", l.routers[0].Exec("iptables-legacy-save", "-c"), l.routers[0].Exec("conntrack", "-L"), l.node.Exec("conntrack", "-L"))
	}
	for _, fl := range l.flows(t, l.routers[0]) {
		if fl.SeenReply {
			t.Errorf("direct return path: router saw a reply %+v", fl)
		}
	}

	// Symmetric: before the node has talked to the second router its MAC
	// address is unknown, which the status says (the first one's is known:
	// it asked for the node's when it forwarded the SYN).
	m := returnpath.NewManager(returnpath.Config{}, returnpath.Kernel{}, testr.New(t), nil)
	a := netip.MustParseAddr(l.svcAddr)
	bits := 24
	if l.six {
		bits = 64
	}
	spec := l.spec(netip.PrefixFrom(a, bits).Masked().String(), "10.99.0.1-10.99.0.9")
	if err := l.node.Do(func() error { m.Set(spec); return nil }); err != nil {
		t.Fatal(err)
	}
	if st := m.Status()["r1"]; st.Ready || st.Reason != returnpath.ReasonRouterUnresolved {
		t.Errorf("status before the neighbour entries: %+v, want %s", st, returnpath.ReasonRouterUnresolved)
	}
	l.resolve(t)
	st := l.set(t, m, spec)
	if st["r0"].Slot.Slot == st["r1"].Slot.Slot || st["r0"].Slot.Table == st["r1"].Slot.Table {
		t.Fatalf("two routers share a slot: %+v", st)
	}
	t.Logf("node:\n%s%s%s", l.node.Exec("nft", "list", "table", "inet", returnpath.TableName),
		l.node.Exec("ip", "rule"), l.node.Exec("ip", "route", "show", "table", "all", "proto", "220"))

	for i, c := range l.clients {
		if err := exchange(c, l.svc); err != nil {
			t.Fatalf("symmetric return path, client %d via router %d: %v", i, i, err)
		}
	}
	// The replies took our restore rule: in output for a host-network
	// endpoint, in prerouting for a pod's.
	chain := returnpath.ChainPrerouting
	if kubeProxy == "iptables-hostnet" {
		chain = returnpath.ChainOutput
	}
	if out := l.node.Exec("nft", "list", "chain", "inet", returnpath.TableName, chain); !restoredRe.MatchString(out) {
		t.Errorf("no reply went through the restore rules of chain %s:\n%s", chain, out)
	}
	for i, r := range l.routers {
		assured := 0
		for _, fl := range l.flows(t, r) {
			if fl.Assured {
				assured++
			}
		}
		if assured == 0 {
			t.Errorf("router %d: no ASSURED flow to the service: %+v", i, l.flows(t, r))
		}
	}

	// Drift: someone deletes our table, a rule and a route (`nft flush
	// ruleset` would take kube-proxy's nftables table too);
	// the next resync puts them back and new connections work again.
	l.node.Exec("nft", "delete", "table", "inet", returnpath.TableName)
	ip := []string{"ip"}
	if l.six {
		ip = []string{"ip", "-6"}
	}
	l.node.Exec(append(ip, "rule", "del", "priority", "4200", "table", fmt.Sprint(st["r0"].Slot.Table))...)
	l.node.Exec(append(ip, "route", "flush", "table", fmt.Sprint(st["r1"].Slot.Table))...)
	if err := l.node.Do(func() error { m.Resync(); return nil }); err != nil {
		t.Fatal(err)
	}
	if st := m.Status(); !st["r0"].Ready || !st["r1"].Ready {
		t.Fatalf("after the repair: %+v", st)
	}
	for i, c := range l.clients {
		if err := exchange(c, l.svc); err != nil {
			t.Fatalf("after the repair, client %d: %v", i, err)
		}
	}

	// The second router's BGPPeer goes (or turns direct): its rule and
	// route go, the first router's stay and keep working.
	one := spec
	one.Peers = spec.Peers[:1]
	if err := l.node.Do(func() error { m.Set(one); return nil }); err != nil {
		t.Fatal(err)
	}
	if out := l.node.Exec(append(ip, "rule")...); strings.Contains(out, fmt.Sprintf("lookup %d", st["r1"].Slot.Table)) ||
		!strings.Contains(out, fmt.Sprintf("lookup %d", st["r0"].Slot.Table)) {
		t.Errorf("rules after removing r1:\n%s", out)
	}
	if out := l.node.Exec(append(ip, "route", "show", "table", "all", "proto", "220")...); strings.Contains(out, l.routerAddrs[1]) || !strings.Contains(out, l.routerAddrs[0]) {
		t.Errorf("routes after removing r1:\n%s", out)
	}
	if out := l.node.Exec("nft", "list", "table", "inet", returnpath.TableName); strings.Contains(out, l.routerAddrs[1]) {
		t.Errorf("table after removing r1:\n%s", out)
	}
	if err := exchange(l.clients[0], l.svc); err != nil {
		t.Fatalf("after removing r1, client 0: %v", err)
	}

	// Turned off: everything of ours goes, and the seed's failure returns.
	if err := l.node.Do(func() error { m.Set(returnpath.Spec{}); return nil }); err != nil {
		t.Fatal(err)
	}
	if out, err := l.node.Try("nft", "list", "table", "inet", returnpath.TableName); err == nil {
		t.Errorf("our table left after turning off:\n%s", out)
	}
	if out := l.node.Exec("ip", "rule") + l.node.Exec("ip", "-6", "rule"); strings.Contains(out, "4201") || strings.Contains(out, "4202") {
		t.Errorf("our rules left:\n%s", out)
	}
	if out := l.node.Exec("ip", "route", "show", "table", "all", "proto", "220") + l.node.Exec("ip", "-6", "route", "show", "table", "all", "proto", "220"); out != "" {
		t.Errorf("our routes left:\n%s", out)
	}
	if err := exchange(l.clients[0], l.svc); err == nil {
		t.Error("after turning off, the exchange still worked")
	}
}

// TestKernelSymmetricReturnPath: the seed's network with a ferm router and
// kube-proxy's DNAT (iptables mode, externalTrafficPolicy Local and
// Cluster, the endpoint on this node, on another or in the host network;
// nftables mode, Cluster)
// to a pod behind the node's bridge, two
// routers: without returnPath symmetric the connection hangs; with it, each
// client's connection works through its own router, whose conntrack shows
// it ASSURED; turning it off removes the table, rules and routes.
func TestKernelSymmetricReturnPath(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, kp := range []string{"iptables-local", "iptables-cluster", "iptables-cluster-remote", "iptables-hostnet", "nftables-cluster"} {
		t.Run(kp, func(t *testing.T) { runSymmetric(t, v4, kp) })
	}
}

// TestKernelSymmetricReturnPathIPv6: the same over IPv6 (the routers' MAC
// addresses from the IPv6 neighbour table, ip -6 rules and tables).
func TestKernelSymmetricReturnPathIPv6(t *testing.T) {
	netnstest.RequireRoot(t)
	runSymmetric(t, v6, "iptables-local")
}
