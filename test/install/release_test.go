package install

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// The release test's image repository and version: any registry name works
// for the artifacts; the push check uses a loopback registry of its own.
const (
	releaseRepo    = "registry.example/bgplb"
	releaseVersion = "v0.0.0-releasetest"
)

// `make release` on a clean checkout of HEAD produces every artifact with
// checksums that verify, and the images are what the manifests expect: an
// OCI index with amd64 and arm64, user 65532, the program as entrypoint, and
// a binary that runs and knows its version. One test, so that the images,
// the .debs and the tools are built once (about 3-6 minutes on a loaded
// 2-core machine, most of it the arm64 builds).
func TestRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: make release builds two architectures (minutes)")
	}
	src := t.TempDir()
	run(t, root, nil, "git", "clone", "--quiet", "--no-hardlinks", root, src)
	run(t, src, nil, "make", "--no-print-directory", "release",
		"VERSION="+releaseVersion, "IMAGE_REPO="+releaseRepo,
		"KUSTOMIZE="+tool(t, "kustomize"), "HELM="+tool(t, "helm"), "NFPM="+tool(t, "nfpm"))
	out := filepath.Join(src, "dist", "release")

	// Every artifact, and nothing unexpected.
	debVersion := strings.TrimSpace(run(t, src, nil, "hack/deb-version.sh"))
	want := []string{
		"SHA256SUMS",
		"bgplb-0.0.0-releasetest.tgz",
		"bgplb-controller-" + releaseVersion + ".oci.tar",
		"bgplb-routeragent_" + debVersion + "_amd64.deb",
		"bgplb-routeragent_" + debVersion + "_arm64.deb",
		"bgplb-speaker-" + releaseVersion + ".oci.tar",
		"install.yaml",
	}
	entries, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if !slices.Equal(got, want) {
		t.Fatalf("dist/release holds %v, want %v", got, want)
	}
	sums := run(t, out, nil, "sha256sum", "-c", "--strict", "SHA256SUMS")
	if n := strings.Count(sums, ": OK"); n != len(want)-1 {
		t.Errorf("SHA256SUMS verified %d files, want %d:\n%s", n, len(want)-1, sums)
	}

	// The manifest installs exactly the images the release built.
	wantImages := map[string]string{
		"Deployment": releaseRepo + "/bgplb-controller:" + releaseVersion,
		"DaemonSet":  releaseRepo + "/bgplb-speaker:" + releaseVersion,
	}
	for kind, img := range wantImages {
		objs := byKind(decode(t, readAbs(t, filepath.Join(out, "install.yaml"))), kind)
		if len(objs) != 1 {
			t.Fatalf("install.yaml has %d %ss", len(objs), kind)
		}
		if got := images(objs[0]); !slices.Equal(got, []string{img}) {
			t.Errorf("install.yaml %s images %v, want [%s]", kind, got, img)
		}
	}

	// The chart's version and appVersion follow VERSION; its images are
	// under IMAGE_REPO at VERSION (the packaged copy only: the tree's chart
	// is untouched).
	chartYAML := fileInTgz(t, filepath.Join(out, "bgplb-0.0.0-releasetest.tgz"), "bgplb/Chart.yaml")
	var chart struct{ Version, AppVersion string }
	if err := yaml.Unmarshal(chartYAML, &chart); err != nil {
		t.Fatal(err)
	}
	if chart.Version != "0.0.0-releasetest" || chart.AppVersion != releaseVersion {
		t.Errorf("packaged chart version %q appVersion %q, want 0.0.0-releasetest and %s", chart.Version, chart.AppVersion, releaseVersion)
	}
	rendered := run(t, root, nil, tool(t, "helm"), "template", "bgplb", filepath.Join(out, "bgplb-0.0.0-releasetest.tgz"))
	for _, o := range decode(t, []byte(rendered)) {
		for _, img := range images(o) {
			if want := releaseRepo + "/bgplb-" + o.GetLabels()["app.kubernetes.io/component"] + ":" + releaseVersion; img != want {
				t.Errorf("packaged chart %s %s image %q, want %s", o.GetKind(), o.GetName(), img, want)
			}
		}
	}
	if st := run(t, src, nil, "git", "status", "--porcelain"); st != "" {
		t.Errorf("make release changed the tree (it should write into copies and dist/ only):\n%s", st)
	}

	// The images, read back with go-containerregistry (bgplb-image inspect,
	// built by make image).
	inspector := filepath.Join(src, "bin", "bgplb-image")
	for _, prog := range []string{"bgplb-controller", "bgplb-speaker"} {
		t.Run(prog, func(t *testing.T) {
			layoutDir := t.TempDir()
			run(t, root, nil, "tar", "-C", layoutDir, "-xf", filepath.Join(out, prog+"-"+releaseVersion+".oci.tar"))
			checkImage(t, inspector, layoutDir, prog)
		})
	}
	t.Run("image-push", func(t *testing.T) { checkPush(t, src, inspector) })
}

