package install

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/bgplb/bgplb/routeragent/config"
)

var (
	debMu    sync.Mutex
	debCache = map[string]string{}
	debDir   string
)

// buildDeb builds the router agent for arch and packages it with nfpm and
// packaging/nfpm.yaml exactly as `make deb` does, in a scratch tree (so a
// concurrent `make deb` is not disturbed). Packages are cached per test run.
func buildDeb(t *testing.T, arch, version string) string {
	t.Helper()
	debMu.Lock()
	defer debMu.Unlock()
	key := arch + "_" + version
	if p, ok := debCache[key]; ok {
		return p
	}
	if debDir == "" {
		d, err := os.MkdirTemp("", "bgplb-deb-test-")
		if err != nil {
			t.Fatal(err)
		}
		debDir = d
	}
	work := filepath.Join(debDir, key)
	stage := filepath.Join(work, "dist", "build", "stage")
	if err := os.MkdirAll(stage, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"packaging", "routeragent", "docs"} {
		if err := os.Symlink(filepath.Join(root, d), filepath.Join(work, d)); err != nil && !os.IsExist(err) {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(stage, "bgplb-routeragent")
	cmd := exec.Command("go", "build", "-trimpath",
		"-ldflags", "-s -w -X github.com/bgplb/bgplb/internal/version.Version="+version,
		"-o", bin, "./cmd/bgplb-routeragent")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build cmd/bgplb-routeragent for %s: %v\n%s", arch, err, out)
	}
	// The man pages and completion script, as `make deb` generates them.
	gen := exec.Command("go", "run", "-ldflags", "-X github.com/bgplb/bgplb/internal/version.Version="+version,
		"./routeragent/cli/gendoc", "-out", stage)
	gen.Dir = root
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("routeragent/cli/gendoc: %v\n%s", err, out)
	}
	// The copyright file, as `make deb` generates it.
	cp := exec.Command("hack/deb-copyright.sh")
	cp.Dir = root
	copyright, err := cp.Output()
	if err != nil {
		t.Fatalf("hack/deb-copyright.sh: %v", err)
	}
	if err := os.WriteFile(filepath.Join(stage, "copyright"), copyright, 0o644); err != nil {
		t.Fatal(err)
	}
	deb := filepath.Join(debDir, fmt.Sprintf("bgplb-routeragent_%s_%s.deb", version, arch))
	run(t, work, []string{"ARCH=" + arch, "DEB_VERSION=" + version}, tool(t, "nfpm"),
		"package", "--config", "packaging/nfpm.yaml", "--packager", "deb", "--target", deb)
	debCache[key] = deb
	return deb
}

func TestMain(m *testing.M) {
	code := m.Run()
	if debDir != "" {
		os.RemoveAll(debDir)
	}
	os.Exit(code)
}

func requireTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s is required (Debian package dpkg): %v", name, err)
	}
}

