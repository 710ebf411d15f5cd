package agent

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bgplb/bgplb/internal/netnstest"
	"github.com/bgplb/bgplb/internal/tcpmd5"
)

// The privileges the packaged unit gives the agent (User=bgplb,
// AmbientCapabilities= and CapabilityBoundingSet= of
// packaging/systemd/bgplb-routeragent.service), played here with setpriv:
// an unprivileged uid and gid, no supplementary groups, exactly these three
// capabilities inherited, ambient and bounding.
const (
	privUID  = 65534 // nobody
	privGID  = 65534 // nogroup: the agent's group, which may read status
	otherUID = 65533 // a user outside that group
	privCaps = ",+net_admin,+net_raw,+net_bind_service"
	// CapEff of exactly CAP_NET_BIND_SERVICE (10), CAP_NET_ADMIN (12) and
	// CAP_NET_RAW (13), as /proc/PID/status prints it.
	privCapMask = "0000000000003400"
)

// privSetup is what the package sets up for the user: a folder of the
// agent's own (state and socket, as StateDirectory= and RuntimeDirectory=),
// the config and password file it can read, a copy of the test binary it
// can execute (go test's build folder is root's 0700), and the xtables
// lock made root:group 0640 as the package's tmpfiles.d entry does
// (XTABLES_LOCKFILE points iptables at it instead of the host's
// /run/xtables.lock, which this test must not change).
type privSetup struct {
	dir, bin, lock string
}

func newPrivSetup(t *testing.T) *privSetup {
	t.Helper()
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatalf("setpriv (util-linux) is required: %v", err)
	}
	dir, err := os.MkdirTemp("", "bgplb-priv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := &privSetup{dir: dir, bin: filepath.Join(dir, "bgplb-routeragent"), lock: filepath.Join(dir, "xtables.lock")}
	copyFile(t, self(t), p.bin, 0o755)
	for _, d := range []string{"state", "run"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o750); err != nil {
			t.Fatal(err)
		}
		p.chown(t, filepath.Join(dir, d), privUID)
	}
	if err := os.WriteFile(p.lock, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	p.chown(t, p.lock, 0)
	return p
}

func (p *privSetup) chown(t *testing.T, path string, uid int) {
	t.Helper()
	if err := os.Chown(path, uid, privGID); err != nil {
		t.Fatal(err)
	}
}

func (p *privSetup) socket() string { return filepath.Join(p.dir, "run", "agent.sock") }

