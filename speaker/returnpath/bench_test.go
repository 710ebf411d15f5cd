package returnpath_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/bgplb/bgplb/internal/netnstest"
	"github.com/bgplb/bgplb/speaker/returnpath"
)

// BenchmarkReturnPathThroughput: bulk downloads (8 MiB per connection)
// from the pod behind the node, through kube-proxy's DNAT (iptables,
// Local), to a client on the node's subnet, three ways:
//
//   - direct: the seed's asymmetric path (the router's firewall made
//     stateless so that it works): the data goes node -> client;
//   - static: the data goes node -> router -> client by a plain route to
//     the client via the router, no marks (the cost of the extra hop);
//   - symmetric: the same path by the Manager's connmark rules and policy
//     routing (static vs symmetric is the cost of the marks).
//
// Loopback-speed veths on one machine: the numbers compare the three, they
// say nothing of a real link.
func BenchmarkReturnPathThroughput(b *testing.B) {
	const size = 8 << 20
	for _, mode := range []string{"direct", "static", "symmetric"} {
		b.Run(mode, func(b *testing.B) {
			l := newLab(b, v4, "iptables-local")
			switch mode {
			case "direct":
				l.routers[0].Exec("iptables-legacy", "-F", "FORWARD")
				l.routers[0].Exec("iptables-legacy", "-P", "FORWARD", "ACCEPT")
			case "static":
				l.node.Exec("ip", "route", "add", v4.client[0]+"/32", "via", v4.router[0])
			case "symmetric":
				m := returnpath.NewManager(returnpath.Config{}, returnpath.Kernel{}, logr.Discard(), nil)
				l.resolve(b)
				spec := l.spec("192.168.254.0/24")
				spec.Peers = spec.Peers[:1]
				l.set(b, m, spec)
			}
			if err := exchange(l.clients[0], l.svc); err != nil {
				b.Fatalf("%s: %v", mode, err)
			}
			b.SetBytes(size)
			b.ResetTimer()
			for range b.N {
				if err := download(l.clients[0], l.svc, size); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func download(client *netnstest.NS, dst string, n int) error {
	return client.Do(func() error {
		c, err := net.DialTimeout("tcp", dst, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.SetDeadline(time.Now().Add(time.Minute)); err != nil {
			return err
		}
		if _, err := fmt.Fprintf(c, "bulk %d\n", n); err != nil {
			return err
		}
		got, err := io.Copy(io.Discard, bufio.NewReaderSize(c, 1<<16))
		if err != nil {
			return err
		}
		if got != int64(n) {
			return fmt.Errorf("got %d bytes, want %d", got, n)
		}
		return nil
	})
}
