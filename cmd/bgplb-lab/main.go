// Command bgplb-lab runs the bgplb lab: the story's network in network
// namespaces (see test/lab). `demo` tells the story, `down` removes a lab
// (also after an interrupted demo); `apiserver` and `backend` are the lab's
// own processes, started inside its namespaces.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/bgplb/bgplb/test/lab"
)

const demoPrefix = "bgplb-demo-"

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "demo":
		err = demo(ctx, args)
	case "down":
		err = down(args)
	case "apiserver":
		fs := flag.NewFlagSet("apiserver", flag.ExitOnError)
		addr := fs.String("address", lab.CPIP, "address to serve on")
		port := fs.Int("port", lab.APIServerPort, "port to serve on")
		crds := fs.String("crds", "config/crd/bases", "directory of CRD manifests")
		kc := fs.String("kubeconfig", "", "where to write the administrator kubeconfig")
		_ = fs.Parse(args)
		err = lab.RunAPIServer(ctx, *addr, *port, *crds, *kc)
	case "backend":
		fs := flag.NewFlagSet("backend", flag.ExitOnError)
		listen := fs.String("listen", ":80", "address to listen on")
		name := fs.String("name", "", "node name to answer with")
		_ = fs.Parse(args)
		err = lab.RunBackend(ctx, *listen, *name)
	default:
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bgplb-lab:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage: bgplb-lab demo [--bin DIR] [--state DIR] [--prefix P] [--keep] [--ipv6]
       bgplb-lab down [--state DIR] [--prefix P]
       bgplb-lab apiserver|backend ...   (started by the lab inside its namespaces)`)
}

func demo(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ExitOnError)
	bin := fs.String("bin", "bin", "directory with the bgplb binaries")
	state := fs.String("state", "/run/bgplb-demo", "directory for the lab's configs and logs")
	crds := fs.String("crds", "config/crd/bases", "directory of the CRD manifests")
	keep := fs.Bool("keep", false, "leave the lab running after the demo (remove it with `bgplb-lab down`)")
	ipv6 := fs.Bool("ipv6", false, "after the story, tell it again over IPv6 (IPv6 sessions, a dual-stack Service)")
	prefix := fs.String("prefix", demoPrefix, "start of the lab's namespace names")
	_ = fs.Parse(args)
	absBin, err := filepath.Abs(*bin)
	if err != nil {
		return err
	}
	absCRDs, err := filepath.Abs(*crds)
	if err != nil {
		return err
	}
	start := time.Now()
	l, err := lab.Up(ctx, lab.Options{
		Prefix: *prefix, BinDir: absBin, StateDir: *state, CRDDir: absCRDs,
		Logf: func(f string, a ...any) { fmt.Printf("lab: "+f+"\n", a...) },
	})
	if err != nil {
		return err
	}
	fmt.Printf("lab: up in %v; logs in %s/logs\n", time.Since(start).Round(time.Millisecond), *state)
	derr := lab.Demo(ctx, l, os.Stdout)
	if derr == nil && *ipv6 {
		derr = lab.DemoIPv6(ctx, l, os.Stdout)
	}
	if derr == nil {
		derr = lab.DemoSymmetric(ctx, l, os.Stdout)
	}
	if *keep {
		fmt.Printf("\nlab left running (namespaces %s*); remove it with: make demo-down\n", *prefix)
		return derr
	}
	fmt.Println("\n== 4. Teardown")
	if err := l.Down(); err != nil {
		return fmt.Errorf("%w; teardown: %w", derr, err)
	}
	if err := os.RemoveAll(*state); err != nil {
		return err
	}
	fmt.Printf("removed the lab's namespaces, processes and %s (%v in all)\n", *state, time.Since(start).Round(time.Second))
	return derr
}

func down(args []string) error {
	fs := flag.NewFlagSet("down", flag.ExitOnError)
	state := fs.String("state", "/run/bgplb-demo", "the lab's state directory")
	prefix := fs.String("prefix", demoPrefix, "start of the lab's namespace names")
	_ = fs.Parse(args)
	if err := lab.Down(*prefix); err != nil {
		return err
	}
	return os.RemoveAll(*state)
}
