// Package router tests the router agent's .deb on a real Debian 12 router:
// a bookworm root filesystem (hack/debian-rootfs.sh) booted with
// systemd-nspawn, systemd as PID 1, inside the lab router's network
// namespace, with ferm running as a service and two GoBGP speakers on
// "node" namespaces announcing service addresses over a shared LAN.
//
// What is real here and what still stands in: docs/lab.md.
package router

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bgplb/bgplb/internal/netnstest"
	"github.com/bgplb/bgplb/routeragent/agent"
)

const (
	unit       = "bgplb-routeragent.service"
	confPath   = "/etc/bgplb/routeragent.yaml"
	routerAddr = "10.77.0.1"
	node1Addr  = "10.77.0.11"
	node2Addr  = "10.77.0.12"
	svcSubnet  = "10.78.0.0/24"
	svcIP      = "10.78.0.10/32"
	// Added by the reload step: a second service subnet and an address in it.
	svcSubnet2 = "10.79.0.0/24"
	svcIP2     = "10.79.0.5/32"
)

// fermConf is the router's /etc/ferm/ferm.conf in the manner of DebOps'
// ferm role: stateful filter, FORWARD policy DROP, INVALID dropped before
// ESTABLISHED is accepted, and Debian's `@include ferm.d/` (where the
// package's hook lives) at the end.
const fermConf = `# /etc/ferm/ferm.conf of the lab router (test/router), DebOps-like.
@def $LAN = lan0;
domain (ip ip6) table filter {
    chain INPUT {
        policy DROP;
        mod conntrack ctstate INVALID DROP;
        mod conntrack ctstate (ESTABLISHED RELATED) ACCEPT;
        interface lo ACCEPT;
        @if @eq($DOMAIN, ip) { proto icmp ACCEPT; } @else { proto ipv6-icmp ACCEPT; }
        interface $LAN proto tcp dport 179 ACCEPT;
    }
    chain FORWARD {
        policy DROP;
        mod conntrack ctstate INVALID DROP;
        mod conntrack ctstate (ESTABLISHED RELATED) ACCEPT;
        interface $LAN outerface $LAN ACCEPT;
    }
    chain OUTPUT {
        policy ACCEPT;
    }
}
@include ferm.d/;
`

// agentConfig is the administrator's edit of /etc/bgplb/routeragent.yaml
// (no BGPLB-UNEDITED line), with extra service subnets.
func agentConfig(extra ...string) string {
	subnets := append([]string{svcSubnet}, extra...)
	return fmt.Sprintf(`# /etc/bgplb/routeragent.yaml of the lab router (edited by test/router).
asn: 64500
routerID: %s
neighbors:
  - prefix: 10.77.0.0/24
    asn: 64512
    # The lab's speakers have no password (a node-only LAN).
    allowUnauthenticated: true
serviceSubnets: [%s]
lanInterfaces: [lan0]
firewall: {mode: exempt, backend: auto}
`, routerAddr, strings.Join(subnets, ", "))
}

// router is the booted router with the agent's package installed and
// running, and the two nodes' speakers peering with it.
type router struct {
	t        testing.TB
	ns       *netnstest.NS
	m        *machine
	debOld   string // the previous .deb (lower version), in the machine
	debNew   string // the .deb of this tree, in the machine
	baseline snapshot
	n1, n2   *speaker
}

// snapshot is what the package must leave as it found it: the firewall
// (iptables legacy and nf_tables, nftables) and the redirect sysctls.
type snapshot struct{ firewall, sysctls string }

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

func (r *router) snapshot() snapshot {
	r.t.Helper()
	var fw strings.Builder
	for _, c := range [][]string{{"iptables-legacy-save"}, {"ip6tables-legacy-save"}, {"nft", "list", "ruleset"}} {
		out := r.nsRun(c...)
		fmt.Fprintf(&fw, "== %s\n", strings.Join(c, " "))
		if c[0] != "nft" {
			out = dropEmptyTables(out)
		}
		for _, l := range strings.Split(out, "\n") {
			fw.WriteString(counters.ReplaceAllString(l, "[-]") + "\n")
		}
	}
	return snapshot{firewall: fw.String(), sysctls: r.nsRun("sysctl", "-a", "-r", "redirects")}
}

