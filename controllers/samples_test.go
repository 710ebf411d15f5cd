package controllers

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	bgplbv1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/controllers/allocator"
	"github.com/bgplb/bgplb/internal/testenv"
)

// The sample pools users copy must be valid together: no overlap, no bad
// range. The apiserver cannot check this on write (it is a cross-object
// rule), so the allocator's verdict is the test.
func TestSamplePoolsAreValidTogether(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "samples", "bgplb_v1alpha1_ippool.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	var specs []allocator.PoolSpec
	for {
		p := &bgplbv1.IPPool{}
		if err := dec.Decode(p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if p.Name == "" {
			continue
		}
		specs = append(specs, poolSpec(p))
	}
	if len(specs) < 2 {
		t.Fatalf("expected several sample pools, got %d", len(specs))
	}
	a := allocator.New()
	a.SetPools(specs)
	for _, st := range a.States() {
		if !st.Valid {
			t.Errorf("sample pool %s is invalid: %s: %s", st.Name, st.Reason, st.Problem)
		}
	}
}
