package routes

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"

	"github.com/bgplb/bgplb/internal/netnstest"
)

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
	cmps = []cmp.Option{
		cmp.Comparer(func(x, y netip.Addr) bool { return x == y }),
		cmp.Comparer(func(x, y netip.Prefix) bool { return x == y }),
	}
)

// lab makes a namespace with a LAN interface (one end of a veth pair; the
// machine has no dummy driver) on 192.168.2.1/24 and
// 2001:db8:2::1/64 and returns a netlink handle bound to it.
func lab(t testing.TB) (*netnstest.NS, *netlink.Handle) {
	ns := netnstest.New(t, "rt")
	ns.Exec("ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan0p")
	ns.Exec("ip", "link", "set", "lan0p", "up")
	ns.Exec("ip", "addr", "add", "192.168.2.1/24", "dev", "lan0")
	ns.Exec("ip", "addr", "add", "2001:db8:2::1/64", "dev", "lan0", "nodad")
	ns.Exec("ip", "link", "set", "lan0", "up")
	h, err := netlink.NewHandleAt(ns.Handle())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return ns, h
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestReconcile(t *testing.T) {
	ns, h := lab(t)
	r := New(h, Config{Table: 254, Metric: 0, Protocol: 220}, quiet())
	a, b := addr("192.168.2.20"), addr("192.168.2.21")
	svc := pfx("192.168.254.1/32")

	// Two next hops: one ECMP route.
	res := r.Reconcile(map[netip.Prefix][]netip.Addr{svc: {a, b}, pfx("2001:db8:254::1/128"): {addr("2001:db8:2::20"), addr("2001:db8:2::21")}}, false)
	if len(res.Errors) > 0 {
		t.Fatalf("errors: %+v", res.Errors)
	}
	out := ns.Exec("ip", "route", "show", "192.168.254.1/32")
	if !strings.Contains(out, "proto 220") || !strings.Contains(out, "nexthop via 192.168.2.20") || !strings.Contains(out, "nexthop via 192.168.2.21") {
		t.Fatalf("want an ECMP route with both next hops and proto 220, got:\n%s", out)
	}
	out6 := ns.Exec("ip", "-6", "route", "show", "2001:db8:254::1/128")
	if !strings.Contains(out6, "2001:db8:2::20") || !strings.Contains(out6, "2001:db8:2::21") {
		t.Fatalf("want an IPv6 ECMP route, got:\n%s", out6)
	}
	// A fresh reconciler reads the same state back.
	got, err := New(h, Config{Table: 254, Protocol: 220}, quiet()).Load()
	if err != nil {
		t.Fatal(err)
	}
	want := map[netip.Prefix][]netip.Addr{svc: {a, b}, pfx("2001:db8:254::1/128"): {addr("2001:db8:2::20"), addr("2001:db8:2::21")}}
	if d := cmp.Diff(want, got, cmps...); d != "" {
		t.Fatalf("Load (-want +got):\n%s", d)
	}

	// One withdraws: one next hop left.
	res = r.Reconcile(map[netip.Prefix][]netip.Addr{svc: {b}}, false)
	if len(res.Errors) > 0 || res.Replaced != 1 || res.Deleted != 1 {
		t.Fatalf("result %+v", res)
	}
	out = ns.Exec("ip", "route", "show", "192.168.254.1/32")
	if strings.TrimSpace(out) != "192.168.254.1 via 192.168.2.21 dev lan0 proto 220" {
		t.Fatalf("want one path via .21, got %q", out)
	}

	// A foreign static route for another service prefix is left alone and reported.
	ns.Exec("ip", "route", "add", "192.168.254.2/32", "via", "192.168.2.30", "proto", "static")
	res = r.Reconcile(map[netip.Prefix][]netip.Addr{svc: {b}, pfx("192.168.254.2/32"): {a}}, false)
	if d := cmp.Diff([]netip.Prefix{pfx("192.168.254.2/32")}, conflictPrefixes(res), cmps...); d != "" {
		t.Fatalf("conflicts (-want +got):\n%s", d)
	}
	if res.Conflicts[0].Protocol != 4 {
		t.Errorf("conflict protocol %d, want 4 (static)", res.Conflicts[0].Protocol)
	}
	out = ns.Exec("ip", "route", "show", "192.168.254.2/32")
	if strings.TrimSpace(out) != "192.168.254.2 via 192.168.2.30 dev lan0 proto static" {
		t.Fatalf("foreign route changed: %q", out)
	}
	// Also on a full pass, and deleting everything of ours leaves it.
	res = r.Reconcile(map[netip.Prefix][]netip.Addr{pfx("192.168.254.2/32"): {a}}, true)
	if len(res.Conflicts) != 1 || res.Deleted != 1 {
		t.Fatalf("result %+v", res)
	}
	res = r.Reconcile(nil, true)
	if len(res.Errors) > 0 || len(res.Installed) != 0 {
		t.Fatalf("result %+v", res)
	}
	if out := ns.Exec("ip", "route", "show", "proto", "220"); strings.TrimSpace(out) != "" {
		t.Fatalf("routes of ours left: %q", out)
	}
	if out := ns.Exec("ip", "route", "show", "192.168.254.2/32"); !strings.Contains(out, "proto static") {
		t.Fatalf("foreign route gone: %q", out)
	}
}

func TestLostRouteRepairedOnFullPass(t *testing.T) {
	ns, h := lab(t)
	r := New(h, Config{Table: 100, Metric: 20, Protocol: 220}, quiet())
	d := map[netip.Prefix][]netip.Addr{pfx("192.168.254.7/32"): {addr("192.168.2.20")}}
	if res := r.Reconcile(d, false); res.Added != 1 {
		t.Fatalf("result %+v", res)
	}
	// The kernel drops routes silently when their link goes down.
	ns.Exec("ip", "link", "set", "lan0", "down")
	ns.Exec("ip", "link", "set", "lan0", "up")
	if out := ns.Exec("ip", "route", "show", "table", "100"); strings.TrimSpace(out) != "" {
		t.Fatalf("expected the kernel to drop the route, got %q", out)
	}
	if res := r.Reconcile(d, false); res.Added != 0 {
		t.Fatalf("incremental pass should trust the cache: %+v", res)
	}
	if res := r.Reconcile(d, true); res.Added != 1 || len(res.Errors) > 0 {
		t.Fatalf("full pass: %+v", res)
	}
	out := ns.Exec("ip", "route", "show", "table", "100")
	if strings.TrimSpace(out) != "192.168.254.7 via 192.168.2.20 dev lan0 proto 220 metric 20" {
		t.Fatalf("got %q", out)
	}
	// A metric change: the route at the old metric is ours and goes.
	r2 := New(h, Config{Table: 100, Metric: 30, Protocol: 220}, quiet())
	if res := r2.Reconcile(d, true); res.Added != 1 || res.Deleted != 1 {
		t.Fatalf("metric change: %+v", res)
	}
	if n, err := r2.Flush(); err != nil || n != 1 {
		t.Fatalf("Flush = %d, %v", n, err)
	}
}

func TestFlushLeavesForeign(t *testing.T) {
	ns, h := lab(t)
	ns.Exec("ip", "route", "add", "192.168.254.9/32", "via", "192.168.2.30", "proto", "186")
	r := New(h, Config{Table: 254, Protocol: 220}, quiet())
	r.Reconcile(map[netip.Prefix][]netip.Addr{pfx("192.168.254.8/32"): {addr("192.168.2.20")}}, false)
	if n, err := r.Flush(); err != nil || n != 1 {
		t.Fatalf("Flush = %d, %v", n, err)
	}
	if out := ns.Exec("ip", "route", "show", "192.168.254.9/32"); !strings.Contains(out, "proto bgp") && !strings.Contains(out, "proto 186") {
		t.Fatalf("foreign route gone: %q", out)
	}
}

func TestLANAddresses(t *testing.T) {
	_, h := lab(t)
	c, l, missing, err := LANAddresses(h, []string{"lan0", "nope0"})
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]netip.Prefix{pfx("192.168.2.0/24"), pfx("2001:db8:2::/64")}, c, cmps...); d != "" {
		t.Errorf("connected (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]netip.Addr{addr("192.168.2.1"), addr("2001:db8:2::1")}, l, cmps...); d != "" {
		t.Errorf("local (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"nope0"}, missing); d != "" {
		t.Errorf("missing (-want +got):\n%s", d)
	}
}

func TestWithStale(t *testing.T) {
	a, b, c := addr("192.168.2.20"), addr("192.168.2.21"), addr("192.168.2.22")
	desired := map[netip.Prefix][]netip.Addr{pfx("192.168.254.1/32"): {b}}
	stale := map[netip.Prefix][]netip.Addr{
		pfx("192.168.254.1/32"): {a, b, c},
		pfx("192.168.254.2/32"): {c},
		pfx("192.168.254.3/32"): {a},
	}
	eor := map[netip.Addr]bool{c: true} // c re-announced everything it has
	got := WithStale(desired, stale, func(nh netip.Addr) bool { return !eor[nh] })
	want := map[netip.Prefix][]netip.Addr{
		pfx("192.168.254.1/32"): {a, b},
		pfx("192.168.254.3/32"): {a},
	}
	if d := cmp.Diff(want, got, cmps...); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

func TestRTProtos(t *testing.T) {
	if !strings.HasSuffix(RTProtosConf(220), "\n220 bgplb\n") {
		t.Errorf("RTProtosConf = %q", RTProtosConf(220))
	}
}

func conflictPrefixes(r Result) []netip.Prefix {
	var out []netip.Prefix
	for _, c := range r.Conflicts {
		out = append(out, c.Prefix)
	}
	return out
}

// BenchmarkInstall10k measures programming 10,000 /32 routes (a third of them
// ECMP) into an empty table from scratch, one netlink request each.
func BenchmarkInstall10k(b *testing.B) {
	_, h := lab(b)
	desired := map[netip.Prefix][]netip.Addr{}
	for i := 0; i < 10000; i++ {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 254, byte(i >> 8), byte(i)}), 32)
		nhs := []netip.Addr{addr("192.168.2.20")}
		if i%3 == 0 {
			nhs = append(nhs, addr("192.168.2.21"))
		}
		desired[p] = nhs
	}
	r := New(h, Config{Table: 254, Protocol: 220}, quiet())
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res := r.Reconcile(desired, true)
		if len(res.Errors) > 0 || res.Added != 10000 {
			b.Fatalf("added %d, errors %v", res.Added, res.Errors[:min(3, len(res.Errors))])
		}
		b.StopTimer()
		if n, err := r.Flush(); err != nil || n != 10000 {
			b.Fatal(fmt.Sprint(n, err))
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(10000*b.N)/b.Elapsed().Seconds(), "routes/s")
}

