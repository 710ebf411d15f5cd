package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/config"

	"github.com/bgplb/bgplb/internal/metallb"
)

// Exit codes of migrate-metallb.
const (
	exitConverted = 0 // everything converted as written
	exitError     = 1 // nothing written: bad input, bad flags, cluster unreachable
	exitWarnings  = 3 // converted, but something was not carried over (see stderr)
)

const migrateUsage = `Usage: bgplb-controller migrate-metallb (-f FILE ... | --from-cluster) [flags]

Converts MetalLB's IPAddressPool, BGPPeer and BGPAdvertisement objects to
bgplb's IPPool, BGPPeer and BGPAdvertisement and writes them as YAML to
stdout. What cannot be converted is reported on stderr, per object and field.

Exit status: 0 all converted, 1 error (nothing written), 3 converted with
warnings on stderr.

Flags:
`

// fileList is a repeatable -f flag.
type fileList []string

func (f *fileList) String() string     { return strings.Join(*f, ",") }
func (f *fileList) Set(v string) error { *f = append(*f, v); return nil }

// migrateMetalLB runs the migrate-metallb subcommand and returns its exit
// status. getConfig finds the cluster as controller-runtime does
// (--kubeconfig, $KUBECONFIG, in-cluster, ~/.kube/config).
func migrateMetalLB(args []string, stdin io.Reader, stdout, stderr io.Writer, getConfig func() (*rest.Config, error)) int {
	fs := flag.NewFlagSet("migrate-metallb", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var files fileList
	fs.Var(&files, "f", "file with MetalLB objects, multi-document YAML or a List (repeatable; - for stdin)")
	fromCluster := fs.Bool("from-cluster", false, "read the MetalLB objects from the cluster (kubeconfig as for the controller)")
	namespace := fs.String("namespace", "metallb-system", "with --from-cluster: the namespace MetalLB runs in (\"\" for all namespaces)")
	config.RegisterFlags(fs) // --kubeconfig, read by getConfig
	fs.Usage = func() {
		fmt.Fprint(stderr, migrateUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitConverted
		}
		return exitError
	}
	clusterOnly := false
	fs.Visit(func(f *flag.Flag) {
		clusterOnly = clusterOnly || f.Name == "namespace" || f.Name == config.KubeconfigFlagName
	})
	if clusterOnly && !*fromCluster {
		fmt.Fprintln(stderr, "migrate-metallb: --namespace and --kubeconfig apply only with --from-cluster")
		return exitError
	}
	if fs.NArg() > 0 || (len(files) > 0) == *fromCluster {
		fmt.Fprintln(stderr, "migrate-metallb: give either -f FILE (one or more) or --from-cluster")
		fs.Usage()
		return exitError
	}

	var in []*unstructured.Unstructured
	var err error
	if *fromCluster {
		in, err = readCluster(getConfig, *namespace)
	} else {
		in, err = readFiles(files, stdin)
	}
	if err != nil {
		fmt.Fprintln(stderr, "migrate-metallb:", err)
		return exitError
	}
	res := metallb.Convert(in)
	if err := metallb.Encode(stdout, res.Objects); err != nil {
		fmt.Fprintln(stderr, "migrate-metallb:", err)
		return exitError
	}
	for _, f := range res.Findings {
		fmt.Fprintln(stderr, "warning:", f)
	}
	fmt.Fprintf(stderr, "migrate-metallb: %d MetalLB objects read, %d bgplb objects written, %d warnings\n", len(in), len(res.Objects), len(res.Findings))
	if len(res.Findings) > 0 {
		return exitWarnings
	}
	return exitConverted
}

func readFiles(files []string, stdin io.Reader) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	for _, name := range files {
		objs, err := readFile(name, stdin)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out = append(out, objs...)
	}
	return out, nil
}

func readFile(name string, stdin io.Reader) ([]*unstructured.Unstructured, error) {
	if name == "-" {
		return metallb.Decode(stdin)
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return metallb.Decode(f)
}

func readCluster(getConfig func() (*rest.Config, error), namespace string) ([]*unstructured.Unstructured, error) {
	cfg, err := getConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return metallb.List(context.Background(), c, namespace)
}
