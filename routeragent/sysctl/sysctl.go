// Package sysctl turns off ICMP redirects on the router and puts the
// previous values back on uninstall.
//
// A router whose next hop for a service address is on the same L2 as the
// client sends ICMP redirects, so Linux clients bypass it for a while (with
// a cached route) and Windows/Android clients ignore them: service traffic
// works for some clients and never for others. The kernel sends redirects
// out of an interface when conf/all/send_redirects OR
// conf/<iface>/send_redirects is 1, so all, default and every LAN interface
// must be 0.
package sysctl

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Redirects manages net.ipv4.conf.{all,default,IFACE}.send_redirects.
type Redirects struct {
	// Root is the sysctl tree, "" for /proc/sys (tests use a temp dir).
	Root string
	// StateFile records the values found before the first Apply, as JSON,
	// so that Restore can put them back. Required for Apply and Restore.
	StateFile string
}

// Report is the state of send_redirects.
type Report struct {
	// All and Default are conf/all and conf/default.
	All     int `json:"all"`
	Default int `json:"default"`
	// Interfaces has one entry per requested interface.
	Interfaces map[string]InterfaceReport `json:"interfaces"`
}

// InterfaceReport is one interface's send_redirects.
type InterfaceReport struct {
	// Value is conf/<iface>/send_redirects, -1 when the interface is missing.
	Value int `json:"value"`
	// Effective is what the kernel uses: 1 when all or the interface is 1.
	Effective int `json:"effective"`
	// Missing says the interface does not exist (now); Apply sets it when
	// it appears on a later call.
	Missing bool `json:"missing,omitempty"`
}

// Ok reports whether no requested interface can send redirects (missing
// interfaces count as fine: they send nothing, and default is checked).
func (r Report) Ok() bool {
	if r.All != 0 || r.Default != 0 {
		return false
	}
	for _, i := range r.Interfaces {
		if !i.Missing && i.Effective != 0 {
			return false
		}
	}
	return true
}

// state is the StateFile content.
type state struct {
	Version    int            `json:"version"`
	Recorded   time.Time      `json:"recorded"`
	All        int            `json:"all"`
	Default    int            `json:"default"`
	Interfaces map[string]int `json:"interfaces"`
}

func (r Redirects) root() string {
	if r.Root == "" {
		return "/proc/sys"
	}
	return r.Root
}

func (r Redirects) key(name string) string {
	return filepath.Join(r.root(), "net", "ipv4", "conf", name, "send_redirects")
}

// Get reads an integer sysctl below root ("" = /proc/sys), key in slash
// form (net/ipv4/ip_forward).
func Get(root, key string) (int, error) {
	if root == "" {
		root = "/proc/sys"
	}
	return readInt(filepath.Join(root, key))
}

func readInt(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", path, err)
	}
	return v, nil
}

