package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	bgplbv1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/routeragent/symmetry"
	"github.com/bgplb/bgplb/speaker/returnpath"
)

// The symmetric return path (issue 12) on the real clusters: the speaker
// pods of dist/install.yaml or the chart with the option on, kube-proxy in
// iptables or nftables mode, the bridge CNI, the router's ferm firewall
// (INVALID dropped, FORWARD policy DROP) with bgplb-routeragent in
// firewall.mode verify, so nothing accepts INVALID packets, and the client
// on the nodes' subnet: the seed's asymmetric network.

// enableSymmetricYAML enables the option as a user of dist/install.yaml
// does: a kustomization of the installed manifests with the component
// config/components/symmetric-return-path, applied with kubectl apply -k.
func enableSymmetricYAML(ctx context.Context, c *Cluster) error {
	dir, err := os.MkdirTemp(c.opts.StateDir, "kustomize-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	install, err := os.ReadFile("../../dist/install.yaml")
	if err != nil {
		return err
	}
	component, err := filepath.Abs("../../config/components/symmetric-return-path")
	if err != nil {
		return err
	}
	// kustomize takes a component's path relative to the kustomization.
	if component, err = filepath.Rel(dir, component); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "install.yaml"), install, 0o644); err != nil {
		return err
	}
	kustomization := fmt.Sprintf("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [install.yaml]\ncomponents: [%s]\n", component)
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(kustomization), 0o644); err != nil {
		return err
	}
	if _, err := c.Kubectl(ctx, "apply", "-k", dir); err != nil {
		return err
	}
	return c.WaitRollout(ctx, "bgplb-system", "daemonset/bgplb-speaker", 4*time.Minute)
}

// enableSymmetricHelm enables it as a user of the chart does: helm upgrade
// with speaker.symmetricReturnPath.enabled=true.
func enableSymmetricHelm(ctx context.Context, c *Cluster) error {
	helm, err := exec.Command("../../hack/tools.sh", "--path", "helm").Output()
	if err != nil {
		return fmt.Errorf("hack/tools.sh --path helm: %w", err)
	}
	if _, err := c.InCP(ctx, strings.TrimSpace(string(helm)), "upgrade", "bgplb", "../../charts/bgplb",
		"--namespace", "lb-helm", "--reuse-values", "--set", "speaker.symmetricReturnPath.enabled=true",
		"--wait", "--timeout", "5m"); err != nil {
		return err
	}
	return c.WaitRollout(ctx, "lb-helm", "daemonset/bgplb-speaker", 4*time.Minute)
}

// setReturnPath patches the lab's BGPPeer's returnPath.
func (c *Cluster) setReturnPath(ctx context.Context, mode bgplbv1.ReturnPath) error {
	_, err := c.Kubectl(ctx, "patch", "bgppeer", "lab-router", "--type", "merge",
		"-p", fmt.Sprintf(`{"spec":{"returnPath":%q}}`, mode))
	return err
}

// waitReturnPathApplied waits until every node's BGPSessionState of the
// lab's BGPPeer has the condition ReturnPathSymmetric True, and returns
// the nodes' messages.
func (c *Cluster) waitReturnPathApplied(ctx context.Context, timeout time.Duration) (map[string]string, error) {
	msgs := map[string]string{}
	err := c.waitFor(ctx, "ReturnPathSymmetric True on every node", timeout, "", func() (bool, error) {
		out, err := c.Kubectl(ctx, "get", "bgpsessionstates.bgplb.io", "-o", "json")
		if err != nil {
			return false, err
		}
		var list bgplbv1.BGPSessionStateList
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			return false, err
		}
		clear(msgs)
		var problems []string
		for _, s := range list.Items {
			if s.Spec.Peer != "lab-router" {
				continue
			}
			cond := meta.FindStatusCondition(s.Status.Conditions, bgplbv1.ConditionReturnPathSymmetric)
			switch {
			case cond == nil:
				problems = append(problems, s.Spec.Node+": no condition")
			case cond.Status != metav1.ConditionTrue:
				problems = append(problems, fmt.Sprintf("%s: %s: %s", s.Spec.Node, cond.Reason, cond.Message))
			default:
				msgs[s.Spec.Node] = cond.Message
			}
		}
		if len(problems) > 0 {
			return false, fmt.Errorf("%s", strings.Join(problems, "; "))
		}
		return len(msgs) == len(Nodes), fmt.Errorf("states of %d nodes", len(msgs))
	})
	return msgs, err
}

