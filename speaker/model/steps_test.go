package model

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// Table tests of Desired's steps, one per step; TestDesired covers them
// together.

var stepOpts = cmp.Options{
	cmpopts.EquateEmpty(),
	cmp.AllowUnexported(advertisement{}, attrs{}, advPlan{}),
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
	cmp.Comparer(func(a, b error) bool { return (a == nil) == (b == nil) && (a == nil || a.Error() == b.Error()) }),
}

func TestFindNodeAndCanAnnounce(t *testing.T) {
	outOfService := readyNode("outofservice", nil)
	outOfService.OutOfService = true
	cordoned := readyNode("cordoned", nil)
	cordoned.Unschedulable = true
	nodes := []Node{
		readyNode("ready", nil),
		{Name: "notready"},
		readyNode("excluded", map[string]string{LabelExcludeFromLB: ""}),
		{Name: "shuttingdown", ShuttingDown: true},
		outOfService,
		cordoned,
	}
	tests := []struct {
		name       string
		wantFound  bool
		wantAnnoun bool
		// wantOnDrain is canAnnounce with GracefulShutdownOnDrain.
		wantOnDrain bool
	}{
		{"ready", true, true, true},
		{"notready", true, false, false},
		{"excluded", true, false, false},
		{"shuttingdown", true, false, true},
		{"outofservice", true, false, false},
		{"cordoned", true, true, true},
		{"missing", false, false, false},
	}
	for _, tt := range tests {
		n := findNode(nodes, tt.name)
		if got := n != nil; got != tt.wantFound {
			t.Errorf("findNode(%q) found = %v, want %v", tt.name, got, tt.wantFound)
		}
		if n != nil && n.Name != tt.name {
			t.Errorf("findNode(%q) = %q", tt.name, n.Name)
		}
		if got := canAnnounce(n, Options{}); got != tt.wantAnnoun {
			t.Errorf("canAnnounce(%q) = %v, want %v", tt.name, got, tt.wantAnnoun)
		}
		if got := canAnnounce(n, Options{GracefulShutdownOnDrain: true}); got != tt.wantOnDrain {
			t.Errorf("canAnnounce(%q, GracefulShutdownOnDrain) = %v, want %v", tt.name, got, tt.wantOnDrain)
		}
	}
}

