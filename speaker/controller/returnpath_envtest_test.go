package controller_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/internal/netnstest"
	"github.com/bgplb/bgplb/internal/testenv"
	"github.com/bgplb/bgplb/speaker/bgp"
	"github.com/bgplb/bgplb/speaker/controller"
	"github.com/bgplb/bgplb/speaker/model"
	"github.com/bgplb/bgplb/speaker/returnpath"
)

// quietSpeaker stands in for the BGP side: it opens no session (the
// router's address is inside a test namespace, out of the test process's
// reach) and reports every session Active.
type quietSpeaker struct {
	mu    sync.Mutex
	peers []bgp.PeerConfig
}

func (s *quietSpeaker) SetPeers(_ context.Context, peers []bgp.PeerConfig) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.peers = peers
	return nil
}

func (s *quietSpeaker) Set(context.Context, string, []model.Advertisement) (bgp.Changes, error) {
	return bgp.Changes{}, nil
}

func (s *quietSpeaker) SetPrefixes(context.Context, string, []netip.Prefix, []model.Advertisement) (bgp.Changes, error) {
	return bgp.Changes{}, nil
}

func (s *quietSpeaker) Status(context.Context) []bgp.PeerStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []bgp.PeerStatus
	for _, p := range s.peers {
		out = append(out, bgp.PeerStatus{Name: p.Name, Address: p.Address, State: v1.SessionStateActive})
	}
	return out
}

func (s *quietSpeaker) Changed() <-chan struct{} { return nil }

// nsHost runs the real kernel side inside the test's node namespace.
type nsHost struct{ ns *netnstest.NS }

func (h nsHost) Neighbour(a netip.Addr) (n returnpath.Neighbour, err error) {
	err = h.ns.Do(func() error { n, err = returnpath.Kernel{}.Neighbour(a); return nil })
	return n, err
}

func (h nsHost) Installed(cfg returnpath.Config) (in []returnpath.Installed, err error) {
	err = h.ns.Do(func() error { in, err = returnpath.Kernel{}.Installed(cfg); return nil })
	return in, err
}

func (h nsHost) Apply(cfg returnpath.Config, p returnpath.Plan) error {
	return h.ns.Do(func() error { return returnpath.Kernel{}.Apply(cfg, p) })
}