// nodeReturnPathState is what the speaker installed on a node: its
// nftables table, its ip rules and its route tables' routes ("" each when
// none).
func (c *Cluster) nodeReturnPathState(node string) (table, rules, routes string, err error) {
	if out, err := c.nsExec(node, "nft", "list", "table", "inet", "bgplb_returnpath"); err == nil {
		table = out
	} else if !strings.Contains(err.Error(), "No such file or directory") {
		return "", "", "", err
	}
	out, err := c.nsExec(node, "ip", "rule", "show")
	if err != nil {
		return "", "", "", err
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "lookup 42") && strings.Contains(l, "fwmark") {
			rules += l + "\n"
		}
	}
	// Every table: the speaker's routes carry proto 220.
	routes, err = c.nsExec(node, "ip", "route", "show", "table", "all", "proto", "220")
	return table, rules, strings.TrimSpace(routes), err
}

// nodeMarkedFlows returns node's conntrack entries of TCP flows from src
// to dst that carry a return path mark (the default mask's bits).
func (c *Cluster) nodeMarkedFlows(node, src, dst string) ([]string, error) {
	out, err := c.nsExec(node, "conntrack", "-L", "-p", "tcp", "-s", src, "-d", dst)
	if err != nil {
		return nil, err
	}
	var marked []string
	for _, l := range strings.Split(out, "\n") {
		for _, f := range strings.Fields(l) {
			if v, ok := strings.CutPrefix(f, "mark="); ok {
				if m, err := strconv.ParseUint(v, 10, 32); err == nil && uint32(m)&returnpath.DefaultMarkMask != 0 {
					marked = append(marked, l)
				}
			}
		}
	}
	return marked, nil
}

