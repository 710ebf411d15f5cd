package install

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"
)

// TestChartMonitoring: metrics.dashboard.enabled renders a ConfigMap with
// the sidecar's label holding exactly config/monitoring's dashboard, and
// metrics.prometheusRule.enabled a PrometheusRule whose spec is exactly
// config/monitoring's rule groups (the {{ $labels }} templates of the
// annotations left for Prometheus). Both are off by default.
func TestChartMonitoring(t *testing.T) {
	off := decode(t, helmTemplate(t))
	if cm := find(off, "ConfigMap", "bgplb-grafana-dashboard"); cm != nil || len(byKind(off, "PrometheusRule")) != 0 {
		t.Error("dashboard or PrometheusRule rendered by default")
	}

	objs := decode(t, helmTemplate(t, "--set", "metrics.dashboard.enabled=true,metrics.prometheusRule.enabled=true,"+
		"metrics.prometheusRule.labels.release=kps,metrics.dashboard.namespace=monitoring,metrics.dashboard.annotations.grafana_folder=bgplb"))
	cm := find(objs, "ConfigMap", "bgplb-grafana-dashboard")
	if cm == nil {
		t.Fatal("no dashboard ConfigMap")
	}
	if cm.GetNamespace() != "monitoring" || cm.GetLabels()["grafana_dashboard"] != "1" || cm.GetAnnotations()["grafana_folder"] != "bgplb" {
		t.Errorf("dashboard ConfigMap: namespace %q labels %v annotations %v", cm.GetNamespace(), cm.GetLabels(), cm.GetAnnotations())
	}
	data, _ := cm.Object["data"].(map[string]any)
	var got, want any
	if err := json.Unmarshal([]byte(data["bgplb.json"].(string)), &got); err != nil {
		t.Fatalf("dashboard in the ConfigMap: %v", err)
	}
	if err := json.Unmarshal(readFile(t, "config/monitoring/grafana-dashboard.json"), &want); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("dashboard in the ConfigMap (-config/monitoring +chart):\n%s", diff)
	}

	pr := find(objs, "PrometheusRule", "bgplb")
	if pr == nil {
		t.Fatal("no PrometheusRule")
	}
	if pr.GetNamespace() != "bgplb-system" || pr.GetLabels()["release"] != "kps" {
		t.Errorf("PrometheusRule: namespace %q labels %v", pr.GetNamespace(), pr.GetLabels())
	}
	var rules map[string]any
	if err := yaml.Unmarshal(readFile(t, "config/monitoring/prometheus-rules.yaml"), &rules); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(rules, pr.Object["spec"]); diff != "" {
		t.Errorf("PrometheusRule spec (-config/monitoring +chart):\n%s", diff)
	}
}
