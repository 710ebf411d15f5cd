// GoBGP listeners in these tests (bgptest routers, the router agent) must
// not be MPTCP (Go's default since 1.24): MPTCP sockets refuse IP_TTL,
// IP_MINTTL and TCP-MD5, so GTSM (ttlSecurity, on by default on both
// sides) could not work. The shipped bgplb-routeragent binary says the same.
//
//go:debug multipathtcp=0
package faults
