package lab

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	bgplbv1 "github.com/bgplb/bgplb/api/v1alpha1"
)

// DemoService is the Service the demo creates.
const DemoService = "apt-cache"

// Demo tells the story on a running lab: first the router agent runs with
// its firewall and sysctl work switched off and the client's request hangs;
// then it runs fully and the request succeeds. Every line it prints is a
// measurement of the lab, not a script.
func Demo(ctx context.Context, l *Lab, w io.Writer) error {
	say := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	step := func(s string) { fmt.Fprintf(w, "\n== %s\n", s) }

	step("1. Before: the router learns the route over BGP, but its firewall and ICMP redirects are left as they are")
	if err := l.StartAgent(AgentMode{}); err != nil {
		return err
	}
	t0 := time.Now()
	if err := l.WaitAgentPeers(ctx, 2, 30*time.Second); err != nil {
		return err
	}
	say("router: BGP sessions with both speakers established (%v)", time.Since(t0).Round(time.Millisecond))
	if err := l.CreateService(ctx, ServiceSpec{Name: DemoService, EndpointsOn: []string{Node1, Node2}}); err != nil {
		return err
	}
	start := time.Now()
	ip, err := l.WaitServiceIP(ctx, DemoService, 30*time.Second)
	if err != nil {
		return err
	}
	svc := &corev1.Service{}
	if err := l.Kube.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: DemoService}, svc); err != nil {
		return err
	}
	say("$ kubectl get svc %s", DemoService)
	say("NAME        TYPE           CLUSTER-IP   EXTERNAL-IP     PORT(S)")
	say("%-11s %-14s %-12s %-15s %d/TCP   (address after %v)", svc.Name, svc.Spec.Type, svc.Spec.ClusterIP, ip, ServicePort, time.Since(start).Round(time.Millisecond))
	prefix := netip.PrefixFrom(ip, 32)
	both := []netip.Addr{netip.MustParseAddr(NodeIPs[Node1]), netip.MustParseAddr(NodeIPs[Node2])}
	if err := l.WaitRoute(ctx, prefix, both, 30*time.Second); err != nil {
		return fmt.Errorf("%w (agent log: %s)", err, l.LogPath(AgentName))
	}
	say("router: %s via %s and %s (ECMP, learned over BGP from both speakers, after %v)", prefix, both[0], both[1], time.Since(start).Round(time.Millisecond))

	dropsBefore, err := l.InvalidDrops()
	if err != nil {
		return err
	}
	redirBefore, err := l.OutRedirects()
	if err != nil {
		return err
	}
	say("client %s: GET http://%s/ ...", ClientIP, ip)
	body, err := l.ClientGet(ctx, ip.String(), 3*time.Second)
	if err == nil {
		return fmt.Errorf("the request succeeded before the fix (%q): the lab does not reproduce the story", strings.TrimSpace(body))
	}
	say("  failed: %v", shortErr(err))
	dropsAfter, _ := l.InvalidDrops()
	redirAfter, _ := l.OutRedirects()
	say("router: ctstate INVALID DROP counter %d -> %d (the client's ACKs: the router never saw the node's SYN-ACK)", dropsBefore, dropsAfter)
	say("router: ICMP redirects sent %d -> %d (telling the client to go to the node directly)", redirBefore, redirAfter)

	step("2. After: bgplb-routeragent runs with the exemption and send_redirects=0")
	if err := l.StopAgent(); err != nil {
		return err
	}
	if err := l.StartAgent(AgentMode{Firewall: true, Redirects: true}); err != nil {
		return err
	}
	// SIGTERM left the routes in place; the new agent adopts them.
	var okBody string
	deadline := time.Now().Add(20 * time.Second)
	for {
		okBody, err = l.ClientGet(ctx, ip.String(), 2*time.Second)
		if err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("the request still fails with the agent running: %w (agent log: %s)", err, l.LogPath(AgentName))
	}
	hops, proto, _ := l.RouterRoute(prefix)
	say("router: %s via %v, protocol %d (bgplb)", prefix, hops, proto)
	all, lan, err := l.SendRedirects()
	if err != nil {
		return err
	}
	say("router: send_redirects all=%s %s=%s", all, LANIf, lan)
	listing, err := l.FirewallListing()
	if err != nil {
		return err
	}
	say("router: iptables-legacy -L FORWARD (ferm's rules, with our jump first):")
	for _, line := range strings.Split(strings.TrimRight(listing, "\n"), "\n") {
		say("  %s", line)
	}
	if out, err := nsExec(l.NS(Router), "iptables-legacy", "-w", "5", "-L", "BGPLB-EXEMPT", "-v", "-n"); err == nil {
		for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
			say("  %s", line)
		}
	}
	redir1, _ := l.OutRedirects()
	say("client %s: GET http://%s/ -> %q", ClientIP, ip, strings.TrimSpace(okBody))
	for i := 0; i < 5; i++ {
		b, err := l.ClientGet(ctx, ip.String(), 2*time.Second)
		if err != nil {
			return fmt.Errorf("request %d after the fix failed: %w", i+2, err)
		}
		say("client: GET again -> %q", strings.TrimSpace(b))
	}
	redir2, _ := l.OutRedirects()
	say("router: ICMP redirects sent while serving those requests: %d", redir2-redir1)
	if err := l.WaitAgentPeers(ctx, 2, 30*time.Second); err != nil {
		return err
	}
	out, err := l.AgentCommand("status", "--config", l.AgentConfigPath())
	if err != nil {
		return fmt.Errorf("bgplb-routeragent status: %w", err)
	}
	say("\n$ bgplb-routeragent status")
	fmt.Fprint(w, out)
	out, err = l.AgentCommand("doctor", "--config", l.AgentConfigPath())
	say("\n$ bgplb-routeragent doctor")
	fmt.Fprint(w, out)
	if err != nil {
		return fmt.Errorf("bgplb-routeragent doctor reports problems on the fixed router: %w", err)
	}
	return nil
}

func shortErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && strings.Contains(s, "Client.Timeout") {
		return "no response within 3s (" + s[i+2:] + ")"
	}
	return s
}

// DemoIPv6 tells the same story over IPv6 on a lab where Demo ran (the agent
// fully on): the speakers peer with the router over IPv6 too, a dual-stack
// Service gets an IPv6 address, the router installs an ECMP /128, and the
// IPv6 client reaches it through the router, with no ICMPv6 redirect sent.
func DemoIPv6(ctx context.Context, l *Lab, w io.Writer) error {
	say := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	fmt.Fprintf(w, "\n== IPv6: the same story over IPv6 sessions, with a dual-stack Service\n")
	if _, err := l.EnableIPv6Peering(ctx); err != nil {
		return err
	}
	t0 := time.Now()
	if err := l.WaitAgentPeers(ctx, 4, 60*time.Second); err != nil {
		return err
	}
	say("router: IPv6 sessions with both speakers established too (%v)", time.Since(t0).Round(time.Millisecond))
	const name = DemoService + "-dualstack"
	if err := l.CreateService(ctx, ServiceSpec{Name: name, DualStack: true, EndpointsOn: []string{Node1, Node2}}); err != nil {
		return err
	}
	ips, err := l.WaitServiceIPs(ctx, name, 2, 30*time.Second)
	if err != nil {
		return err
	}
	var ip6 netip.Addr
	for _, ip := range ips {
		if ip.Is6() {
			ip6 = ip
		}
	}
	if !ip6.IsValid() {
		return fmt.Errorf("service %s has no IPv6 address: %v", name, ips)
	}
	say("service %s: EXTERNAL-IP %v", name, ips)
	prefix := netip.PrefixFrom(ip6, 128)
	both := []netip.Addr{netip.MustParseAddr(NodeIPs6[Node1]), netip.MustParseAddr(NodeIPs6[Node2])}
	if err := l.WaitRoute(ctx, prefix, both, 30*time.Second); err != nil {
		return fmt.Errorf("%w (agent log: %s)", err, l.LogPath(AgentName))
	}
	say("router: %s via %s and %s (ECMP over the IPv6 sessions)", prefix, both[0], both[1])
	redir, err := l.OutRedirects6()
	if err != nil {
		return err
	}
	for i := 0; i < 3; i++ {
		b, err := l.ClientGet(ctx, ip6.String(), 3*time.Second)
		if err != nil {
			return fmt.Errorf("IPv6 request %d failed: %w", i+1, err)
		}
		say("client %s: GET http://[%s]/ -> %q", ClientIP6, ip6, strings.TrimSpace(b))
	}
	redir2, err := l.OutRedirects6()
	if err != nil {
		return err
	}
	say("router: ICMPv6 redirects sent while serving those requests: %d", redir2-redir)
	for _, args := range [][]string{{"-S", "BGPLB-EXEMPT"}, {"-S", "OUTPUT"}, {"-L", "BGPLB-NOREDIRECT6", "-v", "-n"}} {
		out, err := nsExec(l.NS(Router), append([]string{"ip6tables-legacy", "-w", "5"}, args...)...)
		if err != nil {
			return err
		}
		say("router: ip6tables-legacy %s", strings.Join(args, " "))
		for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
			say("  %s", line)
		}
	}
	out, err := l.AgentCommand("status", "--config", l.AgentConfigPath())
	if err != nil {
		return fmt.Errorf("bgplb-routeragent status: %w", err)
	}
	say("\n$ bgplb-routeragent status")
	fmt.Fprint(w, out)
	return nil
}

