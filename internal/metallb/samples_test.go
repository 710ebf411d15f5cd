package metallb_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bgplb/bgplb/internal/metallb"
	"github.com/bgplb/bgplb/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

// TestSamples converts MetalLB's own sample manifests and the example of
// its documentation (testdata/metallb, see testdata/README.md), compares
// the YAML and the warnings with golden files, and creates every converted
// object on a real apiserver with bgplb's CRDs (server-side dry run): the
// output is usable as it is.
func TestSamples(t *testing.T) {
	files, err := filepath.Glob("testdata/metallb/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			res := convertFile(t, file)
			got := render(t, res)
			golden := filepath.Join("testdata", "golden", filepath.Base(file))
			if os.Getenv("BGPLB_UPDATE_GOLDEN") == "1" {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (BGPLB_UPDATE_GOLDEN=1 writes it)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("output differs from %s (-want +got):\n%s", golden, diff)
			}
			if env != nil {
				dryRunCreate(t, res)
			}
		})
	}
}

func convertFile(t *testing.T, file string) metallb.Result {
	t.Helper()
	return metallb.Convert(convertInput(t, file))
}

func convertInput(t *testing.T, file string) []*unstructured.Unstructured {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	in, err := metallb.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// render is what the command prints: the YAML, then the warnings.
func render(t *testing.T, res metallb.Result) string {
	t.Helper()
	var b strings.Builder
	if err := metallb.Encode(&b, res.Objects); err != nil {
		t.Fatal(err)
	}
	b.WriteString("# findings:\n")
	for _, f := range res.Findings {
		b.WriteString("# " + f.String() + "\n")
	}
	return b.String()
}

func dryRunCreate(t *testing.T, res metallb.Result) {
	t.Helper()
	for _, c := range res.Objects {
		obj := c.Object.DeepCopyObject().(client.Object)
		if err := env.Client.Create(context.Background(), obj, client.DryRunAll); err != nil {
			t.Errorf("%s: the apiserver refuses the converted %s %s: %v", c.From, obj.GetObjectKind().GroupVersionKind().Kind, obj.GetName(), err)
		}
	}
}
