// Package cluster runs a real Kubernetes cluster in network namespaces on
// one machine, for the end-to-end tests of bgplb as users install it
// (`kubectl apply -f dist/install.yaml`, `helm install`), and `make
// demo-real`.
//
// What is real: etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler (one control-plane host), and on each of two nodes its own
// containerd (Debian's, with runc) with a bridge CNI network and host-local
// IPAM (Debian's containernetworking-plugins), a kubelet and kube-proxy
// (iptables or nftables mode). bgplb's controller and speakers run as the
// pods of dist/install.yaml from images built by hack/cluster-images.sh and
// imported into each node's containerd. The router is bgplb-routeragent
// with the story's ferm firewall (test/lab.FermConfig) in a namespace, not
// a booted Debian.
//
// What stands in: every component authenticates with one administrator
// client certificate (no TLS bootstrap, no Node authorizer), kubelets
// authorize the apiserver with AlwaysAllow, there is no cluster DNS, and pod
// subnets are static per node (10.244.N.0/24) with static routes between
// the hosts instead of a CNI that distributes them.
//
// Addressing (IPv4): one L2 bridge 192.168.2.0/24 with the router .1, the
// control plane .10 (apiserver https://192.168.2.10:6443), node1 .20,
// node2 .21 and the client .109; Services get addresses from
// 192.168.254.0/24. The apiserver listens on the LAN so that the kubelets,
// kube-proxies and pods reach it as in a real cluster; the test process
// reaches it through sockets opened in the control plane's namespace
// (lab.DialIn) and runs kubectl there with nsenter.
package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/bgplb/bgplb/test/lab"
)

// Roles of the lab's hosts.
const (
	Switch = "sw"
	Client = "client"
	Router = "router"
	CP     = "cp"
	Node1  = "node1"
	Node2  = "node2"
)

// Addressing.
const (
	LANPrefix     = "192.168.2.0/24"
	ServiceSubnet = "192.168.254.0/24"
	RouterIP      = "192.168.2.1"
	CPIP          = "192.168.2.10"
	ClientIP      = "192.168.2.109"
	APIServerPort = 6443
	RouterASN     = 64500
	NodeASN       = 64512
	LANIf         = "lan0"
	ClusterIPs    = "10.96.0.0/16"
	PodCIDR       = "10.244.0.0/16"
)

// Nodes lists the node names.
var Nodes = []string{Node1, Node2}

// NodeIPs are the nodes' LAN addresses.
var NodeIPs = map[string]string{Node1: "192.168.2.20", Node2: "192.168.2.21"}

// NodePodCIDRs are the nodes' static pod subnets.
var NodePodCIDRs = map[string]string{Node1: "10.244.1.0/24", Node2: "10.244.2.0/24"}

var hostIPs = map[string]string{Client: ClientIP, Router: RouterIP, CP: CPIP, Node1: NodeIPs[Node1], Node2: NodeIPs[Node2]}

// Options configure a cluster.
type Options struct {
	// Prefix starts every namespace, cgroup and directory name; it must be
	// unique to this cluster (Down removes what it names).
	Prefix string
	// StateDir holds configs, logs, the PKI and the nodes' containerd and
	// kubelet roots. Keep it short: containerd's socket lives there.
	StateDir string
	// EnvtestDir holds etcd and kube-apiserver (hack/envtest-assets.sh).
	EnvtestDir string
	// NodeBinDir holds kube-controller-manager, kube-scheduler, kubelet,
	// kube-proxy and kubectl (hack/k8s-node-binaries.sh).
	NodeBinDir string
	// BinDir holds bgplb-routeragent.
	BinDir string
	// ImageDir holds the OCI tarballs of hack/cluster-images.sh.
	ImageDir string
	// ProxyMode is kube-proxy's mode: iptables or nftables.
	ProxyMode string
	// Logf reports progress; nil is quiet.
	Logf func(format string, args ...any)
}

// PauseImage and BackendImage are the lab's images (hack/cluster-images.sh).
const (
	PauseImage   = "bgplb.local/lab/pause:v1"
	BackendImage = "bgplb.local/lab/backend:v1"
)

// Cluster is a running cluster.
type Cluster struct {
	opts Options
	pki  pki
	// Kube reaches the apiserver from the test process.
	Kube       kubernetes.Interface
	RestConfig *rest.Config

	mu        sync.Mutex
	procs     map[string]*proc
	sysctlsUp bool
}

