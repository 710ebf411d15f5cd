package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestListenStatusMode: the socket is 0660 even under the unit's UMask=0077
// (bind() alone would make it 0700 and lock the status group out), and a
// socket left by a killed agent is replaced.
func TestListenStatusMode(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	path := filepath.Join(t.TempDir(), "run", "agent.sock")
	// A socket left behind by a killed agent (closing a unix listener
	// removes its file; this one stays).
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()

	l, err := ListenStatus(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&fs.ModeSocket == 0 || fi.Mode().Perm() != 0o660 {
		t.Errorf("status socket mode %v, want a socket with 0660", fi.Mode())
	}
	l.Close()
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left after close: %v", err)
	}
}

// TestListenStatusFails: a socket that cannot be created is an error naming
// it (run exits on it), never a silent start without status.
func TestListenStatusFails(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := ListenStatus(filepath.Join(file, "agent.sock"))
	if err == nil || !strings.Contains(err.Error(), "status socket") {
		t.Errorf("ListenStatus under a file: %v, want a status socket error", err)
	}
}

// TestDialError: a refused connection to an existing socket says which
// group to join; a missing agent says so.
func TestDialError(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.sock")
	l, err := ListenStatus(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// The socket's group decides; gid 0 is "root" on every Debian system.
	if err := os.Lchown(path, -1, 0); err != nil {
		t.Skipf("cannot chgrp the socket to root (not root?): %v", err)
	}
	denied := fmt.Errorf("dial unix %s: %w", path, syscall.EACCES)
	got := dialError(path, denied).Error()
	if want := "permission denied: run as root or join group root (" + path + ")"; !strings.HasPrefix(got, want) {
		t.Errorf("dialError(EACCES) = %q, want it to start with %q", got, want)
	}
	if !errors.Is(dialError(path, denied), syscall.EACCES) {
		t.Error("dialError loses the cause")
	}
	// The socket hidden in a folder the caller cannot enter: the folder's
	// group is named.
	hidden := filepath.Join(dir, "hidden", "agent.sock")
	if err := os.Mkdir(filepath.Dir(hidden), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(filepath.Dir(hidden), -1, 0); err != nil {
		t.Fatal(err)
	}
	if got := dialError(hidden, denied).Error(); !strings.Contains(got, "join group root (") {
		t.Errorf("dialError for a hidden socket = %q", got)
	}
	gone := fmt.Errorf("dial unix %s: %w", path, syscall.ECONNREFUSED)
	if got := dialError(path, gone).Error(); !strings.HasPrefix(got, "is the agent running? ") {
		t.Errorf("dialError(ECONNREFUSED) = %q", got)
	}
	// The real client: an agent that is not there.
	_, _, err = FetchStatus(context.Background(), filepath.Join(dir, "none.sock"))
	if err == nil || !strings.HasPrefix(err.Error(), "is the agent running? ") {
		t.Errorf("FetchStatus without an agent: %v", err)
	}
}