// agentSymmetry returns the symmetry section of the agent's status.
func (c *Cluster) agentSymmetry() (*symmetry.Status, error) {
	out, err := c.AgentStatusJSON()
	if err != nil {
		return nil, err
	}
	var st struct {
		Symmetry *symmetry.Status `json:"symmetry"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("status --json: %w", err)
	}
	if st.Symmetry == nil {
		return nil, fmt.Errorf("status --json has no symmetry section: %s", out)
	}
	return st.Symmetry, nil
}

// clientSourceVia returns a client address whose flows to dst the router
// forwards to next hop via: the client's own, else one of 192.168.2.110-
// 192.168.2.141 added to its interface (removed in t's cleanup).
func (c *Cluster) clientSourceVia(t *testing.T, dst, via string) (string, error) {
	cands := []string{ClientIP}
	for i := 110; i < 142; i++ {
		cands = append(cands, fmt.Sprintf("192.168.2.%d", i))
	}
	for _, src := range cands {
		hop, err := c.RouterNextHopFor(src, dst)
		if err != nil {
			return "", err
		}
		if hop != via {
			continue
		}
		if src != ClientIP {
			if _, err := c.nsExec(Client, "ip", "addr", "add", src+"/24", "dev", "eth0"); err != nil {
				return "", err
			}
			t.Cleanup(func() { _, _ = c.nsExec(Client, "ip", "addr", "del", src+"/24", "dev", "eth0") })
		}
		return src, nil
	}
	return "", fmt.Errorf("the router sends none of %d client addresses' flows to %s via %s", len(cands), dst, via)
}

// symmetricReturnPath is the test of both clusters: enable runs the user's
// way of turning the option on (chart value or kustomize component), ns is
// bgplb's namespace.
func symmetricReturnPath(t *testing.T, c *Cluster, ns string, enable func(context.Context, *Cluster) error) {
	ctx := context.Background()
	start := time.Now()
	// Local: one pod on node1, so only node1 announces. Cluster: one pod
	// on node2, and the client's flows go to node1 (a source address
	// chosen below), which DNATs and SNATs them to node2's pod.
	local, cluster := "rp-local", "rp-cluster"
	if err := c.Apply(ctx, Backend{Name: local, Replicas: 1, Node: Node1}.YAML()+"---\n"+ServiceYAML(local, local, "Local")+"---\n"+
		Backend{Name: cluster, Replicas: 1, Node: Node2}.YAML()+"---\n"+ServiceYAML(cluster, cluster, "Cluster")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = c.Kubectl(ctx, "delete", "deployment,service", local, cluster, "--wait=false")
		// Back to the shared cluster's state for the tests after this one:
		// returnPath direct, the agent exempting.
		_ = c.setReturnPath(ctx, bgplbv1.ReturnPathDirect)
		_ = c.StartAgent(true)
	})
	if err := enable(ctx, c); err != nil {
		t.Fatal(err)
	}
	t.Logf("speakers rolled out with the symmetric return path on (%v)", time.Since(start).Round(time.Second))
	if err := c.setReturnPath(ctx, bgplbv1.ReturnPathSymmetric); err != nil {
		t.Fatal(err)
	}
	msgs, err := c.waitReturnPathApplied(ctx, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range Nodes {
		t.Logf("%s: ReturnPathSymmetric True: %s", n, msgs[n])
	}
	// The earlier tests' service flows (the story's hung "before"
	// connections, which stay in conntrack for 2 minutes) are not this
	// test's: the agent would report them asymmetric.
	if err := c.FlushRouterConntrack(ServiceSubnet); err != nil {
		t.Fatal(err)
	}
	if err := c.StartAgentVerify(); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitAgentPeers(ctx, 2, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	// Verify mode removed the exemptions the earlier tests' exempt mode
	// inserted: nothing on the router accepts INVALID packets.
	if err := c.waitFor(ctx, "no bgplb exemption in the router's FORWARD chain", 30*time.Second, AgentName, func() (bool, error) {
		out, err := c.RouterFirewall()
		if err != nil {
			return false, err
		}
		return !strings.Contains(out, "BGPLB-"), fmt.Errorf("exemption left: %s", out)
	}); err != nil {
		t.Fatal(err)
	}

	for _, n := range []string{local, cluster} {
		if err := c.WaitRollout(ctx, "default", "deployment/"+n, 3*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	localIP, err := c.WaitServiceIP(ctx, local, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	clusterIP, err := c.WaitServiceIP(ctx, cluster, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitNextHops(ctx, localIP, []string{NodeIPs[Node1]}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitNextHops(ctx, clusterIP, nodeIPs(), time.Minute); err != nil {
		t.Fatal(err)
	}
	// The client's flows must reach the node without the Cluster
	// Service's pod (node2): the router's ECMP hash is over the source and
	// destination addresses, so pick a client address that the router
	// sends to node1, adding it to the client's interface if it is not
	// the client's own.
	src, err := c.clientSourceVia(t, clusterIP, NodeIPs[Node1])
	if err != nil {
		t.Fatal(err)
	}

	// The strictest reverse-path filter on the nodes (the lab's default is
	// off; Debian's systemd sets loose, RHEL strict): the router's packets
	// and the replies all enter through the interface their source is
	// routed out of.
	for _, n := range Nodes {
		was, err := c.nsExec(n, "sysctl", "-n", "net.ipv4.conf.all.rp_filter")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.nsExec(n, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = c.nsExec(n, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter="+strings.TrimSpace(was)) })
	}
	drops0, err := c.InvalidDrops()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct{ policy, ip, servedOn, how string }{
		{"Local", localIP, Node1, "node1 -> its pod"},
		{"Cluster", clusterIP, Node2, "router -> node1, DNAT+SNAT -> node2's pod"},
	}
	for _, tc := range cases {
		// The first requests may race the last rollout's endpoints in
		// kube-proxy's rules.
		if err := c.waitFor(ctx, tc.policy+" Service served by "+tc.servedOn+"'s pod", 30*time.Second, "", func() (bool, error) {
			body, err := c.ClientGetFrom(ctx, src, tc.ip, 80, time.Second)
			if err != nil {
				return false, err
			}
			return strings.Contains(body, "on "+tc.servedOn), fmt.Errorf("served by another pod: %q", body)
		}); err != nil {
			t.Fatalf("externalTrafficPolicy %s: %v", tc.policy, err)
		}
		for i := 0; i < 3; i++ {
			body, err := c.ClientGetFrom(ctx, src, tc.ip, 80, 3*time.Second)
			if err != nil {
				t.Fatalf("externalTrafficPolicy %s: request %d: %v", tc.policy, i+1, err)
			}
			if !strings.Contains(body, "on "+tc.servedOn) {
				t.Fatalf("externalTrafficPolicy %s: got %q, want %s's pod", tc.policy, body, tc.servedOn)
			}
		}
		// node1 received them and marked them as the router's.
		marked, err := c.nodeMarkedFlows(Node1, src, tc.ip)
		if err != nil {
			t.Fatal(err)
		}
		if len(marked) == 0 {
			t.Fatalf("externalTrafficPolicy %s: node1's conntrack has no flow %s -> %s with the return path's mark", tc.policy, src, tc.ip)
		}
		t.Logf("externalTrafficPolicy %s: client %s -> %s served (%s); node1: %s", tc.policy, src, tc.ip, tc.how, marked[0])
	}
	drops1, err := c.InvalidDrops()
	if err != nil {
		t.Fatal(err)
	}
	if drops1 != drops0 {
		t.Fatalf("the router's INVALID DROP counter went %d -> %d", drops0, drops1)
	}
	t.Logf("router: ctstate INVALID DROP counter %d -> %d", drops0, drops1)
	for _, ip := range []string{localIP, clusterIP} {
		flows, err := c.RouterConntrack(ip)
		if err != nil {
			t.Fatal(err)
		}
		if len(flows) == 0 {
			t.Fatalf("router: no conntrack entry to %s", ip)
		}
		for _, f := range flows {
			if !strings.Contains(f, "[ASSURED]") {
				t.Fatalf("router: a flow to %s is not ASSURED: %s", ip, f)
			}
		}
		t.Logf("router: %d flows to %s, all ASSURED, e.g. %s", len(flows), ip, flows[0])
	}
	// The agent's verdict (its conntrack watch looks every 2 s).
	var sym *symmetry.Status
	if err := c.waitFor(ctx, "agent: symmetry verdict symmetric", 30*time.Second, AgentName, func() (bool, error) {
		s, err := c.agentSymmetry()
		sym = s
		if err != nil {
			return false, err
		}
		if s.Asymmetric > 0 || len(s.Offenders) > 0 {
			return false, fmt.Errorf("asymmetric flows: %+v", s)
		}
		return s.Verdict == "symmetric" && s.AssuredSeen, fmt.Errorf("verdict %q: %s", s.Verdict, s.Reason)
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("agent (firewall.mode verify): symmetry %s (%s); flows %d, assured %d; INVALID service packets %d",
		sym.Verdict, sym.Reason, sym.Flows, sym.Assured, sym.InvalidPackets)
	if sym.InvalidPackets != 0 {
		t.Fatalf("agent: %d INVALID service packets counted", sym.InvalidPackets)
	}

	// Off: back to direct, the speakers remove everything they added, and
	// the seed's connection hangs again at the router's INVALID drop.
	if err := c.setReturnPath(ctx, bgplbv1.ReturnPathDirect); err != nil {
		t.Fatal(err)
	}
	for _, n := range Nodes {
		if err := c.waitFor(ctx, n+": return path state removed", time.Minute, "", func() (bool, error) {
			table, rules, routes, err := c.nodeReturnPathState(n)
			if err != nil {
				return false, err
			}
			return table == "" && rules == "" && routes == "", fmt.Errorf("left: table %q, rules %q, routes %q", table, rules, routes)
		}); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("returnPath direct: both nodes' nftables table inet bgplb_returnpath, fwmark rules and proto 220 routes removed")
	if body, err := c.ClientGet(ctx, localIP, 80, 3*time.Second); err == nil {
		t.Fatalf("with returnPath direct and no exemption the client was served (%q): the symmetric path was not what made it work", body)
	} else {
		t.Logf("returnPath direct, firewall.mode verify: client -> %s: %v (the seed's hang)", localIP, err)
	}
	t.Logf("symmetric return path (%s, kube-proxy %s): %v", ns, c.opts.ProxyMode, time.Since(start).Round(time.Second))
}