// dropEmptyTables drops the -save tools' timestamp comments and the tables
// without a rule whose built-in chains all accept: iptables-legacy
// instantiates a table in a namespace the first time anything lists it
// (the agent's doctor and trace read mangle and raw), and an empty
// all-ACCEPT table filters nothing.
func dropEmptyTables(save string) string {
	var out, table []string
	empty := true
	for _, l := range strings.Split(save, "\n") {
		switch {
		case strings.HasPrefix(l, "#") || l == "":
		case strings.HasPrefix(l, "*"):
			table, empty = []string{l}, true
		case l == "COMMIT":
			if !empty {
				out = append(append(out, table...), l)
			}
			table = nil
		default:
			table = append(table, l)
			if !strings.HasPrefix(l, ":") || !strings.Contains(l, " ACCEPT ") {
				empty = false
			}
		}
	}
	return strings.Join(out, "\n")
}

// bootRouter builds the lab (router, two nodes on one LAN switch), boots the
// Debian router with the DebOps-like ferm running, builds the two .debs and
// copies them in, and records the baseline. The agent is not installed yet.
func bootRouter(t testing.TB) *router {
	t.Helper()
	netnstest.RequireRoot(t)
	for _, tool := range []string{"nsenter", "iptables-legacy-save", "nft", "sysctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required on the host (hack/install-deps.sh): %v", tool, err)
		}
	}
	start := time.Now()
	// Both packages from this tree, the "previous" one with a lower
	// version (the upgrade step), as test/install does.
	debDir := t.TempDir()
	debs := buildDebs(t, debDir, "0.0.0~router1", "0.0.0~router2")
	debOld, debNew := debs[0], debs[1]
	t.Logf("built the two .debs in %v", time.Since(start).Round(time.Millisecond))

	rt := netnstest.New(t, "rt")
	n1 := netnstest.New(t, "n1")
	n2 := netnstest.New(t, "n2")
	sw := netnstest.New(t, "sw")
	plug := netnstest.Bridge(t, sw, "br0")
	plug(rt, "lan0", routerAddr+"/24")
	plug(n1, "eth0", node1Addr+"/24")
	plug(n2, "eth0", node2Addr+"/24")
	rt.Exec("sysctl", "-qw", "net.ipv4.ip_forward=1")

	bootStart := time.Now()
	m := bootMachine(t, rt, func(root string) {
		if err := os.WriteFile(filepath.Join(root, "etc/ferm/ferm.conf"), []byte(fermConf), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, d := range []string{debOld, debNew} {
			b, err := os.ReadFile(d)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(root, "root", filepath.Base(d)), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	})
	t.Logf("booted Debian (systemd %s) in the router's namespace in %v", m.show("", "Version"), time.Since(bootStart).Round(time.Millisecond))
	r := &router{t: t, ns: rt, m: m, debOld: "/root/" + filepath.Base(debOld), debNew: "/root/" + filepath.Base(debNew)}

	// ferm is a running service and its rules are in the router's kernel.
	if st := m.show("ferm.service", "ActiveState"); st != "active" {
		t.Fatalf("ferm.service is %s:\n%s", st, m.journal("ferm.service"))
	}
	if fwd := rt.Exec("iptables-legacy", "-S", "FORWARD"); !strings.Contains(fwd, "-P FORWARD DROP") || !strings.Contains(fwd, "INVALID -j DROP") {
		t.Fatalf("ferm's FORWARD chain is not in the router's kernel:\n%s", fwd)
	}
	r.baseline = r.snapshot()
	r.n1 = startSpeaker(t, n1, node1Addr, routerAddr)
	r.n2 = startSpeaker(t, n2, node2Addr, routerAddr)
	return r
}

// status is the agent's `status --json`, run in the machine.
func (r *router) status() (*agent.Status, error) {
	out, err := r.m.try("bgplb-routeragent", "status", "--json")
	if err != nil {
		return nil, fmt.Errorf("%w: %s", err, out)
	}
	var st agent.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("decode status: %w: %s", err, out)
	}
	return &st, nil
}

