package routes

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"testing"
)

// servicePrefix is the i-th /32 of 10.254.0.0/16.
func servicePrefix(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 254, byte(i >> 8), byte(i)}), 32)
}

// TestRouteBatchOutcomes: more routes than one batch holds go in, and each
// failure is reported for its own route, also in the middle of a batch
// (the kernel answers only failures, then the last request).
func TestRouteBatchOutcomes(t *testing.T) {
	ns, _ := lab(t)
	k, err := newNexthopKernel(ns.Handle())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	oif, err := k.GatewayOIF(addr("192.168.2.20"))
	if err != nil {
		t.Fatal(err)
	}
	const gw = 0x62670001
	if err := k.SetNexthop(Nexthop{ID: gw, Gateway: addr("192.168.2.20"), OIF: oif}, 220, true); err != nil {
		t.Fatal(err)
	}
	ns.Exec("ip", "route", "add", servicePrefix(200).String(), "via", "192.168.2.30", "proto", "static")
	n := 2*routeBatchMax + 44
	rs := make([]RouteNexthop, n)
	for i := range rs {
		rs[i] = RouteNexthop{Add: true, Prefix: servicePrefix(i), Table: 254, Proto: 220, ID: gw}
	}
	rs[5].ID = gw + 1               // no such nexthop object
	rs[routeBatchMax-1].ID = gw + 2 // the last of the first batch fails too
	// rs[200]: its key is taken by the static route (NLM_F_EXCL)
	errs := k.SetRouteNexthops(rs)
	for i, err := range errs {
		switch i {
		case 5, routeBatchMax - 1:
			if err == nil || errors.Is(err, syscall.EEXIST) {
				t.Errorf("route %d through a missing nexthop object: err %v, want an error", i, err)
			}
		case 200:
			if !errors.Is(err, syscall.EEXIST) {
				t.Errorf("route %d over a static route: err %v, want EEXIST", i, err)
			}
		default:
			if err != nil {
				t.Errorf("route %d: %v", i, err)
			}
		}
	}
	out := ns.Exec("ip", "route", "show", "proto", "220")
	if got := strings.Count(out, "nhid "); got != n-3 {
		t.Fatalf("%d routes of ours through a nexthop object, want %d:\n%s", got, n-3, out)
	}
	// Replacing all of them (no answer but the last's) works as well.
	for i := range rs {
		rs[i].Add, rs[i].ID = false, gw
	}
	rs[200].Add = true // still taken
	errs = k.SetRouteNexthops(rs)
	for i, err := range errs {
		if (err != nil) != (i == 200) {
			t.Errorf("replace route %d: %v", i, err)
		}
	}
}

// TestReconcileBatchEEXIST: with nexthop groups the routes of a pass go to
// the kernel in batches; an add in the middle of one that finds its key
// taken (a route of ours the cache did not know) re-reads the table, and
// the rest of the pass (the routes after it in the batch were made too) is
// planned against it: every route in, a foreign one a conflict, no error.
func TestReconcileBatchEEXIST(t *testing.T) {
	ns, h := lab(t)
	r := New(h, Config{Table: 254, Protocol: 220, NexthopGroups: ModeResilient}, quiet(), WithNetNS(ns.Handle()))
	t.Cleanup(r.Close)
	if res := r.Reconcile(nil, true); len(res.Errors) > 0 { // prime an empty cache
		t.Fatal(res.Errors)
	}
	// Behind the cache's back.
	ns.Exec("ip", "route", "add", servicePrefix(100).String(), "via", "192.168.2.30", "proto", "220")
	ns.Exec("ip", "route", "add", servicePrefix(150).String(), "via", "192.168.2.30", "proto", "static")
	a, b := addr("192.168.2.20"), addr("192.168.2.21")
	desired := map[netip.Prefix][]netip.Addr{}
	for i := range 300 {
		desired[servicePrefix(i)] = []netip.Addr{a}
		if i%2 == 0 {
			desired[servicePrefix(i)] = []netip.Addr{a, b}
		}
	}
	res := r.Reconcile(desired, false)
	if len(res.Errors) > 0 {
		t.Fatalf("errors: %+v", res.Errors)
	}
	if len(res.Conflicts) != 1 || res.Conflicts[0].Prefix != servicePrefix(150) {
		t.Fatalf("conflicts %+v, want one for %s", res.Conflicts, servicePrefix(150))
	}
	want := clone(desired)
	delete(want, servicePrefix(150))
	got, err := New(h, Config{Table: 254, Protocol: 220}, quiet(), WithNetNS(ns.Handle())).Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d routes of ours in the kernel, want %d", len(got), len(want))
	}
	for p, nhs := range want {
		if fmt.Sprint(got[p]) != fmt.Sprint(nhs) {
			t.Errorf("%s: %v in the kernel, want %v", p, got[p], nhs)
		}
	}
	if out := ns.Exec("ip", "route", "show", servicePrefix(100).String()); !strings.Contains(out, "nhid ") {
		t.Errorf("our route the cache did not know was not replaced by one through a group: %q", out)
	}
}

// BenchmarkInstall10kGroups is BenchmarkInstall10k with nexthop groups
// (the default where the kernel has them), the routes sent one per
// request (batch=1, as before issue 20's batching) or routeBatchMax to a
// sendmsg.
func BenchmarkInstall10kGroups(b *testing.B) {
	for _, size := range []int{1, routeBatchMax} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			defer func(old int) { routeBatchMax = old }(routeBatchMax)
			routeBatchMax = size
			ns, h := lab(b)
			desired := map[netip.Prefix][]netip.Addr{}
			for i := 0; i < 10000; i++ {
				nhs := []netip.Addr{addr("192.168.2.20")}
				if i%3 == 0 {
					nhs = append(nhs, addr("192.168.2.21"))
				}
				desired[servicePrefix(i)] = nhs
			}
			r := New(h, Config{Table: 254, Protocol: 220, NexthopGroups: ModeResilient}, quiet(), WithNetNS(ns.Handle()))
			b.Cleanup(r.Close)
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
		})
	}
}
