package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bgplb/bgplb/internal/netnstest"
	"github.com/bgplb/bgplb/internal/testenv"
	"github.com/bgplb/bgplb/test/lab"
)

// labBin is the folder of the binaries TestMain built (bgplb-lab among them).
var labBin string

// TestDemo runs the README's first command as `make demo` does (the built
// bgplb-lab demo, with --ipv6, in a lab of its own beside the shared one):
// the story must fail before the agent, work after it, work again over
// IPv6, and a third time through the untouched firewall with the nodes'
// symmetric return path; the teardown leaves none of its namespaces.
func TestDemo(t *testing.T) {
	setup(t) // the shared lab is up: root, envtest assets, binaries built
	prefix := fmt.Sprintf("%sdemo%d-", netnstest.Prefix, os.Getpid()%100000)
	state := filepath.Join(t.TempDir(), "state")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(labBin, "bgplb-lab"), "demo", "--bin", labBin, "--state", state,
		"--prefix", prefix, "--ipv6", "--crds", filepath.Join(testenv.RepoRoot(), "config", "crd", "bases"))
	t.Cleanup(func() { _ = lab.Down(prefix) }) // after a failure; a no-op after the demo's teardown
	start := time.Now()
	b, err := cmd.CombinedOutput()
	out := string(b)
	if err != nil {
		t.Fatalf("bgplb-lab demo: %v\n%s", err, out)
	}
	t.Logf("bgplb-lab demo --ipv6 took %v", time.Since(start).Round(time.Second))
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?s)== 1\. Before.*GET http://192\.168\.254\.\d+/ \.\.\.\n  failed: .*ctstate INVALID DROP counter (\d+) -> (\d+)`),
		regexp.MustCompile(`(?s)== 2\. After.*GET http://192\.168\.254\.\d+/ -> "hello from node\d`),
		regexp.MustCompile(`(?s)== IPv6.*hello from node\d`),
		regexp.MustCompile(`(?s)== 3\. Better.*ReturnPathSymmetric=True.*node node2: BGPSessionState condition ReturnPathSymmetric=True`),
		regexp.MustCompile(`(?s)== 3\. Better.*no exemption of ours.*GET http://192\.168\.254\.\d+/ -> "hello from node\d`),
		regexp.MustCompile(`symmetry: SYMMETRIC`),
		regexp.MustCompile(`ok  symmetry `),
		regexp.MustCompile(`removed the lab's namespaces, processes`),
	} {
		if !want.MatchString(out) {
			t.Errorf("the demo's output does not match %s", want)
		}
	}
	// Act 1's failure is the firewall's: the INVALID drop counted.
	if m := regexp.MustCompile(`(?s)== 1\. Before.*?ctstate INVALID DROP counter (\d+) -> (\d+)`).FindStringSubmatch(out); m != nil && m[1] == m[2] {
		t.Errorf("act 1: the request failed but the INVALID drop did not count (%s -> %s)", m[1], m[2])
	}
	for _, n := range lab.NSNames(prefix) {
		if _, err := os.Stat(filepath.Join("/run/netns", n)); err == nil {
			t.Errorf("namespace %s left after the demo's teardown", n)
		}
	}
	if t.Failed() {
		t.Logf("demo output:\n%s", out)
	} else if i := strings.Index(out, "== 3. Better"); i >= 0 {
		t.Logf("act 3:\n%s", out[i:min(len(out), i+1500)])
	}
}