// The .deb holds what a router needs, with the right modes, conffiles and
// control fields, and every file equals its source.
func TestDebContents(t *testing.T) {
	requireTool(t, "dpkg-deb")
	deb := buildDeb(t, runtime.GOARCH, "0.0.0~test1")

	fields := map[string]string{}
	for _, f := range []string{"Package", "Version", "Architecture", "Depends", "Section", "Maintainer", "Description"} {
		fields[f] = strings.TrimSpace(run(t, "", nil, "dpkg-deb", "--field", deb, f))
	}
	for f, want := range map[string]string{"Package": "bgplb-routeragent", "Version": "0.0.0~test1", "Architecture": runtime.GOARCH, "Depends": "iptables, adduser", "Section": "net"} {
		if fields[f] != want {
			t.Errorf("control field %s = %q, want %q", f, fields[f], want)
		}
	}

	info := run(t, "", nil, "dpkg-deb", "--info", deb)
	for _, s := range []string{"postinst", "prerm", "postrm", "conffiles"} {
		if !strings.Contains(info, s) {
			t.Errorf("dpkg-deb --info lacks %s:\n%s", s, info)
		}
	}
	conffiles := strings.Fields(run(t, "", nil, "dpkg-deb", "--info", deb, "conffiles"))
	slices.Sort(conffiles)
	if diff := cmp.Diff([]string{"/etc/bgplb/routeragent.yaml", "/etc/ferm/ferm.d/bgplb.conf", "/etc/iproute2/rt_protos.d/bgplb.conf"}, conffiles); diff != "" {
		t.Errorf("conffiles (-want +got):\n%s", diff)
	}

	// Listing: path -> mode.
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(run(t, "", nil, "dpkg-deb", "--contents", deb)), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || strings.HasSuffix(f[5], "/") {
			continue
		}
		if f[1] != "root/root" {
			t.Errorf("%s owned by %s", f[5], f[1])
		}
		got[strings.TrimPrefix(f[5], ".")] = f[0]
	}
	want := map[string]string{
		"/usr/sbin/bgplb-routeragent":                              "-rwxr-xr-x",
		"/lib/systemd/system/bgplb-routeragent.service":            "-rw-r--r--",
		"/lib/systemd/system/nftables.service.d/bgplb.conf":        "-rw-r--r--",
		"/etc/bgplb/routeragent.yaml":                              "-rw-r-----",
		"/usr/lib/tmpfiles.d/bgplb-routeragent.conf":               "-rw-r--r--",
		"/etc/iproute2/rt_protos.d/bgplb.conf":                     "-rw-r--r--",
		"/etc/ferm/ferm.d/bgplb.conf":                              "-rw-r--r--",
		"/usr/share/doc/bgplb-routeragent/install.md":              "-rw-r--r--",
		"/usr/share/doc/bgplb-routeragent/copyright":               "-rw-r--r--",
		"/usr/share/bash-completion/completions/bgplb-routeragent": "-rw-r--r--",
	}
	for _, p := range manPages {
		want["/usr/share/man/man8/"+p+".8.gz"] = "-rw-r--r--"
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("package files (-want +got):\n%s", diff)
	}

	x := t.TempDir()
	run(t, "", nil, "dpkg-deb", "--extract", deb, x)
	for dst, src := range map[string]string{
		"lib/systemd/system/bgplb-routeragent.service":     "packaging/systemd/bgplb-routeragent.service",
		"lib/systemd/system/nftables.service.d/bgplb.conf": "packaging/systemd/nftables.service.d/bgplb.conf",
		"etc/bgplb/routeragent.yaml":                       "packaging/routeragent.yaml",
		"etc/iproute2/rt_protos.d/bgplb.conf":              "packaging/iproute2/bgplb.conf",
		"etc/ferm/ferm.d/bgplb.conf":                       "routeragent/firewall/ferm-hook.conf",
		"usr/share/doc/bgplb-routeragent/install.md":       "docs/install.md",
	} {
		b, err := os.ReadFile(filepath.Join(x, dst))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, readFile(t, src)) {
			t.Errorf("/%s differs from %s", dst, src)
		}
	}
	bin := filepath.Join(x, "usr/sbin/bgplb-routeragent")
	checkStatic(t, bin, map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[runtime.GOARCH])

	// The route protocol named for iproute2 is the one the agent uses.
	num, name := rtProto(t, readFile(t, "packaging/iproute2/bgplb.conf"))
	if num != config.DefaultProtocol || name != "bgplb" {
		t.Errorf("rt_protos.d names %d %q, the agent uses %d", num, name, config.DefaultProtocol)
	}
	if n2, name2 := rtProto(t, []byte(run(t, "", nil, bin, "rt-protos"))); n2 != num || name2 != name {
		t.Errorf("bgplb-routeragent rt-protos says %d %s, the package ships %d %s", n2, name2, num, name)
	}

	t.Run("man", func(t *testing.T) { checkManPages(t, x) })
	t.Run("copyright", func(t *testing.T) { checkCopyright(t, x, bin) })
	// The completion script is the one the shipped binary prints.
	if b, err := os.ReadFile(filepath.Join(x, "usr/share/bash-completion/completions/bgplb-routeragent")); err != nil {
		t.Error(err)
	} else if want := run(t, "", nil, bin, "completion", "bash"); string(b) != want || !strings.Contains(want, "__start_bgplb-routeragent") {
		t.Errorf("the shipped bash completion differs from `bgplb-routeragent completion bash`")
	}
	t.Run("conffile", func(t *testing.T) { checkConffile(t, bin) })
	t.Run("unit", func(t *testing.T) { checkUnit(t, x) })
}

