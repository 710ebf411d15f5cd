package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// frrConfig makes FRR a drop-in replacement for bgplb-routeragent on the
// lab router: dynamic neighbours from the LAN, ECMP, routes into the kernel.
// It is what a user would configure by hand ("configure your router"); the
// benchmark compares the two.
func frrConfig() string {
	return fmt.Sprintf(`frr defaults traditional
hostname lab-router
log stdout informational
!
router bgp %d
 bgp router-id %s
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 neighbor SPEAKERS peer-group
 neighbor SPEAKERS remote-as %d
 bgp listen range %s peer-group SPEAKERS
 neighbor SPEAKERS timers 3 9
 neighbor SPEAKERS ttl-security hops 1
 address-family ipv4 unicast
  neighbor SPEAKERS activate
  maximum-paths 8
 exit-address-family
!
`, RouterASN, RouterIP, NodeASN, LANPrefix)
}

func (l *Lab) frrDir() string { return filepath.Join(l.opts.StateDir, routerStateDir, "frr") }

// StartFRR runs FRR's zebra and bgpd (from Debian's frr package) on the
// router in place of bgplb-routeragent.
func (l *Lab) StartFRR() error {
	dir := l.frrDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// The daemons drop to the frr user: it must reach and write the folder.
	_ = os.Chmod(l.opts.StateDir, 0o755)
	_ = os.Chmod(filepath.Join(l.opts.StateDir, routerStateDir), 0o755)
	conf := filepath.Join(dir, "frr.conf")
	if err := os.WriteFile(conf, []byte(frrConfig()), 0o644); err != nil {
		return err
	}
	if _, err := run("chown", "-R", "frr:frr", dir); err != nil {
		return err
	}
	zsock := filepath.Join(dir, "zserv.api")
	common := []string{"-u", "frr", "-g", "frr", "--vty_socket", dir, "-z", zsock}
	if err := l.start("frr-zebra", l.NS(Router), nil, "/usr/lib/frr/zebra",
		append([]string{"-f", conf, "-i", filepath.Join(dir, "zebra.pid")}, common...)...); err != nil {
		return err
	}
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(zsock); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return l.start("frr-bgpd", l.NS(Router), nil, "/usr/lib/frr/bgpd",
		append([]string{"-f", conf, "-i", filepath.Join(dir, "bgpd.pid"), "-p", "179"}, common...)...)
}

// StopFRR stops bgpd and zebra. zebra removes the routes it installed.
func (l *Lab) StopFRR() error {
	err1 := l.Stop("frr-bgpd", syscall.SIGTERM)
	err2 := l.Stop("frr-zebra", syscall.SIGTERM)
	if err1 != nil {
		return err1
	}
	return err2
}
