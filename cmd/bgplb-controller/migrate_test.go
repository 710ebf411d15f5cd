package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/rest"
)

// TestMigrateMetalLB checks the subcommand's input handling and exit
// statuses; the conversion itself is tested in internal/metallb.
func TestMigrateMetalLB(t *testing.T) {
	samples := filepath.Join("..", "..", "internal", "metallb", "testdata", "metallb")
	noCluster := func() (*rest.Config, error) { return nil, errors.New("no cluster here") }
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("kind: [\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		args       []string
		stdin      string
		wantCode   int
		wantStdout []string
		wantStderr []string
	}{{
		name:       "all converted",
		args:       []string{"-f", filepath.Join(samples, "bgppeer_simple.yaml"), "-f", filepath.Join(samples, "simple_pool_adv_bgp.yaml")},
		wantCode:   0,
		wantStdout: []string{"kind: BGPPeer", "kind: IPPool", "kind: BGPAdvertisement", "---\n# from metallb.io/v1beta1 IPAddressPool metallb-system/example\n"},
		wantStderr: []string{"3 MetalLB objects read, 3 bgplb objects written, 0 warnings"},
	}, {
		name:       "converted with warnings, from stdin",
		args:       []string{"-f", "-"},
		stdin:      "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: r, namespace: metallb-system}\nspec: {myASN: 1, peerASN: 2, peerAddress: 10.0.0.1, bfdProfile: fast}\n",
		wantCode:   3,
		wantStdout: []string{"kind: BGPPeer"},
		wantStderr: []string{"warning: metallb.io/v1beta2 BGPPeer metallb-system/r: spec.bfdProfile: not converted"},
	}, {
		name:       "unreadable YAML",
		args:       []string{"-f", bad},
		wantCode:   1,
		wantStderr: []string{bad + ": document 1:"},
	}, {
		name:       "missing file",
		args:       []string{"-f", "/nonexistent/metallb.yaml"},
		wantCode:   1,
		wantStderr: []string{"no such file"},
	}, {
		name:       "neither -f nor --from-cluster",
		wantCode:   1,
		wantStderr: []string{"give either -f FILE", "Usage: bgplb-controller migrate-metallb"},
	}, {
		name:       "both",
		args:       []string{"-f", "x", "--from-cluster"},
		wantCode:   1,
		wantStderr: []string{"give either -f FILE"},
	}, {
		name:       "cluster flags without --from-cluster",
		args:       []string{"-f", "x", "--namespace", "other"},
		wantCode:   1,
		wantStderr: []string{"--namespace and --kubeconfig apply only with --from-cluster"},
	}, {
		name:       "no cluster",
		args:       []string{"--from-cluster"},
		wantCode:   1,
		wantStderr: []string{"kubeconfig: no cluster here"},
	}, {
		name:       "help",
		args:       []string{"--help"},
		wantCode:   0,
		wantStderr: []string{"Exit status: 0 all converted, 1 error (nothing written), 3 converted with", "-kubeconfig"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr strings.Builder
			code := migrateMetalLB(tc.args, strings.NewReader(tc.stdin), &stdout, &stderr, noCluster)
			if code != tc.wantCode {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tc.wantCode, stderr.String())
			}
			for _, w := range tc.wantStdout {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout.String())
				}
			}
			if tc.wantCode == 1 && stdout.Len() > 0 {
				t.Errorf("stdout on error:\n%s", stdout.String())
			}
			for _, w := range tc.wantStderr {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}
		})
	}
}