// DemoSymmetric is the story's third act, on a lab where Demo ran (the
// agent fully on): instead of the router's exemption, the nodes fix the
// asymmetry. The speakers restart one by one with --symmetric-return-path,
// the BGPPeer gets returnPath: symmetric, and the agent reloads into
// firewall.mode verify, which removes the exemption and adds no ACCEPT
// rule. The same client's requests work through the untouched firewall, its
// INVALID drop counter stays flat, and status and doctor show the flows
// symmetric. IPv4 only (the IPv6 BGPPeer keeps returnPath direct).
func DemoSymmetric(ctx context.Context, l *Lab, w io.Writer) error {
	say := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	fmt.Fprintf(w, "\n== 3. Better: the nodes send their replies back through the router (returnPath: symmetric); the router's firewall is left as it is\n")
	ip, err := l.WaitServiceIP(ctx, DemoService, 10*time.Second)
	if err != nil {
		return err
	}
	for _, node := range []string{Node1, Node2} {
		if err := l.Stop("speaker-"+node, syscall.SIGTERM); err != nil {
			return fmt.Errorf("stop the speaker on %s: %w", node, err)
		}
		if err := l.StartSpeakerWith(node, "--symmetric-return-path"); err != nil {
			return err
		}
		if err := l.WaitAgentPeers(ctx, 2, 30*time.Second); err != nil {
			return err
		}
		say("speaker on %s restarted with --symmetric-return-path (the chart's speaker.symmetricReturnPath.enabled)", node)
	}
	peer := &bgplbv1.BGPPeer{}
	if err := l.Kube.Get(ctx, client.ObjectKey{Name: PeerName}, peer); err != nil {
		return err
	}
	patch := client.MergeFrom(peer.DeepCopy())
	peer.Spec.ReturnPath = bgplbv1.ReturnPathSymmetric
	if err := l.Kube.Patch(ctx, peer, patch); err != nil {
		return fmt.Errorf("set returnPath: symmetric on BGPPeer %s: %w", PeerName, err)
	}
	say("$ kubectl patch bgppeer %s --type merge -p '{\"spec\":{\"returnPath\":\"symmetric\"}}'", PeerName)
	start := time.Now()
	for _, node := range []string{Node1, Node2} {
		msg, err := l.waitReturnPath(ctx, node, 30*time.Second)
		if err != nil {
			return err
		}
		say("node %s: BGPSessionState condition ReturnPathSymmetric=True: %s (after %v)", node, msg, time.Since(start).Round(time.Millisecond))
	}
	if err := l.ReloadAgent(AgentMode{Verify: true, Redirects: true}); err != nil {
		return err
	}
	// The reload's first firewall pass removes the exemption.
	deadline := time.Now().Add(15 * time.Second)
	for {
		listing, err := l.FirewallListing()
		if err != nil {
			return err
		}
		if !strings.Contains(listing, "BGPLB-") {
			say("router: firewall.mode verify; iptables-legacy -L FORWARD, ferm's rules alone (no exemption of ours):")
			for _, line := range strings.Split(strings.TrimRight(listing, "\n"), "\n") {
				say("  %s", line)
			}
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the exemption is still in the router's firewall 15s after the reload to verify mode:\n%s", listing)
		}
		time.Sleep(100 * time.Millisecond)
	}
	drops0, err := l.InvalidDrops()
	if err != nil {
		return err
	}
	for i := 0; i < 5; i++ {
		b, err := l.ClientGet(ctx, ip.String(), 3*time.Second)
		if err != nil {
			return fmt.Errorf("request %d with returnPath symmetric and no exemption failed: %w (speaker logs: %s, %s)", i+1, err,
				l.LogPath("speaker-"+Node1), l.LogPath("speaker-"+Node2))
		}
		say("client %s: GET http://%s/ -> %q", ClientIP, ip, strings.TrimSpace(b))
	}
	drops1, _ := l.InvalidDrops()
	say("router: ctstate INVALID DROP counter %d -> %d (the router saw both halves of every connection)", drops0, drops1)
	if drops1 != drops0 {
		return fmt.Errorf("the router dropped %d INVALID packets while the nodes' replies came back through it", drops1-drops0)
	}
	// status shows the symmetry section once the agent's conntrack
	// watch has seen the flows (every 2 s).
	time.Sleep(2500 * time.Millisecond)
	out, err := l.AgentCommand("status", "--config", l.AgentConfigPath())
	if err != nil {
		return fmt.Errorf("bgplb-routeragent status: %w", err)
	}
	say("\n$ bgplb-routeragent status   (excerpt)")
	for _, line := range strings.Split(out, "\n") {
		if low := strings.ToLower(line); strings.Contains(low, "symmetr") || strings.Contains(low, "firewall") || strings.Contains(low, "assured") {
			say("%s", line)
		}
	}
	out, err = l.AgentCommand("doctor", "--config", l.AgentConfigPath())
	say("\n$ bgplb-routeragent doctor")
	fmt.Fprint(w, out)
	if err != nil {
		return fmt.Errorf("bgplb-routeragent doctor reports problems with returnPath symmetric: %w", err)
	}
	return nil
}

// waitReturnPath waits for node's BGPSessionState of the lab's BGPPeer to
// report the symmetric return path applied and returns its message.
func (l *Lab) waitReturnPath(ctx context.Context, node string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	last := "no BGPSessionState yet"
	for {
		var list bgplbv1.BGPSessionStateList
		if err := l.Kube.List(ctx, &list); err != nil {
			return "", err
		}
		for _, s := range list.Items {
			if s.Spec.Node != node || s.Spec.Peer != PeerName {
				continue
			}
			if c := meta.FindStatusCondition(s.Status.Conditions, bgplbv1.ConditionReturnPathSymmetric); c != nil {
				if c.Status == metav1.ConditionTrue {
					return c.Message, nil
				}
				last = c.Reason + ": " + c.Message
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("node %s: the symmetric return path not applied within %v (%s)", node, timeout, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