func (r *router) peersUp() int {
	st, err := r.status()
	if err != nil {
		return 0
	}
	n := 0
	for _, p := range st.Peers {
		if p.Up {
			n++
		}
	}
	return n
}

func (r *router) repairs() int {
	r.t.Helper()
	st, err := r.status()
	if err != nil {
		r.t.Fatal(err)
	}
	if st.Firewall == nil {
		r.t.Fatalf("the agent's status has no firewall section")
	}
	return st.Firewall.Repairs
}

// nsRun runs a command in the router's namespace from the host (reading
// its kernel state as the host's tools see it) and fails the running step
// on error.
func (r *router) nsRun(args ...string) string {
	r.t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", r.ns.Name}, args...)...).CombinedOutput()
	if err != nil {
		r.t.Fatalf("in the router's namespace: %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// vias returns the sorted next hops of the router's kernel route for
// prefix with protocol bgplb (none: nil).
func (r *router) vias(prefix string) []string {
	r.t.Helper()
	out := r.nsRun("ip", "-o", "route", "show", "exact", prefix, "proto", "220")
	var vias []string
	f := strings.Fields(out)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "via" {
			vias = append(vias, f[i+1])
		}
	}
	slices.Sort(vias)
	return vias
}

func (r *router) waitRoute(prefix string, want ...string) {
	r.t.Helper()
	waitFor(r.t, fmt.Sprintf("route %s via %v in the router's kernel", prefix, want), func() bool {
		return slices.Equal(r.vias(prefix), want)
	})
}

// exemption reports whether the router's FORWARD chain (iptables-legacy,
// where ferm writes) jumps to BGPLB-EXEMPT before the INVALID drop and the
// chain accepts INVALID packets from lan0 to subnet.
func (r *router) exemption(subnet string) bool {
	r.t.Helper()
	all := r.nsRun("iptables-legacy", "-w", "-S")
	return exemptionIn(all, subnet)
}

func exemptionIn(rules, subnet string) bool {
	jump, drop, rule := -1, -1, false
	for i, l := range strings.Split(rules, "\n") {
		switch {
		case strings.HasPrefix(l, "-A FORWARD ") && strings.HasSuffix(l, "-j BGPLB-EXEMPT") && jump < 0:
			jump = i
		case strings.HasPrefix(l, "-A FORWARD ") && strings.Contains(l, "INVALID") && strings.HasSuffix(l, "-j DROP") && drop < 0:
			drop = i
		case strings.HasPrefix(l, "-A BGPLB-EXEMPT ") && strings.Contains(l, "-i lan0") &&
			strings.Contains(l, "-d "+subnet) && strings.Contains(l, "INVALID") && strings.HasSuffix(l, "-j ACCEPT"):
			rule = true
		}
	}
	return rule && jump >= 0 && drop >= 0 && jump < drop
}

// TestBootedRouter installs, runs, reloads, restarts, upgrades and removes
// the agent's .deb on the booted Debian router, one step after the other on
// one machine (a failed step stops the rest).
func TestBootedRouter(t *testing.T) {
	start := time.Now()
	r := bootRouter(t)
	m := r.m
	defer func() { t.Logf("TestBootedRouter took %v", time.Since(start).Round(time.Millisecond)) }()

	steps := []struct {
		name string
		f    func(t *testing.T)
	}{
		{"InstallAndStart", func(t *testing.T) {
			// The packaged config is unedited: enabled, not started.
			out := m.run("dpkg", "-i", r.debOld)
			if !strings.Contains(out, "NOT started") {
				t.Errorf("postinst does not say the agent was not started:\n%s", out)
			}
			if st := m.show(unit, "ActiveState"); st != "inactive" {
				t.Errorf("unedited config: the unit is %s, want inactive", st)
			}
			if en, _ := m.try("systemctl", "is-enabled", unit); strings.TrimSpace(en) != "enabled" {
				t.Errorf("the unit is %q, want enabled", strings.TrimSpace(en))
			}
			// The administrator edits it (owner and mode stay: root:bgplb 0640).
			if err := os.WriteFile(m.path(confPath), []byte(agentConfig()), 0o640); err != nil {
				t.Fatal(err)
			}
			if ls := m.run("stat", "-c", "%U:%G %a", confPath); strings.TrimSpace(ls) != "root:bgplb 640" {
				t.Errorf("%s is %s, want root:bgplb 640", confPath, ls)
			}
			m.run("bgplb-routeragent", "check-config", "--config", confPath)
			m.run("systemctl", "start", unit)
			m.waitActive(unit)
		}},
		{"UnitHardening", func(t *testing.T) {
			want := map[string]string{
				"Type": "notify", "NotifyAccess": "main", "User": "bgplb", "Group": "bgplb",
				"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
				"PrivateTmp": "yes", "PrivateDevices": "yes", "PrivateMounts": "yes",
				"ProtectControlGroups": "yes", "ProtectKernelLogs": "yes", "ProtectKernelModules": "yes",
				"ProtectClock": "yes", "ProtectHostname": "yes", "ProtectProc": "invisible",
				"RestrictRealtime": "yes", "RestrictSUIDSGID": "yes", "LockPersonality": "yes",
				"MemoryDenyWriteExecute": "yes", "RemoveIPC": "yes", "UMask": "0077",
				"AmbientCapabilities":   "cap_net_bind_service cap_net_admin cap_net_raw",
				"CapabilityBoundingSet": "cap_net_bind_service cap_net_admin cap_net_raw",
				"MemoryMax":             "536870912", "ActiveState": "active", "SubState": "running",
			}
			for p, v := range want {
				if got := m.show(unit, p); got != v {
					t.Errorf("systemctl show -p %s %s = %q, want %q", p, unit, got, v)
				}
			}
			if got := m.show(unit, "SystemCallFilter"); got == "" {
				t.Errorf("SystemCallFilter is empty")
			}
			// The running process, as the kernel sees it: user bgplb, only
			// its three capabilities, no_new_privs, a seccomp filter.
			pid := m.show(unit, "MainPID")
			uid := strings.TrimSpace(m.run("id", "-u", "bgplb"))
			ps := m.run("cat", "/proc/"+pid+"/status")
			for _, w := range []string{
				"Uid:\t" + uid + "\t" + uid + "\t" + uid + "\t" + uid,
				"CapEff:\t0000000000003400", "CapBnd:\t0000000000003400",
				"NoNewPrivs:\t1", "Seccomp:\t2",
			} {
				if !strings.Contains(ps, w) {
					t.Errorf("/proc/%s/status of the agent lacks %q:\n%s", pid, w, ps)
				}
			}
			if sh := m.run("getent", "passwd", "bgplb"); !strings.Contains(sh, "/usr/sbin/nologin") {
				t.Errorf("user bgplb: %s", sh)
			}
		}},
		{"RoutesSysctlsExemptions", func(t *testing.T) {
			r.n1.do("up")
			r.n2.do("up")
			r.n1.do("announce " + svcIP)
			r.n2.do("announce " + svcIP)
			r.waitRoute(svcIP, node1Addr, node2Addr)
			waitFor(t, "the exemption for "+svcSubnet, func() bool { return r.exemption(svcSubnet) })
			for _, k := range []string{"net.ipv4.conf.all.send_redirects", "net.ipv4.conf.lan0.send_redirects"} {
				if v := strings.TrimSpace(r.nsRun("sysctl", "-n", k)); v != "0" {
					t.Errorf("%s = %s, want 0", k, v)
				}
			}
		}},
		{"ReloadAppliesChangedConfig", func(t *testing.T) {
			// Announced before the reload: outside serviceSubnets, rejected.
			r.n1.do("announce " + svcIP2)
			waitFor(t, "the agent to see "+svcIP2, func() bool {
				st, err := r.status()
				return err == nil && st.Prefix.Rejected > 0
			})
			if v := r.vias(svcIP2); v != nil {
				t.Fatalf("%s is outside serviceSubnets and yet routed via %v", svcIP2, v)
			}
			pid := m.show(unit, "MainPID")
			if err := os.WriteFile(m.path(confPath), []byte(agentConfig(svcSubnet2)), 0o640); err != nil {
				t.Fatal(err)
			}
			m.run("systemctl", "reload", unit)
			r.waitRoute(svcIP2, node1Addr)
			waitFor(t, "the exemption for "+svcSubnet2, func() bool { return r.exemption(svcSubnet2) })
			if !r.exemption(svcSubnet) {
				t.Errorf("the reload lost the exemption for %s", svcSubnet)
			}
			if got := m.show(unit, "MainPID"); got != pid {
				t.Errorf("reload restarted the agent (MainPID %s -> %s)", pid, got)
			}
		}},
		{"FermReloadFiresHook", func(t *testing.T) {
			// ferm's run includes the package's post hook (Debian's
			// ferm.conf ends with `@include ferm.d/`).
			if lines := m.run("ferm", "--noexec", "--lines", "/etc/ferm/ferm.conf"); !strings.Contains(lines, "bgplb-routeragent poke") {
				t.Fatalf("ferm's run does not include the package's hook (/etc/ferm/ferm.d/bgplb.conf):\n%s", lines)
			}
			for _, verb := range []string{"reload", "restart", "reload", "restart", "reload"} {
				before := r.repairs()
				x := r.measureRepair(before, func() { m.run("systemctl", verb, "ferm.service") })
				// A restart is a stop (ferm flushes everything, policies
				// ACCEPT) and a start: the agent may repair in between and
				// again after, so wait for the final state.
				waitFor(t, "the exemptions back after systemctl "+verb+" ferm", func() bool {
					return r.exemption(svcSubnet) && r.exemption(svcSubnet2)
				})
				if after := r.repairs(); after <= before {
					t.Errorf("systemctl %s ferm: the agent's repairs stayed %d: ferm did not delete our chain, or the agent did not put it back", verb, before)
				}
				t.Logf("systemctl %s ferm (post hook): %v", verb, x)
			}
			// The same reload without the hook (ferm.conf without
			// `@include ferm.d/`): only the agent's 1 s drift check repairs.
			nohook := strings.Replace(fermConf, "@include ferm.d/;\n", "", 1)
			if err := os.WriteFile(m.path("/root/ferm-nohook.conf"), []byte(nohook), 0o644); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 3; i++ {
				before := r.repairs()
				x := r.measureRepair(before, func() { m.run("ferm", "/root/ferm-nohook.conf") })
				waitFor(t, "the repair without the hook", func() bool { return r.repairs() > before })
				t.Logf("ferm without the hook (1 s drift check): %v", x)
			}
		}},
		{"RestartDeletesNoRoute", func(t *testing.T) {
			r.noRouteDeleted(t, func() {
				m.run("systemctl", "restart", unit)
			})
		}},
		{"UpgradeKeepsEditedConffile", func(t *testing.T) {
			edited, err := os.ReadFile(m.path(confPath))
			if err != nil {
				t.Fatal(err)
			}
			pid := m.show(unit, "MainPID")
			r.noRouteDeleted(t, func() { m.run("dpkg", "-i", r.debNew) })
			if v := m.run("dpkg-query", "-W", "-f=${Version} ${Status}", "bgplb-routeragent"); v != "0.0.0~router2 install ok installed" {
				t.Errorf("after the upgrade: %q", v)
			}
			if b, _ := os.ReadFile(m.path(confPath)); !bytes.Equal(b, edited) {
				t.Errorf("the upgrade changed the edited conffile:\n%s", b)
			}
			if _, err := os.Stat(m.path(confPath + ".dpkg-dist")); err == nil {
				t.Errorf("the upgrade left %s.dpkg-dist", confPath)
			}
			if got := m.show(unit, "MainPID"); got == pid {
				t.Errorf("the upgrade did not restart the agent (MainPID still %s)", pid)
			}
			if v := strings.TrimSpace(m.run("bgplb-routeragent", "version")); !strings.Contains(v, "0.0.0~router2") {
				t.Errorf("bgplb-routeragent version after the upgrade: %q", v)
			}
		}},
		{"RemoveThenPurgeRestoreTheRouter", func(t *testing.T) {
			m.run("apt-get", "remove", "-y", "bgplb-routeragent")
			if st := m.show(unit, "ActiveState"); st != "inactive" {
				t.Errorf("after remove the unit is %s", st)
			}
			if v := r.vias(svcIP); v != nil {
				t.Errorf("after remove %s is still routed via %v", svcIP, v)
			}
			if d := diffLines(r.baseline.firewall, r.snapshot().firewall); d != "" {
				t.Errorf("after remove the firewall differs from before the install:\n%s", d)
			}
			if d := diffLines(r.baseline.sysctls, r.snapshot().sysctls); d != "" {
				t.Errorf("after remove the sysctls differ from before the install:\n%s", d)
			}
			if _, err := os.Stat(m.path(confPath)); err != nil {
				t.Errorf("remove took the conffile: %v", err)
			}
			m.run("apt-get", "purge", "-y", "bgplb-routeragent")
			for _, p := range []string{"/etc/bgplb", "/var/lib/bgplb", "/etc/ferm/ferm.d/bgplb.conf", "/usr/sbin/bgplb-routeragent"} {
				if _, err := os.Lstat(m.path(p)); err == nil {
					t.Errorf("after purge %s remains", p)
				}
			}
			now := r.snapshot()
			if d := diffLines(r.baseline.firewall, now.firewall); d != "" {
				t.Errorf("after purge the firewall differs from before the install:\n%s", d)
			}
			if d := diffLines(r.baseline.sysctls, now.sysctls); d != "" {
				t.Errorf("after purge the sysctls differ from before the install:\n%s", d)
			}
			// ferm still reloads cleanly without the hook.
			m.run("systemctl", "reload", "ferm.service")
		}},
	}
	for _, s := range steps {
		ok := t.Run(s.name, func(st *testing.T) {
			// The helpers fail the step that runs them.
			r.t, m.t = st, st
			defer func() { r.t, m.t = t, t }()
			s.f(st)
		})
		if !ok {
			t.Logf("agent journal:\n%s", m.journal(unit))
			return
		}
	}
}

// noRouteDeleted runs f (a restart of the agent) while `ip monitor route`
// watches the router's kernel, waits until the new agent has both
// sessions back and has ended its stale phase, and fails on any deleted
// bgplb route.
func (r *router) noRouteDeleted(t *testing.T, f func()) {
	t.Helper()
	m := r.m
	mon := r.ns.Command("ip", "-o", "monitor", "route")
	var out bytes.Buffer
	var mu sync.Mutex
	mon.Stdout = writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return out.Write(p) })
	mon.Stderr = mon.Stdout
	if err := mon.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = mon.Process.Kill(); _ = mon.Wait() }()
	// ip monitor is subscribed once it reports a change: a marker route
	// of our own, added and deleted by its exact prefix.
	const marker = "198.51.100.99/32"
	waitFor(t, "ip monitor to see the marker route", func() bool {
		r.nsRun("ip", "route", "add", marker, "dev", "lan0", "proto", "static")
		r.nsRun("ip", "route", "del", marker, "dev", "lan0", "proto", "static")
		time.Sleep(50 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(out.String(), "198.51.100.99")
	})
	oldInv := m.show(unit, "InvocationID")
	f()
	m.waitActive(unit)
	inv := m.show(unit, "InvocationID")
	if inv == oldInv {
		t.Fatalf("the agent was not restarted (InvocationID %s)", inv)
	}
	waitFor(t, "both sessions back", func() bool { return r.peersUp() == 2 })
	waitFor(t, "the new agent to end its stale phase", func() bool {
		j, _ := m.try("journalctl", "--no-pager", "-o", "cat", "_SYSTEMD_INVOCATION_ID="+inv)
		return strings.Contains(j, "sweeping stale routes")
	})
	r.waitRoute(svcIP, node1Addr, node2Addr)
	r.waitRoute(svcIP2, node1Addr)
	mu.Lock()
	seen := out.String()
	mu.Unlock()
	var changes []string
	for _, l := range strings.Split(seen, "\n") {
		if l == "" || strings.Contains(l, "198.51.100.99") {
			continue
		}
		changes = append(changes, l)
		if strings.HasPrefix(l, "Deleted") && (strings.Contains(l, "proto bgplb") || strings.Contains(l, "proto 220")) {
			t.Errorf("a route was deleted: %s", l)
		}
	}
	t.Logf("route changes in the router's kernel over the restart: %q", changes)
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// repair is one measured firewall repair after a ferm run.
type repair struct {
	// gone is how long our jump was missing from FORWARD: from the last
	// look that saw it to the first that saw it back (an upper bound; looks
	// are a few ms apart). seen is false when no look caught it missing.
	gone time.Duration
	seen bool
	// afterFerm is how long after the ferm command returned the jump was
	// back; 0 when it was back before ferm returned (the post hook runs
	// inside ferm's run).
	afterFerm time.Duration
}

func (x repair) String() string {
	if !x.seen {
		return "never seen missing (back within one look)"
	}
	return fmt.Sprintf("gone for %.1f ms, back %.1f ms after ferm returned", ms(x.gone), ms(x.afterFerm))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// measureRepair polls the router's FORWARD chain (iptables-legacy -S from
// the host, in the router's namespace) while trigger runs ferm, until our
// jump has gone and come back. before is the agent's repair count before.
func (r *router) measureRepair(before int, trigger func()) repair {
	r.t.Helper()
	stop := make(chan struct{})
	type result struct {
		lastPresent, back time.Time
		err               error
	}
	res := make(chan result, 1)
	go func() {
		var lastPresent, gone time.Time
		err := r.ns.Do(func() error {
			for {
				out, err := exec.Command("iptables-legacy", "-w", "-S", "FORWARD").Output()
				if err != nil {
					return fmt.Errorf("iptables-legacy -S FORWARD: %w", err)
				}
				now := time.Now()
				present := strings.Contains(string(out), "-j BGPLB-EXEMPT")
				switch {
				case present && !gone.IsZero():
					res <- result{lastPresent: lastPresent, back: now}
					return nil
				case present:
					lastPresent = now
				case gone.IsZero():
					gone = now
				}
				select {
				case <-stop:
					res <- result{}
					return nil
				default:
				}
			}
		})
		if err != nil {
			res <- result{err: err}
		}
	}()
	trigger()
	returned := time.Now()
	// The poller ends when it sees the chain back. If it never caught it
	// missing, the agent's repair counter says when the repair happened.
	deadline := time.Now().Add(60 * time.Second)
	var x result
	func() {
		for {
			select {
			case x = <-res:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if r.repairs() > before && r.exemption(svcSubnet) || time.Now().After(deadline) {
				close(stop)
				x = <-res
				return
			}
		}
	}()
	if x.err != nil {
		r.t.Fatal(x.err)
	}
	if x.back.IsZero() {
		return repair{}
	}
	after := x.back.Sub(returned)
	if after < 0 {
		after = 0
	}
	return repair{gone: x.back.Sub(x.lastPresent), seen: true, afterFerm: after}
}

// diffLines lists the lines only in a (-) or only in b (+).
func diffLines(a, b string) string {
	in := func(s string) map[string]int {
		m := map[string]int{}
		for _, l := range strings.Split(s, "\n") {
			m[l]++
		}
		return m
	}
	ma, mb := in(a), in(b)
	var d []string
	for l, n := range ma {
		if mb[l] < n {
			d = append(d, "- "+l)
		}
	}
	for l, n := range mb {
		if ma[l] < n {
			d = append(d, "+ "+l)
		}
	}
	slices.Sort(d)
	return strings.Join(d, "\n")
}

func TestDropEmptyTables(t *testing.T) {
	save := `# Generated by iptables-save v1.8.9 on Sat Dec  5 09:40:20 2026
*mangle
:PREROUTING ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
COMMIT
*raw
:PREROUTING ACCEPT [0:0]
-A PREROUTING -j NOTRACK
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
COMMIT
# Completed on Sat Dec  5 09:40:20 2026
`
	want := "*raw\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j NOTRACK\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\nCOMMIT"
	if got := dropEmptyTables(save); got != want {
		t.Errorf("dropEmptyTables:\n%s\nwant:\n%s", got, want)
	}
}
