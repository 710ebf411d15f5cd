// Command bgplb-image assembles, pushes and inspects the bgplb container
// images with go-containerregistry, without a container daemon. hack/image.sh
// drives it (`make image`, `make image-push`); test/install uses `inspect`.
//
//	bgplb-image build -name bgplb-controller -version v1.2.3 -created 1700000000 \
//	    -base base.tar -layer linux/amd64=amd64.tar -layer linux/arm64=arm64.tar \
//	    -ref ghcr.io/bgplb/bgplb-controller:v1.2.3 -out DIR
//	bgplb-image push -layout DIR -ref registry.example/bgplb/bgplb-controller:v1.2.3
//	bgplb-image inspect -layout DIR [-platform linux/amd64 -extract /bgplb-controller -o FILE]
//
// build writes an OCI image layout whose index.json names one image index
// (one manifest per platform), as `docker buildx --output type=oci` does, so
// that `ctr images import`, skopeo (oci-archive:) and crane read it. Layers
// come as tar files (hack/image.sh makes them with GNU tar, deterministic
// flags): a base layer shared by every image (/etc/passwd, /etc/group) and
// the program's own layer per platform. Nothing here pulls a base image:
// the images are FROM scratch.
package main

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// nonroot is the user the images run as: distroless's nonroot, which the
// manifests' securityContext (runAsUser/runAsGroup 65532) expects.
const nonroot = "65532:65532"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: bgplb-image build|push|inspect|registry [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "build":
		err = buildCmd(os.Args[2:])
	case "push":
		err = pushCmd(os.Args[2:])
	case "inspect":
		err = inspectCmd(os.Args[2:], os.Stdout)
	case "registry":
		err = registryCmd(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q (build, push, inspect, registry)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bgplb-image:", err)
		os.Exit(1)
	}
}

// platformLayers is the repeated -layer os/arch=file flag.
type platformLayers []platformLayer

type platformLayer struct {
	platform v1.Platform
	file     string
}

func (p *platformLayers) String() string { return fmt.Sprint(*p) }

func (p *platformLayers) Set(s string) error {
	plat, file, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("%q: want os/arch=file", s)
	}
	pl, err := v1.ParsePlatform(plat)
	if err != nil {
		return fmt.Errorf("%q: %w", plat, err)
	}
	*p = append(*p, platformLayer{platform: *pl, file: file})
	return nil
}

// spec is what build needs; all of it comes from flags.
type spec struct {
	name, version, ref string
	created            time.Time
	base               string
	layers             platformLayers
}

func buildCmd(args []string) error {
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	var s spec
	var created, out string
	fs.StringVar(&s.name, "name", "", "program name: the entrypoint is /NAME")
	fs.StringVar(&s.version, "version", "", "version (label and the layout's ref name)")
	fs.StringVar(&s.ref, "ref", "", "full image reference recorded in the layout (io.containerd.image.name)")
	fs.StringVar(&created, "created", "0", "creation time, seconds since the epoch (SOURCE_DATE_EPOCH)")
	fs.StringVar(&s.base, "base", "", "base layer tar shared by all platforms")
	fs.Var(&s.layers, "layer", "os/arch=file: the program's layer tar for that platform (repeat)")
	fs.StringVar(&out, "out", "", "OCI layout directory to write (must not exist)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if s.name == "" || s.version == "" || s.ref == "" || s.base == "" || out == "" || len(s.layers) == 0 {
		return errors.New("build: -name, -version, -ref, -base, -out and at least one -layer are required")
	}
	sec, err := strconv.ParseInt(created, 10, 64)
	if err != nil {
		return fmt.Errorf("build: -created %q: %w", created, err)
	}
	s.created = time.Unix(sec, 0).UTC()
	idx, err := buildIndex(s)
	if err != nil {
		return fmt.Errorf("build %s: %w", s.name, err)
	}
	if _, err := os.Stat(out); err == nil {
		return fmt.Errorf("build: %s exists", out)
	}
	p, err := layout.Write(out, empty.Index)
	if err != nil {
		return fmt.Errorf("build: %w", err)
	}
	return p.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": s.version,
		"io.containerd.image.name":          s.ref,
	}))
}

