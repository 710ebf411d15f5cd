package model

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/bgplb/bgplb/internal/iprange"
)

var (
	v4any = netip.IPv4Unspecified()
	v6any = netip.IPv6Unspecified()
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }
func u32(v uint32) *uint32      { return &v }

func readyNode(name string, labels map[string]string) Node {
	return Node{Name: name, Labels: labels, Ready: true}
}

func ep(node string) Endpoint { return Endpoint{NodeName: node, Ready: true, Serving: true} }

func svc(name string, policy TrafficPolicy, ips []string, eps ...Endpoint) Service {
	s := Service{Namespace: "default", Name: name, TrafficPolicy: policy, Endpoints: eps}
	for _, ip := range ips {
		s.IPs = append(s.IPs, addr(ip))
	}
	return s
}

func pool(name string, cidrs ...string) Pool {
	r, err := iprange.ParsePool(cidrs)
	if err != nil {
		panic(err)
	}
	return Pool{Name: name, Ranges: r}
}

// base is a two-node cluster, one IPv4 and one IPv6 peer, one pool per family
// and one advertisement that selects everything.
func base() Input {
	return Input{
		Node: "n1",
		Nodes: []Node{
			readyNode("n1", map[string]string{"rack": "a"}),
			readyNode("n2", map[string]string{"rack": "b"}),
		},
		Pools: []Pool{
			pool("v4", "192.168.254.0/24"),
			pool("v6", "fd00:254::/64"),
		},
		Peers: []Peer{
			{Name: "r4", Address: addr("192.168.2.1")},
			{Name: "r6", Address: addr("fd00:2::1")},
		},
		Advertisements: []BGPAdvertisement{{Name: "all"}},
	}
}

func host(p string, services ...string) Advertisement {
	pr := pfx(p)
	nh := v4any
	if pr.Addr().Is6() {
		nh = v6any
	}
	return Advertisement{Prefix: pr, NextHop: nh, Services: services}
}