type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// NS is the namespace of a role.
func (c *Cluster) NS(role string) string { return c.opts.Prefix + role }

func (c *Cluster) nsPath(role string) string { return "/run/netns/" + c.NS(role) }

func (c *Cluster) logf(format string, args ...any) {
	if c.opts.Logf != nil {
		c.opts.Logf(format, args...)
	}
}

// Kubeconfig is the administrator kubeconfig (server on the LAN: use it
// inside the lab's namespaces, e.g. with Kubectl).
func (c *Cluster) Kubeconfig() string { return filepath.Join(c.opts.StateDir, "kubeconfig") }

// LogPath is the log file of a cluster process.
func (c *Cluster) LogPath(name string) string {
	return filepath.Join(c.opts.StateDir, "logs", name+".log")
}

func roles() []string { return []string{Switch, Client, Router, CP, Node1, Node2} }

// Up builds the network, starts the control plane and both nodes, imports
// the images into every node's containerd and waits until both nodes are
// Ready. The router's firewall is loaded; its agent is not started (see
// StartAgent). On error everything created so far is removed.
func Up(ctx context.Context, opts Options) (c *Cluster, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the cluster lab needs root: it creates network namespaces, cgroups and mounts")
	}
	if opts.ProxyMode == "" {
		opts.ProxyMode = "iptables"
	}
	c = &Cluster{opts: opts, procs: map[string]*proc{}}
	c.pki = pki{dir: filepath.Join(opts.StateDir, "pki")}
	defer func() {
		if err != nil {
			if derr := c.Down(); derr != nil {
				c.logf("cleanup after failed Up: %v", derr)
			}
		}
	}()
	if err := c.checkPrograms(); err != nil {
		return nil, err
	}
	for _, r := range roles() {
		if _, err := os.Stat(c.nsPath(r)); err == nil {
			return nil, fmt.Errorf("namespace %s already exists: a cluster with prefix %q is running or was interrupted", c.NS(r), opts.Prefix)
		}
	}
	if err := os.MkdirAll(filepath.Join(opts.StateDir, "logs"), 0o755); err != nil {
		return nil, err
	}
	c.saveSysctls()
	c.sysctlsUp = true
	c.logf("network: router %s, control plane %s, nodes %s and %s, client %s", RouterIP, CPIP, NodeIPs[Node1], NodeIPs[Node2], ClientIP)
	if err := c.buildNetwork(); err != nil {
		return nil, fmt.Errorf("build network: %w", err)
	}
	if err := os.WriteFile(filepath.Join(opts.StateDir, "ferm.conf"), []byte(lab.FermConfig), 0o644); err != nil {
		return nil, err
	}
	if _, err := c.nsExec(Router, "ferm", filepath.Join(opts.StateDir, "ferm.conf")); err != nil {
		return nil, fmt.Errorf("router firewall: %w", err)
	}
	if err := c.startControlPlane(ctx); err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	errs := make([]error, len(Nodes))
	for i, n := range Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.startNode(ctx, n)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := c.WaitNodesReady(ctx, 3*time.Minute); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Cluster) checkPrograms() error {
	var missing []string
	for _, f := range []string{
		filepath.Join(c.opts.EnvtestDir, "etcd"), filepath.Join(c.opts.EnvtestDir, "kube-apiserver"),
		filepath.Join(c.opts.NodeBinDir, "kube-controller-manager"), filepath.Join(c.opts.NodeBinDir, "kube-scheduler"),
		filepath.Join(c.opts.NodeBinDir, "kubelet"), filepath.Join(c.opts.NodeBinDir, "kube-proxy"),
		filepath.Join(c.opts.NodeBinDir, "kubectl"), filepath.Join(c.opts.BinDir, "bgplb-routeragent"),
		filepath.Join(c.opts.ImageDir, "pause.oci.tar"), filepath.Join(c.opts.ImageDir, "backend.oci.tar"),
		filepath.Join(c.opts.ImageDir, "bgplb-controller.oci.tar"), filepath.Join(c.opts.ImageDir, "bgplb-speaker.oci.tar"),
	} {
		if _, err := os.Stat(f); err != nil {
			missing = append(missing, f)
		}
	}
	for _, p := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "nsenter", "ferm", "iptables", "nft", "conntrack", "/usr/lib/cni/bridge", "/usr/lib/cni/host-local"} {
		if _, err := exec.LookPath(p); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing (hack/install-deps.sh: containerd, runc, containernetworking-plugins; hack/envtest-assets.sh; hack/k8s-node-binaries.sh; make build; hack/cluster-images.sh): %s", strings.Join(missing, ", "))
	}
	return nil
}

