package routes

import (
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bgplb/bgplb/internal/netnstest"
)

// ourNexthops lists `ip nexthop` lines of protocol 220 in ns.
func ourNexthops(ns *netnstest.NS) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(ns.Exec("ip", "nexthop", "show")), "\n") {
		if strings.Contains(l, "proto 220") {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return out
}

func groupLines(lines []string) []string {
	var out []string
	for _, l := range lines {
		if strings.Contains(l, " group ") {
			out = append(out, l)
		}
	}
	return out
}

var nhidRe = regexp.MustCompile(`nhid (\d+)`)

// buckets maps bucket index -> the nexthop id it holds, for group id.
func buckets(ns *netnstest.NS, id string) map[string]string {
	out := map[string]string{}
	re := regexp.MustCompile(`index (\d+) .*nhid (\d+)`)
	for _, l := range strings.Split(ns.Exec("ip", "nexthop", "bucket", "show", "id", id), "\n") {
		if m := re.FindStringSubmatch(l); m != nil {
			out[m[1]] = m[2]
		}
	}
	return out
}

func gatewayID(t *testing.T, ns *netnstest.NS, gw string) string {
	t.Helper()
	re := regexp.MustCompile(`^id (\d+) via ` + regexp.QuoteMeta(gw) + ` `)
	for _, l := range ourNexthops(ns) {
		if m := re.FindStringSubmatch(l); m != nil {
			return m[1]
		}
	}
	t.Fatalf("no nexthop object for %s in %q", gw, ourNexthops(ns))
	return ""
}

// TestResilientGroups: routes go through resilient nexthop groups with the
// announced weights; a next hop leaving moves only its own buckets; routes
// with the same weighted next hops share a group; unused objects are
// collected and Flush removes them all.
func TestResilientGroups(t *testing.T) {
	ns, h := lab(t)
	r := New(h, Config{Table: 254, Protocol: 220, NexthopGroups: ModeResilient}, quiet(), WithNetNS(ns.Handle()))
	t.Cleanup(r.Close)
	a, b := addr("192.168.2.20"), addr("192.168.2.21")
	svc, svc2, svc6 := pfx("192.168.254.1/32"), pfx("192.168.254.2/32"), pfx("2001:db8:254::1/128")
	a6, b6 := addr("2001:db8:2::20"), addr("2001:db8:2::21")
	r.SetWeights(Weights{svc: {a: 3, b: 1}, svc6: {a6: 3, b6: 1}})
	desired := map[netip.Prefix][]netip.Addr{svc: {a, b}, svc2: {a, b}, svc6: {a6, b6}}
	if res := r.Reconcile(desired, true); len(res.Errors) > 0 {
		t.Fatalf("errors: %+v", res.Errors)
	}
	if d := r.Details(); d.NexthopGroups != ModeResilient || d.Groups != 3 || d.Nexthops != 4 {
		t.Fatalf("details %+v, want resilient with 3 groups (3:1, 1:1, v6 3:1) and 4 gateways", d)
	}
	route := ns.Exec("ip", "route", "show", svc.String())
	m := nhidRe.FindStringSubmatch(route)
	if m == nil || !strings.Contains(route, "proto 220") {
		t.Fatalf("want a route of ours through a nexthop object, got %q", route)
	}
	gid := m[1]
	group := ns.Exec("ip", "nexthop", "show", "id", gid)
	ida, idb := gatewayID(t, ns, a.String()), gatewayID(t, ns, b.String())
	if !strings.Contains(group, "group "+ida+",3/"+idb+" ") || !strings.Contains(group, "type resilient buckets 128") {
		t.Fatalf("want a resilient group %s,3/%s, got %q", ida, idb, group)
	}
	if r6 := ns.Exec("ip", "-6", "route", "show", svc6.String()); !strings.Contains(r6, "nhid ") {
		t.Fatalf("want the IPv6 route through a nexthop object, got %q", r6)
	}
	got, err := New(h, Config{Table: 254, Protocol: 220}, quiet(), WithNetNS(ns.Handle())).Load()
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(desired, got, cmps...); d != "" {
		t.Fatalf("a fresh reconciler reads the routes back (-want +got):\n%s", d)
	}
	before := buckets(ns, gid)
	var onB int
	for _, nh := range before {
		if nh == idb {
			onB++
		}
	}
	if onB != 32 {
		t.Fatalf("weights 3:1 over 128 buckets: want 32 on %s, got %d (%v)", b, onB, before)
	}

	// a leaves svc (drained): the same group, b's buckets untouched.
	r.SetWeights(nil)
	desired[svc] = []netip.Addr{b}
	if res := r.Reconcile(desired, false); len(res.Errors) > 0 {
		t.Fatalf("errors: %+v", res.Errors)
	}
	if m := nhidRe.FindStringSubmatch(ns.Exec("ip", "route", "show", svc.String())); m == nil || m[1] != gid {
		t.Fatalf("want svc still on group %s (changed in place), got %v", gid, m)
	}
	after := buckets(ns, gid)
	for i, nh := range before {
		if nh == idb && after[i] != idb {
			t.Fatalf("bucket %s of the remaining next hop moved to %s", i, after[i])
		}
		if after[i] != idb {
			t.Fatalf("bucket %s still on %s after it left", i, after[i])
		}
	}

	// Everything withdrawn: no route, no nexthop object of ours.
	if res := r.Reconcile(nil, false); len(res.Errors) > 0 {
		t.Fatalf("errors: %+v", res.Errors)
	}
	if left := ourNexthops(ns); len(left) > 0 {
		t.Fatalf("nexthop objects left after every route went: %q", left)
	}

	// Flush takes routes and objects.
	if res := r.Reconcile(desired, false); len(res.Errors) > 0 || len(groupLines(ourNexthops(ns))) != 3 {
		t.Fatalf("errors %+v, groups %q (want 3: {b}, {a,b}, {a6,b6})", res.Errors, groupLines(ourNexthops(ns)))
	}
	fr := New(h, Config{Table: 254, Protocol: 220}, quiet(), WithNetNS(ns.Handle()))
	defer fr.Close()
	if n, err := fr.Flush(); err != nil || n != 3 {
		t.Fatalf("flush: %d routes, %v", n, err)
	}
	if left := ourNexthops(ns); len(left) > 0 {
		t.Fatalf("nexthop objects left after flush: %q", left)
	}
}

// TestMultipathWeights: in multipath mode the weights go on the route's
// next hops (rtnh_hops) and read back.
func TestMultipathWeights(t *testing.T) {
	ns, h := lab(t)
	r := New(h, Config{Table: 254, Protocol: 220, NexthopGroups: ModeMultipath}, quiet(), WithNetNS(ns.Handle()))
	t.Cleanup(r.Close)
	a, b := addr("192.168.2.20"), addr("192.168.2.21")
	svc := pfx("192.168.254.1/32")
	r.SetWeights(Weights{svc: {a: 3, b: 1}})
	if res := r.Reconcile(map[netip.Prefix][]netip.Addr{svc: {a, b}}, true); len(res.Errors) > 0 {
		t.Fatalf("errors: %+v", res.Errors)
	}
	out := ns.Exec("ip", "route", "show", svc.String())
	if !regexp.MustCompile(`via 192\.168\.2\.20 dev lan0 weight 3`).MatchString(out) || !regexp.MustCompile(`via 192\.168\.2\.21 dev lan0 weight 1`).MatchString(out) {
		t.Fatalf("want weights 3 and 1, got %q", out)
	}
	if d := r.Details(); d.NexthopGroups != ModeMultipath || !cmp.Equal(d.Weights[svc], []uint16{3, 1}) {
		t.Fatalf("details %+v", d)
	}
	// The counts change (2:2): equal weights, one replace; a fresh
	// reconciler reads the weights back.
	r.SetWeights(Weights{svc: {a: 2, b: 2}})
	if res := r.Reconcile(map[netip.Prefix][]netip.Addr{svc: {a, b}}, false); len(res.Errors) > 0 || res.Replaced != 1 {
		t.Fatalf("result %+v", res)
	}
	if out := ns.Exec("ip", "route", "show", svc.String()); strings.Contains(out, "weight 3") {
		t.Fatalf("want equal weights, got %q", out)
	}
	// Switching to resilient moves the route onto a group.
	r2 := New(h, Config{Table: 254, Protocol: 220, NexthopGroups: ModeAuto}, quiet(), WithNetNS(ns.Handle()))
	t.Cleanup(r2.Close)
	if res := r2.Reconcile(map[netip.Prefix][]netip.Addr{svc: {a, b}}, true); len(res.Errors) > 0 || res.Replaced != 1 {
		t.Fatalf("result %+v", res)
	}
	if out := ns.Exec("ip", "route", "show", svc.String()); !strings.Contains(out, "nhid") {
		t.Fatalf("want the route on a group, got %q", out)
	}
	// And back to multipath: the group is collected.
	r.SetWeights(nil)
	if res := r.Reconcile(map[netip.Prefix][]netip.Addr{svc: {a, b}}, true); len(res.Errors) > 0 || res.Replaced != 1 {
		t.Fatalf("result %+v", res)
	}
	if left := ourNexthops(ns); len(left) > 0 || strings.Contains(ns.Exec("ip", "route", "show", svc.String()), "nhid") {
		t.Fatalf("want a plain route and no nexthop object, got %q", left)
	}
}

func TestNormalize(t *testing.T) {
	a, b, c := addr("192.0.2.1"), addr("192.0.2.2"), addr("192.0.2.3")
	nhs := []netip.Addr{a, b}
	tests := []struct {
		name string
		nhs  []netip.Addr
		w    map[netip.Addr]float64
		want []uint16
	}{
		{"3:1", nhs, map[netip.Addr]float64{a: 3, b: 1}, []uint16{3, 1}},
		{"in bytes per second", nhs, map[netip.Addr]float64{a: 375000, b: 125000}, []uint16{3, 1}},
		{"equal is nil", nhs, map[netip.Addr]float64{a: 2, b: 2}, nil},
		{"one missing: equal", nhs, map[netip.Addr]float64{a: 2}, nil},
		{"a zero: equal", nhs, map[netip.Addr]float64{a: 2, b: 0}, nil},
		{"3:2", nhs, map[netip.Addr]float64{a: 1.5, b: 1}, []uint16{3, 2}},
		{"wide ratio scaled to 256", nhs, map[netip.Addr]float64{a: 1000, b: 1}, []uint16{256, 1}},
		{"whole within 1%", []netip.Addr{a, b, c}, map[netip.Addr]float64{a: 1, b: 1.001, c: 3.1415926}, []uint16{6, 6, 19}},
		{"near whole", nhs, map[netip.Addr]float64{a: 1, b: 3.99 / 1.13}, []uint16{2, 7}},
		{"one next hop", []netip.Addr{a}, map[netip.Addr]float64{a: 3}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, Normalize(tc.nhs, tc.w)); d != "" {
				t.Errorf("Normalize (-want +got):\n%s", d)
			}
		})
	}
}
