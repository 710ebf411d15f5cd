package controller

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/internal/verdict"
)

func TestRoutedCondition(t *testing.T) {
	r1, r2 := netip.MustParseAddr("192.168.2.1"), netip.MustParseAddr("192.168.3.1")
	svc, bad := netip.MustParsePrefix("192.168.254.1/32"), netip.MustParsePrefix("10.1.1.1/32")
	installed := func(w int, via bool) verdict.Verdict {
		return verdict.Verdict{State: verdict.Installed, Width: w, Via: via}
	}
	for _, c := range []struct {
		name  string
		views []routerView
		want  metav1.Condition
	}{{
		name:  "installed",
		views: []routerView{{router: r1, prefix: svc, v: installed(2, true), reported: true}},
		want: metav1.Condition{Status: metav1.ConditionTrue, Reason: v1.RoutedReasonInstalled,
			Message: "router 192.168.2.1 installed 192.168.254.1/32 via 2 nodes"},
	}, {
		// Through other nodes only (this one drains): the same words as
		// the nodes it goes through write.
		name:  "installed not via this node",
		views: []routerView{{router: r1, prefix: svc, v: installed(2, false), reported: true}},
		want: metav1.Condition{Status: metav1.ConditionTrue, Reason: v1.RoutedReasonInstalled,
			Message: "router 192.168.2.1 installed 192.168.254.1/32 via 2 nodes"},
	}, {
		name: "rejected",
		views: []routerView{{router: r1, prefix: bad, reported: true,
			v: verdict.Verdict{State: verdict.Rejected, Reason: "outside-service-subnets"}}},
		want: metav1.Condition{Status: metav1.ConditionFalse, Reason: v1.RoutedReasonRejected,
			Message: "router 192.168.2.1 rejected 10.1.1.1/32: outside-service-subnets"},
	}, {
		// This node's path is rejected but the router routes through
		// others: routed.
		name: "rejected here, routed elsewhere",
		views: []routerView{{router: r1, prefix: svc, reported: true,
			v: verdict.Verdict{State: verdict.Rejected, Reason: "next-hop-not-peer", Width: 1}}},
		want: metav1.Condition{Status: metav1.ConditionTrue, Reason: v1.RoutedReasonInstalled,
			Message: "router 192.168.2.1 installed 192.168.254.1/32 via 1 node"},
	}, {
		name:  "not reported",
		views: []routerView{{router: r2, prefix: svc}},
		want: metav1.Condition{Status: metav1.ConditionUnknown, Reason: v1.RoutedReasonNotReported,
			Message: "no router reports verdicts: router 192.168.3.1 does not report on 192.168.254.1/32"},
	}, {
		// Routers that do not report are named but do not decide.
		name:  "one reports, one does not",
		views: []routerView{{router: r2, prefix: svc}, {router: r1, prefix: svc, v: installed(1, true), reported: true}},
		want: metav1.Condition{Status: metav1.ConditionTrue, Reason: v1.RoutedReasonInstalled,
			Message: "router 192.168.2.1 installed 192.168.254.1/32 via 1 node; router 192.168.3.1 does not report on 192.168.254.1/32"},
	}, {
		name: "pending",
		views: []routerView{{router: r1, prefix: svc, reported: true, v: verdict.Verdict{State: verdict.Pending, Reason: "route-error"}},
			{router: r2, prefix: svc, reported: true, v: installed(1, true)}},
		want: metav1.Condition{Status: metav1.ConditionFalse, Reason: v1.RoutedReasonPending,
			Message: "router 192.168.2.1 pending 192.168.254.1/32: route-error: accepted, not in the kernel yet"},
	}} {
		t.Run(c.name, func(t *testing.T) {
			c.want.Type = v1.ServiceConditionRouted
			if d := cmp.Diff(c.want, routedCondition(c.views)); d != "" {
				t.Errorf("condition (-want +got):\n%s", d)
			}
		})
	}
}