// writeConfig writes the config as the package installs it (root:group
// 0640) and the TCP-MD5 secret as the install guide says (the agent's user,
// 0600).
func (p *privSetup) writeConfig(t *testing.T, body string) string {
	t.Helper()
	pw := filepath.Join(p.dir, "md5.secret")
	if err := os.WriteFile(pw, []byte("priv-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p.chown(t, pw, privUID)
	cfg := filepath.Join(p.dir, "routeragent.yaml")
	body = strings.ReplaceAll(body, "PASSWORDFILE", pw) +
		fmt.Sprintf("statusSocket: %s\nstateDir: %s\n", p.socket(), filepath.Join(p.dir, "state"))
	if err := os.WriteFile(cfg, []byte(body), 0o640); err != nil {
		t.Fatal(err)
	}
	p.chown(t, cfg, 0)
	return cfg
}

// setpriv returns the command line running args as uid/gid with exactly
// the unit's capabilities (none for a uid other than the agent's).
func setpriv(uid, gid int, caps string, args ...string) []string {
	return append([]string{"setpriv", "--reuid=" + strconv.Itoa(uid), "--regid=" + strconv.Itoa(gid), "--clear-groups",
		"--inh-caps=-all" + caps, "--ambient-caps=-all" + caps, "--bounding-set=-all" + caps}, args...)
}

// start runs the agent in the router namespace as the unit would, under
// the wrap command line (strace) if given.
func (p *privSetup) start(t *testing.T, ns *netnstest.NS, cfg string, out io.Writer, wrap []string, env ...string) *proc {
	t.Helper()
	argv := append(append(wrap[:len(wrap):len(wrap)], p.bin), "run", "--config", cfg)
	cmd := ns.Command(setpriv(privUID, privGID, privCaps, argv...)...)
	cmd.Env = append(append(os.Environ(), roleEnv+"=agent", "XTABLES_LOCKFILE="+p.lock), env...)
	lw := &logWriter{t: t, prefix: "agent(uid " + strconv.Itoa(privUID) + ")@" + ns.Name + ": "}
	cmd.Stdout, cmd.Stderr = lw, lw
	if out != nil {
		cmd.Stdout, cmd.Stderr = io.MultiWriter(lw, out), io.MultiWriter(lw, out)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the agent: %v", err)
	}
	pr := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(pr.done)
	}()
	t.Cleanup(func() {
		pr.kill(syscall.SIGKILL)
		lw.mu.Lock()
		lw.done = true
		lw.mu.Unlock()
	})
	return pr
}

// cli runs a bgplb-routeragent command as uid/gid without capabilities.
func (p *privSetup) cli(uid, gid int, args ...string) (string, error) {
	argv := setpriv(uid, gid, "", append([]string{p.bin}, args...)...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), roleEnv+"=agent")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

const privConfig = `asn: 64500
routerID: 192.168.2.1
neighbors:
  - address: 192.168.2.20
    asn: 64512
    passwordFile: PASSWORDFILE
serviceSubnets: [192.168.254.0/24]
lanInterfaces: [lan0]
routes: {resyncInterval: 2s, staleTimeout: 60s}
metrics: {address: "off"}
log: {level: debug}
`

// TestPrivilegeDropped runs the agent as the package runs it (an
// unprivileged user with CAP_NET_ADMIN, CAP_NET_RAW and
// CAP_NET_BIND_SERVICE only) and checks everything it does on the router:
// BGP on port 179 with TCP-MD5, the route in the kernel, send_redirects
// written under /proc/sys/net, the INVALID exemption in the backend that
// holds the drop (iptables-legacy through the shared xtables lock, and
// iptables-nft), sd_notify, and the status socket: 0660, readable by the
// group, refused to others with a message naming the group.
func TestPrivilegeDropped(t *testing.T) {
	netnstest.RequirePrecondition(t, tcpmd5.ListenerSupported(), "this kernel has no TCP-MD5")
	for _, backend := range []string{"legacy", "nft"} {
		t.Run(backend, func(t *testing.T) { testPrivilegeDropped(t, backend, false) })
	}
}

// TestPrivilegeSyscallFilter runs TestPrivilegeDropped's legacy case under
// strace and checks that every system call the agent and its iptables
// children made is allowed by the unit's SystemCallFilter= (expanded by
// systemd-analyze): without a booted systemd this is how the filter is
// known not to break the agent (a denied call fails with EPERM).
func TestPrivilegeSyscallFilter(t *testing.T) {
	for _, tool := range []string{"strace", "systemd-analyze"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s is not installed (hack/install-deps.sh installs it)", tool)
		}
	}
	netnstest.RequirePrecondition(t, tcpmd5.ListenerSupported(), "this kernel has no TCP-MD5")
	allowed := unitSyscalls(t, "../../packaging/systemd/bgplb-routeragent.service")
	used := tracedSyscalls(t, testPrivilegeDropped(t, "legacy", true))
	if len(used) < 20 {
		t.Fatalf("only %d system calls traced: %v", len(used), used)
	}
	var denied []string
	for _, s := range used {
		if !allowed[s] {
			denied = append(denied, s)
		}
	}
	if len(denied) > 0 {
		t.Errorf("the agent makes system calls the unit's SystemCallFilter denies: %v", denied)
	}
	t.Logf("%d distinct system calls, all allowed", len(used))
}

// unitSyscalls expands the unit's SystemCallFilter= lines (an allow list,
// then ~deny lists) into the allowed system calls.
func unitSyscalls(t *testing.T, unit string) map[string]bool {
	t.Helper()
	allowed := map[string]bool{}
	for _, line := range strings.Split(mustRead(t, unit), "\n") {
		v, ok := strings.CutPrefix(strings.TrimSpace(line), "SystemCallFilter=")
		if !ok {
			continue
		}
		deny := strings.HasPrefix(v, "~")
		for _, name := range strings.Fields(strings.TrimPrefix(v, "~")) {
			for _, s := range expandSyscalls(t, name) {
				allowed[s] = !deny
			}
		}
	}
	if len(allowed) == 0 {
		t.Fatalf("no SystemCallFilter= in %s", unit)
	}
	return allowed
}

