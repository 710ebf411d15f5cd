package config

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestPasswordFileNotRegular: a password file that is a device, a FIFO, a
// directory or too large is refused at once with a message naming the key,
// instead of hanging (os.ReadFile of /dev/zero never ends) or reading
// gigabytes.
func TestPasswordFileNotRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, []byte(strings.Repeat("x", 5000)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{"/dev/zero", "is not a regular file"},
		{fifo, "is not a regular file"},
		{dir, "is not a regular file"},
		{big, "larger than 4 KiB"},
	} {
		_, err := Parse([]byte(strings.Replace(minimal, "asn: 64512", "asn: 64512\n    passwordFile: "+tc.path, 1)))
		if err == nil || !strings.Contains(err.Error(), "neighbors[0].passwordFile: cannot read: ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("passwordFile %s: %v, want %q", tc.path, err, tc.want)
		}
	}
}
