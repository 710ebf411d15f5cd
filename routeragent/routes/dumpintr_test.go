package routes

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// interruptingNetlink is a kernel table whose dumps are interrupted
// (NLM_F_DUMP_INTR, netlink.ErrDumpInterrupted in vishvananda/netlink
// v1.3.1) the first `interrupts` times: those dumps return a partial
// listing, as the library does, plus the error.
type interruptingNetlink struct {
	mu         sync.Mutex
	table      []netlink.Route
	interrupts int
	dumps      int
	writes     []string
}

func (f *interruptingNetlink) RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dumps++
	if f.interrupts > 0 {
		f.interrupts--
		return append([]netlink.Route(nil), f.table[:len(f.table)/2]...), netlink.ErrDumpInterrupted
	}
	return append([]netlink.Route(nil), f.table...), nil
}

func (f *interruptingNetlink) write(op string, rt *netlink.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes = append(f.writes, op+" "+rt.Dst.String())
	switch op {
	case "add":
		for _, r := range f.table {
			if r.Dst.String() == rt.Dst.String() && r.Priority == rt.Priority {
				return unix.EEXIST
			}
		}
		f.table = append(f.table, *rt)
	case "del":
		for i, r := range f.table {
			if r.Dst.String() == rt.Dst.String() && r.Protocol == rt.Protocol {
				f.table = append(f.table[:i], f.table[i+1:]...)
				return nil
			}
		}
		return unix.ESRCH
	}
	return nil
}

func (f *interruptingNetlink) RouteAdd(rt *netlink.Route) error     { return f.write("add", rt) }
func (f *interruptingNetlink) RouteReplace(rt *netlink.Route) error { return f.write("replace", rt) }
func (f *interruptingNetlink) RouteDel(rt *netlink.Route) error     { return f.write("del", rt) }

func kroute(pfx, gw string, proto int) netlink.Route {
	_, dst, _ := net.ParseCIDR(pfx)
	return netlink.Route{Dst: dst, Gw: net.ParseIP(gw), Table: 254, Protocol: netlink.RouteProtocol(proto), Type: unix.RTN_UNICAST, Family: netlink.FAMILY_V4}
}

var addrCmp = cmp.Options{cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })}

func desiredOf(kv ...string) map[netip.Prefix][]netip.Addr {
	out := map[netip.Prefix][]netip.Addr{}
	for i := 0; i < len(kv); i += 2 {
		out[netip.MustParsePrefix(kv[i])] = []netip.Addr{netip.MustParseAddr(kv[i+1])}
	}
	return out
}

// TestDumpInterruptedRetried: an interrupted route dump is read again, and
// the partial listing it came with is never trusted (here the partial half
// lacks a foreign route and one of ours: trusting it would add over the
// foreign route and re-add ours).
func TestDumpInterruptedRetried(t *testing.T) {
	f := &interruptingNetlink{interrupts: 2, table: []netlink.Route{
		kroute("192.168.254.9/32", "192.168.2.30", 220),
		kroute("192.168.254.1/32", "192.168.2.20", 220),
		kroute("192.168.254.2/32", "192.168.2.30", unix.RTPROT_STATIC), // foreign
	}}
	r := NewWith(f, Config{Table: 254, Protocol: 220}, quiet())
	res := r.Reconcile(desiredOf("192.168.254.1/32", "192.168.2.20", "192.168.254.2/32", "192.168.2.20"), true)
	if len(res.Errors) != 0 {
		t.Fatalf("errors: %v", res.Errors)
	}
	if f.dumps != 3 {
		t.Errorf("%d dumps, want 3 (two interrupted, one complete)", f.dumps)
	}
	if len(res.Conflicts) != 1 || res.Conflicts[0].Prefix != netip.MustParsePrefix("192.168.254.2/32") {
		t.Errorf("conflicts %v, want the foreign 254.2", res.Conflicts)
	}
	if d := cmp.Diff([]string{"del 192.168.254.9/32"}, f.writes); d != "" {
		t.Errorf("kernel writes (-want +got):\n%s", d)
	}
}

// TestDumpInterruptedPersistently: when every dump of a pass is
// interrupted, the pass changes nothing in the kernel and reports an error
// (the agent retries with backoff); Load says so too; the next pass after
// the interruptions stop reconciles normally.
func TestDumpInterruptedPersistently(t *testing.T) {
	f := &interruptingNetlink{interrupts: 1000, table: []netlink.Route{
		kroute("192.168.254.9/32", "192.168.2.30", 220),
		kroute("192.168.254.1/32", "192.168.2.20", 220),
	}}
	r := NewWith(f, Config{Table: 254, Protocol: 220}, quiet())
	if _, err := r.Load(); !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Errorf("Load: %v, want ErrDumpInterrupted", err)
	}
	res := r.Reconcile(desiredOf("192.168.254.1/32", "192.168.2.20", "192.168.254.3/32", "192.168.2.20"), true)
	if len(res.Errors) == 0 {
		t.Fatal("no error reported for a pass whose every dump was interrupted")
	}
	if len(f.writes) != 0 {
		t.Errorf("the kernel was changed on an incomplete listing: %v", f.writes)
	}
	f.mu.Lock()
	f.interrupts = 0
	f.mu.Unlock()
	res = r.Reconcile(desiredOf("192.168.254.1/32", "192.168.2.20", "192.168.254.3/32", "192.168.2.20"), false)
	if len(res.Errors) != 0 {
		t.Fatalf("errors after the interruptions stopped: %v", res.Errors)
	}
	if d := cmp.Diff(desiredOf("192.168.254.1/32", "192.168.2.20", "192.168.254.3/32", "192.168.2.20"), res.Installed, addrCmp); d != "" {
		t.Errorf("installed (-want +got):\n%s", d)
	}
}