// checkPush: `make image-push` sends both images to a registry given by
// IMAGE_REPO (here an in-memory one on 127.0.0.1, `bgplb-image registry`),
// and what the registry then serves is the index that was built: the same
// digest and both platforms.
func checkPush(t *testing.T, src, inspector string) {
	addrFile := filepath.Join(t.TempDir(), "addr")
	reg := exec.Command(inspector, "registry", "-listen", "127.0.0.1:0", "-addr-file", addrFile)
	reg.Stderr = os.Stderr
	if err := reg.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = reg.Process.Kill()
		_ = reg.Wait()
	})
	var addr []byte
	for i := 0; i < 200; i++ {
		if b, err := os.ReadFile(addrFile); err == nil && len(b) > 0 {
			addr = b
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if addr == nil {
		t.Fatal("the loopback registry did not start")
	}
	repo := string(addr) + "/bgplb"
	run(t, src, nil, "make", "--no-print-directory", "image-push", "VERSION="+releaseVersion, "IMAGE_REPO="+repo)
	for _, prog := range []string{"bgplb-controller", "bgplb-speaker"} {
		var local, pushed inspected
		layoutDir := t.TempDir()
		run(t, root, nil, "tar", "-C", layoutDir, "-xf", filepath.Join(src, "dist", "release", prog+"-"+releaseVersion+".oci.tar"))
		if err := json.Unmarshal([]byte(run(t, root, nil, inspector, "inspect", "-layout", layoutDir)), &local); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(run(t, root, nil, inspector, "inspect", "-ref", repo+"/"+prog+":"+releaseVersion)), &pushed); err != nil {
			t.Fatal(err)
		}
		if pushed.Digest == "" || pushed.Digest != local.Digest || len(pushed.Images) != 2 {
			t.Errorf("%s in the registry: index %s with %d images, built %s with %d", prog, pushed.Digest, len(pushed.Images), local.Digest, len(local.Images))
		}
	}
}

// inspected is what `bgplb-image inspect` prints.
type inspected struct {
	Digest      string            `json:"digest"`
	MediaType   string            `json:"mediaType"`
	Annotations map[string]string `json:"annotations"`
	Images      []struct {
		Platform   string   `json:"platform"`
		MediaType  string   `json:"mediaType"`
		User       string   `json:"user"`
		Entrypoint []string `json:"entrypoint"`
		Cmd        []string `json:"cmd"`
		Files      []string `json:"files"`
	} `json:"images"`
}

func checkImage(t *testing.T, inspector, layoutDir, prog string) {
	var info inspected
	if err := json.Unmarshal([]byte(run(t, root, nil, inspector, "inspect", "-layout", layoutDir)), &info); err != nil {
		t.Fatal(err)
	}
	if info.MediaType != "application/vnd.oci.image.index.v1+json" {
		t.Errorf("index media type %q", info.MediaType)
	}
	if n := info.Annotations["io.containerd.image.name"]; n != releaseRepo+"/"+prog+":"+releaseVersion {
		t.Errorf("index.json names the image %q", n)
	}
	var platforms []string
	for _, img := range info.Images {
		platforms = append(platforms, img.Platform)
		if img.MediaType != "application/vnd.oci.image.manifest.v1+json" {
			t.Errorf("%s: manifest media type %q", img.Platform, img.MediaType)
		}
		// The manifests run it as 65532 with command [/<prog>]; the image
		// says the same, so that it also runs as they expect without them.
		if img.User != "65532:65532" {
			t.Errorf("%s: user %q, want 65532:65532", img.Platform, img.User)
		}
		if !slices.Equal(img.Entrypoint, []string{"/" + prog}) || len(img.Cmd) != 0 {
			t.Errorf("%s: entrypoint %q cmd %q, want [/%s] and none", img.Platform, img.Entrypoint, img.Cmd, prog)
		}
		wantFiles := []string{
			prog + " -rwxr-xr-x 0:0",
			"etc drwxr-xr-x 0:0",
			"etc/group -rw-r--r-- 0:0",
			"etc/passwd -rw-r--r-- 0:0",
		}
		if !slices.Equal(img.Files, wantFiles) {
			t.Errorf("%s: files %q, want %q", img.Platform, img.Files, wantFiles)
		}
	}
	if !slices.Equal(platforms, []string{"linux/amd64", "linux/arm64"}) {
		t.Fatalf("index platforms %v, want linux/amd64 and linux/arm64", platforms)
	}

	// /etc/passwd names 65532 (what `id`, and logs naming the user, see).
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	run(t, root, nil, inspector, "inspect", "-layout", layoutDir, "-platform", "linux/amd64", "-extract", "/etc/passwd", "-o", passwd)
	if !strings.Contains(string(readAbs(t, passwd)), "nonroot:x:65532:65532:") {
		t.Errorf("/etc/passwd has no nonroot 65532:\n%s", readAbs(t, passwd))
	}
	// The amd64 binary runs here and reports the release's version.
	bin := filepath.Join(dir, prog)
	run(t, root, nil, inspector, "inspect", "-layout", layoutDir, "-platform", "linux/amd64", "-extract", "/"+prog, "-o", bin)
	if got := strings.TrimSpace(run(t, root, nil, bin, "--version")); got != releaseVersion {
		t.Errorf("%s --version printed %q, want %q", prog, got, releaseVersion)
	}
}

// fileInTgz returns one file of a gzipped tar (a packaged chart).
func fileInTgz(t *testing.T, tgz, name string) []byte {
	t.Helper()
	f, err := os.Open(tgz)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			t.Fatalf("%s has no %s", tgz, name)
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == name {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}

func readAbs(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