// buildIndex assembles one image per platform and the index over them.
func buildIndex(s spec) (v1.ImageIndex, error) {
	base, err := tarball.LayerFromFile(s.base, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("base layer: %w", err)
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, pl := range s.layers {
		img, err := buildImage(s, base, pl)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", pl.platform, err)
		}
		plat := pl.platform
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &plat},
		})
	}
	return idx, nil
}

func buildImage(s spec, base v1.Layer, pl platformLayer) (v1.Image, error) {
	prog, err := tarball.LayerFromFile(pl.file, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.AppendLayers(img, base, prog)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = pl.platform.OS, pl.platform.Architecture, pl.platform.Variant
	cf.Created = v1.Time{Time: s.created}
	cf.Config = v1.Config{
		User:       nonroot,
		Entrypoint: []string{"/" + s.name},
		WorkingDir: "/",
		// The programs exec nothing; PATH is there for `kubectl debug` habits.
		Env: []string{"PATH=/"},
		Labels: map[string]string{
			"org.opencontainers.image.title":    s.name,
			"org.opencontainers.image.version":  s.version,
			"org.opencontainers.image.source":   "https://github.com/bgplb/bgplb",
			"org.opencontainers.image.licenses": "Apache-2.0",
			"org.opencontainers.image.description": "bgplb: Kubernetes LoadBalancer Services over BGP (" +
				s.name + ")",
		},
	}
	// The history mirrors the layers, so that `docker history` and crane
	// say where each came from.
	cf.History = []v1.History{
		{Created: cf.Created, CreatedBy: "bgplb-image: /etc/passwd, /etc/group (nonroot 65532)"},
		{Created: cf.Created, CreatedBy: "bgplb-image: /" + s.name + " (static, CGO_ENABLED=0)"},
	}
	return mutate.ConfigFile(img, cf)
}

// readIndex returns the image index a layout written by build names.
func readIndex(dir string) (v1.ImageIndex, error) {
	top, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, err
	}
	m, err := top.IndexManifest()
	if err != nil {
		return nil, err
	}
	if len(m.Manifests) != 1 || !m.Manifests[0].MediaType.IsIndex() {
		return nil, fmt.Errorf("%s: index.json should name one image index, names %d descriptors", dir, len(m.Manifests))
	}
	return top.ImageIndex(m.Manifests[0].Digest)
}

