package router

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// repoRoot is the top of the tree (where go.mod is).
var repoRoot = func() string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err == nil && strings.TrimSpace(string(out)) != "" && strings.TrimSpace(string(out)) != os.DevNull {
		return filepath.Dir(strings.TrimSpace(string(out)))
	}
	wd, _ := os.Getwd()
	return filepath.Join(wd, "..", "..")
}()

// nfpm returns the pinned nfpm (hack/tools.sh builds it from the Go module
// proxy when bin/ lacks it; $NFPM wins).
func nfpm(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("NFPM"); p != "" {
		return p
	}
	cmd := exec.Command(filepath.Join(repoRoot, "hack", "tools.sh"), "--path", "nfpm")
	cmd.Dir = repoRoot
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nfpm is needed and hack/tools.sh could not build it: %v\n%s", err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// buildDebs builds the router agent's .deb for this machine's architecture
// once per Debian version, as `make deb` does (the steps of test/install's
// buildDeb): the static binary, the man pages and completion
// (routeragent/cli/gendoc), the copyright file (hack/deb-copyright.sh), then
// nfpm with packaging/nfpm.yaml, in a scratch tree under dir. The man pages
// and the copyright file are generated once, with the last version (they
// are the same tree's); each version gets its own binary.
func buildDebs(t testing.TB, dir string, versions ...string) []string {
	t.Helper()
	work := filepath.Join(dir, "tree")
	stage := filepath.Join(work, "dist", "build", "stage")
	if err := os.MkdirAll(stage, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"packaging", "routeragent", "docs"} {
		if err := os.Symlink(filepath.Join(repoRoot, d), filepath.Join(work, d)); err != nil {
			t.Fatal(err)
		}
	}
	last := versions[len(versions)-1]
	goRun(t, nil, "run", "-ldflags", "-X github.com/bgplb/bgplb/internal/version.Version="+last, "./routeragent/cli/gendoc", "-out", stage)
	cp := exec.Command(filepath.Join(repoRoot, "hack", "deb-copyright.sh"))
	cp.Dir = repoRoot
	copyright, err := cp.Output()
	if err != nil {
		t.Fatalf("hack/deb-copyright.sh: %v", err)
	}
	if err := os.WriteFile(filepath.Join(stage, "copyright"), copyright, 0o644); err != nil {
		t.Fatal(err)
	}
	var debs []string
	for _, version := range versions {
		goRun(t, []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=" + runtime.GOARCH},
			"build", "-trimpath", "-ldflags", "-s -w -X github.com/bgplb/bgplb/internal/version.Version="+version,
			"-o", filepath.Join(stage, "bgplb-routeragent"), "./cmd/bgplb-routeragent")
		deb := filepath.Join(dir, fmt.Sprintf("bgplb-routeragent_%s_%s.deb", version, runtime.GOARCH))
		cmd := exec.Command(nfpm(t), "package", "--config", "packaging/nfpm.yaml", "--packager", "deb", "--target", deb)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "ARCH="+runtime.GOARCH, "DEB_VERSION="+version)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nfpm package: %v\n%s", err, out)
		}
		debs = append(debs, deb)
	}
	return debs
}

func goRun(t testing.TB, env []string, args ...string) {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}