// A BGPPeer with returnPath: symmetric makes the speaker (with
// --symmetric-return-path) install the mark rules, policy rule and route
// for the router in the node's kernel (a test namespace here), and report
// the ReturnPathSymmetric condition True and bgplb_speaker_return_path_symmetric
// 1; switching the BGPPeer to direct removes all of it and the condition.
func TestReturnPathSymmetricReconciled(t *testing.T) {
	testenv.Skip(t, env)
	netnstest.RequireRoot(t)
	ctx := context.Background()
	const node, peerName, routerAddr = "node-rp", "rp-router", "192.168.77.1"

	// The node and the router on one link; the node has talked to the
	// router (as its BGP session does), so the router's MAC is known.
	nodeNS, rtNS := netnstest.New(t, "rpnode"), netnstest.New(t, "rprt")
	netnstest.Veth(t, nodeNS, "eth0", "192.168.77.20/24", rtNS, "lan0", routerAddr+"/24")
	if err := nodeNS.Do(func() error {
		c, err := net.Dial("udp", routerAddr+":9")
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("x"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	routerMAC := strings.TrimSpace(rtNS.Exec("cat", "/sys/class/net/lan0/address"))

	readyNode(t, node, nil)
	create(t, &v1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "rp-pool"}, Spec: v1.IPPoolSpec{Addresses: []string{"192.168.254.0/24"}}})
	peer := &v1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: peerName}, Spec: v1.BGPPeerSpec{
		PeerAddress: routerAddr, PeerASN: 64512, MyASN: 65011, ReturnPath: v1.ReturnPathSymmetric,
	}}
	create(t, peer)
	t.Cleanup(func() {
		_ = env.Client.DeleteAllOf(context.Background(), &v1.BGPSessionState{}, client.MatchingLabels{v1.LabelSessionNode: node})
	})

	f := startSpeakerWith(t, node, fixtureHooks{
		speaker: func(*bgp.Manager) controller.Speaker { return &quietSpeaker{} },
		reconciler: func(r *controller.Reconciler, reg *prometheus.Registry) {
			rpm, err := returnpath.NewMetrics(reg)
			if err != nil {
				t.Fatal(err)
			}
			r.ReturnPath = returnpath.NewManager(returnpath.Config{}, nsHost{nodeNS}, testr.New(t).WithName("returnpath"), rpm)
		},
	})
	reg := f.reg

	state := func() (*v1.BGPSessionState, error) {
		s := &v1.BGPSessionState{}
		return s, env.Client.Get(ctx, client.ObjectKey{Name: node + "-" + peerName}, s)
	}
	eventually(t, "ReturnPathSymmetric True", func() error {
		s, err := state()
		if err != nil {
			return err
		}
		c := meta.FindStatusCondition(s.Status.Conditions, v1.ConditionReturnPathSymmetric)
		if s.Status.ReturnPath != v1.ReturnPathSymmetric || c == nil || c.Status != metav1.ConditionTrue || c.Reason != v1.ReasonReturnPathApplied {
			return fmt.Errorf("status %+v", s.Status)
		}
		if !strings.Contains(c.Message, routerMAC) || !strings.Contains(c.Message, "table 4201") {
			return fmt.Errorf("condition message %q lacks the router's MAC %s or the table", c.Message, routerMAC)
		}
		return nil
	})
	table := nodeNS.Exec("nft", "list", "table", "inet", returnpath.TableName)
	for _, want := range []string{"ether saddr " + routerMAC, "192.168.254.0/24", `iifname "eth0"`, "ct direction reply"} {
		if !strings.Contains(table, want) {
			t.Errorf("our table lacks %q:\n%s", want, table)
		}
	}
	if rules := nodeNS.Exec("ip", "rule"); !strings.Contains(rules, "fwmark 0x1000000/0xf000000 lookup 4201") {
		t.Errorf("ip rule:\n%s", rules)
	}
	if routes := nodeNS.Exec("ip", "route", "show", "table", "4201"); !strings.Contains(routes, "default via "+routerAddr+" dev eth0") {
		t.Errorf("table 4201:\n%s", routes)
	}
	if v := gaugeValue(t, reg, "bgplb_speaker_return_path_symmetric"); v != 1 {
		t.Errorf("bgplb_speaker_return_path_symmetric %v, want 1", v)
	}

	// returnPath: direct takes it all away.
	cur := &v1.BGPPeer{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(peer), cur); err != nil {
		t.Fatal(err)
	}
	cur.Spec.ReturnPath = v1.ReturnPathDirect
	if err := env.Client.Update(ctx, cur); err != nil {
		t.Fatal(err)
	}
	eventually(t, "returnPath direct, no condition", func() error {
		s, err := state()
		if err != nil {
			return err
		}
		if s.Status.ReturnPath != v1.ReturnPathDirect || len(s.Status.Conditions) != 0 {
			return fmt.Errorf("status %+v", s.Status)
		}
		return nil
	})
	if out, err := nodeNS.Try("nft", "list", "table", "inet", returnpath.TableName); err == nil {
		t.Errorf("our table is left:\n%s", out)
	}
	if rules := nodeNS.Exec("ip", "rule"); strings.Contains(rules, "4201") {
		t.Errorf("our rule is left:\n%s", rules)
	}
	if routes := nodeNS.Exec("ip", "route", "show", "table", "all", "proto", "220"); routes != "" {
		t.Errorf("our route is left:\n%s", routes)
	}
	if v := gaugeValue(t, reg, "bgplb_speaker_return_path_symmetric"); v != -1 {
		t.Errorf("bgplb_speaker_return_path_symmetric %v after direct, want no series", v)
	}
}
