// Package lab reproduces the network of the story bgplb exists for, in
// network namespaces on one machine, with real parts everywhere: a client, a
// Debian-style router with a ferm stateful firewall (iptables-legacy), two
// Kubernetes "nodes" and a control-plane host running a real kube-apiserver
// and etcd. The demo (`bgplb-lab demo`) and the end-to-end tests
// (test/e2e) share this one implementation.
//
// What the lab stands in for: there is no kubelet or kube-proxy. The lab
// creates the Node objects and EndpointSlices itself, and each node runs a
// small HTTP backend that answers on every service address (a local route
// for the service subnet on the node's loopback), as kube-proxy would make
// the node answer.
//
// All hosts sit on one L2 bridge (192.168.2.0/24 and 2001:db8:2::/64). Nothing is routed to or
// from the root namespace: the lab talks to its apiserver and hosts through
// sockets opened inside the lab's namespaces (DialIn).
package lab

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bgplb/bgplb/internal/testenv"
)

// Roles of the lab's hosts.
const (
	Switch = "sw"
	Client = "client"
	Router = "router"
	Node1  = "node1"
	Node2  = "node2"
	CP     = "cp"
)

// Addressing of the story: clients, router and nodes share 192.168.2.0/24;
// Services get addresses from 192.168.254.0/24.
const (
	LANPrefix      = "192.168.2.0/24"
	ServiceSubnet  = "192.168.254.0/24"
	RouterIP       = "192.168.2.1"
	ClientIP       = "192.168.2.109"
	CPIP           = "192.168.2.10"
	APIServerPort  = 6443
	RouterASN      = 64500
	NodeASN        = 64512
	LANIf          = "lan0"
	ServicePort    = 80
	routerStateDir = "router"
)

// NodeIPs are the nodes' LAN addresses.
var NodeIPs = map[string]string{Node1: "192.168.2.20", Node2: "192.168.2.21"}

var hostIPs = map[string]string{Client: ClientIP, Router: RouterIP, CP: CPIP, Node1: NodeIPs[Node1], Node2: NodeIPs[Node2]}

// The same LAN over IPv6 (documentation prefixes): every host has an IPv6
// address next to its IPv4 one, and IPv6 Services get addresses from
// ServiceSubnet6. The IPv4 story is unchanged.
const (
	LANPrefix6     = "2001:db8:2::/64"
	ServiceSubnet6 = "2001:db8:254::/64"
	RouterIP6      = "2001:db8:2::1"
	ClientIP6      = "2001:db8:2::109"
	CPIP6          = "2001:db8:2::10"
)

// NodeIPs6 are the nodes' IPv6 LAN addresses.
var NodeIPs6 = map[string]string{Node1: "2001:db8:2::20", Node2: "2001:db8:2::21"}

var hostIPs6 = map[string]string{Client: ClientIP6, Router: RouterIP6, CP: CPIP6, Node1: NodeIPs6[Node1], Node2: NodeIPs6[Node2]}

// Options configure a lab.
type Options struct {
	// Prefix starts every namespace name, e.g. "bgplb-demo-". It must be
	// unique to this lab: Down removes exactly the namespaces it names.
	Prefix string
	// BinDir holds bgplb-controller, bgplb-speaker, bgplb-routeragent and
	// bgplb-lab.
	BinDir string
	// StateDir holds configs, logs and the kubeconfig.
	StateDir string
	// CRDDir holds the CRD manifests (config/crd/bases).
	CRDDir string
	// Logf reports progress; nil is quiet.
	Logf func(format string, args ...any)
}

// Lab is a running lab.
type Lab struct {
	opts Options
	// Kube reaches the lab's apiserver (through the control-plane namespace).
	Kube client.Client
	// RestConfig is Kube's configuration.
	RestConfig *rest.Config

	mu    sync.Mutex
	procs map[string]*proc
}

type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// NS returns the namespace name of a role.
func (l *Lab) NS(role string) string { return l.opts.Prefix + role }

// NSNames lists every namespace name a lab with this prefix creates.
func NSNames(prefix string) []string {
	var out []string
	for _, r := range []string{Client, Router, Node1, Node2, CP, Switch} {
		out = append(out, prefix+r)
	}
	return out
}

func (l *Lab) logf(format string, args ...any) {
	if l.opts.Logf != nil {
		l.opts.Logf(format, args...)
	}
}

