// Package speaker_test checks the speaker's CRDs (BGPPeer, BGPAdvertisement,
// BGPSessionState) against a real kube-apiserver: defaults, schema and CEL
// validation as users meet them on `kubectl apply`.
package speaker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/internal/testenv"
)

func dur(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }
func i32(v int32) *int32                   { return &v }

func TestBGPPeerValidation(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()

	valid := func() v1.BGPPeerSpec {
		return v1.BGPPeerSpec{PeerAddress: "192.168.2.1", PeerASN: 64512, MyASN: 64513}
	}
	tests := []struct {
		name    string
		mutate  func(s *v1.BGPPeerSpec)
		wantErr string // substring of the apiserver's message; empty = accepted
	}{
		{name: "minimal", mutate: func(s *v1.BGPPeerSpec) {}},
		{name: "ipv6 peer", mutate: func(s *v1.BGPPeerSpec) { s.PeerAddress = "fd00:2::1" }},
		{name: "hostname rejected", mutate: func(s *v1.BGPPeerSpec) { s.PeerAddress = "router.lan" }, wantErr: "peerAddress must be an IPv4 or IPv6 address"},
		{name: "asn 0 rejected", mutate: func(s *v1.BGPPeerSpec) { s.PeerASN = 0 }, wantErr: "peerASN"},
		{name: "4-byte asn accepted", mutate: func(s *v1.BGPPeerSpec) { s.MyASN = 4200000000 }},
		{name: "hold 3s accepted", mutate: func(s *v1.BGPPeerSpec) { s.HoldTime = dur(3 * time.Second); s.KeepaliveTime = dur(time.Second) }},
		{name: "hold 2s rejected", mutate: func(s *v1.BGPPeerSpec) { s.HoldTime = dur(2 * time.Second) }, wantErr: "holdTime must be at least 3s"},
		{name: "keepalive >= hold rejected", mutate: func(s *v1.BGPPeerSpec) { s.HoldTime = dur(9 * time.Second); s.KeepaliveTime = dur(9 * time.Second) }, wantErr: "keepaliveTime must be shorter than holdTime"},
		{name: "keepalive vs default hold", mutate: func(s *v1.BGPPeerSpec) { s.KeepaliveTime = dur(100 * time.Second) }, wantErr: "keepaliveTime must be shorter than holdTime"},
		{name: "source of other family rejected", mutate: func(s *v1.BGPPeerSpec) { s.SourceAddress = "fd00::1" }, wantErr: "sourceAddress must be an IP address of the same family"},
		{name: "source address accepted", mutate: func(s *v1.BGPPeerSpec) { s.SourceAddress = "192.168.2.10" }},
		{name: "multihop ttl 1 rejected", mutate: func(s *v1.BGPPeerSpec) { s.EBGPMultiHop = i32(1) }, wantErr: "ebgpMultiHop"},
		{name: "port 0 rejected", mutate: func(s *v1.BGPPeerSpec) { s.PeerPort = i32(0) }, wantErr: "peerPort"},
		{name: "graceful restart", mutate: func(s *v1.BGPPeerSpec) {
			s.GracefulRestart = &v1.GracefulRestart{Enabled: true, RestartTime: dur(5000 * time.Second)}
		}, wantErr: "restartTime must be between 1s and 4095s"},
		{name: "bfd defaults accepted", mutate: func(s *v1.BGPPeerSpec) { s.BFD = &v1.BFD{Enabled: true} }},
		{name: "bfd values accepted", mutate: func(s *v1.BGPPeerSpec) {
			s.BFD = &v1.BFD{Enabled: true, ReceiveInterval: dur(10 * time.Millisecond), TransmitInterval: dur(time.Minute), DetectMultiplier: i32(255)}
		}},
		{name: "bfd receive interval too short", mutate: func(s *v1.BGPPeerSpec) {
			s.BFD = &v1.BFD{Enabled: true, ReceiveInterval: dur(5 * time.Millisecond)}
		}, wantErr: "bfd.receiveInterval must be between 10ms and 60s"},
		{name: "bfd transmit interval too long", mutate: func(s *v1.BGPPeerSpec) {
			s.BFD = &v1.BFD{Enabled: true, TransmitInterval: dur(61 * time.Second)}
		}, wantErr: "bfd.transmitInterval must be between 10ms and 60s"},
		{name: "bfd multiplier 0", mutate: func(s *v1.BGPPeerSpec) { s.BFD = &v1.BFD{Enabled: true, DetectMultiplier: i32(0)} }, wantErr: "detectMultiplier"},
		{name: "bfd multiplier 256", mutate: func(s *v1.BGPPeerSpec) { s.BFD = &v1.BFD{Enabled: true, DetectMultiplier: i32(256)} }, wantErr: "detectMultiplier"},
		{name: "returnPath symmetric accepted", mutate: func(s *v1.BGPPeerSpec) { s.ReturnPath = v1.ReturnPathSymmetric }},
		{name: "returnPath unknown refused", mutate: func(s *v1.BGPPeerSpec) { s.ReturnPath = "via-router" }, wantErr: "supported values"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &v1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "peer-" + string(rune('a'+i))}, Spec: valid()}
			tt.mutate(&p.Spec)
			err := env.Client.Create(ctx, p)
			checkErr(t, err, tt.wantErr)
			if err == nil {
				t.Cleanup(func() { _ = env.Client.Delete(ctx, p) })
			}
		})
	}

	t.Run("defaults", func(t *testing.T) {
		p := &v1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "defaults"}, Spec: valid()}
		p.Spec.PasswordSecret = &v1.SecretKeyReference{Name: "md5"}
		p.Spec.GracefulRestart = &v1.GracefulRestart{Enabled: true}
		p.Spec.BFD = &v1.BFD{Enabled: true}
		if err := env.Client.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		got := &v1.BGPPeer{}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(p), got); err != nil {
			t.Fatal(err)
		}
		if got.Spec.PeerPort == nil || *got.Spec.PeerPort != 179 {
			t.Errorf("peerPort default = %v, want 179", got.Spec.PeerPort)
		}
		if got.Spec.HoldTime == nil || got.Spec.HoldTime.Duration != 90*time.Second {
			t.Errorf("holdTime default = %v, want 90s", got.Spec.HoldTime)
		}
		if got.Spec.ReturnPath != v1.ReturnPathDirect {
			t.Errorf("returnPath default = %q, want direct", got.Spec.ReturnPath)
		}
		if got.Spec.PasswordSecret.Key != "password" {
			t.Errorf("passwordSecret.key default = %q, want password", got.Spec.PasswordSecret.Key)
		}
		if got.Spec.GracefulRestart.RestartTime == nil || got.Spec.GracefulRestart.RestartTime.Duration != 120*time.Second {
			t.Errorf("restartTime default = %v, want 120s", got.Spec.GracefulRestart.RestartTime)
		}
		if b := got.Spec.BFD; b.ReceiveInterval == nil || b.ReceiveInterval.Duration != 300*time.Millisecond ||
			b.TransmitInterval == nil || b.TransmitInterval.Duration != 300*time.Millisecond || b.DetectMultiplier == nil || *b.DetectMultiplier != 3 {
			t.Errorf("bfd defaults = %+v, want 300ms, 300ms, 3", b)
		}
	})
}

