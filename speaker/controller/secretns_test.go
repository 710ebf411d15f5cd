package controller

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	v1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/internal/kube"
)

// A BGPPeer's password Secret is read from the speaker's own namespace (the
// Helm release's, from the downward API), bgplb-system only by default: a
// chart installed elsewhere must not depend on bgplb-system.
func TestPasswordSecretFromSpeakerNamespace(t *testing.T) {
	scheme, err := kube.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	secret := func(ns, pw string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "router-md5"}, Data: map[string][]byte{"password": []byte(pw)}}
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(secret("network-lb", "in-release-ns"), secret(v1.Namespace, "in-bgplb-system")).Build()
	peer := &v1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "router"}, Spec: v1.BGPPeerSpec{
		PeerAddress: "192.168.2.1", PeerASN: 64500, MyASN: 64512, PasswordSecret: &v1.SecretKeyReference{Name: "router-md5"},
	}}
	for _, tc := range []struct{ ns, want string }{
		{"network-lb", "in-release-ns"},
		{"", "in-bgplb-system"},
	} {
		r := &Reconciler{Client: c, Options: Options{SecretNamespace: tc.ns}}
		pc, err := r.peerConfig(context.Background(), peer, netip.MustParseAddr("192.168.2.10"))
		if err != nil {
			t.Fatalf("namespace %q: %v", tc.ns, err)
		}
		if pc.Password != tc.want {
			t.Errorf("namespace %q: password %q, want %q", tc.ns, pc.Password, tc.want)
		}
	}
	r := &Reconciler{Client: c, Options: Options{SecretNamespace: "elsewhere"}}
	if _, err := r.peerConfig(context.Background(), peer, netip.MustParseAddr("192.168.2.10")); err == nil || !strings.Contains(err.Error(), "elsewhere/router-md5") {
		t.Errorf("Secret missing in the speaker's namespace: error %v, want one naming elsewhere/router-md5", err)
	}
}