// Up builds the network, starts the control plane, the controller, both
// speakers and the backends, loads the ferm firewall on the router and
// creates the cluster objects (Nodes, IPPool, BGPPeer, BGPAdvertisement).
// The router agent is not started: see StartAgent. On error everything
// created so far is removed.
func Up(ctx context.Context, opts Options) (l *Lab, err error) {
	if os.Geteuid() != 0 {
		return nil, errNotRoot
	}
	l = &Lab{opts: opts, procs: map[string]*proc{}}
	defer func() {
		if err != nil {
			_ = l.Down()
		}
	}()
	for _, dir := range []string{opts.StateDir, filepath.Join(opts.StateDir, "logs"), filepath.Join(opts.StateDir, routerStateDir)} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
	}
	for _, n := range NSNames(opts.Prefix) {
		if nsExists(n) {
			return nil, fmt.Errorf("namespace %s already exists: a lab with prefix %q is running or was interrupted (remove it with `bgplb-lab down`)", n, opts.Prefix)
		}
	}
	l.logf("network: client %s, router %s, nodes %s and %s, control plane %s on one bridge", ClientIP, RouterIP, NodeIPs[Node1], NodeIPs[Node2], CPIP)
	if err := l.buildNetwork(); err != nil {
		return nil, fmt.Errorf("build network: %w", err)
	}
	if err := l.loadFerm(); err != nil {
		return nil, fmt.Errorf("router firewall: %w", err)
	}
	if err := l.startControlPlane(ctx); err != nil {
		return nil, err
	}
	if err := l.createClusterObjects(ctx); err != nil {
		return nil, fmt.Errorf("create cluster objects: %w", err)
	}
	kubeEnv := []string{"KUBECONFIG=" + l.kubeconfig()}
	if err := l.start("controller", l.NS(CP), kubeEnv, filepath.Join(opts.BinDir, "bgplb-controller"),
		"--metrics-bind-address=127.0.0.1:8080", "--metrics-secure=false", "--health-probe-bind-address=127.0.0.1:8081"); err != nil {
		return nil, err
	}
	for _, n := range []string{Node1, Node2} {
		if err := l.StartSpeaker(n); err != nil {
			return nil, err
		}
		if err := l.start("backend-"+n, l.NS(n), nil, filepath.Join(opts.BinDir, "bgplb-lab"), "backend",
			"--listen", fmt.Sprintf(":%d", ServicePort), "--name", n); err != nil {
			return nil, err
		}
	}
	return l, nil
}