func TestBGPAdvertisementValidation(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	tests := []struct {
		name    string
		spec    v1.BGPAdvertisementSpec
		wantErr string
	}{
		{name: "empty selects everything", spec: v1.BGPAdvertisementSpec{}},
		{name: "communities", spec: v1.BGPAdvertisementSpec{Communities: []string{"65000:100", "no-export", "4200000000:1:2", "graceful-shutdown"}}},
		{name: "standard out of range", spec: v1.BGPAdvertisementSpec{Communities: []string{"65536:1"}}, wantErr: "community numbers out of range"},
		{name: "large out of range", spec: v1.BGPAdvertisementSpec{Communities: []string{"4294967296:1:1"}}, wantErr: "community numbers out of range"},
		{name: "unknown name", spec: v1.BGPAdvertisementSpec{Communities: []string{"no-exports"}}, wantErr: "communities"},
		{name: "aggregation 33", spec: v1.BGPAdvertisementSpec{AggregationLength: i32(33)}, wantErr: "aggregationLength"},
		{name: "aggregation v6 64", spec: v1.BGPAdvertisementSpec{AggregationLengthV6: i32(64)}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &v1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "adv-" + string(rune('a'+i))}, Spec: tt.spec}
			err := env.Client.Create(ctx, a)
			checkErr(t, err, tt.wantErr)
			if err != nil {
				return
			}
			got := &v1.BGPAdvertisement{}
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(a), got); err != nil {
				t.Fatal(err)
			}
			if got.Spec.AggregationLength == nil || (tt.spec.AggregationLength == nil && *got.Spec.AggregationLength != 32) {
				t.Errorf("aggregationLength default = %v, want 32", got.Spec.AggregationLength)
			}
		})
	}
}

func TestBGPSessionStateStatus(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	s := &v1.BGPSessionState{
		ObjectMeta: metav1.ObjectMeta{Name: "n1-r1"},
		Spec:       v1.BGPSessionStateSpec{Node: "n1", Peer: "r1", PeerAddress: "192.168.2.1"},
	}
	if err := env.Client.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	now := metav1.Now()
	s.Status = v1.BGPSessionStateStatus{State: v1.SessionStateEstablished, PrefixesSent: 3, EstablishedTime: &now}
	if err := env.Client.Status().Update(ctx, s); err != nil {
		t.Fatalf("status subresource update: %v", err)
	}
	got := &v1.BGPSessionState{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(s), got); err != nil {
		t.Fatal(err)
	}
	if got.Status.State != v1.SessionStateEstablished || got.Status.PrefixesSent != 3 {
		t.Errorf("status = %+v", got.Status)
	}
}

func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("rejected: %v", err)
	case want != "" && err == nil:
		t.Fatalf("accepted, want an error containing %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Fatalf("error %q does not contain %q", err, want)
	}
}