func writeInt(path string, v int) error {
	// O_WRONLY without O_CREATE: a missing interface is an error, not a new file.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(strconv.Itoa(v) + "\n"); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// Read reports send_redirects for all, default and each interface.
func (r Redirects) Read(ifaces []string) (Report, error) {
	var rep Report
	var err error
	if rep.All, err = readInt(r.key("all")); err != nil {
		return Report{}, fmt.Errorf("send_redirects: %w", err)
	}
	if rep.Default, err = readInt(r.key("default")); err != nil {
		return Report{}, fmt.Errorf("send_redirects: %w", err)
	}
	rep.Interfaces = make(map[string]InterfaceReport, len(ifaces))
	for _, name := range ifaces {
		v, err := readInt(r.key(name))
		if errors.Is(err, fs.ErrNotExist) {
			rep.Interfaces[name] = InterfaceReport{Value: -1, Effective: -1, Missing: true}
			continue
		}
		if err != nil {
			return Report{}, fmt.Errorf("send_redirects: %w", err)
		}
		eff := 0
		if rep.All != 0 || v != 0 {
			eff = 1
		}
		rep.Interfaces[name] = InterfaceReport{Value: v, Effective: eff}
	}
	return rep, nil
}

// Apply sets send_redirects=0 for all, default and each present interface.
// Before the first change it records the previous values in StateFile
// (once: later calls keep the original values, and only add interfaces seen
// for the first time). A missing interface is reported, not an error: call
// Apply again when it appears (the agent does on link events).
func (r Redirects) Apply(ifaces []string) (Report, error) {
	if r.StateFile == "" {
		return Report{}, errors.New("send_redirects: no state file configured")
	}
	before, err := r.Read(ifaces)
	if err != nil {
		return Report{}, err
	}
	st, err := r.load()
	if errors.Is(err, fs.ErrNotExist) {
		st = &state{Version: 1, Recorded: time.Now().UTC(), All: before.All, Default: before.Default, Interfaces: map[string]int{}}
		err = nil
	}
	if err != nil {
		return Report{}, err
	}
	dirty := st.Interfaces == nil
	if st.Interfaces == nil {
		st.Interfaces = map[string]int{}
	}
	for name, ir := range before.Interfaces {
		if _, seen := st.Interfaces[name]; !seen && !ir.Missing {
			st.Interfaces[name] = ir.Value
			dirty = true
		}
	}
	if _, statErr := os.Stat(r.StateFile); dirty || errors.Is(statErr, fs.ErrNotExist) {
		// Bookkeeping first: once a value is changed, the original must
		// already be safe on disk.
		if err := r.save(st); err != nil {
			return Report{}, err
		}
	}
	var errs []error
	for _, name := range []string{"all", "default"} {
		if err := writeInt(r.key(name), 0); err != nil {
			errs = append(errs, fmt.Errorf("set %s send_redirects=0: %w", name, err))
		}
	}
	for name, ir := range before.Interfaces {
		if ir.Missing || ir.Value == 0 {
			continue
		}
		err := writeInt(r.key(name), 0)
		if errors.Is(err, fs.ErrNotExist) {
			continue // gone in between: reported missing by Read below
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("set %s send_redirects=0: %w", name, err))
		}
	}
	rep, err := r.Read(ifaces)
	if err != nil {
		errs = append(errs, err)
	}
	return rep, errors.Join(errs...)
}

// Restore writes back the values recorded by the first Apply and removes
// the state file. Without a state file there is nothing to restore.
// Interfaces that no longer exist are skipped.
func (r Redirects) Restore() error {
	st, err := r.load()
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	// Interfaces first, all last: while all is still 0 no interface can
	// send a redirect in between.
	for name, v := range st.Interfaces {
		if err := writeInt(r.key(name), v); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("restore %s send_redirects=%d: %w", name, v, err))
		}
	}
	if err := writeInt(r.key("default"), st.Default); err != nil {
		errs = append(errs, fmt.Errorf("restore default send_redirects=%d: %w", st.Default, err))
	}
	if err := writeInt(r.key("all"), st.All); err != nil {
		errs = append(errs, fmt.Errorf("restore all send_redirects=%d: %w", st.All, err))
	}
	if len(errs) > 0 {
		return errors.Join(errs...) // keep the state file for another try
	}
	if err := os.Remove(r.StateFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", r.StateFile, err)
	}
	return nil
}

func (r Redirects) load() (*state, error) {
	if r.StateFile == "" {
		return nil, errors.New("send_redirects: no state file configured")
	}
	b, err := os.ReadFile(r.StateFile)
	if err != nil {
		return nil, err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("parse %s: %w", r.StateFile, err)
	}
	return &st, nil
}

// save writes the state atomically: a temp file in the same directory,
// fsync, rename.
func (r Redirects) save(st *state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(r.StateFile)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	f, err := os.CreateTemp(dir, ".send_redirects-*")
	if err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, r.StateFile); err != nil {
		return fmt.Errorf("rename state file: %w", err)
	}
	return nil
}
