package metallb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// Decode reads every object of a multi-document YAML (or JSON) stream, as
// `kubectl apply -f` would: empty documents are skipped and a List (the
// output of `kubectl get -o yaml`) is expanded into its items.
func Decode(r io.Reader) ([]*unstructured.Unstructured, error) {
	d := utilyaml.NewYAMLOrJSONDecoder(r, 4096)
	var out []*unstructured.Unstructured
	for doc := 1; ; doc++ {
		var m map[string]any
		if err := d.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("document %d: %w", doc, err)
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.GetKind() == "" || u.GetAPIVersion() == "" {
			return nil, fmt.Errorf("document %d: no apiVersion or kind", doc)
		}
		if !u.IsList() {
			out = append(out, u)
			continue
		}
		err := u.EachListItem(func(o runtime.Object) error {
			out = append(out, o.(*unstructured.Unstructured))
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", doc, err)
		}
	}
}

// Encode writes the converted objects as one multi-document YAML stream,
// each preceded by a comment naming its MetalLB source. Status and the
// empty creationTimestamp are left out: the output is for `kubectl apply`.
func Encode(w io.Writer, objs []Converted) error {
	var b strings.Builder
	for i, c := range objs {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(c.Object)
		if err != nil {
			return fmt.Errorf("%s: %w", c.From, err)
		}
		delete(m, "status")
		unstructured.RemoveNestedField(m, "metadata", "creationTimestamp")
		y, err := yaml.Marshal(m)
		if err != nil {
			return fmt.Errorf("%s: %w", c.From, err)
		}
		if i > 0 {
			b.WriteString("---\n")
		}
		fmt.Fprintf(&b, "# from %s\n", c.From)
		b.Write(y)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Kinds are the MetalLB kinds List reads, in the order the output should
// have: pools before the peers and advertisements that refer to them.
// Versions are tried in order: current MetalLB serves BGPPeer as v1beta2,
// older releases only as v1beta1.
var Kinds = []struct {
	Kind     string
	Versions []string
}{
	{"IPAddressPool", []string{"v1beta1"}},
	{"BGPPeer", []string{"v1beta2", "v1beta1"}},
	{"BGPAdvertisement", []string{"v1beta1"}},
	{"Community", []string{"v1beta1"}},
	{"BFDProfile", []string{"v1beta1"}},
	{"L2Advertisement", []string{"v1beta1"}},
}

// List reads the MetalLB objects of namespace ("" for all namespaces) from
// the cluster, as unstructured objects. Kinds the cluster does not serve are
// skipped; when it serves none of them, List says MetalLB is not installed.
func List(ctx context.Context, c client.Reader, namespace string) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	served := false
	for _, k := range Kinds {
		items, ok, err := listKind(ctx, c, namespace, k.Kind, k.Versions)
		if err != nil {
			return nil, err
		}
		served = served || ok
		out = append(out, items...)
	}
	if !served {
		return nil, fmt.Errorf("the cluster serves no %s kinds: is MetalLB installed?", Group)
	}
	return out, nil
}

func listKind(ctx context.Context, c client.Reader, namespace, kind string, versions []string) ([]*unstructured.Unstructured, bool, error) {
	for _, v := range versions {
		l := &unstructured.UnstructuredList{}
		l.SetGroupVersionKind(schema.GroupVersionKind{Group: Group, Version: v, Kind: kind + "List"})
		err := c.List(ctx, l, client.InNamespace(namespace))
		if meta.IsNoMatchError(err) {
			continue
		}
		if err != nil {
			return nil, false, fmt.Errorf("list %s/%s %s: %w", Group, v, kind, err)
		}
		out := make([]*unstructured.Unstructured, len(l.Items))
		for i := range l.Items {
			out[i] = &l.Items[i]
		}
		return out, true, nil
	}
	return nil, false, nil
}
