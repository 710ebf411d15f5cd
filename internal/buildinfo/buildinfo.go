// Package buildinfo exports bgplb_build_info, the constant 1 labelled with
// what was built, as prometheus/common's version collector and the anchors'
// *_build_info metrics do: a dashboard joins on it to show which version
// runs where, and a rollout shows up as a change of labels.
package buildinfo

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bgplb/bgplb/internal/version"
)

// Name is the metric's name, the same in all three programs; the program
// label tells them apart.
const Name = "bgplb_build_info"

// Info is what the metric's labels say.
type Info struct {
	Program   string
	Version   string
	Revision  string
	GoVersion string
	GOOS      string
	GOARCH    string
}

// Current describes this binary: the version set by the linker, the VCS
// revision Go recorded at build time ("unknown" without one, e.g. in tests).
func Current(program string) Info {
	i := Info{Program: program, Version: version.Version, Revision: "unknown",
		GoVersion: runtime.Version(), GOOS: runtime.GOOS, GOARCH: runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && s.Value != "" {
				i.Revision = s.Value
			}
		}
	}
	return i
}

// NewCollector returns a collector of bgplb_build_info for i. Its labels
// come from the build, never from input: one series per binary.
func NewCollector(i Info) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: Name,
		Help: "Always 1; the labels say which program, version, VCS revision and Go toolchain built this binary.",
		ConstLabels: prometheus.Labels{
			"program": i.Program, "version": i.Version, "revision": i.Revision,
			"goversion": i.GoVersion, "goos": i.GOOS, "goarch": i.GOARCH,
		},
	}, func() float64 { return 1 })
}

// Register registers the collector for this binary with reg.
func Register(reg prometheus.Registerer, program string) error {
	return reg.Register(NewCollector(Current(program)))
}
