// Command gendoc writes what the router agent's .deb ships besides the
// binary, generated from its command tree: one man page per command
// (section 8, system administration, as Debian policy wants for a program
// in /usr/sbin; gzip -9n) and the bash completion
// script. `make deb` runs it once for all architectures (neither depends on
// one, and a cross-built binary cannot run here):
//
//	go run ./routeragent/cli/gendoc -out dist/build/stage
//
// writes OUT/man8/bgplb-routeragent*.8.gz and OUT/completion/bgplb-routeragent.
// The man pages' date is SOURCE_DATE_EPOCH when set (reproducible builds),
// else today; their version is the linked internal/version.Version.
package main

import (
	"bytes"
	"compress/gzip"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra/doc"

	"github.com/bgplb/bgplb/internal/version"
	"github.com/bgplb/bgplb/routeragent/cli"
)

func main() {
	out := flag.String("out", "", "output folder (man8/ and completion/ in it are replaced)")
	flag.Parse()
	if *out == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: gendoc -out DIR")
		os.Exit(2)
	}
	if err := generate(*out); err != nil {
		fmt.Fprintf(os.Stderr, "gendoc: %v\n", err)
		os.Exit(1)
	}
}

func generate(out string) error {
	root := cli.NewCommand(io.Discard, io.Discard)
	man := filepath.Join(out, "man8")
	comp := filepath.Join(out, "completion")
	for _, d := range []string{man, comp} {
		// A command removed since the last build must lose its page.
		if err := os.RemoveAll(d); err != nil {
			return err
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	plain, err := os.MkdirTemp("", "gendoc-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(plain)
	err = doc.GenManTreeFromOpts(root, doc.GenManTreeOptions{Path: plain, CommandSeparator: "-", Header: &doc.GenManHeader{
		Section: "8", Source: "bgplb " + version.Version, Manual: "bgplb manual",
	}})
	if err != nil {
		return fmt.Errorf("man pages: %w", err)
	}
	pages, err := os.ReadDir(plain)
	if err != nil {
		return err
	}
	for _, p := range pages {
		b, err := os.ReadFile(filepath.Join(plain, p.Name()))
		if err != nil {
			return err
		}
		if err := writeGzip(filepath.Join(man, p.Name()+".gz"), b); err != nil {
			return err
		}
	}
	var bash bytes.Buffer
	// What `bgplb-routeragent completion bash` prints (descriptions on).
	if err := root.GenBashCompletionV2(&bash, true); err != nil {
		return fmt.Errorf("bash completion: %w", err)
	}
	return os.WriteFile(filepath.Join(comp, cli.Name), bash.Bytes(), 0o644)
}

// writeGzip writes b compressed as `gzip -9n` would: best compression, no
// file name and no time stamp in the header (reproducible).
func writeGzip(path string, b []byte) error {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return err
	}
	if _, err := zw.Write(b); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}
