package doctor

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bgplb/bgplb/internal/netnstest"
	"github.com/bgplb/bgplb/routeragent/firewall"
	"github.com/bgplb/bgplb/routeragent/sysctl"
)

// TestKernelGatherRun: a router namespace with a ferm-like legacy
// firewall is healthy after the agent's Ensure and Apply, and the doctor
// names both problems after the jump is deleted by hand and
// send_redirects is turned back on.
func TestKernelGatherRun(t *testing.T) {
	ns := netnstest.New(t, "doctor")
	ns.Exec("ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan0p")
	ns.Exec("sysctl", "-qw", "net.ipv4.ip_forward=1")
	cmd := ns.Command("iptables-legacy-restore")
	cmd.Stdin = strings.NewReader(`*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -m state --state INVALID -j DROP
-A FORWARD -m state --state RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -i lan0 -m state --state NEW -j ACCEPT
COMMIT
`)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	subnets := []netip.Prefix{netip.MustParsePrefix("192.168.254.0/24")}
	ifaces := []string{"lan0"}
	m, err := firewall.New(firewall.Config{Interfaces: ifaces, Subnets: subnets}, nil)
	if err != nil {
		t.Fatal(err)
	}
	red := sysctl.Redirects{StateFile: filepath.Join(t.TempDir(), "state.json")}
	if err := ns.Do(func() error {
		if _, err := m.Ensure(context.Background()); err != nil {
			return err
		}
		_, err := red.Apply(ifaces)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	gc := GatherConfig{LANInterfaces: ifaces, ServiceSubnets: subnets, Routes: &Routes{Desired: 1, Installed: 1}}
	doctor := func() []Finding {
		t.Helper()
		var fs []Finding
		if err := ns.Do(func() error {
			in, err := Gather(context.Background(), gc)
			if err != nil {
				return err
			}
			fs = Run(context.Background(), in)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return fs
	}
	fs := doctor()
	if !Healthy(fs) {
		t.Fatalf("not healthy after Ensure+Apply: %+v", fs)
	}
	for _, want := range []string{"ip_forward", "send_redirects", "rp_filter", "firewall", "conntrack", "routes"} {
		found := false
		for _, f := range fs {
			found = found || f.Check == want
		}
		if !found {
			t.Errorf("no %s finding in %+v", want, fs)
		}
	}

	// Break it by hand.
	ns.Exec("iptables-legacy", "-D", "FORWARD", "-m", "comment", "--comment", firewall.JumpComment, "-j", firewall.ChainName)
	ns.Exec("sysctl", "-qw", "net.ipv4.conf.lan0.send_redirects=1")
	fs = doctor()
	got := map[string]Finding{}
	for _, f := range fs {
		if f.Status != OK {
			got[f.Check] = f
		}
	}
	if f := got["firewall"]; f.Status != Fail || !strings.Contains(f.Fix, "iptables-legacy -I FORWARD 1") {
		t.Errorf("firewall finding: %+v", f)
	}
	if f := got["send_redirects"]; f.Status != Fail || !strings.Contains(f.Fix, "net.ipv4.conf.lan0.send_redirects=0") {
		t.Errorf("send_redirects finding: %+v", f)
	}
	if len(got) != 2 {
		t.Errorf("problems: %+v", got)
	}
}
