// Command bgplb-routeragent runs on the Debian router: it accepts BGP
// sessions from the bgplb speakers, installs the announced service routes in
// the kernel, turns off ICMP redirects and keeps scoped conntrack-INVALID
// exemptions in the firewall. See docs/routeragent.md.
package main

import (
	"os"

	"github.com/bgplb/bgplb/routeragent/agent"
)

func main() {
	os.Exit(agent.Main(os.Args[1:], os.Stdout, os.Stderr))
}
