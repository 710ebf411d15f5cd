// Package install tests what users install: dist/install.yaml and the Helm
// chart (rendered, linted, applied to a real kube-apiserver), and the router
// agent's .deb (built, inspected, installed into a scratch root).
//
// The tools (kustomize, helm, nfpm) are built from the Go module proxy at the
// versions pinned in hack/tools.sh; the tests build them when bin/ lacks them
// (or use $KUSTOMIZE, $HELM, $NFPM when set, as `make test-install` does).
package install

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/bgplb/bgplb/internal/testenv"
)

var root = testenv.RepoRoot()

var (
	toolMu    sync.Mutex
	toolPaths = map[string]string{}
)

// tool returns the path of a pinned packaging tool, building it with
// hack/tools.sh when needed. It fails the test (never skips) when the tool
// cannot be had, saying why.
func tool(t testing.TB, name string) string {
	t.Helper()
	toolMu.Lock()
	defer toolMu.Unlock()
	if p, ok := toolPaths[name]; ok {
		return p
	}
	if p := os.Getenv(strings.ToUpper(name)); p != "" {
		toolPaths[name] = p
		return p
	}
	cmd := exec.Command(filepath.Join(root, "hack", "tools.sh"), "--path", name)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s is needed and could not be built by hack/tools.sh (run `make tools`; it builds from the Go module proxy): %v\n%s", name, err, stderr.String())
	}
	p := strings.TrimSpace(string(out))
	toolPaths[name] = p
	return p
}

// run runs a command in dir and returns its stdout; it fails the test with
// stderr on error.
func run(t testing.TB, dir string, env []string, name string, args ...string) string {
	t.Helper()
	out, err := runErr(dir, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v", filepath.Base(name), strings.Join(args, " "), err)
	}
	return out
}

func runErr(dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w\n%s%s", err, stderr.String(), stdout.String())
	}
	return stdout.String(), nil
}

// decode splits a multi-document YAML stream into objects.
func decode(t testing.TB, b []byte) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	d := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := d.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("decode YAML: %v", err)
		}
		if len(u.Object) == 0 {
			continue
		}
		objs = append(objs, u)
	}
	return objs
}

// kustomize renders a kustomization folder of the tree.
func kustomize(t testing.TB, dir string) []byte {
	t.Helper()
	return []byte(run(t, root, nil, tool(t, "kustomize"), "build", filepath.Join(root, dir)))
}

// helmTemplate renders the chart into bgplb-system with extra helm arguments.
func helmTemplate(t testing.TB, args ...string) []byte {
	t.Helper()
	return helmTemplateNS(t, "bgplb-system", args...)
}

// helmTemplateNS renders the chart as release bgplb in namespace ns.
func helmTemplateNS(t testing.TB, ns string, args ...string) []byte {
	t.Helper()
	a := append([]string{"template", "bgplb", filepath.Join(root, "charts", "bgplb"), "--namespace", ns}, args...)
	return []byte(run(t, root, nil, tool(t, "helm"), a...))
}

func byKind(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var r []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			r = append(r, o)
		}
	}
	return r
}

func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

func readFile(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