// checkCopyright: /usr/share/doc/<package>/copyright is in Debian's
// machine-readable format and names bgplb's license and, with its version,
// every module linked into the shipped binary (from the binary's own build
// information), each with a license; MIT, BSD and ISC texts are included.
func checkCopyright(t *testing.T, x, bin string) {
	b, err := os.ReadFile(filepath.Join(x, "usr/share/doc/bgplb-routeragent/copyright"))
	if err != nil {
		t.Fatal(err)
	}
	c := string(b)
	for _, want := range []string{
		"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n",
		"Files: *\nCopyright: 2026 The bgplb Authors\nLicense: Apache-2.0\n",
		"/usr/share/common-licenses/Apache-2.0",
	} {
		if !strings.Contains(c, want) {
			t.Errorf("copyright lacks %q", want)
		}
	}
	mods := 0
	for _, line := range strings.Split(run(t, "", nil, "go", "version", "-m", bin), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "dep" {
			continue
		}
		mods++
		stanza := "Comment: " + f[1] + " " + f[2] + "\n"
		if !strings.Contains(c, stanza) {
			t.Errorf("copyright has no stanza for %s %s", f[1], f[2])
		}
	}
	if mods < 10 {
		t.Errorf("go version -m listed %d modules; the test reads the build information wrong", mods)
	}
	if n := strings.Count(c, "Permission is hereby granted, free of charge"); n == 0 {
		t.Error("no MIT license text included, though MIT modules are linked")
	}
}

// manPages are the man pages the package ships: one per command.
var manPages = []string{"bgplb-routeragent", "bgplb-routeragent-run", "bgplb-routeragent-status",
	"bgplb-routeragent-doctor", "bgplb-routeragent-trace", "bgplb-routeragent-flush", "bgplb-routeragent-uninstall",
	"bgplb-routeragent-check-config", "bgplb-routeragent-poke", "bgplb-routeragent-rt-protos",
	"bgplb-routeragent-version", "bgplb-routeragent-completion", "bgplb-routeragent-completion-bash",
	"bgplb-routeragent-completion-zsh", "bgplb-routeragent-completion-fish"}

// checkManPages: each page is compressed as `gzip -9n` (Debian policy:
// maximum compression, no name nor time stamp), is a section 8 page of its
// command, and man(1) renders it without a warning; the main page names the
// default command, the exit codes and every command.
func checkManPages(t *testing.T, x string) {
	for _, p := range manPages {
		path := filepath.Join(x, "usr/share/man/man8", p+".8.gz")
		z, err := os.ReadFile(path)
		if err != nil {
			t.Error(err)
			continue
		}
		// RFC 1952: FLG (byte 3) has no FNAME, MTIME (4-7) is 0, XFL (8)
		// is 2, "maximum compression".
		if len(z) < 10 || z[0] != 0x1f || z[1] != 0x8b || z[3]&0x08 != 0 || !bytes.Equal(z[4:8], []byte{0, 0, 0, 0}) || z[8] != 2 {
			t.Errorf("%s.8.gz is not compressed as gzip -9n: header % x", p, z[:min(len(z), 10)])
			continue
		}
		zr, err := gzip.NewReader(bytes.NewReader(z))
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		page, err := io.ReadAll(zr)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if th := fmt.Sprintf(".TH \"%s\" \"8\"", strings.ToUpper(p)); !bytes.Contains(page, []byte(th)) {
			t.Errorf("%s lacks %s:\n%s", p, th, page)
		}
		if _, err := exec.LookPath("man"); err == nil {
			cmd := exec.Command("man", "--warnings", "-l", path)
			cmd.Env = append(os.Environ(), "MANWIDTH=80")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if out, err := cmd.Output(); err != nil || stderr.Len() > 0 || !bytes.Contains(out, []byte("SYNOPSIS")) {
				t.Errorf("man -l %s: %v\n%s", p, err, stderr.String())
			}
		}
		if p != "bgplb-routeragent" {
			continue
		}
		wants := []string{"Without a command it runs the agent", "Exit status: 0 ok, 1 runtime failure, 2 bad configuration or usage", "\\fB--log-level\\fP"}
		for _, sub := range manPages[1:] {
			if !strings.HasPrefix(sub, "bgplb-routeragent-completion-") { // on the completion page
				wants = append(wants, sub+"(8)")
			}
		}
		for _, want := range wants {
			if !bytes.Contains(page, []byte(want)) {
				t.Errorf("%s lacks %q", p, want)
			}
		}
	}
}