// The kubelet sets these kernel tunables (it does not with
// protectKernelDefaults, but then it refuses to start unless they are
// already set): the lab puts the machine's values back in Down.
var kubeletSysctls = []string{"vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops"}

// The machine's values, saved when the first cluster of this process
// starts and put back when the last one stops (a second cluster's kubelet
// would otherwise save the first one's settings).
var sysctlState struct {
	sync.Mutex
	live  int
	saved map[string]string
}

func (c *Cluster) saveSysctls() {
	sysctlState.Lock()
	defer sysctlState.Unlock()
	sysctlState.live++
	if sysctlState.live > 1 {
		return
	}
	sysctlState.saved = map[string]string{}
	for _, k := range kubeletSysctls {
		if b, err := os.ReadFile("/proc/sys/" + k); err == nil {
			sysctlState.saved[k] = strings.TrimSpace(string(b))
		}
	}
}

func (c *Cluster) restoreSysctls() {
	sysctlState.Lock()
	defer sysctlState.Unlock()
	sysctlState.live--
	if sysctlState.live > 0 {
		return
	}
	for k, v := range sysctlState.saved {
		_ = os.WriteFile("/proc/sys/"+k, []byte(v), 0o644)
	}
}

func run(args ...string) (string, error) {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// nsExec runs a command in a role's network namespace (nsenter --net, which
// leaves /sys and the cgroup mounts as they are, unlike ip netns exec).
func (c *Cluster) nsExec(role string, args ...string) (string, error) {
	return run(append([]string{"nsenter", "--net=" + c.nsPath(role), "--"}, args...)...)
}

func (c *Cluster) buildNetwork() error {
	for _, r := range roles() {
		if _, err := run("ip", "netns", "add", c.NS(r)); err != nil {
			return err
		}
		if _, err := c.nsExec(r, "ip", "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	if _, err := c.nsExec(Switch, "ip", "link", "add", "br0", "type", "bridge"); err != nil {
		return err
	}
	if _, err := c.nsExec(Switch, "ip", "link", "set", "br0", "up"); err != nil {
		return err
	}
	for _, r := range []string{Client, Router, CP, Node1, Node2} {
		ifname := "eth0"
		if r == Router {
			ifname = LANIf
		}
		port := "p-" + r
		if _, err := c.nsExec(Switch, "ip", "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", c.NS(r)); err != nil {
			return err
		}
		for _, cmd := range [][]string{
			{Switch, "ip", "link", "set", port, "master", "br0", "up"},
			{r, "ip", "addr", "add", hostIPs[r] + "/24", "dev", ifname},
			{r, "ip", "link", "set", ifname, "up"},
		} {
			if _, err := c.nsExec(cmd[0], cmd[1:]...); err != nil {
				return err
			}
		}
	}
	cmds := [][]string{
		{Router, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
		// As in the story: the client ignores ICMP redirects.
		{Client, "sysctl", "-qw", "net.ipv4.conf.all.accept_redirects=0"},
		{Client, "sysctl", "-qw", "net.ipv4.conf.eth0.accept_redirects=0"},
		{Client, "ip", "route", "add", "default", "via", RouterIP},
	}
	for _, n := range Nodes {
		cmds = append(cmds,
			[]string{n, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
			[]string{n, "ip", "route", "add", "default", "via", RouterIP},
			// The control plane reaches the pods (the controller's
			// connections to the apiserver come from its pod address).
			[]string{CP, "ip", "route", "add", NodePodCIDRs[n], "via", NodeIPs[n]})
		for _, m := range Nodes {
			if m != n {
				cmds = append(cmds, []string{n, "ip", "route", "add", NodePodCIDRs[m], "via", NodeIPs[m]})
			}
		}
	}
	for _, cmd := range cmds {
		if _, err := c.nsExec(cmd[0], cmd[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// start runs a program in a role's namespace (nsenter --net); its output
// goes to its log file.
func (c *Cluster) start(name, role string, env []string, bin string, args ...string) error {
	logf, err := os.OpenFile(c.LogPath(name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command("nsenter", append([]string{"--net=" + c.nsPath(role), "--", bin}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s in %s: %w", name, c.NS(role), err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	c.mu.Lock()
	c.procs[name] = p
	c.mu.Unlock()
	return nil
}

func (c *Cluster) proc(name string) *proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[name]
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop signals a cluster process and waits (up to 20 s) for it to exit.
func (c *Cluster) Stop(name string, sig os.Signal) error {
	p := c.proc(name)
	if p == nil {
		return fmt.Errorf("no cluster process %q", name)
	}
	if !p.exited() {
		_ = p.cmd.Process.Signal(sig)
	}
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	c.mu.Lock()
	delete(c.procs, name)
	c.mu.Unlock()
	return nil
}

// waitFor polls cond every 200 ms until it returns true, an error, the
// process named watch exits, or timeout.
func (c *Cluster) waitFor(ctx context.Context, what string, timeout time.Duration, watch string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		last = err
		if watch != "" {
			if p := c.proc(watch); p != nil && p.exited() {
				return fmt.Errorf("%s: %s exited: %w (see %s)", what, watch, p.err, c.LogPath(watch))
			}
		}
		if time.Now().After(deadline) {
			if last == nil {
				last = errors.New("condition false")
			}
			return fmt.Errorf("%s: not after %v (last: %w)", what, timeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (c *Cluster) startControlPlane(ctx context.Context) error {
	if err := c.pki.generate([]net.IP{net.ParseIP(CPIP), net.ParseIP("10.96.0.1"), net.ParseIP("127.0.0.1")},
		[]string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	server := fmt.Sprintf("https://%s:%d", CPIP, APIServerPort)
	if err := os.WriteFile(c.Kubeconfig(), []byte(c.pki.kubeconfig(server)), 0o600); err != nil {
		return err
	}
	c.logf("control plane: etcd, kube-apiserver (%s), kube-controller-manager, kube-scheduler", server)
	if err := c.start("etcd", CP, nil, filepath.Join(c.opts.EnvtestDir, "etcd"),
		"--data-dir", filepath.Join(c.opts.StateDir, "etcd"),
		"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380", "--unsafe-no-fsync", "--log-level", "warn"); err != nil {
		return err
	}
	issuer := "https://kubernetes.default.svc.cluster.local"
	if err := c.start("kube-apiserver", CP, nil, filepath.Join(c.opts.EnvtestDir, "kube-apiserver"),
		"--etcd-servers", "http://127.0.0.1:2379",
		"--bind-address", CPIP, "--advertise-address", CPIP, "--secure-port", fmt.Sprint(APIServerPort),
		"--cert-dir", filepath.Join(c.opts.StateDir, "pki", "apiserver"),
		"--tls-cert-file", c.pki.serverCert(), "--tls-private-key-file", c.pki.serverKey(),
		"--client-ca-file", c.pki.caCert(),
		"--kubelet-client-certificate", c.pki.adminCert(), "--kubelet-client-key", c.pki.adminKey(),
		"--service-account-issuer", issuer, "--api-audiences", issuer,
		"--service-account-key-file", c.pki.saPub(), "--service-account-signing-key-file", c.pki.saKey(),
		"--service-cluster-ip-range", ClusterIPs,
		"--authorization-mode", "RBAC", "--allow-privileged=true",
		"--endpoint-reconciler-type", "lease"); err != nil {
		return err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}
	cfg.Dial = lab.DialIn(c.NS(CP))
	cfg.QPS, cfg.Burst = 200, 400
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	c.Kube, c.RestConfig = cs, cfg
	if err := c.waitFor(ctx, "kube-apiserver ready", 2*time.Minute, "kube-apiserver", func() (bool, error) {
		b, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && strings.TrimSpace(string(b)) == "ok", err
	}); err != nil {
		return err
	}
	kubeconfig := c.Kubeconfig()
	if err := c.start("kube-controller-manager", CP, nil, filepath.Join(c.opts.NodeBinDir, "kube-controller-manager"),
		"--kubeconfig", kubeconfig, "--authentication-kubeconfig", kubeconfig, "--authorization-kubeconfig", kubeconfig,
		"--root-ca-file", c.pki.caCert(), "--service-account-private-key-file", c.pki.saKey(),
		"--service-cluster-ip-range", ClusterIPs, "--cluster-cidr", PodCIDR,
		"--leader-elect=false", "--bind-address", "127.0.0.1", "--use-service-account-credentials=false",
		// Pods of a lost node are evicted after this long; the drain test
		// drains instead.
		"--node-monitor-grace-period", "20s"); err != nil {
		return err
	}
	return c.start("kube-scheduler", CP, nil, filepath.Join(c.opts.NodeBinDir, "kube-scheduler"),
		"--kubeconfig", kubeconfig, "--authentication-kubeconfig", kubeconfig, "--authorization-kubeconfig", kubeconfig,
		"--leader-elect=false", "--bind-address", "127.0.0.1")
}

// Kubectl runs the lab's kubectl (hack/k8s-node-binaries.sh) with the
// administrator kubeconfig in the control plane's namespace and returns
// its combined output.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + c.nsPath(CP), "--",
		filepath.Join(c.opts.NodeBinDir, "kubectl"), "--kubeconfig", c.Kubeconfig()}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// InCP runs a command (helm, ...) in the control plane's namespace with
// KUBECONFIG set, and returns its combined output.
func (c *Cluster) InCP(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + c.nsPath(CP), "--"}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// HTTPClientIn returns an HTTP client whose connections are opened in a
// role's namespace, one new TCP connection per request.
func (c *Cluster) HTTPClientIn(role string, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout:   timeout,
		Transport: &http.Transport{DialContext: lab.DialIn(c.NS(role)), DisableKeepAlives: true},
	}
}

// ClientGet fetches http://addr:port/ from the lab's client.
func (c *Cluster) ClientGet(ctx context.Context, addr string, port int, timeout time.Duration) (string, error) {
	return get(ctx, c.HTTPClientIn(Client, timeout), addr, port)
}

// ClientGetFrom is ClientGet from the source address src (one of the
// client's addresses).
func (c *Cluster) ClientGetFrom(ctx context.Context, src, addr string, port int, timeout time.Duration) (string, error) {
	dial := func(ctx context.Context, network, address string) (conn net.Conn, err error) {
		derr := lab.DoIn(c.NS(Client), func() error {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
			conn, err = d.DialContext(ctx, network, address)
			return nil
		})
		if derr != nil {
			return nil, derr
		}
		return conn, err
	}
	hc := &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
	return get(ctx, hc, addr, port)
}

func get(ctx context.Context, hc *http.Client, addr string, port int) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(addr, strconv.Itoa(port))+"/", nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var sb strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		sb.WriteString(sc.Text())
	}
	if resp.StatusCode != http.StatusOK {
		return sb.String(), fmt.Errorf("GET %s: %s", addr, resp.Status)
	}
	return sb.String(), nil
}

// Down stops everything the cluster started and removes its namespaces,
// cgroups, mounts and files (by the names it created).
func (c *Cluster) Down() error {
	var errs []error
	// Nodes first: the kubelet and kube-proxy, then every process in the
	// node's cgroups (the pods), then containerd and its shims.
	for _, n := range Nodes {
		for _, name := range []string{"kube-proxy-" + n, "kubelet-" + n} {
			if c.proc(name) != nil {
				_ = c.Stop(name, syscall.SIGTERM)
			}
		}
	}
	for _, n := range Nodes {
		if err := c.killNodePods(n); err != nil {
			errs = append(errs, err)
		}
	}
	c.mu.Lock()
	procs := c.procs
	c.procs = map[string]*proc{}
	c.mu.Unlock()
	names := make([]string, 0, len(procs))
	for n := range procs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if p := procs[n]; !p.exited() {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, n := range names {
		p := procs[n]
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	for _, r := range roles() {
		if err := killNamespace(c.NS(r)); err != nil {
			errs = append(errs, err)
		}
	}
	if err := unmountUnder(c.opts.StateDir); err != nil {
		errs = append(errs, err)
	}
	for _, n := range Nodes {
		if err := removeCgroups(c.cgroupRoot(n)); err != nil {
			errs = append(errs, err)
		}
	}
	if c.sysctlsUp {
		c.sysctlsUp = false
		c.restoreSysctls()
	}
	return errors.Join(errs...)
}
