package firewall

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bgplb/bgplb/routeragent/config"
)

func TestParseTable(t *testing.T) {
	legacy := []string{
		"-P INPUT ACCEPT -c 1 2",
		"-P FORWARD DROP -c 0 0",
		"-P OUTPUT ACCEPT -c 0 0",
		"-N BGPLB-EXEMPT",
		`-A FORWARD -m comment --comment "bgplb: conntrack-INVALID exemptions for service subnets" -c 5 300 -j BGPLB-EXEMPT`,
		"-A FORWARD -m state --state INVALID -c 7 280 -j DROP",
		`-A BGPLB-EXEMPT -d 192.168.254.0/24 -i eth0.2 -p tcp -m conntrack --ctstate INVALID -m comment --comment "a \"q\" b" -c 3 120 -j ACCEPT`,
	}
	nft := []string{
		"-P INPUT ACCEPT",
		"-P FORWARD DROP",
		"-P OUTPUT ACCEPT",
		"[7:280] -A FORWARD -m state --state INVALID -j DROP",
	}
	got, err := ParseTable(legacy)
	if err != nil {
		t.Fatal(err)
	}
	want := Table{
		Policies: map[string]string{"INPUT": "ACCEPT", "FORWARD": "DROP", "OUTPUT": "ACCEPT"},
		Chains:   []string{"INPUT", "FORWARD", "OUTPUT", "BGPLB-EXEMPT"},
		Rules: map[string][]Rule{
			"FORWARD": {
				{Args: JumpArgs(), Packets: 5, Bytes: 300},
				{Args: []string{"-m", "state", "--state", "INVALID", "-j", "DROP"}, Packets: 7, Bytes: 280},
			},
			"BGPLB-EXEMPT": {{Args: []string{"-d", "192.168.254.0/24", "-i", "eth0.2", "-p", "tcp", "-m", "conntrack", "--ctstate", "INVALID", "-m", "comment", "--comment", `a "q" b`, "-j", "ACCEPT"}, Packets: 3, Bytes: 120}},
		},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("legacy listing (-want +got):\n%s", d)
	}
	gotN, err := ParseTable(nft)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want.Rules["FORWARD"][1], gotN.Rules["FORWARD"][0]); d != "" {
		t.Errorf("nft counter prefix (-want +got):\n%s", d)
	}
	// Round trip of quoting.
	if s := quoteArgs(want.Rules["BGPLB-EXEMPT"][0].Args); !strings.Contains(s, `--comment "a \"q\" b"`) {
		t.Errorf("quoteArgs: %s", s)
	}
	if _, err := ParseTable([]string{`-A FORWARD -m comment --comment "open`}); err == nil {
		t.Error("unterminated quote: no error")
	}
}

