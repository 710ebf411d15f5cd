// Package tcpstat reads the kernel's counters of TCP segments refused for
// a wrong or missing TCP-MD5 signature or a TTL below a socket's minimum
// (GTSM). Those refusals happen in the kernel before any socket sees the
// segment: GoBGP, and so the agent, never learns of them otherwise. The
// counters are per network namespace and cover every TCP socket in it; on
// a router only BGP sets TCP-MD5 keys or a minimum TTL.
package tcpstat

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Drops are TcpExt counters of /proc/net/netstat, since the namespace was
// created (boot, for the host's).
type Drops struct {
	// MD5NotFound (TCPMD5NotFound): a segment without a signature for a
	// socket that has a key for its source: a peer without the password.
	MD5NotFound uint64 `json:"md5NotFound"`
	// MD5Unexpected (TCPMD5Unexpected): a signed segment for a socket with
	// no key for its source.
	MD5Unexpected uint64 `json:"md5Unexpected"`
	// MD5Failure (TCPMD5Failure): a wrong signature: a wrong password.
	MD5Failure uint64 `json:"md5Failure"`
	// MinTTL (TCPMinTTLDrop): a segment below the socket's IP_MINTTL or
	// IPV6_MINHOPCOUNT: a sender not on the LAN segment, or one that does
	// not send with TTL 255.
	MinTTL uint64 `json:"minTTL"`
}

// Parse reads Drops from the text of /proc/net/netstat: pairs of lines,
// a header "TcpExt: Name ..." and a line of values "TcpExt: 1 ...". A
// counter this kernel lacks stays 0.
func Parse(netstat string) (Drops, error) {
	var d Drops
	fields := map[string]*uint64{"TCPMD5NotFound": &d.MD5NotFound, "TCPMD5Unexpected": &d.MD5Unexpected,
		"TCPMD5Failure": &d.MD5Failure, "TCPMinTTLDrop": &d.MinTTL}
	var hdr []string
	found := false
	for _, line := range strings.Split(netstat, "\n") {
		if !strings.HasPrefix(line, "TcpExt:") {
			continue
		}
		if hdr == nil {
			hdr = strings.Fields(line)
			continue
		}
		vals := strings.Fields(line)
		if len(vals) != len(hdr) {
			return Drops{}, fmt.Errorf("TcpExt: %d names but %d values", len(hdr), len(vals))
		}
		for i, name := range hdr[1:] {
			p := fields[name]
			if p == nil {
				continue
			}
			v, err := strconv.ParseUint(vals[i+1], 10, 64)
			if err != nil {
				return Drops{}, fmt.Errorf("TcpExt %s: %w", name, err)
			}
			*p = v
		}
		found = true
		break
	}
	if !found {
		return Drops{}, fmt.Errorf("no TcpExt counters")
	}
	return d, nil
}

// Read reads the Drops of the calling process's network namespace.
func Read() (Drops, error) {
	b, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		return Drops{}, fmt.Errorf("read TCP counters: %w", err)
	}
	d, err := Parse(string(b))
	if err != nil {
		return Drops{}, fmt.Errorf("/proc/net/netstat: %w", err)
	}
	return d, nil
}

var mDropped = prometheus.NewDesc("bgplb_routeragent_tcp_segments_dropped_total",
	"TCP segments the kernel of the agent's network namespace dropped before any socket saw them, by reason "+
		"(md5_missing, md5_unexpected, md5_wrong: TCP-MD5; ttl_below_minimum: GTSM), since boot; all TCP sockets, in practice BGP's.",
	[]string{"reason"}, nil)

// Collector exports Drops, read at each scrape by read (Read in the agent).
type Collector struct{ read func() (Drops, error) }

// NewCollector returns a Collector that calls read at each scrape.
func NewCollector(read func() (Drops, error)) Collector { return Collector{read: read} }

// Describe implements prometheus.Collector.
func (c Collector) Describe(ch chan<- *prometheus.Desc) { ch <- mDropped }

// Collect implements prometheus.Collector. A failed read exports nothing
// (an invalid metric would fail the whole scrape).
func (c Collector) Collect(ch chan<- prometheus.Metric) {
	d, err := c.read()
	if err != nil {
		return
	}
	for _, m := range []struct {
		reason string
		v      uint64
	}{{"md5_missing", d.MD5NotFound}, {"md5_unexpected", d.MD5Unexpected}, {"md5_wrong", d.MD5Failure}, {"ttl_below_minimum", d.MinTTL}} {
		ch <- prometheus.MustNewConstMetric(mDropped, prometheus.CounterValue, float64(m.v), m.reason)
	}
}