func rtProto(t *testing.T, b []byte) (int, string) {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		n, err := strconv.Atoi(f[0])
		if err != nil || len(f) != 2 {
			t.Fatalf("bad rt_protos line %q", sc.Text())
		}
		return n, f[1]
	}
	t.Fatalf("no rt_protos entry in %q", b)
	return 0, ""
}

func checkStatic(t *testing.T, bin string, machine elf.Machine) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != machine {
		t.Errorf("%s is for %v, want %v", bin, f.Machine, machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has an ELF interpreter: not static", bin)
		}
	}
}

// uncomment turns the shipped, commented config into the example it
// documents: "#key" and "#  nested" lines lose their "#", prose ("# text")
// stays a comment.
func uncomment(b []byte) []byte {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "#") && len(l) > 1 && (l[1] != ' ' || strings.HasPrefix(l, "#  ")) {
			l = l[1:]
		}
		out = append(out, l)
	}
	return []byte(strings.Join(out, "\n"))
}

// The shipped config: an unedited one can never run (it carries the marker
// and is not a valid config), and the example it documents is valid, uses
// only real keys and documents the real defaults.
func checkConffile(t *testing.T, bin string) {
	shipped := readFile(t, "packaging/routeragent.yaml")
	if !bytes.HasPrefix(shipped, []byte("# BGPLB-UNEDITED")) {
		t.Errorf("the shipped config must start with the BGPLB-UNEDITED marker the maintainer scripts look for")
	}
	if _, err := config.Parse(shipped); err == nil {
		t.Errorf("the unedited shipped config is a valid config: the agent would start with it")
	}
	example := uncomment(shipped)
	// The example authenticates its prefix neighbour with a password file,
	// which Parse reads: point it at one of the test's.
	secret := filepath.Join(t.TempDir(), "md5.secret")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	example = bytes.ReplaceAll(example, []byte("/etc/bgplb/md5.secret"), []byte(secret))
	full, err := config.Parse(example)
	if err != nil {
		t.Fatalf("the documented example does not parse: %v\n%s", err, example)
	}
	minimal, err := config.Parse([]byte(fmt.Sprintf("asn: %d\nrouterID: %s\nneighbors: [{prefix: %s, asn: %d, passwordFile: %s}]\nserviceSubnets: %q\nlanInterfaces: %q\n",
		full.ASN, full.RouterID, full.Neighbors[0].Prefix, full.Neighbors[0].ASN, full.Neighbors[0].PasswordFile, full.ServiceSubnets, full.LANInterfaces)))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(minimal, full, cmpopts.IgnoreUnexported(config.Config{}, config.Neighbor{})); diff != "" {
		t.Errorf("the shipped config documents values that are not the defaults (-defaults +documented):\n%s", diff)
	}
	dir := t.TempDir()
	for name, b := range map[string][]byte{"shipped.yaml": shipped, "example.yaml": example} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := runErr(dir, nil, bin, "check-config", "--config", filepath.Join(dir, "example.yaml")); err != nil {
		t.Errorf("check-config of the documented example: %v", err)
	}
	if _, err := runErr(dir, nil, bin, "check-config", "--config", filepath.Join(dir, "shipped.yaml")); err == nil {
		t.Errorf("check-config accepts the unedited config")
	}
}

// unitDirectives parses a systemd unit into key -> values.
func unitDirectives(b []byte) map[string][]string {
	d := map[string][]string{}
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, "[") {
			continue
		}
		k, v, _ := strings.Cut(l, "=")
		d[k] = append(d[k], v)
	}
	return d
}

