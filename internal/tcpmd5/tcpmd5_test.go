package tcpmd5

import (
	"net"
	"os"
	"strings"
	"testing"
)

// The machines bgplb is tested on have CONFIG_TCP_MD5SIG (Debian's kernels
// do): a failure here is a real regression of the probe.
func TestKernelSupported(t *testing.T) {
	if err := KernelSupported(); err != nil {
		t.Fatalf("KernelSupported: %v", err)
	}
}

// An MPTCP listener refuses TCP_MD5SIG: the probe must see it, since that is
// what a binary built without `//go:debug multipathtcp=0` gives GoBGP.
func TestMPTCPListenerRefused(t *testing.T) {
	if b, err := os.ReadFile("/proc/sys/net/mptcp/enabled"); err != nil || strings.TrimSpace(string(b)) != "1" {
		t.Skip("MPTCP is not enabled in this kernel (/proc/sys/net/mptcp/enabled): nothing to refuse")
	}
	var lc net.ListenConfig
	lc.SetMultipathTCP(true)
	if err := probe(lc); err == nil {
		t.Fatal("probe of an MPTCP listener: no error, want the kernel's refusal")
	}
}
