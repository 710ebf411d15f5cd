package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// cgroupV1Hierarchies are the v1 controllers the kubelet's cgroup root is
// created in (this machine's cgroups are v1; see docs/lab.md).
var cgroupV1Hierarchies = []string{"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd"}

// cgroupRoot is the node's kubelet cgroupRoot: its pods' cgroups live under
// /sys/fs/cgroup/<controller>/<cgroupRoot>.
func (c *Cluster) cgroupRoot(node string) string { return "/" + c.opts.Prefix + node }

func (c *Cluster) nodeDir(node string, sub ...string) string {
	return filepath.Join(append([]string{c.opts.StateDir, node}, sub...)...)
}

func (c *Cluster) containerdSocket(node string) string { return c.nodeDir(node, "containerd.sock") }

// createCgroupRoot creates the node's cgroup root in every v1 hierarchy
// (the kubelet does not create it), with cpuset's cpus and mems copied from
// the parent so that tasks may join.
func (c *Cluster) createCgroupRoot(node string) error {
	for _, h := range cgroupV1Hierarchies {
		base := filepath.Join("/sys/fs/cgroup", h)
		if _, err := os.Stat(base); err != nil {
			continue
		}
		dir := filepath.Join(base, c.cgroupRoot(node))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("cgroup root: %w", err)
		}
		if h == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				b, err := os.ReadFile(filepath.Join(base, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
					return fmt.Errorf("cgroup root %s: %w", f, err)
				}
			}
		}
	}
	return nil
}

func (c *Cluster) containerdConfig(node string) string {
	return fmt.Sprintf(`# containerd of lab node %[1]s (written by test/cluster).
version = 2
root = %[2]q
state = %[3]q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = %[4]q

[ttrpc]
  address = %[5]q

[plugins."io.containerd.internal.v1.opt"]
  path = %[6]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[7]q
  # This sandbox lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj.
  restrict_oom_score_adj = true
  enable_selinux = false
  # Pod network namespaces under the state directory, not /run/netns.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[8]q
`, node, c.nodeDir(node, "containerd", "root"), c.nodeDir(node, "containerd", "state"), c.containerdSocket(node),
		c.nodeDir(node, "containerd", "ttrpc.sock"), c.nodeDir(node, "containerd", "opt"), PauseImage, c.nodeDir(node, "cni", "net.d"))
}

func (c *Cluster) cniConfig(node string) string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "bgplb-lab",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": %q
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, NodePodCIDRs[node], c.nodeDir(node, "cni", "ipam"))
}

