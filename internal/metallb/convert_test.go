package metallb_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	bgplbv1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/internal/metallb"
)

func obj(apiVersion, kind, name string, spec map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": apiVersion, "kind": kind, "spec": spec}}
	u.SetName(name)
	u.SetNamespace("metallb-system")
	return u
}

func pool(name string, spec bgplbv1.IPPoolSpec) *bgplbv1.IPPool {
	return &bgplbv1.IPPool{TypeMeta: metav1.TypeMeta{APIVersion: "bgplb.io/v1alpha1", Kind: "IPPool"}, ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
}

func peer(name string, spec bgplbv1.BGPPeerSpec) *bgplbv1.BGPPeer {
	return &bgplbv1.BGPPeer{TypeMeta: metav1.TypeMeta{APIVersion: "bgplb.io/v1alpha1", Kind: "BGPPeer"}, ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
}

func adv(name string, spec bgplbv1.BGPAdvertisementSpec) *bgplbv1.BGPAdvertisement {
	return &bgplbv1.BGPAdvertisement{TypeMeta: metav1.TypeMeta{APIVersion: "bgplb.io/v1alpha1", Kind: "BGPAdvertisement"}, ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
}

func dur(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }

const (
	poolRef = "metallb.io/v1beta1 IPAddressPool metallb-system/"
	peerRef = "metallb.io/v1beta2 BGPPeer metallb-system/"
	advRef  = "metallb.io/v1beta1 BGPAdvertisement metallb-system/"
)

func TestConvert(t *testing.T) {
	basePeer := func(extra map[string]any) map[string]any {
		m := map[string]any{"myASN": int64(64512), "peerASN": int64(64513), "peerAddress": "192.168.1.1"}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	ebgp := bgplbv1.BGPPeerSpec{MyASN: 64512, PeerASN: 64513, PeerAddress: "192.168.1.1"}
	with := func(f func(*bgplbv1.BGPPeerSpec)) bgplbv1.BGPPeerSpec {
		s := ebgp
		f(&s)
		return s
	}
	for _, tc := range []struct {
		name         string
		in           []*unstructured.Unstructured
		want         []client.Object
		wantFindings []metallb.Finding
	}{{
		name: "pool: addresses normalised, host bits masked, bad entries dropped",
		in: []*unstructured.Unstructured{obj("metallb.io/v1beta1", "IPAddressPool", "p", map[string]any{
			"addresses":     []any{"192.168.254.7/24", "10.0.0.1 - 10.0.0.9", "fd00::1-10.0.0.1", "nonsense", "10.0.0.9-10.0.0.1"},
			"autoAssign":    false,
			"avoidBuggyIPs": true,
		})},
		want: []client.Object{pool("p", bgplbv1.IPPoolSpec{
			Addresses: []string{"192.168.254.0/24", "10.0.0.1-10.0.0.9"}, AutoAssign: ptr.To(false), AvoidBuggyIPs: true,
		})},
		wantFindings: []metallb.Finding{
			{Object: poolRef + "p", Field: "spec.addresses[2]", Message: `"fd00::1-10.0.0.1" mixes IPv4 and IPv6; dropped`},
			{Object: poolRef + "p", Field: "spec.addresses[3]", Message: `"nonsense" is not a CIDR or a range; dropped`},
			{Object: poolRef + "p", Field: "spec.addresses[4]", Message: `"10.0.0.9-10.0.0.1" ends before it starts; dropped`},
		},
	}, {
		name: "pool: namespaces together with selectors become one more selector",
		in: []*unstructured.Unstructured{obj("metallb.io/v1beta1", "IPAddressPool", "p", map[string]any{
			"addresses": []any{"10.0.0.0/30"},
			"serviceAllocation": map[string]any{
				"priority":           int64(5),
				"namespaces":         []any{"a", "b"},
				"namespaceSelectors": []any{map[string]any{"matchLabels": map[string]any{"team": "x"}}},
			},
		})},
		want: []client.Object{pool("p", bgplbv1.IPPoolSpec{
			Addresses: []string{"10.0.0.0/30"},
			ServiceAllocation: &bgplbv1.ServiceAllocation{Priority: 5, NamespaceSelectors: []metav1.LabelSelector{
				{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpIn, Values: []string{"a", "b"}}}},
				{MatchLabels: map[string]string{"team": "x"}},
			}},
		})},
	}, {
		name: "pool: only namespaces stay a list; no usable address skips the pool",
		in: []*unstructured.Unstructured{
			obj("metallb.io/v1beta1", "IPAddressPool", "p", map[string]any{
				"addresses": []any{"10.0.0.0/30"}, "serviceAllocation": map[string]any{"namespaces": []any{"a"}},
			}),
			obj("metallb.io/v1beta1", "IPAddressPool", "empty", map[string]any{"addresses": []any{}}),
		},
		want: []client.Object{pool("p", bgplbv1.IPPoolSpec{
			Addresses: []string{"10.0.0.0/30"}, ServiceAllocation: &bgplbv1.ServiceAllocation{Namespaces: []string{"a"}},
		})},
		wantFindings: []metallb.Finding{{Object: poolRef + "empty", Field: "spec.addresses", Message: "not converted: no usable address"}},
	}, {
		name: "peer: every supported field",
		in: []*unstructured.Unstructured{obj("metallb.io/v1beta2", "BGPPeer", "r", basePeer(map[string]any{
			"sourceAddress": "192.168.1.10", "peerPort": int64(1179), "holdTime": "9s", "keepaliveTime": "2s",
			"nodeSelectors":         []any{map[string]any{"matchLabels": map[string]any{"bgp": "yes"}}},
			"enableGracefulRestart": true, "ebgpMultiHop": true, "disableMP": true,
		}))},
		want: []client.Object{peer("r", with(func(s *bgplbv1.BGPPeerSpec) {
			s.SourceAddress, s.PeerPort = "192.168.1.10", ptr.To[int32](1179)
			s.HoldTime, s.KeepaliveTime = dur(9*time.Second), dur(2*time.Second)
			s.NodeSelectors = []metav1.LabelSelector{{MatchLabels: map[string]string{"bgp": "yes"}}}
			s.GracefulRestart = &bgplbv1.GracefulRestart{Enabled: true}
			s.EBGPMultiHop = ptr.To[int32](255)
		}))},
	}, {
		name: "peer: localASN is the node's AS, dynamicASN internal the router's; multihop on iBGP is a no-op",
		in: []*unstructured.Unstructured{obj("metallb.io/v1beta2", "BGPPeer", "r", map[string]any{
			"myASN": int64(64512), "localASN": int64(64600), "dynamicASN": "internal", "peerAddress": "192.168.1.1", "ebgpMultiHop": true,
		})},
		want: []client.Object{peer("r", bgplbv1.BGPPeerSpec{MyASN: 64600, PeerASN: 64600, PeerAddress: "192.168.1.1"})},
	}, {
		name: "peer: keepalive alone sets the hold time as MetalLB does",
		in:   []*unstructured.Unstructured{obj("metallb.io/v1beta2", "BGPPeer", "r", basePeer(map[string]any{"keepaliveTime": "5s"}))},
		want: []client.Object{peer("r", with(func(s *bgplbv1.BGPPeerSpec) { s.HoldTime, s.KeepaliveTime = dur(15*time.Second), dur(5*time.Second) }))},
	}, {
		name: "peer: timers bgplb refuses are dropped",
		in:   []*unstructured.Unstructured{obj("metallb.io/v1beta2", "BGPPeer", "r", basePeer(map[string]any{"holdTime": "0s", "keepaliveTime": "120s"}))},
		want: []client.Object{peer("r", ebgp)},
		wantFindings: []metallb.Finding{
			{Object: peerRef + "r", Field: "spec.holdTime", Message: "0s is outside bgplb's 3s-65535s (0 would mean no keepalives, which bgplb does not do); dropped, the default is 90s"},
			{Object: peerRef + "r", Field: "spec.keepaliveTime", Message: "2m0s is not shorter than the hold time 1m30s; dropped, keepalives are sent every holdTime/3"},
		},
	}, {
		name: "peer: plain password becomes a Secret reference the user creates",
		in:   []*unstructured.Unstructured{obj("metallb.io/v1beta2", "BGPPeer", "r", basePeer(map[string]any{"password": "s3cret"}))},
		want: []client.Object{peer("r", with(func(s *bgplbv1.BGPPeerSpec) {
			s.PasswordSecret = &bgplbv1.SecretKeyReference{Name: "r-bgp-password", Key: "password"}
		}))},
		wantFindings: []metallb.Finding{{Object: peerRef + "r", Field: "spec.password", Message: "bgplb does not take passwords in plain text; the converted peer reads Secret bgplb-system/r-bgp-password, create it with kubectl -n bgplb-system create secret generic r-bgp-password --from-literal=password='THE PASSWORD'"}},
	}, {
		name: "peer: unsupported options are reported, the session is converted",
		in: []*unstructured.Unstructured{obj("metallb.io/v1beta2", "BGPPeer", "r", basePeer(map[string]any{
			"bfdProfile": "fast", "vrf": "red", "connectTime": "5s", "routerID": "1.2.3.4", "dualStackAddressFamily": true,
			"sourceAddress": "fd00::1", "futureField": "x",
		}))},
		want: []client.Object{peer("r", ebgp)},
		wantFindings: []metallb.Finding{
			{Object: peerRef + "r", Field: "spec.futureField", Message: "unknown MetalLB field, not converted; check whether bgplb has an equivalent"},
			{Object: peerRef + "r", Field: "spec.sourceAddress", Message: `"fd00::1" is not an address of the peer's family; dropped (the kernel chooses)`},
			{Object: peerRef + "r", Field: "spec.bfdProfile", Message: "not converted: bgplb has no BFD (GoBGP v3 has none); a short spec.holdTime (for example 9s) detects a dead node in seconds"},
			{Object: peerRef + "r", Field: "spec.vrf", Message: "not converted: bgplb opens sessions in the node's main routing table; check that the router's address is reachable from it"},
			{Object: peerRef + "r", Field: "spec.connectTime", Message: "not converted: bgplb uses GoBGP's connect-retry timer"},
			{Object: peerRef + "r", Field: "spec.routerID", Message: "not converted: bgplb uses the node's first IPv4 InternalIP as router ID"},
			{Object: peerRef + "r", Field: "spec.dualStackAddressFamily", Message: "not converted: bgplb announces IPv4 addresses over IPv4 sessions and IPv6 over IPv6; add a BGPPeer for the router's other address"},
		},
	}, {
		name: "peer: sessions bgplb cannot express are skipped",
		in: []*unstructured.Unstructured{
			obj("metallb.io/v1beta2", "BGPPeer", "ext", map[string]any{"myASN": int64(64512), "dynamicASN": "external", "peerAddress": "192.168.1.1"}),
			obj("metallb.io/v1beta2", "BGPPeer", "unnumbered", map[string]any{"myASN": int64(64512), "peerASN": int64(64513), "interface": "eth0"}),
			obj("metallb.io/v1beta2", "BGPPeer", "noasn", map[string]any{"myASN": int64(0), "peerASN": int64(64513), "peerAddress": "192.168.1.1"}),
		},
		wantFindings: []metallb.Finding{
			{Object: peerRef + "ext", Field: "spec.dynamicASN", Message: "not converted: bgplb needs the router's AS number; write it in spec.peerASN of the converted BGPPeer"},
			{Object: peerRef + "unnumbered", Field: "spec.interface", Message: "not converted: bgplb has no unnumbered (interface) sessions; name the router's address in spec.peerAddress"},
			{Object: peerRef + "noasn", Field: "spec.myASN", Message: "not converted: bgplb needs an AS number from 1 to 4294967295"},
		},
	}, {
		name: "peer: v1beta1 with its own node selector type",
		in: []*unstructured.Unstructured{obj("metallb.io/v1beta1", "BGPPeer", "old", basePeer(map[string]any{
			"nodeSelectors": []any{map[string]any{"matchExpressions": []any{map[string]any{"key": "k", "operator": "In", "values": []any{"v"}}}}},
		}))},
		want: []client.Object{peer("old", with(func(s *bgplbv1.BGPPeerSpec) {
			s.NodeSelectors = []metav1.LabelSelector{{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "k", Operator: "In", Values: []string{"v"}}}}}
		}))},
	}, {
		name: "advertisement: every field, aliases resolved, large communities rewritten, localPref 0 is unset",
		in: []*unstructured.Unstructured{
			obj("metallb.io/v1beta1", "BGPAdvertisement", "a", map[string]any{
				"aggregationLength": int64(24), "aggregationLengthV6": int64(64), "localPref": int64(0),
				"communities":            []any{"65000:1", "large:65000:1:2", "ALIAS", "UNKNOWN", "65536:1"},
				"ipAddressPools":         []any{"p"},
				"ipAddressPoolSelectors": []any{map[string]any{"matchLabels": map[string]any{"x": "y"}}},
				"nodeSelectors":          []any{map[string]any{"matchLabels": map[string]any{"n": "1"}}},
				"peers":                  []any{"r"},
				"serviceSelectors":       []any{map[string]any{"matchLabels": map[string]any{"s": "1"}}},
			}),
			obj("metallb.io/v1beta1", "Community", "c", map[string]any{"communities": []any{map[string]any{"name": "ALIAS", "value": "65535:65281"}}}),
		},
		want: []client.Object{adv("a", bgplbv1.BGPAdvertisementSpec{
			IPPools: []string{"p"}, IPPoolSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"x": "y"}}},
			ServiceSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"s": "1"}}},
			NodeSelectors:    []metav1.LabelSelector{{MatchLabels: map[string]string{"n": "1"}}},
			Peers:            []string{"r"}, Communities: []string{"65000:1", "65000:1:2", "65535:65281"},
			AggregationLength: ptr.To[int32](24), AggregationLengthV6: ptr.To[int32](64),
		})},
		wantFindings: []metallb.Finding{
			{Object: advRef + "a", Field: "spec.communities[3]", Message: `"UNKNOWN": not a community (65000:100 or large:65000:1:2); dropped (an alias needs its Community object in the input)`},
			{Object: advRef + "a", Field: "spec.communities[4]", Message: `"65536:1": "65536" is not a number from 0 to 65535; dropped (an alias needs its Community object in the input)`},
			{Object: advRef + "a", Field: "spec.aggregationLength", Message: "converted, but bgplb-routeragent accepts only /32 routes and rejects these (reason not-host-route); other routers take them"},
			{Object: advRef + "a", Field: "spec.aggregationLengthV6", Message: "converted, but bgplb-routeragent accepts only /128 routes and rejects these (reason not-host-route); other routers take them"},
		},
	}, {
		name: "other kinds, and names that collide once cluster-scoped",
		in: []*unstructured.Unstructured{
			obj("metallb.io/v1beta1", "L2Advertisement", "l2", nil),
			obj("v1", "ConfigMap", "cm", nil),
			obj("metallb.io/v1beta1", "ServiceL2Status", "st", nil),
			obj("metallb.io/v1beta1", "BGPAdvertisement", "same", nil),
			func() *unstructured.Unstructured {
				u := obj("metallb.io/v1beta1", "BGPAdvertisement", "same", nil)
				u.SetNamespace("other")
				return u
			}(),
		},
		want: []client.Object{adv("same", bgplbv1.BGPAdvertisementSpec{})},
		wantFindings: []metallb.Finding{
			{Object: "metallb.io/v1beta1 L2Advertisement metallb-system/l2", Message: "not converted: bgplb announces addresses over BGP only. Pools announced only by this L2Advertisement get no BGP announcement unless a BGPAdvertisement selects them"},
			{Object: "v1 ConfigMap metallb-system/cm", Message: "not a MetalLB object; ignored"},
			{Object: "metallb.io/v1beta1 BGPAdvertisement other/same", Field: "metadata.name", Message: `not converted: bgplb objects are cluster-scoped and metallb.io/v1beta1 BGPAdvertisement metallb-system/same already produced one named "same"; rename one of them`},
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			res := metallb.Convert(tc.in)
			var got []client.Object
			for _, c := range res.Objects {
				got = append(got, c.Object)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("objects (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantFindings, res.Findings); diff != "" {
				t.Errorf("findings (-want +got):\n%s", diff)
			}
		})
	}
}