func checkUnit(t *testing.T, x string) {
	unit := filepath.Join(x, "lib/systemd/system/bgplb-routeragent.service")
	b, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	d := unitDirectives(b)
	for k, want := range map[string]string{
		"Type":                  "notify",
		"ExecStart":             "/usr/sbin/bgplb-routeragent run --config /etc/bgplb/routeragent.yaml",
		"ExecReload":            "/bin/kill -HUP $MAINPID",
		"AmbientCapabilities":   "CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE",
		"CapabilityBoundingSet": "CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE",
		"ProtectSystem":         "strict",
		"User":                  "bgplb",
		"ReadWritePaths":        "-/run/xtables.lock",
		"RuntimeDirectory":      "bgplb",
		"StateDirectory":        "bgplb",
		"Restart":               "on-failure",
		"WantedBy":              "multi-user.target",
	} {
		if got := d[k]; len(got) != 1 || got[0] != want {
			t.Errorf("%s=%v, want %q", k, got, want)
		}
	}
	// ProtectKernelTunables would make /proc/sys read-only: no send_redirects=0.
	if v, ok := d["ProtectKernelTunables"]; ok {
		t.Errorf("ProtectKernelTunables=%v must not be set", v)
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Logf("systemd-analyze not installed (Debian package systemd): unit not verified")
		return
	}
	// systemd-analyze verify checks that the commands exist: point them at
	// the extracted binary; everything else is verified as shipped.
	dir := t.TempDir()
	rewritten := strings.ReplaceAll(string(b), "/usr/sbin/bgplb-routeragent", filepath.Join(x, "usr/sbin/bgplb-routeragent"))
	if err := os.WriteFile(filepath.Join(dir, "bgplb-routeragent.service"), []byte(rewritten), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", filepath.Join(dir, "bgplb-routeragent.service")).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	if out, err := exec.Command("systemd-analyze", "security", "--offline=true", filepath.Join(dir, "bgplb-routeragent.service")).CombinedOutput(); err == nil {
		if m := regexp.MustCompile(`Overall exposure level for .*`).Find(out); m != nil {
			t.Logf("systemd-analyze security: %s", m)
		}
	}
}

// The arm64 package: right architecture field, an AArch64 static binary.
func TestDebArm64(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the arm64 cross build")
	}
	requireTool(t, "dpkg-deb")
	deb := buildDeb(t, "arm64", "0.0.0~test1")
	if a := strings.TrimSpace(run(t, "", nil, "dpkg-deb", "--field", deb, "Architecture")); a != "arm64" {
		t.Errorf("Architecture %q", a)
	}
	x := t.TempDir()
	run(t, "", nil, "dpkg-deb", "--extract", deb, x)
	checkStatic(t, filepath.Join(x, "usr/sbin/bgplb-routeragent"), elf.EM_AARCH64)
}

