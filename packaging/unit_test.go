// Package packaging holds no code: its tests check the files the router
// agent's .deb ships (the systemd unit, the tmpfiles.d entry, the
// maintainer scripts) as they are in the tree. test/install builds the
// package itself.
package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/bgplb/bgplb/internal/netnstest"
)

const unit = "systemd/bgplb-routeragent.service"

// maxExposure is the highest `systemd-analyze security` exposure score the
// shipped unit may have (issue 11: it was 4.3 while the agent ran as root).
const maxExposure = 2.0

func requireAnalyze(t *testing.T) {
	t.Helper()
	_, err := exec.LookPath("systemd-analyze")
	netnstest.RequirePrecondition(t, err, "systemd-analyze is not installed (Debian package systemd)")
}

var exposureRE = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)

// TestUnitExposure: `systemd-analyze security --offline` rates the shipped
// unit at maxExposure or lower.
func TestUnitExposure(t *testing.T) {
	requireAnalyze(t)
	out, err := exec.Command("systemd-analyze", "security", "--offline=true", "--no-pager", unit).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := exposureRE.FindSubmatch(out)
	if m == nil {
		t.Fatalf("no overall exposure level in:\n%s", out)
	}
	score, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("exposure %.1f", score)
	if score > maxExposure {
		t.Errorf("exposure level %.1f, want at most %.1f:\n%s", score, maxExposure, out)
	}
}

// TestUnitVerify: `systemd-analyze verify` accepts the unit (offline: it
// checks directives and that the commands exist, so ExecStart points at a
// stand-in executable).
func TestUnitVerify(t *testing.T) {
	requireAnalyze(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "bgplb-routeragent")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	b := strings.ReplaceAll(string(read(t, unit)), "/usr/sbin/bgplb-routeragent", bin)
	path := filepath.Join(dir, "bgplb-routeragent.service")
	if err := os.WriteFile(path, []byte(b), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestUnitPrivileges: the unit runs as the user postinst creates, with
// exactly the three capabilities, and the tmpfiles.d entry it applies lets
// that user's group open the xtables lock.
func TestUnitPrivileges(t *testing.T) {
	d := directives(read(t, unit))
	for k, want := range map[string]string{
		"User":                    "bgplb",
		"Group":                   "bgplb",
		"AmbientCapabilities":     "CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE",
		"CapabilityBoundingSet":   "CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE",
		"NoNewPrivileges":         "yes",
		"ProtectKernelModules":    "yes",
		"ProtectProc":             "invisible",
		"ProtectSystem":           "strict",
		"ReadWritePaths":          "-/run/xtables.lock",
		"RuntimeDirectory":        "bgplb",
		"StateDirectory":          "bgplb",
		"RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
		"ExecStartPre":            "/usr/sbin/bgplb-routeragent check-config --config /etc/bgplb/routeragent.yaml|+/bin/systemd-tmpfiles --create /usr/lib/tmpfiles.d/bgplb-routeragent.conf",
	} {
		if got := strings.Join(d[k], "|"); got != want {
			t.Errorf("%s=%q, want %q", k, got, want)
		}
	}
	// ProtectKernelTunables makes /proc/sys read-only (no send_redirects=0);
	// ProcSubset=pid hides /proc/sys altogether.
	for _, k := range []string{"ProtectKernelTunables", "ProcSubset", "PrivateNetwork", "PrivateUsers"} {
		if v, ok := d[k]; ok {
			t.Errorf("%s=%v breaks the agent", k, v)
		}
	}
	if len(d["MemoryMax"]) != 1 || len(d["SystemCallFilter"]) == 0 {
		t.Errorf("MemoryMax=%v SystemCallFilter=%v: want both", d["MemoryMax"], d["SystemCallFilter"])
	}
	// NOTIFY_SOCKET (/run/systemd/notify) must stay reachable: Type=notify.
	for _, p := range strings.Fields(strings.Join(d["InaccessiblePaths"], " ")) {
		p = strings.TrimPrefix(p, "-")
		if p == "/run/systemd/notify" || strings.HasPrefix("/run/systemd/notify", p+"/") {
			t.Errorf("InaccessiblePaths %s hides the notify socket", p)
		}
	}

	tmp := strings.Fields(lastLine(t, "tmpfiles/bgplb-routeragent.conf"))
	if want := []string{"f", "/run/xtables.lock", "0640", "root", "bgplb", "-"}; strings.Join(tmp, " ") != strings.Join(want, " ") {
		t.Errorf("tmpfiles.d entry %q, want %q", tmp, want)
	}
	post := string(read(t, "scripts/postinst"))
	for _, want := range []string{"USER=bgplb", `addgroup --system --quiet "$USER"`, `adduser --system --quiet --ingroup "$USER"`, `systemd-tmpfiles --create "$TMPFILES"`, "TMPFILES=/usr/lib/tmpfiles.d/bgplb-routeragent.conf"} {
		if !strings.Contains(post, want) {
			t.Errorf("postinst lacks %q", want)
		}
	}
	for _, s := range []string{"scripts/postrm", "scripts/prerm"} {
		if b := string(read(t, s)); strings.Contains(b, "deluser") || strings.Contains(b, "delgroup") {
			t.Errorf("%s removes the system user (Debian policy: leave it)", s)
		}
	}
}

func read(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func lastLine(t *testing.T, p string) string {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(string(read(t, p))), "\n")
	return lines[len(lines)-1]
}

// directives parses a unit into key -> values, in order.
func directives(b []byte) map[string][]string {
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

// TestUnitAllowsBFD: the unit lets the agent run BFD (neighbors[].bfd):
// IPv4 and IPv6 sockets, a bind to UDP 3784 (no SocketBind* or IPAddress*
// directive that would need to allow it), and the socket calls it makes.
func TestUnitAllowsBFD(t *testing.T) {
	d := directives(read(t, unit))
	fams := strings.Fields(strings.Join(d["RestrictAddressFamilies"], " "))
	for _, f := range []string{"AF_INET", "AF_INET6"} {
		if !slices.Contains(fams, f) {
			t.Errorf("RestrictAddressFamilies=%v lacks %s", fams, f)
		}
	}
	for _, k := range []string{"SocketBindDeny", "SocketBindAllow", "IPAddressDeny", "IPAddressAllow", "PrivateNetwork"} {
		if v, ok := d[k]; ok {
			// If one is ever added, it must allow udp:3784 (and this
			// test must say so).
			t.Errorf("%s=%v: check that BFD's UDP 3784 stays allowed, then update this test", k, v)
		}
	}
	for _, f := range d["SystemCallFilter"] {
		if !strings.HasPrefix(f, "~") {
			continue
		}
		for _, call := range []string{"setsockopt", "recvmsg", "sendmsg", "sendto", "bind", "@network-io"} {
			if slices.Contains(strings.Fields(strings.TrimPrefix(f, "~")), call) {
				t.Errorf("SystemCallFilter=%s denies %s, which BFD uses", f, call)
			}
		}
	}
}