func mustTable(t *testing.T, lines ...string) Table {
	t.Helper()
	tb, err := ParseTable(append([]string{"-P INPUT ACCEPT", "-P FORWARD ACCEPT", "-P OUTPUT ACCEPT"}, lines...))
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func TestAnalyze(t *testing.T) {
	jump := `-A FORWARD -m comment --comment "` + JumpComment + `" -j BGPLB-EXEMPT`
	tests := []struct {
		name  string
		lines []string
		want  Analysis
	}{
		{"empty", nil, Analysis{ForwardPolicy: "ACCEPT"}},
		{"conntrack drop in FORWARD", []string{
			"-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
			"-A FORWARD -m conntrack --ctstate INVALID -j DROP",
		}, Analysis{ForwardPolicy: "ACCEPT", ForwardRules: 2, Drop: &InvalidDrop{Chain: "FORWARD", ForwardIndex: 2,
			Rule: Rule{Args: []string{"-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"}}}}},
		{"state match and our jump first", []string{
			"-N BGPLB-EXEMPT", jump,
			"-A FORWARD -m state --state INVALID -j DROP",
		}, Analysis{ForwardPolicy: "ACCEPT", ForwardRules: 1, HasChain: true, JumpIndexes: []int{1}, Drop: &InvalidDrop{Chain: "FORWARD", ForwardIndex: 2,
			Rule: Rule{Args: []string{"-m", "state", "--state", "INVALID", "-j", "DROP"}}}}},
		{"drop in a sub-chain", []string{
			"-N fwd-lan",
			"-A FORWARD -i eth0 -j fwd-lan",
			"-A fwd-lan -m conntrack --ctstate INVALID -j REJECT --reject-with icmp-port-unreachable",
		}, Analysis{ForwardPolicy: "ACCEPT", ForwardRules: 1, Drop: &InvalidDrop{Chain: "fwd-lan", ForwardIndex: 1,
			Rule: Rule{Args: []string{"-m", "conntrack", "--ctstate", "INVALID", "-j", "REJECT", "--reject-with", "icmp-port-unreachable"}}}}},
		{"INVALID jumps to a dropping chain", []string{
			"-N invalid",
			"-A FORWARD -m conntrack --ctstate INVALID -j invalid",
			"-A invalid -j LOG",
			"-A invalid -j DROP",
		}, Analysis{ForwardPolicy: "ACCEPT", ForwardRules: 1, Drop: &InvalidDrop{Chain: "FORWARD", ForwardIndex: 1,
			Rule: Rule{Args: []string{"-m", "conntrack", "--ctstate", "INVALID", "-j", "invalid"}}}}},
		{"negated and logged are not drops", []string{
			"-A FORWARD -m conntrack ! --ctstate INVALID -j DROP",
			"-A FORWARD -m conntrack --ctstate INVALID -j LOG",
		}, Analysis{ForwardPolicy: "ACCEPT", ForwardRules: 2}},
		{"loop between chains terminates", []string{
			"-N a", "-N b",
			"-A FORWARD -j a", "-A a -j b", "-A b -j a",
		}, Analysis{ForwardPolicy: "ACCEPT", ForwardRules: 1}},
		{"jump after the drop and a duplicate", []string{
			"-N BGPLB-EXEMPT",
			"-A FORWARD -m conntrack --ctstate INVALID -j DROP",
			jump, jump,
		}, Analysis{ForwardPolicy: "ACCEPT", ForwardRules: 1, HasChain: true, JumpIndexes: []int{2, 3}, Drop: &InvalidDrop{Chain: "FORWARD", ForwardIndex: 1,
			Rule: Rule{Args: []string{"-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"}}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, Analyze(mustTable(t, tc.lines...))); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func TestDesired(t *testing.T) {
	cfg, err := Config{
		Interfaces: []string{"lan0", "lan1"},
		Subnets:    []netip.Prefix{netip.MustParsePrefix("192.168.254.0/24"), netip.MustParsePrefix("2001:db8:254::/64")},
		Protocols:  []string{"tcp", "udp"},
	}.normalize()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range Desired(cfg, IPv4) {
		got = append(got, quoteArgs(e.Args()))
	}
	want := []string{
		`-d 192.168.254.0/24 -i lan0 -p tcp -m conntrack --ctstate INVALID -m comment --comment "bgplb: tcp from lan0 to 192.168.254.0/24, asymmetric return path" -j ACCEPT`,
		`-d 192.168.254.0/24 -i lan0 -p udp -m conntrack --ctstate INVALID -m comment --comment "bgplb: udp from lan0 to 192.168.254.0/24, asymmetric return path" -j ACCEPT`,
		`-d 192.168.254.0/24 -i lan1 -p tcp -m conntrack --ctstate INVALID -m comment --comment "bgplb: tcp from lan1 to 192.168.254.0/24, asymmetric return path" -j ACCEPT`,
		`-d 192.168.254.0/24 -i lan1 -p udp -m conntrack --ctstate INVALID -m comment --comment "bgplb: udp from lan1 to 192.168.254.0/24, asymmetric return path" -j ACCEPT`,
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	if n := len(Desired(cfg, IPv6)); n != 4 {
		t.Errorf("IPv6 rules: %d, want 4", n)
	}
}

func TestConfigValidation(t *testing.T) {
	p := []netip.Prefix{netip.MustParsePrefix("192.168.254.0/24")}
	tests := []struct {
		name string
		cfg  Config
		want string // substring of the error, "" = valid
	}{
		{"defaults", Config{Interfaces: []string{"enp1s0.2"}, Subnets: p}, ""},
		{"off needs nothing", Config{Mode: "off"}, ""},
		{"bad mode", Config{Mode: "on", Interfaces: []string{"a"}, Subnets: p}, "firewall.mode"},
		{"bad backend", Config{Backend: "iptables", Interfaces: []string{"a"}, Subnets: p}, "firewall.backend"},
		{"bad protocol", Config{Protocols: []string{"icmp"}, Interfaces: []string{"a"}, Subnets: p}, "firewall.protocols"},
		{"host bits", Config{Interfaces: []string{"a"}, Subnets: []netip.Prefix{netip.MustParsePrefix("192.168.254.1/24")}}, "host bits"},
		{"no interfaces", Config{Subnets: p}, "at least one LAN interface"},
		{"no subnets", Config{Interfaces: []string{"a"}}, "at least one service subnet"},
		{"bad interface", Config{Interfaces: []string{"a b"}, Subnets: p}, "character"},
		{"long interface", Config{Interfaces: []string{"abcdefghijklmnop"}, Subnets: p}, "1 to 15"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg, nil)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestPlanInstall(t *testing.T) {
	want := []Exemption{{Interface: "lan0", Subnet: netip.MustParsePrefix("192.168.254.0/24"), Protocol: "tcp"}}
	rule := "-A BGPLB-EXEMPT " + quoteArgs(want[0].Args())
	jump := "-A FORWARD " + quoteArgs(JumpArgs())
	drop := "-A FORWARD -m conntrack --ctstate INVALID -j DROP"
	newChain := Op{Kind: "new-chain", Chain: ChainName}
	flush := Op{Kind: "flush-chain", Chain: ChainName}
	app := Op{Kind: "append", Chain: ChainName, Args: want[0].Args()}
	ins := Op{Kind: "insert", Chain: "FORWARD", Pos: 1, Args: JumpArgs()}
	del := Op{Kind: "delete", Chain: "FORWARD", Args: JumpArgs()}
	tests := []struct {
		name  string
		lines []string
		want  []Op
	}{
		{"fresh", []string{drop}, []Op{newChain, app, ins}},
		{"correct", []string{"-N BGPLB-EXEMPT", jump, drop, rule}, nil},
		{"chain emptied", []string{"-N BGPLB-EXEMPT", jump, drop}, []Op{flush, app}},
		{"extra rule in our chain", []string{"-N BGPLB-EXEMPT", jump, drop, rule, "-A BGPLB-EXEMPT -j ACCEPT"}, []Op{flush, app}},
		{"jump lost", []string{"-N BGPLB-EXEMPT", drop, rule}, []Op{ins}},
		{"jump moved below the drop", []string{"-N BGPLB-EXEMPT", drop, jump, rule}, []Op{del, ins}},
		{"two jumps", []string{"-N BGPLB-EXEMPT", jump, drop, jump, rule}, []Op{del, del, ins}},
		{"jump without comment", []string{"-N BGPLB-EXEMPT", "-A FORWARD -j BGPLB-EXEMPT", drop, rule},
			[]Op{{Kind: "delete", Chain: "FORWARD", Args: []string{"-j", "BGPLB-EXEMPT"}}, ins}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, PlanInstall(mustTable(t, tc.lines...), want)); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func TestPlanRemove(t *testing.T) {
	tb := mustTable(t, "-N BGPLB-EXEMPT", "-N other",
		"-A FORWARD "+quoteArgs(JumpArgs()),
		"-A FORWARD -m conntrack --ctstate INVALID -j DROP",
		"-A other -j BGPLB-EXEMPT",
		"-A BGPLB-EXEMPT -j ACCEPT")
	want := []Op{
		{Kind: "delete", Chain: "FORWARD", Args: JumpArgs()},
		{Kind: "delete", Chain: "other", Args: []string{"-j", "BGPLB-EXEMPT"}},
		{Kind: "flush-chain", Chain: ChainName},
		{Kind: "delete-chain", Chain: ChainName},
	}
	if d := cmp.Diff(want, PlanRemove(tb)); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	if ops := PlanRemove(mustTable(t, "-A FORWARD -j DROP")); ops != nil {
		t.Errorf("nothing of ours: %v", ops)
	}
}

func TestChooseBackends(t *testing.T) {
	drop := &InvalidDrop{Chain: "FORWARD", ForwardIndex: 2, Rule: Rule{Args: []string{"-m", "state", "--state", "INVALID", "-j", "DROP"}}}
	nftDef := func() Backend { return NFT }
	type want struct {
		Targets  []Backend
		Evidence bool
		Reason   string // substring
	}
	tests := []struct {
		name     string
		mode     config.FirewallBackend
		analyses map[Backend]Analysis
		sticky   []Backend
		want     want
	}{
		{"explicit wins", config.BackendLegacy, map[Backend]Analysis{NFT: {Drop: drop}}, nil, want{[]Backend{Legacy}, false, "configured"}},
		{"drop in legacy (ferm)", config.BackendAuto, map[Backend]Analysis{Legacy: {Drop: drop, ForwardRules: 3}, NFT: {}}, nil,
			want{[]Backend{Legacy}, true, "INVALID drop found in legacy (FORWARD rule 2"}},
		{"drop in nft", config.BackendAuto, map[Backend]Analysis{Legacy: {ForwardRules: 1}, NFT: {Drop: drop}}, []Backend{Legacy},
			want{[]Backend{NFT}, true, "nft"}},
		{"drops in both", config.BackendAuto, map[Backend]Analysis{Legacy: {Drop: drop}, NFT: {Drop: drop}}, nil,
			want{[]Backend{Legacy, NFT}, true, " and "}},
		{"mid-reload keeps the earlier choice", config.BackendAuto, map[Backend]Analysis{Legacy: {}, NFT: {}}, []Backend{Legacy},
			want{[]Backend{Legacy}, false, "keeping legacy"}},
		{"no drop: the backend with FORWARD rules", config.BackendAuto, map[Backend]Analysis{Legacy: {ForwardRules: 2}, NFT: {}}, nil,
			want{[]Backend{Legacy}, false, "legacy has the FORWARD rules"}},
		{"no drop, no rules: system default", config.BackendAuto, map[Backend]Analysis{Legacy: {}, NFT: {}}, nil,
			want{[]Backend{NFT}, false, "system default iptables (nft)"}},
		{"default tool missing", config.BackendAuto, map[Backend]Analysis{Legacy: {}}, nil,
			want{[]Backend{Legacy}, false, "only backend available"}},
		{"nothing available", config.BackendAuto, map[Backend]Analysis{}, nil, want{nil, false, "neither"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			targets, reason, ev := ChooseBackends(tc.mode, tc.analyses, tc.sticky, nftDef)
			if d := cmp.Diff(tc.want.Targets, targets); d != "" || ev != tc.want.Evidence || !strings.Contains(reason, tc.want.Reason) {
				t.Errorf("got %v evidence=%v reason=%q; want %v evidence=%v reason containing %q", targets, ev, reason, tc.want.Targets, tc.want.Evidence, tc.want.Reason)
			}
		})
	}
}
