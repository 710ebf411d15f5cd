// Command bgplb-routeragent runs on the Debian router: it accepts BGP
// sessions from the bgplb speakers, installs the announced service routes in
// the kernel, turns off ICMP redirects and keeps scoped conntrack-INVALID
// exemptions in the firewall. See docs/routeragent.md; the command line is
// package routeragent/cli.
//
// Go makes listeners MPTCP by default (since 1.24) and MPTCP sockets refuse
// TCP-MD5 keys, which GoBGP sets on its BGP listener for neighbours with a
// password (and only warns when that fails). Plain TCP it is.
//
//go:debug multipathtcp=0
package main

import (
	"os"

	"github.com/bgplb/bgplb/routeragent/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