// TestReconcileChanged: an incremental pass programs the changed prefixes
// only (another prefix whose desired next hops differ is left as it is
// until it is named or a full pass runs), deletes a changed prefix no
// longer desired, and re-reads the table first when an error made the
// cache doubtful.
func TestReconcileChanged(t *testing.T) {
	ns, h := lab(t)
	r := New(h, Config{Table: 254, Protocol: 220}, quiet())
	a, b := addr("192.168.2.20"), addr("192.168.2.21")
	p1, p2, p3 := pfx("192.168.254.1/32"), pfx("192.168.254.2/32"), pfx("192.168.254.3/32")
	if res := r.Reconcile(map[netip.Prefix][]netip.Addr{p1: {a}, p2: {a}}, true); len(res.Errors) > 0 {
		t.Fatalf("full pass: %+v", res.Errors)
	}
	desired := map[netip.Prefix][]netip.Addr{p1: {a, b}, p2: {b}, p3: {a}}
	res := r.ReconcileChanged(desired, []netip.Prefix{p1, p3})
	if len(res.Errors) > 0 || res.Added != 1 || res.Replaced != 1 || res.Deleted != 0 || res.InstalledCount != 3 {
		t.Fatalf("incremental pass: %+v", res)
	}
	want := map[netip.Prefix][]netip.Addr{p1: {a, b}, p2: {a}, p3: {a}}
	if got, err := New(h, Config{Table: 254, Protocol: 220}, quiet()).Load(); err != nil || cmp.Diff(want, got, cmps...) != "" {
		t.Fatalf("kernel after the incremental pass (-want +got):\n%s %v", cmp.Diff(want, got, cmps...), err)
	}
	delete(desired, p3)
	ns.Exec("ip", "route", "del", "192.168.254.1/32", "proto", "220")
	r.synced = false // as after an error
	res = r.ReconcileChanged(desired, []netip.Prefix{p1, p3})
	if len(res.Errors) > 0 || res.Added != 1 || res.Deleted != 1 {
		t.Fatalf("incremental pass after a re-read: %+v", res)
	}
	if out := ns.Exec("ip", "route", "show", "192.168.254.1/32"); !strings.Contains(out, "nexthop via 192.168.2.21") {
		t.Fatalf("route lost behind the cache's back not restored:\n%s", out)
	}
	if out := ns.Exec("ip", "route", "show", "192.168.254.3/32"); out != "" {
		t.Fatalf("a changed prefix no longer desired is still installed:\n%s", out)
	}
}