func expandSyscalls(t *testing.T, name string) []string {
	t.Helper()
	if !strings.HasPrefix(name, "@") {
		return []string{name}
	}
	out, err := exec.Command("systemd-analyze", "syscall-filter", "--no-pager", name).Output()
	if err != nil {
		t.Fatalf("systemd-analyze syscall-filter %s: %v", name, err)
	}
	var res []string
	for _, l := range strings.Split(string(out), "\n")[1:] {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		res = append(res, expandSyscalls(t, l)...)
	}
	return res
}

// tracedSyscalls lists the distinct system calls in an `strace -f` log.
func tracedSyscalls(t *testing.T, path string) []string {
	t.Helper()
	seen := map[string]bool{}
	for _, line := range strings.Split(mustRead(t, path), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name := f[1]
		if name == "<..." && len(f) > 2 {
			name = f[2]
		}
		if i := strings.IndexByte(name, '('); i > 0 {
			name = name[:i]
		}
		// "???": strace could not read the call's number, as for a
		// process killed in the middle of one (the test's SIGKILLed
		// children at cleanup): no system call name to check.
		if name == "" || name == "???" || strings.ContainsAny(name, "<.-+)") || strings.HasPrefix(f[1], "+++") || strings.HasPrefix(f[1], "---") {
			continue
		}
		seen[name] = true
	}
	return slices.Sorted(maps.Keys(seen))
}