func (c *Cluster) kubeletConfig(node string) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroups v1 without systemd as PID 1: cgroupfs, and v1 allowed.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
cgroupRoot: %q
containerRuntimeEndpoint: unix://%s
address: %s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
podLogsDir: %q
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %q}
authorization: {mode: AlwaysAllow}
resolvConf: /etc/resolv.conf
evictionHard: {memory.available: "50Mi", nodefs.available: "1%%", imagefs.available: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
localStorageCapacityIsolation: false
podCIDR: %q
nodeStatusUpdateFrequency: 4s
syncFrequency: 10s
`, c.cgroupRoot(node), c.containerdSocket(node), NodeIPs[node], c.nodeDir(node, "pod-logs"), c.pki.caCert(), NodePodCIDRs[node])
}

// startNode starts the node's containerd, imports the images, then starts
// its kubelet and kube-proxy.
func (c *Cluster) startNode(ctx context.Context, node string) error {
	for _, d := range []string{"containerd", "cni/net.d", "cni/ipam", "kubelet", "pod-logs"} {
		if err := os.MkdirAll(c.nodeDir(node, d), 0o755); err != nil {
			return err
		}
	}
	if err := c.createCgroupRoot(node); err != nil {
		return err
	}
	files := map[string]string{
		c.nodeDir(node, "containerd.toml"):                   c.containerdConfig(node),
		c.nodeDir(node, "cni", "net.d", "10-bgplb.conflist"): c.cniConfig(node),
		c.nodeDir(node, "kubelet.yaml"):                      c.kubeletConfig(node),
	}
	for f, s := range files {
		if err := os.WriteFile(f, []byte(s), 0o644); err != nil {
			return err
		}
	}
	cd := "containerd-" + node
	c.logf("%s: containerd (root %s)", node, c.nodeDir(node, "containerd"))
	if err := c.start(cd, node, nil, "containerd", "--config", c.nodeDir(node, "containerd.toml")); err != nil {
		return err
	}
	if err := c.waitFor(ctx, node+": containerd ready", time.Minute, cd, func() (bool, error) {
		_, err := c.ctr(ctx, node, "version")
		return err == nil, err
	}); err != nil {
		return err
	}
	for _, img := range []string{"pause", "backend", "bgplb-controller", "bgplb-speaker"} {
		if _, err := c.ctr(ctx, node, "images", "import", filepath.Join(c.opts.ImageDir, img+".oci.tar")); err != nil {
			return fmt.Errorf("%s: import %s: %w", node, img, err)
		}
	}
	c.logf("%s: kubelet and kube-proxy (%s mode)", node, c.opts.ProxyMode)
	if err := c.start("kubelet-"+node, node, nil, filepath.Join(c.opts.NodeBinDir, "kubelet"),
		"--config", c.nodeDir(node, "kubelet.yaml"), "--kubeconfig", c.Kubeconfig(),
		"--root-dir", c.nodeDir(node, "kubelet"), "--cert-dir", c.nodeDir(node, "kubelet", "pki"),
		"--hostname-override", node, "--node-ip", NodeIPs[node], "--v", "1"); err != nil {
		return err
	}
	return c.StartKubeProxy(node)
}

// StartKubeProxy starts kube-proxy on a node in the cluster's mode.
func (c *Cluster) StartKubeProxy(node string) error {
	return c.start("kube-proxy-"+node, node, nil, filepath.Join(c.opts.NodeBinDir, "kube-proxy"),
		"--kubeconfig", c.Kubeconfig(), "--hostname-override", node, "--proxy-mode", c.opts.ProxyMode,
		"--cluster-cidr", PodCIDR,
		// Leave the conntrack sysctls alone: nf_conntrack_max is the
		// machine's, not the namespace's.
		"--conntrack-max-per-core", "0", "--conntrack-tcp-timeout-established", "0s", "--conntrack-tcp-timeout-close-wait", "0s",
		"--metrics-bind-address", "127.0.0.1:10249", "--healthz-bind-address", "0.0.0.0:10256")
}

// ctr runs Debian's ctr against a node's containerd in the CRI namespace.
func (c *Cluster) ctr(ctx context.Context, node string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ctr", append([]string{"--address", c.containerdSocket(node), "--namespace", "k8s.io"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// WaitNodesReady waits until both nodes are registered and Ready.
func (c *Cluster) WaitNodesReady(ctx context.Context, timeout time.Duration) error {
	return c.waitFor(ctx, "nodes Ready", timeout, "", func() (bool, error) {
		for _, n := range Nodes {
			if p := c.proc("kubelet-" + n); p == nil || p.exited() {
				return false, fmt.Errorf("kubelet on %s is not running (see %s)", n, c.LogPath("kubelet-"+n))
			}
			node, err := c.Kube.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			if !nodeReady(node) {
				return false, fmt.Errorf("node %s not Ready", n)
			}
		}
		return true, nil
	})
}

func nodeReady(n *corev1.Node) bool {
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// cgroupPids lists every process in the node's cgroup tree (pids hierarchy).
func (c *Cluster) cgroupPids(node string) []int {
	var pids []int
	_ = filepath.WalkDir(filepath.Join("/sys/fs/cgroup/pids", c.cgroupRoot(node)), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			// A cgroup removed while walking, or no tree at all.
			return nil //nolint:nilerr // nothing to list there
		}
		if d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		b, _ := os.ReadFile(p)
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

// killNodePods kills every process in the node's cgroups (its pods' and
// sandboxes' processes) and removes the pod network namespaces they held
// (containerd names them /run/netns/cni-*; only those a pod of this node
// was in are touched).
func (c *Cluster) killNodePods(node string) error {
	netnsInodes := map[uint64]bool{}
	pids := c.cgroupPids(node)
	for _, pid := range pids {
		var st syscall.Stat_t
		if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st); err == nil {
			netnsInodes[st.Ino] = true
		}
	}
	for i := 0; i < 50; i++ {
		pids = c.cgroupPids(node)
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var errs []error
	if left := c.cgroupPids(node); len(left) > 0 {
		errs = append(errs, fmt.Errorf("%s: processes left in its cgroups: %v", node, left))
	}
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "cni-") {
			continue
		}
		p := filepath.Join("/run/netns", e.Name())
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil || !netnsInodes[st.Ino] {
			continue
		}
		_ = syscall.Unmount(p, syscall.MNT_DETACH)
		if err := os.Remove(p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// killNamespace kills every process left in a lab namespace (containerd's
// shims, hostNetwork pods) and deletes it.
func killNamespace(name string) error {
	if _, err := os.Stat("/run/netns/" + name); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	pids := func() []int {
		out, _ := exec.Command("ip", "netns", "pids", name).Output()
		var ps []int
		for _, f := range strings.Fields(string(out)) {
			if p, err := strconv.Atoi(f); err == nil && p != os.Getpid() {
				ps = append(ps, p)
			}
		}
		return ps
	}
	for _, p := range pids() {
		_ = syscall.Kill(p, syscall.SIGTERM)
	}
	for i := 0; i < 50 && len(pids()) > 0; i++ {
		time.Sleep(100 * time.Millisecond)
	}
	for i := 0; i < 40 && len(pids()) > 0; i++ {
		for _, p := range pids() {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, err := run("ip", "netns", "delete", name)
	return err
}

// unmountUnder detaches every mount below dir (the kubelet's volume tmpfs,
// containerd's rootfs overlays and shm), deepest first.
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	prefix := filepath.Clean(dir) + "/"
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], prefix) {
			mounts = append(mounts, fields[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(mounts)))
	var errs []error
	for _, m := range mounts {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	return errors.Join(errs...)
}

// removeCgroups removes a cgroup tree in every mounted hierarchy (runc
// also makes it in the hybrid setup's cgroup2 "unified" one), deepest
// first.
func removeCgroups(root string) error {
	var errs []error
	hs, _ := os.ReadDir("/sys/fs/cgroup")
	for _, he := range hs {
		h := he.Name()
		top := filepath.Join("/sys/fs/cgroup", h, root)
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
		for _, d := range dirs {
			if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("rmdir %s: %w", d, err))
			}
		}
	}
	return errors.Join(errs...)
}
