package trace

import (
	"bufio"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bgplb/bgplb/routeragent/firewall"
)

func TestParseSNMP(t *testing.T) {
	const snmp = `Ip: Forwarding DefaultTTL InReceives
Ip: 1 64 100
Icmp: InMsgs InErrors OutMsgs OutRedirects OutEchos
Icmp: 3 0 9 7 0
IcmpMsg: InType3 OutType5
IcmpMsg: 3 7
`
	got, err := parseSNMP(bufio.NewScanner(strings.NewReader(snmp)), "Icmp", "OutRedirects")
	if err != nil || got != 7 {
		t.Errorf("OutRedirects = %d, %v; want 7", got, err)
	}
	if _, err := parseSNMP(bufio.NewScanner(strings.NewReader("Ip: A\nIp: 1\n")), "Icmp", "OutRedirects"); err == nil {
		t.Error("no Icmp line: want an error")
	}
}

// readCounting finds our counting rules by their mark; readFilter the
// INVALID drop with its number, and our exemptions.
func TestReadTable(t *testing.T) {
	mangle, err := firewall.ParseTable([]string{
		"-P PREROUTING ACCEPT -c 0 0",
		"-P FORWARD ACCEPT -c 0 0",
		`-A FORWARD -d 192.168.254.10/32 -p tcp -m tcp --dport 80 -m comment --comment "bgplb-trace pid=42 all" -c 6 360`,
		`-A FORWARD -d 192.168.254.10/32 -p tcp -m tcp --dport 80 -m conntrack --ctstate INVALID -m comment --comment "bgplb-trace pid=42 invalid" -c 5 300`,
		`-A FORWARD -d 192.168.254.10/32 -p tcp -m comment --comment "bgplb-trace pid=43 all" -c 99 360`,
		"-A FORWARD -j MARK --set-mark 1 -c 100 6000",
	})
	if err != nil {
		t.Fatal(err)
	}
	lines := []string{
		"-P INPUT ACCEPT -c 0 0",
		"-P FORWARD DROP -c 0 0",
		"-P OUTPUT ACCEPT -c 0 0",
		"-N BGPLB-EXEMPT",
		"-A FORWARD -j BGPLB-EXEMPT -c 100 6000",
		"-A FORWARD -m conntrack --ctstate INVALID -j DROP -c 9 540",
		`-A BGPLB-EXEMPT -d 192.168.254.0/24 -i lan0 -p tcp -m conntrack --ctstate INVALID -m comment --comment "bgplb: x" -j ACCEPT -c 3 180`,
	}
	tab, err := firewall.ParseTable(lines)
	if err != nil {
		t.Fatal(err)
	}
	var c Counters
	readCounting(&c, mangle, "bgplb-trace pid=42")
	readFilter(&c, "legacy", tab)
	want := Counters{Packets: 6, Invalid: 5,
		Drops: []RuleCount{{RuleRef: RuleRef{Backend: "legacy", Chain: "FORWARD", Number: 2, Spec: "-m conntrack --ctstate INVALID -j DROP"}, Packets: 9}},
		Exemptions: []RuleCount{{RuleRef: RuleRef{Backend: "legacy", Chain: "BGPLB-EXEMPT", Number: 1,
			Spec: `-d 192.168.254.0/24 -i lan0 -p tcp -m conntrack --ctstate INVALID -m comment --comment "bgplb: x" -j ACCEPT`}, Packets: 3}}}
	if diff := cmp.Diff(want, c); diff != "" {
		t.Errorf("counters (-want +got):\n%s", diff)
	}
}

func TestOwnerPID(t *testing.T) {
	for c, want := range map[string]int{
		"bgplb-trace pid=42 all":     42,
		"bgplb-trace pid=7 invalid":  7,
		"bgplb: tcp from lan0":       0,
		"bgplb-trace pid=x all":      0,
		"someone else's bgplb-trace": 0,
	} {
		if got := ownerPID(c); got != want {
			t.Errorf("ownerPID(%q) = %d, want %d", c, got, want)
		}
	}
}

func TestParseSNMP6(t *testing.T) {
	const snmp6 = "Icmp6InRedirects                \t0\nIcmp6OutRedirects               \t7\nIcmp6OutMLDv2Reports            \t2\n"
	got, err := parseSNMP6(bufio.NewScanner(strings.NewReader(snmp6)), "Icmp6OutRedirects")
	if err != nil || got != 7 {
		t.Errorf("Icmp6OutRedirects = %d, %v; want 7", got, err)
	}
	if _, err := parseSNMP6(bufio.NewScanner(strings.NewReader("Ip6InReceives 3\n")), "Icmp6OutRedirects"); err == nil {
		t.Error("no error for a missing field")
	}
}