// testPrivilegeDropped runs the scenario; with trace, the agent runs under
// strace and the log's path is returned.
func testPrivilegeDropped(t *testing.T, backend string, trace bool) string {
	l := newLab(t)
	p := newPrivSetup(t)
	l.dir = filepath.Dir(p.socket()) // l.status reads the agent's socket
	node := l.host(t, "nd", "192.168.2.20")
	for _, k := range []string{"all", "default", "lan0"} {
		l.router.Exec("sysctl", "-qw", "net.ipv4.conf."+k+".send_redirects=1")
	}
	restore := l.router.Command("iptables-" + backend + "-restore")
	restore.Stdin = strings.NewReader(fermRules)
	if out, err := restore.CombinedOutput(); err != nil {
		t.Fatalf("iptables-%s-restore: %v\n%s", backend, err, out)
	}
	cfg := p.writeConfig(t, privConfig+"firewall: {mode: exempt, backend: auto}\n")
	notifyPath := filepath.Join(p.dir, "run", "notify.sock")
	notify := listenNotify(t, notifyPath)
	if err := os.Chmod(notifyPath, 0o777); err != nil { // as systemd's /run/systemd/notify
		t.Fatal(err)
	}
	var wrap []string
	traceLog := filepath.Join(filepath.Dir(p.socket()), "strace.log")
	if trace {
		wrap = []string{"strace", "-f", "-qq", "-o", traceLog}
	}
	agent := p.start(t, l.router, cfg, nil, wrap, "NOTIFY_SOCKET="+notifyPath)
	notify.expect(t, "READY=1")

	// It runs as the user with exactly the three capabilities.
	st := mustRead(t, fmt.Sprintf("/proc/%d/status", agent.cmd.Process.Pid))
	for _, want := range []string{fmt.Sprintf("Uid:\t%d\t%d\t%d\t%d", privUID, privUID, privUID, privUID),
		"CapEff:\t" + privCapMask, "CapBnd:\t" + privCapMask, "CapAmb:\t" + privCapMask} {
		if !strings.Contains(st, want+"\n") {
			t.Errorf("agent's /proc/PID/status lacks %q:\n%s", want, st)
		}
	}

	sp := startSpeakerEnv(t, node, "192.168.2.20", "SPK_PASSWORD=priv-secret")
	sp.do("up")
	sp.do("announce 192.168.254.1/32")
	waitFor(t, "the route over the TCP-MD5 session", func() bool { return l.hasRoute(t, "192.168.254.1/32", "192.168.2.20") })
	if out := l.router.Exec("ss", "-Htln", "sport = :179"); !strings.Contains(out, "192.168.2.1:179") {
		t.Errorf("BGP does not listen on 192.168.2.1:179:\n%s", out)
	}
	waitFor(t, "send_redirects 0 and the exemption in the "+backend+" backend", func() bool {
		s := l.status(t)
		return s.Sysctl != nil && s.Sysctl.Ok() && s.Firewall != nil && s.Firewall.Backend == backend &&
			len(s.Firewall.Rules) == 1 && s.Firewall.LastError == ""
	})
	for _, k := range []string{"all", "default", "lan0"} {
		if v := strings.TrimSpace(l.router.Exec("cat", "/proc/sys/net/ipv4/conf/"+k+"/send_redirects")); v != "0" {
			t.Errorf("send_redirects of %s = %s, want 0", k, v)
		}
	}
	if out := l.router.Exec("iptables-"+backend, "-S", "FORWARD"); !strings.Contains(out, "BGPLB-EXEMPT") {
		t.Errorf("no jump to our chain in the %s FORWARD chain:\n%s", backend, out)
	}
	if s := l.status(t); s.SysctlError != "" || s.Firewall.LastError != "" {
		t.Errorf("errors under reduced privilege: sysctl %q, firewall %q", s.SysctlError, s.Firewall.LastError)
	}

	// The status socket: 0660, the agent's group.
	fi, err := os.Stat(p.socket())
	if err != nil {
		t.Fatal(err)
	}
	if gid := fi.Sys().(*syscall.Stat_t).Gid; fi.Mode().Perm() != 0o660 || gid != privGID {
		t.Errorf("status socket mode %v group %d, want 0660 group %d", fi.Mode().Perm(), gid, privGID)
	}
	// A member of the group reads status; any other user is told why not.
	if out, err := p.cli(otherUID, privGID, "status", "--socket", p.socket()); err != nil || !strings.Contains(out, "192.168.254.1/32") {
		t.Errorf("status as a member of the group: %v\n%s", err, out)
	}
	out, err := p.cli(otherUID, otherUID, "status", "--socket", p.socket())
	if want := "status: permission denied: run as root or join group " + groupName(privGID) + " (" + p.socket() + ")"; err == nil || !strings.HasPrefix(out, want) {
		t.Errorf("status as an outsider: %v\n%s\nwant it to start with %q", err, out, want)
	}
	if strings.Contains(out, "is the agent running") {
		t.Errorf("status as an outsider blames the agent: %s", out)
	}

	// SIGHUP re-reads the config (signal the agent itself: strace's
	// child when traced).
	pid := agent.cmd.Process.Pid
	if trace {
		kids := strings.Fields(mustRead(t, fmt.Sprintf("/proc/%d/task/%d/children", pid, pid)))
		if len(kids) == 0 {
			t.Fatal("strace has no child")
		}
		pid, _ = strconv.Atoi(kids[0])
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	notify.expect(t, "RELOADING=1")
	notify.expect(t, "READY=1")
	// SIGTERM to the agent; strace exits with it.
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-agent.done:
	case <-time.After(60 * time.Second):
		t.Fatal("the agent did not stop on SIGTERM")
	}
	if !l.hasRoute(t, "192.168.254.1/32", "192.168.2.20") {
		t.Error("stopping the unprivileged agent removed its route")
	}
	return traceLog
}

// TestPrivilegeNoSocketNoStart: an agent that cannot create its status
// socket (here a folder it may not write) refuses to start, saying why.
func TestPrivilegeNoSocketNoStart(t *testing.T) {
	l := newLab(t)
	p := newPrivSetup(t)
	cfg := p.writeConfig(t, privConfig+"firewall: {mode: \"off\"}\n")
	// The socket's folder belongs to root, mode 0755.
	b := strings.Replace(mustRead(t, cfg), filepath.Join(p.dir, "run"), filepath.Join(p.dir, "rootonly"), 1)
	if err := os.Mkdir(filepath.Join(p.dir, "rootonly"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte(b), 0o640); err != nil {
		t.Fatal(err)
	}
	var out lockedBuffer
	agent := p.start(t, l.router, cfg, &out, nil)
	select {
	case <-agent.done:
	case <-time.After(60 * time.Second):
		t.Fatal("the agent runs without its status socket")
	}
	if code := agent.cmd.ProcessState.ExitCode(); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if s := out.String(); !strings.Contains(s, "cannot serve status") || !strings.Contains(s, "permission denied") {
		t.Errorf("the agent does not say why it stopped:\n%s", s)
	}
}

// lockedBuffer collects a process's output from its stdout and stderr
// copiers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