func (l *Lab) buildNetwork() error {
	for _, n := range NSNames(l.opts.Prefix) {
		if _, err := run("ip", "netns", "add", n); err != nil {
			return err
		}
		if _, err := nsExec(n, "ip", "link", "set", "lo", "up"); err != nil {
			return err
		}
		// No duplicate address detection: the lab's IPv6 addresses, the
		// link-local ones included, are usable at once instead of staying
		// tentative for a second or more.
		if _, err := nsExec(n, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"); err != nil {
			return err
		}
	}
	sw := l.NS(Switch)
	if _, err := nsExec(sw, "ip", "link", "add", "br0", "type", "bridge"); err != nil {
		return err
	}
	if _, err := nsExec(sw, "ip", "link", "set", "br0", "up"); err != nil {
		return err
	}
	for _, role := range []string{Client, Router, Node1, Node2, CP} {
		ifname := "eth0"
		if role == Router {
			ifname = LANIf
		}
		ns := l.NS(role)
		port := "p-" + role
		cmds := [][]string{
			{"ip", "netns", "exec", sw, "ip", "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", ns},
			{"ip", "netns", "exec", sw, "ip", "link", "set", port, "master", "br0", "up"},
			{"ip", "netns", "exec", ns, "ip", "addr", "add", hostIPs[role] + "/24", "dev", ifname},
			{"ip", "netns", "exec", ns, "ip", "addr", "add", hostIPs6[role] + "/64", "dev", ifname, "nodad"},
			{"ip", "netns", "exec", ns, "ip", "link", "set", ifname, "up"},
		}
		if role != Router && role != CP {
			cmds = append(cmds, []string{"ip", "netns", "exec", ns, "ip", "route", "add", "default", "via", RouterIP},
				[]string{"ip", "netns", "exec", ns, "ip", "-6", "route", "add", "default", "via", RouterIP6})
		}
		for _, c := range cmds {
			if _, err := run(c...); err != nil {
				return err
			}
		}
	}
	// The router forwards. Like Windows and Android clients in the story,
	// the lab's client ignores ICMP redirects, so a redirect cannot hide the
	// router's firewall problem.
	for _, c := range [][]string{
		{l.NS(Router), "sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{l.NS(Router), "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"},
		{l.NS(Client), "sysctl", "-qw", "net.ipv4.conf.all.accept_redirects=0"},
		{l.NS(Client), "sysctl", "-qw", "net.ipv4.conf.eth0.accept_redirects=0"},
		{l.NS(Client), "sysctl", "-qw", "net.ipv6.conf.all.accept_redirects=0"},
		{l.NS(Client), "sysctl", "-qw", "net.ipv6.conf.eth0.accept_redirects=0"},
	} {
		if _, err := nsExec(c[0], c[1:]...); err != nil {
			return err
		}
	}
	// kube-proxy stand-in: each node answers on every service address.
	for _, n := range []string{Node1, Node2} {
		if _, err := nsExec(l.NS(n), "ip", "route", "add", "local", ServiceSubnet, "dev", "lo"); err != nil {
			return err
		}
		if _, err := nsExec(l.NS(n), "ip", "-6", "route", "add", "local", ServiceSubnet6, "dev", "lo"); err != nil {
			return err
		}
	}
	return nil
}

// FermConfig is the router's firewall, written as DebOps' ferm role writes
// it: stateful, FORWARD policy DROP, INVALID dropped, LAN-to-LAN forwarding
// allowed for new connections; the same for IPv4 and IPv6.
const FermConfig = `# The lab router's firewall, as DebOps' ferm role sets it up.
domain ip table filter {
    chain INPUT {
        policy DROP;
        mod conntrack ctstate INVALID DROP;
        mod conntrack ctstate (ESTABLISHED RELATED) ACCEPT;
        interface lo ACCEPT;
        proto icmp ACCEPT;
        proto tcp dport 179 ACCEPT;
    }
    chain FORWARD {
        policy DROP;
        mod conntrack ctstate INVALID DROP;
        mod conntrack ctstate (ESTABLISHED RELATED) ACCEPT;
        interface lan0 outerface lan0 ACCEPT;
    }
    chain OUTPUT {
        policy ACCEPT;
    }
}
# The same for IPv6 (ip6tables-legacy). ICMPv6 is accepted on INPUT:
# neighbour discovery needs it (conntrack leaves NDP untracked, so the
# INVALID rule does not see it).
domain ip6 table filter {
    chain INPUT {
        policy DROP;
        mod conntrack ctstate INVALID DROP;
        mod conntrack ctstate (ESTABLISHED RELATED) ACCEPT;
        interface lo ACCEPT;
        proto ipv6-icmp ACCEPT;
        proto tcp dport 179 ACCEPT;
    }
    chain FORWARD {
        policy DROP;
        mod conntrack ctstate INVALID DROP;
        mod conntrack ctstate (ESTABLISHED RELATED) ACCEPT;
        interface lan0 outerface lan0 ACCEPT;
    }
    chain OUTPUT {
        policy ACCEPT;
    }
}
`

// loadFerm loads the firewall with the real ferm (which writes through
// iptables-legacy, as on the story's router).
func (l *Lab) loadFerm() error {
	path := filepath.Join(l.opts.StateDir, routerStateDir, "ferm.conf")
	if err := os.WriteFile(path, []byte(FermConfig), 0o644); err != nil {
		return err
	}
	return l.ReloadFerm()
}

// ReloadFerm runs `ferm` on the router, which flushes and rewrites every
// chain, as a ferm reload on a real router does.
func (l *Lab) ReloadFerm() error {
	_, err := nsExec(l.NS(Router), "ferm", filepath.Join(l.opts.StateDir, routerStateDir, "ferm.conf"))
	return err
}

// FermHook is the ferm post hook ReloadFermWithHook adds to the router's
// firewall: the command of the hook bgplb ships
// (routeragent/firewall/ferm-hook.conf, `bgplb-routeragent poke`) with the
// lab's binary and config. It leaves out the shipped hook's systemctl
// fallback: the lab runs no systemd unit, and a fallback must never reach a
// service of the machine the lab runs on.
func (l *Lab) FermHook() string {
	return fmt.Sprintf("@hook post \"%s poke --config %s\";\n",
		filepath.Join(l.opts.BinDir, "bgplb-routeragent"), l.AgentConfigPath())
}

// ReloadFermWithHook runs `ferm` on the router with FermConfig plus
// FermHook, as on a router where the agent's package is installed: ferm
// flushes and rewrites every chain, then its post hook pokes the agent.
func (l *Lab) ReloadFermWithHook() error {
	path := filepath.Join(l.opts.StateDir, routerStateDir, "ferm-hooked.conf")
	if err := os.WriteFile(path, []byte(FermConfig+l.FermHook()), 0o644); err != nil {
		return err
	}
	_, err := nsExec(l.NS(Router), "ferm", path)
	return err
}

func (l *Lab) kubeconfig() string { return filepath.Join(l.opts.StateDir, "kubeconfig") }

func (l *Lab) startControlPlane(ctx context.Context) error {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		return fmt.Errorf("KUBEBUILDER_ASSETS is not set (run hack/envtest-assets.sh)")
	}
	l.logf("control plane: kube-apiserver and etcd at https://%s:%d", CPIP, APIServerPort)
	if err := l.start("apiserver", l.NS(CP), []string{"KUBEBUILDER_ASSETS=" + assets},
		filepath.Join(l.opts.BinDir, "bgplb-lab"), "apiserver",
		"--address", CPIP, "--port", fmt.Sprint(APIServerPort),
		"--crds", l.opts.CRDDir,
		"--kubeconfig", l.kubeconfig()); err != nil {
		return err
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if _, err := os.Stat(l.kubeconfig()); err == nil {
			break
		}
		if p := l.proc("apiserver"); p != nil && p.exited() {
			return fmt.Errorf("control plane exited: %w (see %s)", p.err, l.LogPath("apiserver"))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("control plane not ready after 3m (see %s)", l.LogPath("apiserver"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", l.kubeconfig())
	if err != nil {
		return fmt.Errorf("load lab kubeconfig: %w", err)
	}
	cfg.Dial = DialIn(l.NS(CP))
	cfg.QPS, cfg.Burst = 500, 1000
	s, err := testenv.NewScheme()
	if err != nil {
		return err
	}
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		return fmt.Errorf("lab client: %w", err)
	}
	l.Kube, l.RestConfig = c, cfg
	return nil
}

// LogPath is the log file of a lab process.
func (l *Lab) LogPath(name string) string {
	return filepath.Join(l.opts.StateDir, "logs", name+".log")
}

// start runs a program inside a namespace; its output goes to its log file.
func (l *Lab) start(name, ns string, env []string, bin string, args ...string) error {
	logf, err := os.OpenFile(l.LogPath(name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, bin}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s in %s: %w", name, ns, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	l.mu.Lock()
	l.procs[name] = p
	l.mu.Unlock()
	return nil
}

func (l *Lab) proc(name string) *proc {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.procs[name]
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop signals a lab process and waits (up to 15 s) for it to exit.
func (l *Lab) Stop(name string, sig os.Signal) error {
	p := l.proc(name)
	if p == nil {
		return fmt.Errorf("no lab process %q", name)
	}
	if !p.exited() {
		if err := p.cmd.Process.Signal(sig); err != nil {
			return fmt.Errorf("signal %s: %w", name, err)
		}
	}
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not exit within 15s of %v; killed", name, sig)
	}
	l.mu.Lock()
	delete(l.procs, name)
	l.mu.Unlock()
	return nil
}

// Running reports whether a lab process is running.
func (l *Lab) Running(name string) bool {
	p := l.proc(name)
	return p != nil && !p.exited()
}

// StartSpeaker starts bgplb-speaker on a node.
func (l *Lab) StartSpeaker(node string) error {
	return l.start("speaker-"+node, l.NS(node), []string{"KUBECONFIG=" + l.kubeconfig(), "NODE_NAME=" + node},
		filepath.Join(l.opts.BinDir, "bgplb-speaker"), "--node-name", node,
		"--metrics-bind-address=127.0.0.1:7472", "--metrics-secure=false", "--health-probe-bind-address=127.0.0.1:7473")
}

// Down stops every lab process and deletes the lab's namespaces.
func (l *Lab) Down() error {
	l.mu.Lock()
	procs := l.procs
	l.procs = map[string]*proc{}
	l.mu.Unlock()
	for _, p := range procs {
		if !p.exited() {
			_ = p.cmd.Process.Signal(os.Interrupt)
		}
	}
	for _, p := range procs {
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	return Down(l.opts.Prefix)
}

// Down removes the namespaces of a lab with this prefix and every process
// inside them, also when the lab process itself was interrupted.
func Down(prefix string) error {
	var errs []string
	for _, n := range NSNames(prefix) {
		if err := killNamespace(n, 5*time.Second); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("lab down: %s", strings.Join(errs, "; "))
	}
	return nil
}

// HTTPClientIn returns an HTTP client whose connections are opened inside a
// lab host's namespace, with the given timeout and no connection reuse (each
// request is a new TCP connection, as in the story's curl).
func (l *Lab) HTTPClientIn(role string, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext:       DialIn(l.NS(role)),
			DisableKeepAlives: true,
		},
	}
}

// ClientGet fetches http://addr/ from the lab's client and returns the body.
func (l *Lab) ClientGet(ctx context.Context, addr string, timeout time.Duration) (string, error) {
	c := l.HTTPClientIn(Client, timeout)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(addr, fmt.Sprint(ServicePort))+"/", nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 4096)
	for {
		n, rerr := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if rerr != nil {
			break
		}
	}
	if resp.StatusCode != http.StatusOK {
		return sb.String(), fmt.Errorf("GET %s: %s", addr, resp.Status)
	}
	return sb.String(), nil
}
