package sysctl

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bgplb/bgplb/internal/netnstest"
	"github.com/google/go-cmp/cmp"
)

// fakeRoot builds a sysctl tree with send_redirects per name.
func fakeRoot(t *testing.T, vals map[string]int) string {
	t.Helper()
	root := t.TempDir()
	for name, v := range vals {
		setFake(t, root, name, v)
	}
	return root
}

func setFake(t *testing.T, root, name string, v int) {
	t.Helper()
	dir := filepath.Join(root, "net", "ipv4", "conf", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "send_redirects"), []byte(itoa(v)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func itoa(v int) string { return map[int]string{0: "0", 1: "1"}[v] }

func TestRead(t *testing.T) {
	tests := []struct {
		name string
		vals map[string]int
		want Report
		ok   bool
	}{
		{"kernel defaults", map[string]int{"all": 1, "default": 1, "lan0": 1}, Report{All: 1, Default: 1,
			Interfaces: map[string]InterfaceReport{"lan0": {Value: 1, Effective: 1}, "gone": {Value: -1, Effective: -1, Missing: true}}}, false},
		{"only the interface off: all still sends", map[string]int{"all": 1, "default": 0, "lan0": 0}, Report{All: 1,
			Interfaces: map[string]InterfaceReport{"lan0": {Value: 0, Effective: 1}, "gone": {Value: -1, Effective: -1, Missing: true}}}, false},
		{"only all off: the interface still sends", map[string]int{"all": 0, "default": 0, "lan0": 1}, Report{
			Interfaces: map[string]InterfaceReport{"lan0": {Value: 1, Effective: 1}, "gone": {Value: -1, Effective: -1, Missing: true}}}, false},
		{"all off", map[string]int{"all": 0, "default": 0, "lan0": 0}, Report{
			Interfaces: map[string]InterfaceReport{"lan0": {}, "gone": {Value: -1, Effective: -1, Missing: true}}}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Redirects{Root: fakeRoot(t, tc.vals)}.Read([]string{"lan0", "gone"})
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
			if got.Ok() != tc.ok {
				t.Errorf("Ok() = %v", got.Ok())
			}
		})
	}
}

func TestApplyRecordsOnceAndRestores(t *testing.T) {
	root := fakeRoot(t, map[string]int{"all": 1, "default": 1, "lan0": 1, "lan1": 0})
	stateFile := filepath.Join(t.TempDir(), "sub", "sysctl-state.json")
	r := Redirects{Root: root, StateFile: stateFile}
	ifaces := []string{"lan0", "lan1", "lan2"}

	rep, err := r.Apply(ifaces)
	if err != nil {
		t.Fatal(err)
	}
	want := Report{Interfaces: map[string]InterfaceReport{"lan0": {}, "lan1": {}, "lan2": {Value: -1, Effective: -1, Missing: true}}}
	if d := cmp.Diff(want, rep); d != "" {
		t.Errorf("after Apply (-want +got):\n%s", d)
	}
	readState := func() state {
		b, err := os.ReadFile(stateFile)
		if err != nil {
			t.Fatal(err)
		}
		var st state
		if err := json.Unmarshal(b, &st); err != nil {
			t.Fatal(err)
		}
		st.Recorded = st.Recorded.UTC().Truncate(0)
		return st
	}
	st := readState()
	if d := cmp.Diff(map[string]int{"lan0": 1, "lan1": 0}, st.Interfaces); d != "" || st.All != 1 || st.Default != 1 {
		t.Errorf("state %+v %s", st, d)
	}

	// Someone sets all=1 again; lan2 appears with the kernel default 1.
	setFake(t, root, "all", 1)
	setFake(t, root, "lan2", 1)
	rep, err = r.Apply(ifaces)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Ok() || rep.Interfaces["lan2"].Missing {
		t.Errorf("second Apply: %+v", rep)
	}
	st = readState()
	if st.All != 1 || st.Interfaces["lan2"] != 1 || len(st.Interfaces) != 3 {
		t.Errorf("state must keep the first values and add lan2: %+v", st)
	}
	// No temp files left next to the state file.
	if ents, _ := os.ReadDir(filepath.Dir(stateFile)); len(ents) != 1 {
		t.Errorf("state dir: %v", ents)
	}

	if err := r.Restore(); err != nil {
		t.Fatal(err)
	}
	rep, err = r.Read(ifaces)
	if err != nil {
		t.Fatal(err)
	}
	want = Report{All: 1, Default: 1, Interfaces: map[string]InterfaceReport{"lan0": {1, 1, false}, "lan1": {0, 1, false}, "lan2": {1, 1, false}}}
	if d := cmp.Diff(want, rep); d != "" {
		t.Errorf("after Restore (-want +got):\n%s", d)
	}
	if _, err := os.Stat(stateFile); !os.IsNotExist(err) {
		t.Errorf("state file left behind: %v", err)
	}
	if err := r.Restore(); err != nil {
		t.Errorf("second Restore: %v", err)
	}
}

func TestApplyNeedsStateFile(t *testing.T) {
	if _, err := (Redirects{Root: fakeRoot(t, map[string]int{"all": 1, "default": 1})}).Apply(nil); err == nil {
		t.Error("Apply without StateFile: no error")
	}
}

// TestKernelRedirects runs against the real per-namespace /proc/sys/net.
func TestKernelRedirects(t *testing.T) {
	ns := netnstest.New(t, "sysctl")
	// veth, not dummy or vlan: those modules are not on every kernel we run on.
	// The dotted name is what a VLAN interface looks like (enp1s0.2).
	ns.Exec("ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan0.2")
	get := func(name string) string {
		return strings.TrimSpace(ns.Exec("sysctl", "-n", "net.ipv4.conf."+strings.ReplaceAll(name, ".", "/")+".send_redirects"))
	}
	for _, n := range []string{"all", "default", "lan0", "lan0.2"} {
		if v := get(n); v != "1" {
			t.Fatalf("fresh namespace: %s send_redirects=%s, want the kernel default 1", n, v)
		}
	}
	r := Redirects{StateFile: filepath.Join(t.TempDir(), "state.json")}
	ifaces := []string{"lan0.2", "lan9"}
	var rep Report
	if err := ns.Do(func() error {
		var err error
		rep, err = r.Apply(ifaces)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !rep.Ok() || !rep.Interfaces["lan9"].Missing {
		t.Errorf("report %+v", rep)
	}
	// lan0 is not ours, but the kernel copies a change of default to every
	// interface whose value was never set explicitly.
	for n, want := range map[string]string{"all": "0", "default": "0", "lan0.2": "0", "lan0": "0"} {
		if v := get(n); v != want {
			t.Errorf("%s send_redirects=%s, want %s", n, v, want)
		}
	}
	// lan9 appears later: it inherits default (0 now), and a new Apply covers it anyway.
	ns.Exec("ip", "link", "add", "lan9", "type", "veth", "peer", "name", "lan9p")
	if err := ns.Do(func() error {
		var err error
		rep, err = r.Apply(ifaces)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if rep.Interfaces["lan9"].Missing || rep.Interfaces["lan9"].Effective != 0 {
		t.Errorf("lan9: %+v", rep.Interfaces["lan9"])
	}
	if err := ns.Do(r.Restore); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"all", "default", "lan0.2", "lan0"} {
		if v := get(n); v != "1" {
			t.Errorf("after Restore %s send_redirects=%s, want 1", n, v)
		}
	}
}