func pushCmd(args []string) error {
	fs := flag.NewFlagSet("push", flag.ContinueOnError)
	dir := fs.String("layout", "", "OCI layout directory written by build")
	refs := fs.String("ref", "", "destination reference, e.g. registry.example/bgplb/bgplb-controller:v1.2.3")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || *refs == "" {
		return errors.New("push: -layout and -ref are required")
	}
	// localhost and RFC 1918 registries are spoken to over plain HTTP by
	// go-containerregistry's defaults; anything else needs TLS.
	ref, err := name.ParseReference(*refs)
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	idx, err := readIndex(*dir)
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	// Credentials as docker, podman and crane keep them
	// (~/.docker/config.json, $DOCKER_CONFIG, credential helpers).
	if err := remote.WriteIndex(ref, idx, remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("%s@%s\n", ref, d)
	return nil
}

// imageInfo is one platform's image as inspect prints it.
type imageInfo struct {
	Platform   string            `json:"platform"`
	Digest     string            `json:"digest"`
	MediaType  string            `json:"mediaType"`
	User       string            `json:"user"`
	Entrypoint []string          `json:"entrypoint"`
	Cmd        []string          `json:"cmd,omitempty"`
	Labels     map[string]string `json:"labels"`
	Layers     int               `json:"layers"`
	Files      []string          `json:"files"`
}

type indexInfo struct {
	Digest      string            `json:"digest"`
	MediaType   string            `json:"mediaType"`
	Annotations map[string]string `json:"annotations"`
	Images      []imageInfo       `json:"images"`
}

func inspectCmd(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	dir := fs.String("layout", "", "OCI layout directory written by build")
	refs := fs.String("ref", "", "instead of -layout: an image index in a registry (e.g. one image-push wrote)")
	platform := fs.String("platform", "", "with -extract: the platform's image")
	extract := fs.String("extract", "", "path of a file in the image to write to -o")
	out := fs.String("o", "", "with -extract: where to write the file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *refs != "" {
		ref, err := name.ParseReference(*refs)
		if err != nil {
			return fmt.Errorf("inspect: %w", err)
		}
		idx, err := remote.Index(ref, remote.WithAuthFromKeychain(authn.DefaultKeychain))
		if err != nil {
			return fmt.Errorf("inspect %s: %w", ref, err)
		}
		info, err := describe(idx)
		if err != nil {
			return fmt.Errorf("inspect: %w", err)
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(info)
	}
	if *dir == "" {
		return errors.New("inspect: -layout or -ref is required")
	}
	top, err := layout.ImageIndexFromPath(*dir)
	if err != nil {
		return fmt.Errorf("inspect: %w", err)
	}
	tm, err := top.IndexManifest()
	if err != nil {
		return err
	}
	idx, err := readIndex(*dir)
	if err != nil {
		return fmt.Errorf("inspect: %w", err)
	}
	if *extract != "" {
		return extractFile(idx, *platform, *extract, *out)
	}
	info, err := describe(idx)
	if err != nil {
		return fmt.Errorf("inspect: %w", err)
	}
	info.Annotations = tm.Manifests[0].Annotations
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(info)
}

func describe(idx v1.ImageIndex) (indexInfo, error) {
	var info indexInfo
	d, err := idx.Digest()
	if err != nil {
		return info, err
	}
	mt, err := idx.MediaType()
	if err != nil {
		return info, err
	}
	info.Digest, info.MediaType = d.String(), string(mt)
	m, err := idx.IndexManifest()
	if err != nil {
		return info, err
	}
	for _, desc := range m.Manifests {
		img, err := idx.Image(desc.Digest)
		if err != nil {
			return info, err
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return info, err
		}
		layers, err := img.Layers()
		if err != nil {
			return info, err
		}
		files, err := listFiles(img)
		if err != nil {
			return info, err
		}
		plat := "?"
		if desc.Platform != nil {
			plat = desc.Platform.String()
		}
		info.Images = append(info.Images, imageInfo{
			Platform: plat, Digest: desc.Digest.String(), MediaType: string(desc.MediaType),
			User: cf.Config.User, Entrypoint: cf.Config.Entrypoint, Cmd: cf.Config.Cmd,
			Labels: cf.Config.Labels, Layers: len(layers), Files: files,
		})
	}
	return info, nil
}

// listFiles lists the flattened filesystem: path mode uid:gid.
func listFiles(img v1.Image) ([]string, error) {
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	var files []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files, nil
		}
		if err != nil {
			return nil, err
		}
		files = append(files, fmt.Sprintf("%s %s %d:%d", h.Name, h.FileInfo().Mode(), h.Uid, h.Gid))
	}
}

func extractFile(idx v1.ImageIndex, platform, path, out string) error {
	if platform == "" || out == "" {
		return errors.New("inspect: -extract needs -platform and -o")
	}
	want, err := v1.ParsePlatform(platform)
	if err != nil {
		return err
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	for _, desc := range m.Manifests {
		if desc.Platform == nil || !desc.Platform.Equals(*want) {
			continue
		}
		img, err := idx.Image(desc.Digest)
		if err != nil {
			return err
		}
		rc := mutate.Extract(img)
		defer rc.Close()
		tr := tar.NewReader(rc)
		name := strings.TrimPrefix(path, "/")
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("inspect: %s not in the %s image", path, platform)
			}
			if err != nil {
				return err
			}
			if strings.TrimPrefix(h.Name, "./") != name {
				continue
			}
			f, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, h.FileInfo().Mode().Perm())
			if err != nil {
				return err
			}
			if _, err := io.Copy(f, tr); err != nil {
				f.Close()
				return err
			}
			return f.Close()
		}
	}
	return fmt.Errorf("inspect: no %s image in the index", platform)
}

// registryCmd serves an in-memory OCI registry (go-containerregistry's) on a
// loopback address until killed: a place to try image-push without a real
// registry, and what the release test pushes to. It writes the address it
// listens on to -addr-file once it accepts connections.
func registryCmd(args []string) error {
	fs := flag.NewFlagSet("registry", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "loopback address to listen on")
	addrFile := fs.String("addr-file", "", "write the address listened on to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(*listen)
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("registry: %s is not a loopback address (this registry has no authentication)", host)
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	if *addrFile != "" {
		if err := os.WriteFile(*addrFile, []byte(l.Addr().String()), 0o644); err != nil {
			return fmt.Errorf("registry: %w", err)
		}
	}
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0))), ReadHeaderTimeout: 10 * time.Second}
	return srv.Serve(l)
}
