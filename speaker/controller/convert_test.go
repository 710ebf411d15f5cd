// The bgptest routers these tests peer with are GoBGP listeners, which
// must not be MPTCP (Go's default since 1.24): MPTCP sockets refuse IP_TTL,
// so their SYN-ACKs would leave with TTL 64 and a GTSM speaker (BGPPeer
// ttlSecurity, on by default) would drop them.
//
//go:debug multipathtcp=0
package controller

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/speaker/bgp"
)

var addrCmp = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

func TestRouterID(t *testing.T) {
	node := func(addrs ...corev1.NodeAddress) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{Addresses: addrs}}
	}
	if got := RouterID(node(corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "203.0.113.1"},
		corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "fd00::1"},
		corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "192.168.2.10"})); got != netip.MustParseAddr("192.168.2.10") {
		t.Errorf("InternalIP v4 preferred: got %v", got)
	}
	if got := RouterID(node(corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "203.0.113.1"})); got != netip.MustParseAddr("203.0.113.1") {
		t.Errorf("any v4 next: got %v", got)
	}
	v6only := RouterID(node(corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "fd00::1"}))
	if !v6only.Is4() || v6only.As4()[0]&0xF0 != 0xF0 || v6only != RouterID(node()) {
		t.Errorf("IPv6-only node: got %v, want a stable 240.0.0.0/4 address", v6only)
	}
}

func TestPeerConfig(t *testing.T) {
	rid := netip.MustParseAddr("192.168.2.10")
	tests := []struct {
		name string
		spec v1.BGPPeerSpec
		want bgp.PeerConfig
	}{
		{
			name: "defaults",
			spec: v1.BGPPeerSpec{PeerAddress: "192.168.2.1", PeerASN: 64512, MyASN: 65001},
			want: bgp.PeerConfig{Name: "p", Address: netip.MustParseAddr("192.168.2.1"), Port: 179, PeerASN: 64512, MyASN: 65001, RouterID: rid, Password: "pw", TTLSecurity: true, EndOfRIB: true},
		},
		{
			name: "gracefulRestart disabled: no capability, no End-of-RIB",
			spec: v1.BGPPeerSpec{PeerAddress: "192.168.2.1", PeerASN: 64512, MyASN: 65001, GracefulRestart: &v1.GracefulRestart{Enabled: false}},
			want: bgp.PeerConfig{Name: "p", Address: netip.MustParseAddr("192.168.2.1"), Port: 179, PeerASN: 64512, MyASN: 65001, RouterID: rid, Password: "pw", TTLSecurity: true},
		},
		{
			name: "ttlSecurity off",
			spec: v1.BGPPeerSpec{PeerAddress: "192.168.2.1", PeerASN: 64512, MyASN: 65001, TTLSecurity: ptr.To(false)},
			want: bgp.PeerConfig{Name: "p", Address: netip.MustParseAddr("192.168.2.1"), Port: 179, PeerASN: 64512, MyASN: 65001, RouterID: rid, Password: "pw", EndOfRIB: true},
		},
		{
			name: "multi-hop with ttlSecurity",
			spec: v1.BGPPeerSpec{PeerAddress: "192.168.2.1", PeerASN: 64512, MyASN: 65001, EBGPMultiHop: ptr.To(int32(3)), TTLSecurity: ptr.To(true)},
			want: bgp.PeerConfig{Name: "p", Address: netip.MustParseAddr("192.168.2.1"), Port: 179, PeerASN: 64512, MyASN: 65001, RouterID: rid, Password: "pw",
				MultiHopTTL: 3, TTLSecurity: true, EndOfRIB: true},
		},
		{
			name: "everything",
			spec: v1.BGPPeerSpec{PeerAddress: "fd00::1", PeerASN: 64512, MyASN: 65001, PeerPort: ptr.To(int32(1179)),
				SourceAddress: "fd00::10", HoldTime: &metav1.Duration{Duration: 9 * time.Second}, EBGPMultiHop: ptr.To(int32(4)),
				GracefulRestart: &v1.GracefulRestart{Enabled: true}},
			want: bgp.PeerConfig{Name: "p", Address: netip.MustParseAddr("fd00::1"), Port: 1179, PeerASN: 64512, MyASN: 65001, RouterID: rid,
				SourceAddress: netip.MustParseAddr("fd00::10"), HoldTime: 9 * time.Second, KeepaliveTime: 3 * time.Second,
				MultiHopTTL: 4, Password: "pw", GracefulRestart: true, RestartTime: 120 * time.Second},
		},
	}
	for _, tt := range tests {
		got, err := peerConfig(&v1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: tt.spec}, rid, "pw")
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if diff := cmp.Diff(tt.want, got, addrCmp); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.name, diff)
		}
	}
	if _, err := peerConfig(&v1.BGPPeer{Spec: v1.BGPPeerSpec{PeerAddress: "router.lan"}}, rid, ""); err == nil {
		t.Error("a hostname as peerAddress was accepted")
	}
}

func TestSessionStateName(t *testing.T) {
	if got := sessionStateName("node-a", "router"); got != "node-a-router" {
		t.Errorf("got %q", got)
	}
	long := sessionStateName(strings.Repeat("n", 200), strings.Repeat("p", 100))
	if len(long) > 253 {
		t.Errorf("name of %d characters", len(long))
	}
}