func TestSelectPeers(t *testing.T) {
	rackA := []LabelSelector{{MatchLabels: map[string]string{"rack": "a"}}}
	rackB := []LabelSelector{{MatchLabels: map[string]string{"rack": "b"}}}
	self := readyNode("n1", map[string]string{"rack": "a"})
	tests := []struct {
		name  string
		peers []Peer
		self  *Node
		want  []Peer
	}{
		{name: "no node, no peers", peers: []Peer{{Name: "r"}}, self: nil, want: nil},
		{
			name:  "sorted by name, selectors applied",
			peers: []Peer{{Name: "z"}, {Name: "b", NodeSelectors: rackB}, {Name: "a", NodeSelectors: rackA}},
			self:  &self,
			want:  []Peer{{Name: "a", NodeSelectors: rackA}, {Name: "z"}},
		},
		{
			name:  "one per name, the last wins",
			peers: []Peer{{Name: "r", Address: addr("192.0.2.1")}, {Name: "r", Address: addr("192.0.2.2")}},
			self:  &self,
			want:  []Peer{{Name: "r", Address: addr("192.0.2.2")}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, selectPeers(tt.peers, tt.self), stepOpts); diff != "" {
				t.Errorf("selectPeers (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReadAdvertisements(t *testing.T) {
	pools := []Pool{
		{Name: "p1", Labels: map[string]string{"tier": "web"}},
		{Name: "p2"},
	}
	peers := []Peer{{Name: "r1"}}
	web := []LabelSelector{{MatchLabels: map[string]string{"tier": "web"}}}
	tests := []struct {
		name      string
		advs      []BGPAdvertisement
		want      []advertisement
		wantProbs []string
	}{
		{
			name: "no pools named: every pool, default lengths",
			advs: []BGPAdvertisement{{Name: "all"}},
			want: []advertisement{{pools: []bool{true, true}, attrs: attrs{lenV4: 32, lenV6: 128}}},
		},
		{
			name: "by name and by label",
			advs: []BGPAdvertisement{{Name: "n", Pools: []string{"p2"}}, {Name: "l", PoolSelectors: web}},
			want: []advertisement{
				{pools: []bool{false, true}, attrs: attrs{lenV4: 32, lenV6: 128}},
				{pools: []bool{true, false}, attrs: attrs{lenV4: 32, lenV6: 128}},
			},
		},
		{
			name: "attributes parsed, out-of-range lengths read as the default",
			advs: []BGPAdvertisement{{
				Name: "a", Pools: []string{"p1"}, LocalPref: u32(50), AggregationLength: 24, AggregationLengthV6: 129,
				Communities: []string{"65000:1", "1:2:3", "no-export"},
			}},
			want: []advertisement{{pools: []bool{true, false}, attrs: attrs{
				communities: []uint32{65000<<16 | 1, 0xFFFFFF01}, large: []LargeCommunity{{1, 2, 3}},
				localPref: 50, lenV4: 24, lenV6: 128,
			}}},
		},
		{
			name: "problems sorted and unique, bad community left out",
			advs: []BGPAdvertisement{
				{Name: "b", Communities: []string{"bad", "65000:1"}, Peers: []string{"r1", "gone"}},
				{Name: "a", Peers: []string{"gone", "gone"}},
			},
			want: []advertisement{
				{pools: []bool{true, true}, attrs: attrs{communities: []uint32{65000<<16 | 1}, lenV4: 32, lenV6: 128}},
				{pools: []bool{true, true}, attrs: attrs{lenV4: 32, lenV6: 128}},
			},
			wantProbs: []string{
				`BGPAdvertisement a: peer "gone" does not exist`,
				`BGPAdvertisement b: community "bad": want ASN:value, global:local1:local2 or a well-known name`,
				`BGPAdvertisement b: peer "gone" does not exist`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, probs := readAdvertisements(tt.advs, pools, peers)
			if diff := cmp.Diff(tt.want, got, stepOpts); diff != "" {
				t.Errorf("advertisements (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantProbs, probs, stepOpts); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseAttrs(t *testing.T) {
	tests := []struct {
		name     string
		adv      BGPAdvertisement
		want     attrs
		wantErrs []error
	}{
		{name: "defaults", want: attrs{lenV4: 32, lenV6: 128}},
		{name: "negative lengths", adv: BGPAdvertisement{AggregationLength: -1, AggregationLengthV6: -1}, want: attrs{lenV4: 32, lenV6: 128}},
		{name: "lengths kept", adv: BGPAdvertisement{AggregationLength: 1, AggregationLengthV6: 64}, want: attrs{lenV4: 1, lenV6: 64}},
		{
			name:     "bad community",
			adv:      BGPAdvertisement{Communities: []string{"1:70000", "no-peer"}},
			want:     attrs{communities: []uint32{0xFFFFFF04}, lenV4: 32, lenV6: 128},
			wantErrs: []error{errors.New(`community "1:70000": both numbers must be 0-65535`)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, errs := parseAttrs(tt.adv)
			if diff := cmp.Diff(tt.want, got, stepOpts); diff != "" {
				t.Errorf("attrs (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantErrs, errs, stepOpts); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

func TestUnadvertisedPools(t *testing.T) {
	pools := []Pool{{Name: "c"}, {Name: "a"}, {Name: "b"}}
	tests := []struct {
		name string
		advs []advertisement
		want []string
	}{
		{name: "no advertisements", want: []string{"a", "b", "c"}},
		{name: "all selected", advs: []advertisement{{pools: []bool{true, false, true}}, {pools: []bool{false, true, false}}}},
		{name: "sorted rest", advs: []advertisement{{pools: []bool{false, true, false}}}, want: []string{"b", "c"}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, unadvertisedPools(pools, tt.advs), stepOpts); diff != "" {
			t.Errorf("%s: unadvertisedPools (-want +got):\n%s", tt.name, diff)
		}
	}
}

func TestPlanAdvertisements(t *testing.T) {
	peers := []Peer{
		{Name: "a4", Address: addr("192.0.2.1")},
		{Name: "b6", Address: addr("2001:db8::1")},
		{Name: "c4", Address: addr("::ffff:192.0.2.3")},
	}
	rackA := map[string]string{"rack": "a"}
	svcSel := []LabelSelector{{MatchLabels: map[string]string{"app": "x"}}}
	tests := []struct {
		name   string
		advs   []BGPAdvertisement
		parsed []advertisement
		gshut  bool
		want   []advPlan
	}{
		{
			name:   "every peer by family (a mapped address is IPv4)",
			advs:   []BGPAdvertisement{{Name: "a", ServiceSelectors: svcSel}},
			parsed: []advertisement{{pools: []bool{true}, attrs: attrs{localPref: 7, lenV4: 32, lenV6: 128}}},
			want: []advPlan{{pools: []bool{true}, peers4: []int{0, 2}, peers6: []int{1},
				localPref: 7, lenV4: 32, lenV6: 128, svcSel: svcSel}},
		},
		{
			name: "named peers only; node selectors filter",
			advs: []BGPAdvertisement{
				{Name: "a", Peers: []string{"c4"}},
				{Name: "b", NodeSelectors: []LabelSelector{{MatchLabels: map[string]string{"rack": "b"}}}},
			},
			parsed: []advertisement{{pools: []bool{false}, attrs: attrs{lenV4: 24, lenV6: 64}}, {}},
			want:   []advPlan{{pools: []bool{false}, peers4: []int{2}, lenV4: 24, lenV6: 64}},
		},
		{
			name: "communities sorted and unique, GRACEFUL_SHUTDOWN when due",
			advs: []BGPAdvertisement{{Name: "a", Peers: []string{"none"}}},
			parsed: []advertisement{{attrs: attrs{communities: []uint32{5, 1, 5}, large: []LargeCommunity{{2, 0, 0}, {1, 0, 0}, {2, 0, 0}},
				lenV4: 32, lenV6: 128}}},
			gshut: true,
			want: []advPlan{{communities: []uint32{1, 5, CommunityGracefulShutdown}, large: []LargeCommunity{{1, 0, 0}, {2, 0, 0}},
				lenV4: 32, lenV6: 128}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := cloneAdvs(tt.parsed)
			got := planAdvertisements(tt.advs, tt.parsed, rackA, peers, tt.gshut)
			if diff := cmp.Diff(tt.want, got, stepOpts); diff != "" {
				t.Errorf("planAdvertisements (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(before, tt.parsed, stepOpts); diff != "" {
				t.Errorf("planAdvertisements changed its input (-before +after):\n%s", diff)
			}
		})
	}
}

func cloneAdvs(in []advertisement) []advertisement {
	out := make([]advertisement, len(in))
	for i, a := range in {
		out[i] = a
		out[i].communities = append([]uint32(nil), a.communities...)
		out[i].large = append([]LargeCommunity(nil), a.large...)
	}
	return out
}

func TestEmit(t *testing.T) {
	pools := []Pool{pool("v4", "192.168.254.0/24"), pool("v6", "fd00::/64"), pool("other", "10.0.0.0/24")}
	peers := []Peer{
		{Name: "a", Address: addr("192.0.2.1"), SourceAddress: addr("192.0.2.10")},
		{Name: "b", Address: addr("2001:db8::1")},
		{Name: "c", Address: addr("192.0.2.3")},
	}
	comms := []uint32{1}
	plans := []advPlan{
		{pools: []bool{true, true, false}, peers4: []int{0, 2}, peers6: []int{1}, communities: comms, lenV4: 32, lenV6: 128},
		{pools: []bool{true, false, false}, peers4: []int{2}, localPref: 9, lenV4: 24, lenV6: 128,
			svcSel: []LabelSelector{{MatchLabels: map[string]string{"agg": "yes"}}}},
	}
	agg := svc("agg", TrafficPolicyCluster, []string{"192.168.254.7"}, ep("n2"))
	agg.Labels = map[string]string{"agg": "yes"}
	services := []Service{
		svc("dual", TrafficPolicyLocal, []string{"192.168.254.5", "::ffff:192.168.254.6", "fd00::5"}, ep("n1")),
		svc("elsewhere", TrafficPolicyLocal, []string{"192.168.254.8"}, ep("n2")),
		svc("outside", TrafficPolicyCluster, []string{"198.51.100.1"}, ep("n1")),
		svc("unadvertised", TrafficPolicyCluster, []string{"10.0.0.1"}, ep("n1")),
		agg,
	}
	nh := addr("192.0.2.10")
	want := [][]Advertisement{
		{
			{Prefix: pfx("192.168.254.5/32"), NextHop: nh, Communities: comms, Services: []string{"default/dual"}, Weight: 1},
			{Prefix: pfx("192.168.254.6/32"), NextHop: nh, Communities: comms, Services: []string{"default/dual"}, Weight: 1},
			{Prefix: pfx("192.168.254.7/32"), NextHop: nh, Communities: comms, Services: []string{"default/agg"}},
		},
		{
			{Prefix: pfx("fd00::5/128"), NextHop: v6any, Communities: comms, Services: []string{"default/dual"}, Weight: 1},
		},
		{
			{Prefix: pfx("192.168.254.5/32"), NextHop: v4any, Communities: comms, Services: []string{"default/dual"}, Weight: 1},
			{Prefix: pfx("192.168.254.6/32"), NextHop: v4any, Communities: comms, Services: []string{"default/dual"}, Weight: 1},
			{Prefix: pfx("192.168.254.7/32"), NextHop: v4any, Communities: comms, Services: []string{"default/agg"}},
			{Prefix: pfx("192.168.254.0/24"), NextHop: v4any, LocalPref: 9, Services: []string{"default/agg"}},
		},
	}
	got := emit(services, pools, "n1", plans, peers, false)
	if diff := cmp.Diff(want, got, stepOpts); diff != "" {
		t.Errorf("emit (-want +got):\n%s", diff)
	}
	if got := emit(nil, pools, "n1", plans, peers, false); len(got) != len(peers) || got[0] != nil || got[1] != nil || got[2] != nil {
		t.Errorf("emit(no services) = %v, want one nil list per peer", got)
	}
}

func TestMergeByPrefix(t *testing.T) {
	tests := []struct {
		name  string
		in    []Advertisement
		gshut bool
		want  []Advertisement
	}{
		{name: "empty is nil", in: []Advertisement{}, want: nil},
		{
			name:  "draining only when every contribution is; GRACEFUL_SHUTDOWN added once",
			gshut: true,
			in: []Advertisement{
				{Prefix: pfx("10.0.0.1/32"), Communities: []uint32{1}, Services: []string{"ns/a"}, Draining: true},
				{Prefix: pfx("10.0.0.1/32"), Services: []string{"ns/b"}},
				{Prefix: pfx("10.0.0.2/32"), Communities: []uint32{1}, Services: []string{"ns/c"}, Draining: true},
				{Prefix: pfx("10.0.0.2/32"), Services: []string{"ns/d"}, Draining: true},
				{Prefix: pfx("10.0.0.3/32"), Communities: []uint32{CommunityGracefulShutdown}, Services: []string{"ns/e"}, Draining: true},
			},
			want: []Advertisement{
				{Prefix: pfx("10.0.0.1/32"), Communities: []uint32{1}, Services: []string{"ns/a", "ns/b"}},
				{Prefix: pfx("10.0.0.2/32"), Communities: []uint32{1, CommunityGracefulShutdown}, Services: []string{"ns/c", "ns/d"}, Draining: true},
				{Prefix: pfx("10.0.0.3/32"), Communities: []uint32{CommunityGracefulShutdown}, Services: []string{"ns/e"}, Draining: true},
			},
		},
		{
			name: "draining without the option: no community",
			in:   []Advertisement{{Prefix: pfx("10.0.0.1/32"), Services: []string{"ns/a"}, Draining: true}},
			want: []Advertisement{{Prefix: pfx("10.0.0.1/32"), Services: []string{"ns/a"}, Draining: true}},
		},
		{
			name: "sorted, distinct kept as they are",
			in:   []Advertisement{host("10.0.0.2/32", "ns/b"), host("fd00::1/128", "ns/c"), host("10.0.0.1/32", "ns/a")},
			want: []Advertisement{host("10.0.0.1/32", "ns/a"), host("10.0.0.2/32", "ns/b"), host("fd00::1/128", "ns/c")},
		},
		{
			name: "same prefix merged: union of communities and Services, highest LOCAL_PREF",
			in: []Advertisement{
				{Prefix: pfx("10.0.0.0/24"), NextHop: v4any, Communities: []uint32{3, 1}, LocalPref: 5, Services: []string{"ns/b"}},
				host("10.0.0.1/32", "ns/x"),
				{Prefix: pfx("10.0.0.0/24"), NextHop: v4any, Communities: []uint32{1, 2}, LargeCommunities: []LargeCommunity{{1, 1, 1}},
					LocalPref: 9, Services: []string{"ns/a"}},
				{Prefix: pfx("10.0.0.0/24"), NextHop: v4any, LocalPref: 7, Services: []string{"ns/b"}},
			},
			want: []Advertisement{
				{Prefix: pfx("10.0.0.0/24"), NextHop: v4any, Communities: []uint32{1, 2, 3}, LargeCommunities: []LargeCommunity{{1, 1, 1}},
					LocalPref: 9, Services: []string{"ns/a", "ns/b"}},
				host("10.0.0.1/32", "ns/x"),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mergeByPrefix(tt.in, tt.gshut)
			if diff := cmp.Diff(tt.want, got, stepOpts); diff != "" {
				t.Errorf("mergeByPrefix (-want +got):\n%s", diff)
			}
			if tt.want == nil && got != nil {
				t.Errorf("mergeByPrefix = %#v, want nil", got)
			}
		})
	}
}

// TestMergeByPrefixSharedSlices: merging must not write into the attribute
// slices, which emit shares between entries and with the plan.
func TestMergeByPrefixSharedSlices(t *testing.T) {
	comms := []uint32{2, 1}
	comms = comms[:2:2]
	svcs := []string{"ns/a"}
	in := []Advertisement{
		{Prefix: pfx("10.0.0.0/24"), Communities: comms, Services: svcs, Draining: true},
		{Prefix: pfx("10.0.0.0/24"), Communities: []uint32{3}, Services: []string{"ns/b"}, Draining: true},
		{Prefix: pfx("10.0.0.1/32"), Communities: comms, Services: svcs, Draining: true},
	}
	mergeByPrefix(in, true)
	if diff := cmp.Diff([]uint32{2, 1}, comms); diff != "" {
		t.Errorf("shared communities changed (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"ns/a"}, svcs); diff != "" {
		t.Errorf("shared Services changed (-want +got):\n%s", diff)
	}
}