// Install, upgrade, remove and purge into a scratch root with the real dpkg
// and the real maintainer scripts (dpkg --root --force-script-chrootless,
// which runs them with DPKG_ROOT set). Nothing may touch the host: systemctl,
// deb-systemd-invoke and deb-systemd-helper without DPKG_ROOT are replaced by
// stubs that record the call, and the test fails if one was made.
func TestDebInstallScratchRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: dpkg --root needs root to own the unpacked files (CI runs as root)")
	}
	requireTool(t, "dpkg")
	requireTool(t, "dpkg-deb")
	v1 := buildDeb(t, runtime.GOARCH, "0.0.0~test1")
	v2 := buildDeb(t, runtime.GOARCH, "0.0.0~test2")

	r := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "var/log"} {
		if err := os.MkdirAll(filepath.Join(r, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"var/lib/dpkg/status", "var/lib/dpkg/available"} {
		if err := os.WriteFile(filepath.Join(r, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	stubs := t.TempDir()
	calls := filepath.Join(stubs, "forbidden-calls.log")
	for _, c := range []string{"systemctl", "deb-systemd-invoke", "invoke-rc.d", "bgplb-routeragent"} {
		stub := fmt.Sprintf("#!/bin/sh\necho \"%s $*\" >> %s\nexit 1\n", c, calls)
		if err := os.WriteFile(filepath.Join(stubs, c), []byte(stub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// deb-systemd-helper honours DPKG_ROOT; refuse it without.
	realDSH, err := exec.LookPath("deb-systemd-helper")
	if err != nil {
		t.Fatalf("deb-systemd-helper is required (Debian package init-system-helpers): %v", err)
	}
	dsh := fmt.Sprintf("#!/bin/sh\nif [ -z \"$DPKG_ROOT\" ]; then echo \"deb-systemd-helper $* without DPKG_ROOT\" >> %s; exit 1; fi\nexec %s \"$@\"\n", calls, realDSH)
	if err := os.WriteFile(filepath.Join(stubs, "deb-systemd-helper"), []byte(dsh), 0o755); err != nil {
		t.Fatal(err)
	}
	env := []string{"PATH=" + stubs + ":" + os.Getenv("PATH")}
	dpkg := func(args ...string) string {
		t.Helper()
		a := append([]string{"--root=" + r, "--force-script-chrootless", "--force-depends", "--log=/dev/null"}, args...)
		cmd := exec.Command("dpkg", a...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	version := func() string {
		out, _ := exec.Command("dpkg-query", "--admindir="+filepath.Join(r, "var/lib/dpkg"), "-W", "-f=${Version} ${Status}", "bgplb-routeragent").CombinedOutput()
		return strings.TrimSpace(string(out))
	}
	exists := func(p string) bool { _, err := os.Lstat(filepath.Join(r, p)); return err == nil }
	const wants = "etc/systemd/system/multi-user.target.wants/bgplb-routeragent.service"

	// Install: enabled, not started, the state folder exists, the user is
	// told what to edit.
	out := dpkg("--install", v1)
	if !strings.Contains(out, "edit /etc/bgplb/routeragent.yaml") {
		t.Errorf("postinst does not tell the user to edit the config:\n%s", out)
	}
	if v := version(); v != "0.0.0~test1 install ok installed" {
		t.Errorf("after install: %q", v)
	}
	if target, err := os.Readlink(filepath.Join(r, wants)); err != nil || target != "/lib/systemd/system/bgplb-routeragent.service" {
		t.Errorf("unit not enabled: %q %v", target, err)
	}
	if st, err := os.Stat(filepath.Join(r, "var/lib/bgplb")); err != nil || st.Mode().Perm() != 0o750 {
		t.Errorf("/var/lib/bgplb: %v %v", st, err)
	}

	// The administrator edits the config; an upgrade keeps the edit.
	conf := filepath.Join(r, "etc/bgplb/routeragent.yaml")
	edited := append(bytes.TrimPrefix(readFile(t, "packaging/routeragent.yaml"), []byte("# BGPLB-UNEDITED")), []byte("# edited by the admin\n")...)
	if err := os.WriteFile(conf, edited, 0o640); err != nil {
		t.Fatal(err)
	}
	out = dpkg("--install", v2)
	if v := version(); v != "0.0.0~test2 install ok installed" {
		t.Errorf("after upgrade: %q", v)
	}
	if b, _ := os.ReadFile(conf); !bytes.Equal(b, edited) {
		t.Errorf("upgrade did not keep the edited conffile:\n%s", out)
	}
	if !exists(wants) {
		t.Errorf("upgrade disabled the unit")
	}

	// Remove: the binary goes, the config stays, prerm does not touch the host.
	out = dpkg("--remove", "bgplb-routeragent")
	if !strings.Contains(out, "not stopping the service nor running") {
		t.Errorf("prerm output:\n%s", out)
	}
	if exists("usr/sbin/bgplb-routeragent") || !exists("etc/bgplb/routeragent.yaml") {
		t.Errorf("after remove: binary present=%v, config present=%v", exists("usr/sbin/bgplb-routeragent"), exists("etc/bgplb/routeragent.yaml"))
	}

	// Purge: nothing of ours is left.
	dpkg("--purge", "bgplb-routeragent")
	var left []string
	filepath.WalkDir(r, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(r, p)
		if strings.HasPrefix(rel, "var/lib/dpkg") {
			return nil
		}
		if strings.Contains(rel, "bgplb") {
			left = append(left, rel)
		}
		return nil
	})
	if len(left) > 0 {
		t.Errorf("after purge these remain: %v", left)
	}
	if b, err := os.ReadFile(calls); err == nil && len(b) > 0 {
		t.Errorf("the maintainer scripts tried to act on the host:\n%s", b)
	}
}