func TestDesired(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(in *Input)
		want   Result
	}{
		{
			name: "cluster policy announces from a node without local endpoints",
			mutate: func(in *Input) {
				in.Services = []Service{svc("web", TrafficPolicyCluster, []string{"192.168.254.10"}, ep("n2"))}
			},
			want: Result{Peers: map[string][]Advertisement{
				"r4": {host("192.168.254.10/32", "default/web")},
				"r6": nil,
			}},
		},
		{
			name: "cluster policy withdraws when no endpoint serves anywhere",
			mutate: func(in *Input) {
				in.Services = []Service{svc("web", TrafficPolicyCluster, []string{"192.168.254.10"},
					Endpoint{NodeName: "n1", Ready: false, Serving: false},
					Endpoint{NodeName: "n2", Ready: false, Serving: false, Terminating: true})}
			},
			want: Result{Peers: map[string][]Advertisement{"r4": nil, "r6": nil}},
		},
		{
			// kube-proxy falls back to serving-and-terminating endpoints
			// when no endpoint is ready: the node still forwards.
			name: "cluster policy announces while an endpoint is serving and terminating",
			mutate: func(in *Input) {
				in.Options.GracefulShutdownOnDrain = true
				in.Services = []Service{svc("web", TrafficPolicyCluster, []string{"192.168.254.10"},
					Endpoint{NodeName: "n1", Ready: false, Serving: false},
					Endpoint{NodeName: "n2", Ready: false, Serving: true, Terminating: true})}
			},
			want: Result{Peers: map[string][]Advertisement{"r4": {host("192.168.254.10/32", "default/web")}, "r6": nil}},
		},
		{
			name: "cluster policy: service without endpoints is not announced",
			mutate: func(in *Input) {
				in.Services = []Service{svc("web", TrafficPolicyCluster, []string{"192.168.254.10"})}
			},
			want: Result{Peers: map[string][]Advertisement{"r4": nil, "r6": nil}},
		},
		{
			name: "local policy: no local endpoint, not announced",
			mutate: func(in *Input) {
				in.Services = []Service{svc("web", TrafficPolicyLocal, []string{"192.168.254.10"}, ep("n2"))}
			},
			want: Result{Peers: map[string][]Advertisement{"r4": nil, "r6": nil}},
		},
		{
			name: "local policy: ready local endpoint announces",
			mutate: func(in *Input) {
				in.Services = []Service{svc("web", TrafficPolicyLocal, []string{"192.168.254.10"}, ep("n2"), ep("n1"))}
			},
			want: Result{Peers: map[string][]Advertisement{
				"r4": {weighted(host("192.168.254.10/32", "default/web"), 1)},
				"r6": nil,
			}},
		},
		{
			name: "local policy: the weight is the ready local endpoints",
			mutate: func(in *Input) {
				in.Services = []Service{svc("web", TrafficPolicyLocal, []string{"192.168.254.10"}, ep("n1"), ep("n2"), ep("n1"), ep("n1"),
					Endpoint{NodeName: "n1", Ready: false, Serving: true, Terminating: true})}
			},
			want: Result{Peers: map[string][]Advertisement{
				"r4": {weighted(host("192.168.254.10/32", "default/web"), 3)},
				"r6": nil,
			}},
		},
		{
			name: "cluster policy: no weight unless asked, then the ready local endpoints, at least 1",
			mutate: func(in *Input) {
				in.Options.WeightClusterServices = true
				in.Services = []Service{
					svc("web", TrafficPolicyCluster, []string{"192.168.254.10"}, ep("n1"), ep("n1")),
					svc("api", TrafficPolicyCluster, []string{"192.168.254.11"}, ep("n2")),
				}
			},
			want: Result{Peers: map[string][]Advertisement{
				"r4": {weighted(host("192.168.254.10/32", "default/web"), 2), weighted(host("192.168.254.11/32", "default/api"), 1)},
				"r6": nil,
			}},
		},
		{
			name: "local policy: serving but not ready, not terminating, counts",
			mutate: func(in *Input) {
				in.Services = []Service{svc("web", TrafficPolicyLocal, []string{"192.168.254.10"},
					Endpoint{NodeName: "n1", Ready: false, Serving: true})}
			},
			want: Result{Peers: map[string][]Advertisement{
				"r4": {weighted(host("192.168.254.10/32", "default/web"), 1)},
				"r6": nil,
			}},
		},
		{
			// A rolling update or an eviction: the old pod still serves
			// until it is gone, and GRACEFUL_SHUTDOWN makes the routers
			// prefer n2's ready endpoint meanwhile.
			name: "local policy: only terminating local endpoints announce with GRACEFUL_SHUTDOWN",
			mutate: func(in *Input) {
				in.Options.GracefulShutdownOnDrain = true
				in.Services = []Service{svc("web", TrafficPolicyLocal, []string{"192.168.254.10"},
					Endpoint{NodeName: "n1", Ready: false, Serving: true, Terminating: true}, ep("n2"))}
			},
			want: Result{Peers: map[string][]Advertisement{"r4": {gshut(draining(weighted(host("192.168.254.10/32", "default/web"), 1)))}, "r6": nil}},
		},
		{
			name: "local policy: terminating local endpoints without the option announce plainly",
			mutate: func(in *Input) {
				in.Services = []Service{svc("web", TrafficPolicyLocal, []string{"192.168.254.10"},
					Endpoint{NodeName: "n1", Ready: false, Serving: true, Terminating: true}, ep("n2"))}
			},
			want: Result{Peers: map[string][]Advertisement{"r4": {draining(weighted(host("192.168.254.10/32", "default/web"), 1))}, "r6": nil}},
		},
		{
			name: "local policy: a ready local endpoint next to a terminating one keeps full preference",
			mutate: func(in *Input) {
				in.Options.GracefulShutdownOnDrain = true
				in.Services = []Service{svc("web", TrafficPolicyLocal, []string{"192.168.254.10"},
					Endpoint{NodeName: "n1", Ready: false, Serving: true, Terminating: true}, ep("n1"))}
			},
			want: Result{Peers: map[string][]Advertisement{"r4": {weighted(host("192.168.254.10/32", "default/web"), 1)}, "r6": nil}},
		},
		{
			name: "local policy: terminating and no longer serving: withdrawn",
			mutate: func(in *Input) {
				in.Options.GracefulShutdownOnDrain = true
				in.Services = []Service{svc("web", TrafficPolicyLocal, []string{"192.168.254.10"},
					Endpoint{NodeName: "n1", Ready: false, Serving: false, Terminating: true}, ep("n2"))}
			},
			want: Result{Peers: map[string][]Advertisement{"r4": nil, "r6": nil}},
		},
		{
			name: "shared address: GRACEFUL_SHUTDOWN only when every Service on it drains here",
			mutate: func(in *Input) {
				in.Options.GracefulShutdownOnDrain = true
				leaving := Endpoint{NodeName: "n1", Ready: false, Serving: true, Terminating: true}
				in.Services = []Service{
					svc("dns-udp", TrafficPolicyLocal, []string{"192.168.254.53", "192.168.254.54"}, leaving),
					svc("dns-tcp", TrafficPolicyLocal, []string{"192.168.254.53"}, ep("n1")),
					svc("other", TrafficPolicyLocal, []string{"192.168.254.54"}, leaving),
				}
			},
			want: Result{Peers: map[string][]Advertisement{
				"r4": {weighted(host("192.168.254.53/32", "default/dns-tcp", "default/dns-udp"), 2),
					gshut(draining(weighted(host("192.168.254.54/32", "default/dns-udp", "default/other"), 2)))},
				"r6": nil,
			}},
		},
		{
			name: "node not ready announces nothing",
			mutate: func(in *Input) {
				in.Nodes[0].Ready = false
				in.Services = []Service{svc("web", TrafficPolicyCluster, []string{"192.168.254.10"}, ep("n1"))}
			},
			want: Result{Peers: map[string][]Advertisement{"r4": nil, "r6": nil}},
		},
		{
			name: "node excluded from external load balancers announces nothing",
			mutate: func(in *Input) {
				in.Nodes[0].Labels[LabelExcludeFromLB] = ""
				in.Services = []Service{svc("web", TrafficPolicyCluster, []string{"192.168.254.10"}, ep("n1"))}
			},
			want: Result{Peers: map[string][]Advertisement{"r4": nil, "r6": nil}},
		},
		{
			name: "unknown node has no sessions",
			mutate: func(in *Input) {
				in.Node = "ghost"
				in.Services = []Service{svc("web", TrafficPolicyCluster, []string{"192.168.254.10"}, ep("n1"))}
			},
			want: Result{Peers: map[string][]Advertisement{}},
		},
		{
			name: "dual-stack: each family to the peer of its family",
			mutate: func(in *Input) {
				in.Services = []Service{svc("web", TrafficPolicyCluster,
					[]string{"192.168.254.10", "fd00:254::10"}, ep("n1"))}
			},
			want: Result{Peers: map[string][]Advertisement{
				"r4": {host("192.168.254.10/32", "default/web")},
				"r6": {host("fd00:254::10/128", "default/web")},
			}},
		},
		{
			name: "address outside every pool is not ours",
			mutate: func(in *Input) {
				in.Services = []Service{svc("web", TrafficPolicyCluster, []string{"10.0.0.1"}, ep("n1"))}
			},
			want: Result{Peers: map[string][]Advertisement{"r4": nil, "r6": nil}},
		},
		{
			name: "pool range entries",
			mutate: func(in *Input) {
				in.Pools = []Pool{pool("range", "192.168.254.10-192.168.254.12")}
				in.Services = []Service{
					svc("in", TrafficPolicyCluster, []string{"192.168.254.12"}, ep("n1")),
					svc("out", TrafficPolicyCluster, []string{"192.168.254.13"}, ep("n1")),
				}
			},
			want: Result{Peers: map[string][]Advertisement{
				"r4": {host("192.168.254.12/32", "default/in")},
				"r6": nil,
			}},
		},
		{
			name: "pool not selected by any advertisement is reported and not announced",
			mutate: func(in *Input) {
				in.Advertisements = []BGPAdvertisement{{Name: "only-v6", Pools: []string{"v6"}}}
				in.Services = []Service{svc("web", TrafficPolicyCluster, []string{"192.168.254.10"}, ep("n1"))}
			},
			want: Result{
				Peers:             map[string][]Advertisement{"r4": nil, "r6": nil},
				UnadvertisedPools: []string{"v4"},
			},
		},
		{
			name: "no advertisements: every pool reported",
			mutate: func(in *Input) {
				in.Advertisements = nil
				in.Services = []Service{svc("web", TrafficPolicyCluster, []string{"192.168.254.10"}, ep("n1"))}
			},
			want: Result{
				Peers:             map[string][]Advertisement{"r4": nil, "r6": nil},
				UnadvertisedPools: []string{"v4", "v6"},
			},
		},
		{
			name: "pool selector",
			mutate: func(in *Input) {
				in.Pools[0].Labels = map[string]string{"announce": "yes"}
				in.Advertisements = []BGPAdvertisement{{Name: "sel", PoolSelectors: []LabelSelector{{MatchLabels: map[string]string{"announce": "yes"}}}}}
				in.Services = []Service{svc("web", TrafficPolicyCluster, []string{"192.168.254.10"}, ep("n1"))}
			},
			want: Result{
				Peers:             map[string][]Advertisement{"r4": {host("192.168.254.10/32", "default/web")}, "r6": nil},
				UnadvertisedPools: []string{"v6"},
			},
		},
		{
			name: "service selector",
			mutate: func(in *Input) {
				in.Advertisements[0].ServiceSelectors = []LabelSelector{{MatchExpressions: []Requirement{{Key: "tier", Operator: OpIn, Values: []string{"front"}}}}}
				a := svc("a", TrafficPolicyCluster, []string{"192.168.254.10"}, ep("n1"))
				a.Labels = map[string]string{"tier": "front"}
				b := svc("b", TrafficPolicyCluster, []string{"192.168.254.11"}, ep("n1"))
				b.Labels = map[string]string{"tier": "back"}
				in.Services = []Service{a, b}
			},
			want: Result{Peers: map[string][]Advertisement{"r4": {host("192.168.254.10/32", "default/a")}, "r6": nil}},
		},
		{
			name: "advertisement node selector excludes this node",
			mutate: func(in *Input) {
				in.Advertisements[0].NodeSelectors = []LabelSelector{{MatchLabels: map[string]string{"rack": "b"}}}
				in.Services = []Service{svc("web", TrafficPolicyCluster, []string{"192.168.254.10"}, ep("n1"))}
			},
			want: Result{Peers: map[string][]Advertisement{"r4": nil, "r6": nil}},
		},
		{
			name: "peer node selector: this node has no session to the peer",
			mutate: func(in *Input) {
				in.Peers[0].NodeSelectors = []LabelSelector{{MatchExpressions: []Requirement{{Key: "rack", Operator: OpNotIn, Values: []string{"a"}}}}}
				in.Services = []Service{svc("web", TrafficPolicyCluster, []string{"192.168.254.10"}, ep("n1"))}
			},
			want: Result{Peers: map[string][]Advertisement{"r6": nil}},
		},
		{
			name: "advertisement limited to named peers, unknown peer reported",
			mutate: func(in *Input) {
				in.Peers = append(in.Peers, Peer{Name: "r4b", Address: addr("192.168.2.2")})
				in.Advertisements[0].Peers = []string{"r4b", "missing"}
				in.Services = []Service{svc("web", TrafficPolicyCluster, []string{"192.168.254.10"}, ep("n1"))}
			},
			want: Result{
				Peers:    map[string][]Advertisement{"r4": nil, "r4b": {host("192.168.254.10/32", "default/web")}, "r6": nil},
				Problems: []string{`BGPAdvertisement all: peer "missing" does not exist`},
			},
		},
		{
			name: "communities, large communities, well-known names and local-pref",
			mutate: func(in *Input) {
				in.Advertisements[0].Communities = []string{"65000:100", "no-export", "64512:1:2", "65000:100"}
				in.Advertisements[0].LocalPref = u32(200)
				in.Services = []Service{svc("web", TrafficPolicyCluster, []string{"192.168.254.10"}, ep("n1"))}
			},
			want: Result{Peers: map[string][]Advertisement{
				"r4": {{
					Prefix: pfx("192.168.254.10/32"), NextHop: v4any,
					Communities:      []uint32{65000<<16 | 100, 0xFFFFFF01},
					LargeCommunities: []LargeCommunity{{64512, 1, 2}},
					LocalPref:        200,
					Services:         []string{"default/web"},
				}},
				"r6": nil,
			}},
		},
		{
			name: "invalid community is reported and skipped",
			mutate: func(in *Input) {
				in.Advertisements[0].Communities = []string{"70000:1", "1:2"}
				in.Services = []Service{svc("web", TrafficPolicyCluster, []string{"192.168.254.10"}, ep("n1"))}
			},
			want: Result{
				Peers: map[string][]Advertisement{"r4": {{
					Prefix: pfx("192.168.254.10/32"), NextHop: v4any,
					Communities: []uint32{1<<16 | 2}, Services: []string{"default/web"},
				}}, "r6": nil},
				Problems: []string{`BGPAdvertisement all: community "70000:1": both numbers must be 0-65535`},
			},
		},
		{
			name: "two advertisements for the same prefix merge attributes",
			mutate: func(in *Input) {
				in.Advertisements = []BGPAdvertisement{
					{Name: "a", Communities: []string{"65000:1"}, LocalPref: u32(100)},
					{Name: "b", Communities: []string{"65000:2"}, LocalPref: u32(300)},
				}
				in.Services = []Service{svc("web", TrafficPolicyCluster, []string{"192.168.254.10"}, ep("n1"))}
			},
			want: Result{Peers: map[string][]Advertisement{
				"r4": {{
					Prefix: pfx("192.168.254.10/32"), NextHop: v4any,
					Communities: []uint32{65000<<16 | 1, 65000<<16 | 2}, LocalPref: 300,
					Services: []string{"default/web"},
				}},
				"r6": nil,
			}},
		},
		{
			name: "aggregation length collapses services into one prefix",
			mutate: func(in *Input) {
				in.Advertisements[0].AggregationLength = 24
				in.Advertisements[0].AggregationLengthV6 = 64
				in.Services = []Service{
					svc("a", TrafficPolicyCluster, []string{"192.168.254.10"}, ep("n1")),
					svc("b", TrafficPolicyCluster, []string{"192.168.254.77", "fd00:254::5"}, ep("n2")),
				}
			},
			want: Result{Peers: map[string][]Advertisement{
				"r4": {host("192.168.254.0/24", "default/a", "default/b")},
				"r6": {host("fd00:254::/64", "default/b")},
			}},
		},
		{
			name: "aggregate and host route from two advertisements",
			mutate: func(in *Input) {
				in.Advertisements = []BGPAdvertisement{{Name: "host"}, {Name: "agg", AggregationLength: 24}}
				in.Services = []Service{svc("a", TrafficPolicyCluster, []string{"192.168.254.10"}, ep("n1"))}
			},
			want: Result{Peers: map[string][]Advertisement{
				"r4": {host("192.168.254.0/24", "default/a"), host("192.168.254.10/32", "default/a")},
				"r6": nil,
			}},
		},
		{
			name: "shared address: one prefix carrying two services",
			mutate: func(in *Input) {
				in.Services = []Service{
					svc("dns-udp", TrafficPolicyCluster, []string{"192.168.254.53"}, ep("n2")),
					svc("dns-tcp", TrafficPolicyLocal, []string{"192.168.254.53"}, ep("n1")),
				}
			},
			want: Result{Peers: map[string][]Advertisement{
				"r4": {weighted(host("192.168.254.53/32", "default/dns-tcp", "default/dns-udp"), 1)},
				"r6": nil,
			}},
		},
		{
			name: "source address becomes the next hop",
			mutate: func(in *Input) {
				in.Peers[0].SourceAddress = addr("192.168.2.10")
				in.Services = []Service{svc("web", TrafficPolicyCluster, []string{"192.168.254.10"}, ep("n1"))}
			},
			want: Result{Peers: map[string][]Advertisement{
				"r4": {{Prefix: pfx("192.168.254.10/32"), NextHop: addr("192.168.2.10"), Services: []string{"default/web"}}},
				"r6": nil,
			}},
		},
		{
			name: "node in graceful shutdown (NotReady) keeps announcing with GRACEFUL_SHUTDOWN",
			mutate: func(in *Input) {
				in.Nodes[0].Ready, in.Nodes[0].ShuttingDown = false, true
				in.Options.GracefulShutdownOnDrain = true
				in.Services = []Service{svc("web", TrafficPolicyCluster, []string{"192.168.254.10"}, ep("n1"))}
			},
			want: Result{Peers: map[string][]Advertisement{"r4": {gshut(host("192.168.254.10/32", "default/web"))}, "r6": nil}},
		},
		{
			name: "node in graceful shutdown without the option withdraws like any NotReady node",
			mutate: func(in *Input) {
				in.Nodes[0].Ready, in.Nodes[0].ShuttingDown = false, true
				in.Services = []Service{svc("web", TrafficPolicyCluster, []string{"192.168.254.10"}, ep("n1"))}
			},
			want: Result{Peers: map[string][]Advertisement{"r4": nil, "r6": nil}},
		},
		{
			name: "node tainted out-of-service withdraws",
			mutate: func(in *Input) {
				in.Nodes[0].OutOfService = true
				in.Options.GracefulShutdownOnDrain = true
				in.Services = []Service{svc("web", TrafficPolicyCluster, []string{"192.168.254.10"}, ep("n1"))}
			},
			want: Result{Peers: map[string][]Advertisement{"r4": nil, "r6": nil}},
		},
		{
			name: "draining node: local endpoints terminating, then gone",
			mutate: func(in *Input) {
				in.Nodes[0].Unschedulable = true
				in.Options.GracefulShutdownOnDrain = true
				in.Services = []Service{
					svc("evicting", TrafficPolicyLocal, []string{"192.168.254.10"}, Endpoint{NodeName: "n1", Serving: true, Terminating: true}, ep("n2")),
					svc("evicted", TrafficPolicyLocal, []string{"192.168.254.11"}, ep("n2")),
				}
			},
			want: Result{Peers: map[string][]Advertisement{"r4": {gshut(draining(weighted(host("192.168.254.10/32", "default/evicting"), 1)))}, "r6": nil}},
		},
		{
			name: "cordoned node adds GRACEFUL_SHUTDOWN when enabled",
			mutate: func(in *Input) {
				in.Nodes[0].Unschedulable = true
				in.Options.GracefulShutdownOnDrain = true
				in.Advertisements[0].Communities = []string{"65000:1"}
				in.Services = []Service{svc("web", TrafficPolicyCluster, []string{"192.168.254.10"}, ep("n1"))}
			},
			want: Result{Peers: map[string][]Advertisement{
				"r4": {{Prefix: pfx("192.168.254.10/32"), NextHop: v4any,
					Communities: []uint32{65000<<16 | 1, CommunityGracefulShutdown}, Services: []string{"default/web"}}},
				"r6": nil,
			}},
		},
		{
			name: "cordoned node without the option announces normally",
			mutate: func(in *Input) {
				in.Nodes[0].Unschedulable = true
				in.Services = []Service{svc("web", TrafficPolicyCluster, []string{"192.168.254.10"}, ep("n1"))}
			},
			want: Result{Peers: map[string][]Advertisement{"r4": {host("192.168.254.10/32", "default/web")}, "r6": nil}},
		},
		{
			name: "results are sorted by prefix",
			mutate: func(in *Input) {
				in.Services = []Service{
					svc("c", TrafficPolicyCluster, []string{"192.168.254.30"}, ep("n1")),
					svc("a", TrafficPolicyCluster, []string{"192.168.254.3"}, ep("n1")),
					svc("b", TrafficPolicyCluster, []string{"192.168.254.20"}, ep("n1")),
				}
			},
			want: Result{Peers: map[string][]Advertisement{"r4": {
				host("192.168.254.3/32", "default/a"),
				host("192.168.254.20/32", "default/b"),
				host("192.168.254.30/32", "default/c"),
			}, "r6": nil}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := base()
			tt.mutate(&in)
			got := Desired(in)
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty(), cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
				cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("Desired() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// gshut adds GRACEFUL_SHUTDOWN to a.
func gshut(a Advertisement) Advertisement {
	a.Communities = append(a.Communities, CommunityGracefulShutdown)
	return a
}

// draining marks a as a prefix this node is leaving.
func draining(a Advertisement) Advertisement {
	a.Draining = true
	return a
}

func TestParseCommunity(t *testing.T) {
	tests := []struct {
		in      string
		std     uint32
		large   *LargeCommunity
		wantErr bool
	}{
		{in: "65000:100", std: 65000<<16 | 100},
		{in: "0:0", std: 0},
		{in: "65535:65535", std: 0xFFFFFFFF},
		{in: "65536:1", wantErr: true},
		{in: "no-export", std: 0xFFFFFF01},
		{in: "NO-ADVERTISE", std: 0xFFFFFF02},
		{in: "graceful-shutdown", std: 0xFFFF0000},
		{in: "blackhole", std: 0xFFFF029A},
		{in: "4294967295:1:2", large: &LargeCommunity{4294967295, 1, 2}},
		{in: "4294967296:1:2", wantErr: true},
		{in: "1:2:3:4", wantErr: true},
		{in: "abc", wantErr: true},
		{in: "-1:2", wantErr: true},
	}
	for _, tt := range tests {
		std, large, err := ParseCommunity(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseCommunity(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if err != nil {
			continue
		}
		if std != tt.std || !cmp.Equal(large, tt.large) {
			t.Errorf("ParseCommunity(%q) = %#x, %v; want %#x, %v", tt.in, std, large, tt.std, tt.large)
		}
	}
}

func TestLabelSelector(t *testing.T) {
	labels := map[string]string{"a": "1", "b": "2"}
	tests := []struct {
		name string
		sel  LabelSelector
		want bool
	}{
		{"empty matches all", LabelSelector{}, true},
		{"match labels", LabelSelector{MatchLabels: map[string]string{"a": "1"}}, true},
		{"match labels mismatch", LabelSelector{MatchLabels: map[string]string{"a": "2"}}, false},
		{"in", LabelSelector{MatchExpressions: []Requirement{{Key: "b", Operator: OpIn, Values: []string{"1", "2"}}}}, true},
		{"notin missing key", LabelSelector{MatchExpressions: []Requirement{{Key: "c", Operator: OpNotIn, Values: []string{"1"}}}}, true},
		{"exists", LabelSelector{MatchExpressions: []Requirement{{Key: "a", Operator: OpExists}}}, true},
		{"does not exist", LabelSelector{MatchExpressions: []Requirement{{Key: "a", Operator: OpDoesNotExist}}}, false},
		{"invalid", LabelSelector{Invalid: true}, false},
	}
	for _, tt := range tests {
		if got := tt.sel.Matches(labels); got != tt.want {
			t.Errorf("%s: Matches = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func weighted(a Advertisement, w uint32) Advertisement {
	a.Weight = w
	return a
}
