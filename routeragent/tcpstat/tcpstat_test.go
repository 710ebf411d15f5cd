package tcpstat

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     Drops
		err      bool
	}{
		{"all four", "TcpExt: SyncookiesSent TCPMD5NotFound TCPMD5Unexpected TCPMD5Failure TCPMinTTLDrop\nTcpExt: 9 1 2 3 4\nIpExt: InNoRoutes\nIpExt: 0\n",
			Drops{MD5NotFound: 1, MD5Unexpected: 2, MD5Failure: 3, MinTTL: 4}, false},
		{"older kernel without TCPMD5Failure", "TcpExt: TCPMD5NotFound TCPMinTTLDrop\nTcpExt: 5 6\n", Drops{MD5NotFound: 5, MinTTL: 6}, false},
		{"no TcpExt", "IpExt: InNoRoutes\nIpExt: 0\n", Drops{}, true},
		{"values missing", "TcpExt: TCPMD5NotFound TCPMinTTLDrop\nTcpExt: 5\n", Drops{}, true},
		{"not a number", "TcpExt: TCPMinTTLDrop\nTcpExt: x\n", Drops{}, true},
	} {
		got, err := Parse(tc.in)
		if (err != nil) != tc.err {
			t.Errorf("%s: error %v", tc.name, err)
		}
		if d := cmp.Diff(tc.want, got); d != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, d)
		}
	}
}

// This kernel's file parses and has the counters the agent exports.
func TestReadThisKernel(t *testing.T) {
	b, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		t.Skipf("no /proc/net/netstat: %v", err)
	}
	for _, name := range []string{"TCPMD5NotFound", "TCPMD5Unexpected", "TCPMinTTLDrop"} {
		if !strings.Contains(string(b), " "+name+" ") && !strings.Contains(string(b), " "+name+"\n") {
			t.Errorf("this kernel has no TcpExt %s", name)
		}
	}
	if _, err := Read(); err != nil {
		t.Fatal(err)
	}
}

// gather returns the series of reg as "name{reason} value".
func gather(t *testing.T, reg *prometheus.Registry) []string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			out = append(out, fmt.Sprintf("%s{%s} %s %g", mf.GetName(), m.GetLabel()[0].GetValue(), mf.GetType(), m.GetCounter().GetValue()))
		}
	}
	return out
}

func TestCollector(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(func() (Drops, error) { return Drops{MD5NotFound: 1, MD5Failure: 3, MinTTL: 7}, nil }))
	want := []string{
		"bgplb_routeragent_tcp_segments_dropped_total{md5_missing} COUNTER 1",
		"bgplb_routeragent_tcp_segments_dropped_total{md5_unexpected} COUNTER 0",
		"bgplb_routeragent_tcp_segments_dropped_total{md5_wrong} COUNTER 3",
		"bgplb_routeragent_tcp_segments_dropped_total{ttl_below_minimum} COUNTER 7",
	}
	if d := cmp.Diff(want, gather(t, reg)); d != "" {
		t.Errorf("series (-want +got):\n%s", d)
	}
	failing := prometheus.NewPedanticRegistry()
	failing.MustRegister(NewCollector(func() (Drops, error) { return Drops{}, os.ErrNotExist }))
	if got := gather(t, failing); len(got) != 0 {
		t.Errorf("unreadable counters: %v", got)
	}
}
