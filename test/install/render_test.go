package install

import (
	"bytes"
	"cmp"
	"debug/elf"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	gocmp "github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// A stale dist/install.yaml (someone changed config/ or the markers and did
// not run `make build-installer`) fails here.
func TestInstallYAMLUpToDate(t *testing.T) {
	want := kustomize(t, "config/default")
	got := readFile(t, "dist/install.yaml")
	if !bytes.Equal(got, want) {
		t.Fatalf("dist/install.yaml is stale: run `make build-installer` and commit it\n%s",
			gocmp.Diff(string(want), string(got)))
	}
}

// The chart carries copies of the generated CRDs and roles (a chart cannot
// read outside its folder); they must equal the generated files.
func TestChartCopiesUpToDate(t *testing.T) {
	pairs := map[string]string{
		"config/rbac/controller/role.yaml": "charts/bgplb/files/rbac/controller-role.yaml",
		"config/rbac/speaker/role.yaml":    "charts/bgplb/files/rbac/speaker-role.yaml",
	}
	crds, err := filepath.Glob(filepath.Join(root, "config/crd/bases/*.yaml"))
	if err != nil || len(crds) == 0 {
		t.Fatalf("no CRDs in config/crd/bases (%v)", err)
	}
	for _, c := range crds {
		pairs[filepath.Join("config/crd/bases", filepath.Base(c))] = filepath.Join("charts/bgplb/crds", filepath.Base(c))
	}
	copies, _ := filepath.Glob(filepath.Join(root, "charts/bgplb/crds/*.yaml"))
	if len(copies) != len(crds) {
		t.Errorf("charts/bgplb/crds has %d CRDs, config/crd/bases %d: run `make chart-sync`", len(copies), len(crds))
	}
	for src, dst := range pairs {
		if !bytes.Equal(readFile(t, src), readFile(t, dst)) {
			t.Errorf("%s differs from %s: run `make chart-sync` and commit", dst, src)
		}
	}
}

// The manifest and the chart install the same release by default.
func TestVersionsAgree(t *testing.T) {
	var chart struct {
		Version, AppVersion string
	}
	if err := yaml.Unmarshal(readFile(t, "charts/bgplb/Chart.yaml"), &chart); err != nil {
		t.Fatal(err)
	}
	var k struct {
		Images []struct{ Name, NewTag string } `json:"images"`
	}
	if err := yaml.Unmarshal(readFile(t, "config/default/kustomization.yaml"), &k); err != nil {
		t.Fatal(err)
	}
	if len(k.Images) != 2 || k.Images[0].NewTag != chart.AppVersion || k.Images[1].NewTag != chart.AppVersion {
		t.Errorf("config/default image tags %+v (controller, speaker), chart appVersion %q: keep them equal", k.Images, chart.AppVersion)
	}
	for _, o := range decode(t, helmTemplate(t)) {
		for _, img := range images(o) {
			// One image per program, as make image builds them.
			if want := "ghcr.io/bgplb/bgplb-" + o.GetLabels()["app.kubernetes.io/component"] + ":" + chart.AppVersion; img != want {
				t.Errorf("chart %s/%s image %q, want %s", o.GetKind(), o.GetName(), img, want)
			}
		}
	}
}

func TestHelmLint(t *testing.T) {
	helm := tool(t, "helm")
	chart := filepath.Join(root, "charts", "bgplb")
	for name, args := range map[string][]string{
		"defaults": nil,
		"everything": {"--set", "metrics.serviceMonitor.enabled=true,loadBalancerClass.serveUnclassed=false,logLevel=debug",
			"--set-json", `ipPools=[{"name":"default","spec":{"addresses":["192.168.254.0/24"]}}]`},
		"every new value":              append(slices.Clone(everyValue), "--namespace", "network"),
		"no rbac, no service accounts": {"--set", "rbac.create=false,controller.serviceAccount.create=false,speaker.serviceAccount.create=false"},
	} {
		t.Run(name, func(t *testing.T) {
			out := run(t, root, nil, helm, append([]string{"lint", "--strict", chart}, args...)...)
			if !strings.Contains(out, "0 chart(s) failed") {
				t.Errorf("helm lint: %s", out)
			}
		})
	}
}

// Values the schema must refuse, with a message naming the value.
func TestHelmSchemaRejects(t *testing.T) {
	helm := tool(t, "helm")
	for _, tc := range []struct{ set, want string }{
		{"logLevel=loud", "logLevel"},
		{"image.pullPolicy=Sometimes", "pullPolicy"},
		{"controller.replicas=-1", "replicas"},
		{"speaker.metricsPort=70000", "metricsPort"},
		{"crds.install=maybe", "install"},
		{"metrics.serviceMonitor.interval=soon", "interval"},
		{"nosuchkey=1", "nosuchkey"},
		{"speaker.extraArgs[0]=rm -rf", "extraArgs"},
		// Typos and wrong types in the values added for issue 15.
		{"logLevel=warning", "logLevel"},
		{"controller.logLevel=trace", "logLevel"},
		{"speaker.logLevl=debug", "logLevl"},
		{"controller.image.digest=latest", "digest"},
		{"speaker.image.digets=sha256:00", "digets"},
		{"image.repository=registry.example/bgplb", "repository"},
		{"image.digets=sha256:00", "digets"},
		{"nameOverride=Bad_Name", "nameOverride"},
		{"rbac.creat=false", "creat"},
		{"rbac.create=no", "create"},
		{"controller.serviceAcount.create=false", "serviceAcount"},
		{"speaker.serviceAccount.nmae=x", "nmae"},
		{"controller.podDisruptionBudget.enable=true", "enable"},
		{"controller.podDisruptionBudget.maxUnavailable=half", "maxUnavailable"},
		{"controller.podSecurityContext=1", "podSecurityContext"},
		{"speaker.securityContext=none", "securityContext"},
		{"controller.extraEnv[0].value=x", "name"},
		{"speaker.extraEnvs[0].name=x", "extraEnvs"},
		{"controller.podAnotations.a=b", "podAnotations"},
	} {
		t.Run(tc.set, func(t *testing.T) {
			out, err := runErr(root, nil, helm, "template", "x", filepath.Join(root, "charts/bgplb"), "--set", tc.set)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("helm template --set %s: err %v, want a schema error naming %q\n%s", tc.set, err, tc.want, out)
			}
		})
	}
	// A pool without addresses is refused before it reaches the apiserver.
	_, err := runErr(root, nil, helm, "template", "x", filepath.Join(root, "charts/bgplb"),
		"--set-json", `ipPools=[{"name":"p","spec":{}}]`)
	if err == nil || !strings.Contains(err.Error(), "addresses") {
		t.Errorf("ipPools entry without addresses: %v", err)
	}
}

// What the chart renders for different values.
func TestHelmTemplateValues(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		objs := decode(t, helmTemplate(t))
		// The CRDs are in crds/: Helm installs them, `helm template` prints
		// them only with --include-crds.
		if n := len(byKind(objs, "CustomResourceDefinition")); n != 0 {
			t.Errorf("%d CRDs rendered from templates, want them in crds/ only", n)
		}
		if n := len(byKind(decode(t, helmTemplate(t, "--include-crds")), "CustomResourceDefinition")); n != 4 {
			t.Errorf("--include-crds: %d CRDs, want 4", n)
		}
		if n := len(byKind(objs, "ServiceMonitor")); n != 0 {
			t.Errorf("%d ServiceMonitors by default", n)
		}
		if args := containerArgs(t, find(objs, "Deployment", "bgplb-controller")); !slices.Contains(args, "--serve-services-without-class=true") {
			t.Errorf("controller args %v", args)
		}
		for _, k := range []string{"IPPool", "BGPPeer", "BGPAdvertisement"} {
			if n := len(byKind(objs, k)); n != 0 {
				t.Errorf("%d %ss by default", n, k)
			}
		}
	})
	t.Run("resources need no second pass", func(t *testing.T) {
		// Rendered as ordinary objects whether or not the cluster serves
		// bgplb.io yet: Helm creates the CRDs from crds/ before them.
		objs := decode(t, helmTemplate(t, "--set-json", `ipPools=[{"name":"default","spec":{"addresses":["192.168.254.0/24"]}}]`))
		pool := find(objs, "IPPool", "default")
		if pool == nil {
			t.Fatalf("IPPool not rendered for a cluster without the bgplb.io API")
		}
		if len(pool.GetAnnotations()["helm.sh/hook"]) != 0 {
			t.Errorf("IPPool is a hook: %v", pool.GetAnnotations())
		}
	})
	t.Run("crds.install=false is refused with the way out", func(t *testing.T) {
		_, err := runErr(root, nil, tool(t, "helm"), "template", "x", filepath.Join(root, "charts/bgplb"), "--set", "crds.install=false")
		if err == nil || !strings.Contains(err.Error(), "--skip-crds") {
			t.Errorf("crds.install=false: %v, want an error pointing to --skip-crds", err)
		}
		// Old releases' values (crds.install=true, crds.keep) still render.
		helmTemplate(t, "--set", "crds.install=true,crds.keep=false")
	})
	t.Run("custom", func(t *testing.T) {
		objs := decode(t, helmTemplate(t,
			"--set", "metrics.serviceMonitor.enabled=true,loadBalancerClass.serveUnclassed=false,logLevel=debug",
			"--set", "controller.image.repository=registry.example/bgplb-controller,speaker.image.repository=registry.example/bgplb-speaker,image.tag=dev1,fullnameOverride=lb",
			"--set", "speaker.nodeSelector.bgp=yes,controller.replicas=2",
			"--set-json", `speaker.extraArgs=["--graceful-shutdown-when-cordoned"]`,
			"--set-json", `ipPools=[{"name":"default","spec":{"addresses":["192.168.254.0/24"]}}]`,
			"--set-json", `bgpPeers=[{"name":"router","spec":{"peerAddress":"192.168.2.1","peerASN":64500,"myASN":64512}}]`,
			"--set-json", `bgpAdvertisements=[{"name":"all","spec":{"ipPools":["default"]}}]`))
		if n := len(byKind(objs, "ServiceMonitor")); n != 2 {
			t.Errorf("%d ServiceMonitors, want 2", n)
		}
		ctrl := find(objs, "Deployment", "lb-controller")
		spk := find(objs, "DaemonSet", "lb-speaker")
		if ctrl == nil || spk == nil {
			t.Fatalf("fullnameOverride: no lb-controller/lb-speaker")
		}
		for _, o := range []*unstructured.Unstructured{ctrl, spk} {
			args := containerArgs(t, o)
			for _, want := range []string{"--serve-services-without-class=false", "--log-level=debug"} {
				if !slices.Contains(args, want) {
					t.Errorf("%s args %v lack %s", o.GetName(), args, want)
				}
			}
			if img := images(o); len(img) != 1 || img[0] != "registry.example/bgplb-"+strings.TrimPrefix(o.GetName(), "lb-")+":dev1" {
				t.Errorf("%s images %v", o.GetName(), img)
			}
		}
		if r, _, _ := unstructured.NestedFieldNoCopy(ctrl.Object, "spec", "replicas"); fmt.Sprint(r) != "2" {
			t.Errorf("controller replicas %v", r)
		}
		if args := containerArgs(t, spk); !slices.Contains(args, "--graceful-shutdown-when-cordoned") {
			t.Errorf("speaker.extraArgs not passed: %v", args)
		}
		if ns, _, _ := unstructured.NestedStringMap(spk.Object, "spec", "template", "spec", "nodeSelector"); ns["bgp"] != "yes" {
			t.Errorf("speaker nodeSelector %v", ns)
		}
		for kind, name := range map[string]string{"IPPool": "default", "BGPPeer": "router", "BGPAdvertisement": "all"} {
			if find(objs, kind, name) == nil {
				t.Errorf("no %s %s", kind, name)
			}
		}
		checkRBAC(t, objs, "lb", "bgplb-system")
	})
}

// everyValue sets every value added for issue 15 (the chart's conventions
// from MetalLB, Cilium and frr-k8s) to something other than its default.
var everyValue = []string{
	"--set", "controller.image.digest=sha256:" + strings.Repeat("ab", 32) + ",speaker.image.digest=sha256:" + strings.Repeat("cd", 32) + ",image.tag=ignored",
	"--set", "nameOverride=lb,logLevel=warn,speaker.logLevel=debug",
	"--set", "controller.replicas=1,controller.podDisruptionBudget.enabled=true,controller.podDisruptionBudget.minAvailable=1",
	"--set", "controller.serviceAccount.name=ctrl-sa,controller.serviceAccount.annotations.team=net",
	"--set", "controller.podAnnotations.scrape=yes,speaker.podLabels.tier=edge",
	"--set-json", `controller.extraArgs=["--service-workers=16"]`,
	"--set-json", `speaker.extraEnv=[{"name":"GODEBUG","value":"netdns=go"}]`,
	"--set-json", `controller.extraEnv=[{"name":"GOMAXPROCS","value":"1"}]`,
	"--set-json", `controller.podSecurityContext={"fsGroup":2000}`,
	"--set-json", `speaker.securityContext={"readOnlyRootFilesystem":false}`,
}

// Every value added for issue 15, rendered with and without it.
func TestHelmTemplateNewValues(t *testing.T) {
	def := decode(t, helmTemplate(t))
	set := decode(t, helmTemplate(t, everyValue...))
	// nameOverride renames every object and the name label.
	dCtrl, dSpk := find(def, "Deployment", "bgplb-controller"), find(def, "DaemonSet", "bgplb-speaker")
	ctrl, spk := find(set, "Deployment", "lb-controller"), find(set, "DaemonSet", "lb-speaker")
	if dCtrl == nil || dSpk == nil || ctrl == nil || spk == nil {
		t.Fatalf("workloads: default %v %v, nameOverride=lb %v %v", dCtrl != nil, dSpk != nil, ctrl != nil, spk != nil)
	}
	for _, o := range set {
		if o.GetLabels()["app.kubernetes.io/name"] != "lb" {
			t.Errorf("%s %s: app.kubernetes.io/name %q, want lb", o.GetKind(), o.GetName(), o.GetLabels()["app.kubernetes.io/name"])
		}
	}
	if sel, _, _ := unstructured.NestedStringMap(ctrl.Object, "spec", "selector", "matchLabels"); sel["app.kubernetes.io/name"] != "lb" {
		t.Errorf("nameOverride: controller selector %v", sel)
	}

	t.Run("a program's image digest wins over the tag", func(t *testing.T) {
		for o, want := range map[*unstructured.Unstructured]string{
			ctrl: "ghcr.io/bgplb/bgplb-controller@sha256:" + strings.Repeat("ab", 32),
			spk:  "ghcr.io/bgplb/bgplb-speaker@sha256:" + strings.Repeat("cd", 32),
		} {
			if img := images(o); !slices.Equal(img, []string{want}) {
				t.Errorf("%s images %v, want %s", o.GetName(), img, want)
			}
		}
		for o, want := range map[*unstructured.Unstructured]string{dCtrl: "ghcr.io/bgplb/bgplb-controller:v", dSpk: "ghcr.io/bgplb/bgplb-speaker:v"} {
			if img := images(o); !strings.HasPrefix(img[0], want) {
				t.Errorf("default image %v, want %s<appVersion>", img, want)
			}
		}
	})
	t.Run("logLevel per program", func(t *testing.T) {
		for o, want := range map[*unstructured.Unstructured]string{dCtrl: "info", dSpk: "info", ctrl: "warn", spk: "debug"} {
			args := containerArgs(t, o)
			if !slices.Contains(args, "--log-level="+want) {
				t.Errorf("%s args %v lack --log-level=%s", o.GetName(), args, want)
			}
			for _, a := range args {
				if strings.HasPrefix(a, "--zap-log-level") {
					t.Errorf("%s still passes %s", o.GetName(), a)
				}
			}
		}
	})
	t.Run("podDisruptionBudget", func(t *testing.T) {
		if n := len(byKind(def, "PodDisruptionBudget")); n != 0 {
			t.Errorf("one replica: %d PodDisruptionBudgets (it would block drains or protect nothing)", n)
		}
		two := decode(t, helmTemplate(t, "--set", "controller.replicas=2"))
		pdb := find(two, "PodDisruptionBudget", "bgplb-controller")
		if pdb == nil {
			t.Fatalf("replicas=2: no PodDisruptionBudget")
		}
		if v, _, _ := unstructured.NestedFieldNoCopy(pdb.Object, "spec", "maxUnavailable"); fmt.Sprint(v) != "1" {
			t.Errorf("replicas=2: maxUnavailable %v, want 1", v)
		}
		sel, _, _ := unstructured.NestedStringMap(pdb.Object, "spec", "selector", "matchLabels")
		tmpl, _, _ := unstructured.NestedStringMap(find(two, "Deployment", "bgplb-controller").Object, "spec", "template", "metadata", "labels")
		for k, v := range sel {
			if tmpl[k] != v {
				t.Errorf("PDB selects %s=%s; the controller's pods have %v", k, v, tmpl)
			}
		}
		if n := len(byKind(decode(t, helmTemplate(t, "--set", "controller.replicas=3,controller.podDisruptionBudget.enabled=false")), "PodDisruptionBudget")); n != 0 {
			t.Errorf("enabled=false: %d PodDisruptionBudgets", n)
		}
		forced := find(set, "PodDisruptionBudget", "lb-controller")
		if forced == nil {
			t.Fatalf("enabled=true with one replica: no PodDisruptionBudget")
		}
		spec, _, _ := unstructured.NestedMap(forced.Object, "spec")
		if fmt.Sprint(spec["minAvailable"]) != "1" || spec["maxUnavailable"] != nil {
			t.Errorf("minAvailable=1: spec %v, want minAvailable only", spec)
		}
		pct := find(decode(t, helmTemplate(t, "--set", "controller.replicas=4,controller.podDisruptionBudget.maxUnavailable=50%")), "PodDisruptionBudget", "bgplb-controller")
		if v, _, _ := unstructured.NestedString(pct.Object, "spec", "maxUnavailable"); v != "50%" {
			t.Errorf("maxUnavailable=50%%: %v", v)
		}
	})
	t.Run("serviceAccount", func(t *testing.T) {
		if sa := podSpecString(ctrl, "serviceAccountName"); sa != "ctrl-sa" {
			t.Errorf("controller.serviceAccount.name: runs as %q", sa)
		}
		sa := find(set, "ServiceAccount", "ctrl-sa")
		if sa == nil || sa.GetAnnotations()["team"] != "net" {
			t.Errorf("controller service account ctrl-sa with annotation team=net: %v", sa)
		}
		if sa := podSpecString(spk, "serviceAccountName"); sa != "lb-speaker" || find(set, "ServiceAccount", "lb-speaker") == nil {
			t.Errorf("speaker runs as %q", sa)
		}
		checkRBAC(t, set, "lb", "bgplb-system")

		// Not created: a named existing account, or the namespace's default;
		// the bindings still name it.
		objs := decode(t, helmTemplate(t, "--set", "controller.serviceAccount.create=false,speaker.serviceAccount.create=false,speaker.serviceAccount.name=mine"))
		if n := len(byKind(objs, "ServiceAccount")); n != 0 {
			t.Errorf("create=false: %d ServiceAccounts", n)
		}
		for o, want := range map[string]string{"Deployment/bgplb-controller": "default", "DaemonSet/bgplb-speaker": "mine"} {
			kind, name, _ := strings.Cut(o, "/")
			if got := podSpecString(find(objs, kind, name), "serviceAccountName"); got != want {
				t.Errorf("%s runs as %q, want %q", o, got, want)
			}
		}
		subjects := map[string]bool{}
		for _, kind := range []string{"RoleBinding", "ClusterRoleBinding"} {
			for _, b := range byKind(objs, kind) {
				subs, _, _ := unstructured.NestedSlice(b.Object, "subjects")
				subjects[subs[0].(map[string]any)["name"].(string)] = true
			}
		}
		if !subjects["default"] || !subjects["mine"] || len(subjects) != 2 {
			t.Errorf("bindings name %v, want default and mine", subjects)
		}
	})
	t.Run("rbac.create", func(t *testing.T) {
		objs := decode(t, helmTemplate(t, "--set", "rbac.create=false"))
		for _, kind := range []string{"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"} {
			if n := len(byKind(objs, kind)); n != 0 {
				t.Errorf("rbac.create=false: %d %ss", n, kind)
			}
		}
		if n := len(byKind(objs, "ServiceAccount")); n != 2 {
			t.Errorf("rbac.create=false: %d ServiceAccounts, want 2 (serviceAccount.create is separate)", n)
		}
		// controller and speaker: a ClusterRole and a Role each; and the
		// metrics reader.
		if n := len(byKind(def, "ClusterRole")) + len(byKind(def, "Role")); n != 5 {
			t.Errorf("defaults: %d roles, want 5", n)
		}
		// Plain-HTTP metrics need no reader role.
		if r := find(decode(t, helmTemplate(t, "--set", "metrics.secure=false")), "ClusterRole", "bgplb-metrics-reader"); r != nil {
			t.Errorf("metrics.secure=false still installs %s", r.GetName())
		}
	})
	t.Run("podAnnotations and podLabels", func(t *testing.T) {
		ann, _, _ := unstructured.NestedStringMap(ctrl.Object, "spec", "template", "metadata", "annotations")
		if ann["scrape"] != "yes" || ann["kubectl.kubernetes.io/default-container"] != "controller" {
			t.Errorf("controller pod annotations %v", ann)
		}
		labels, _, _ := unstructured.NestedStringMap(spk.Object, "spec", "template", "metadata", "labels")
		if labels["tier"] != "edge" || labels["app.kubernetes.io/component"] != "speaker" {
			t.Errorf("speaker pod labels %v", labels)
		}
		if labels, _, _ := unstructured.NestedStringMap(dSpk.Object, "spec", "template", "metadata", "labels"); labels["tier"] != "" {
			t.Errorf("default speaker pod labels %v", labels)
		}
	})
	t.Run("extraArgs and extraEnv", func(t *testing.T) {
		if args := containerArgs(t, ctrl); !slices.Contains(args, "--service-workers=16") {
			t.Errorf("controller.extraArgs: %v", args)
		}
		for o, want := range map[*unstructured.Unstructured]string{ctrl: "GOMAXPROCS=1", spk: "GODEBUG=netdns=go", dCtrl: "", dSpk: ""} {
			env := containerEnv(o)
			// The chart's own variables stay, the extra ones follow.
			if env["POD_NAMESPACE"] != "metadata.namespace" {
				t.Errorf("%s lost POD_NAMESPACE: %v", o.GetName(), env)
			}
			name, value, _ := strings.Cut(want, "=")
			if want != "" && env[name] != value {
				t.Errorf("%s env %v lacks %s", o.GetName(), env, want)
			}
			if n := len(env); want == "" && n > 2 {
				t.Errorf("%s default env %v", o.GetName(), env)
			}
		}
	})
	t.Run("security contexts", func(t *testing.T) {
		pod, _, _ := unstructured.NestedMap(ctrl.Object, "spec", "template", "spec", "securityContext")
		if fmt.Sprint(pod["fsGroup"]) != "2000" || pod["runAsNonRoot"] != true {
			t.Errorf("controller.podSecurityContext merges into the defaults: %v", pod)
		}
		cs, _, _ := unstructured.NestedSlice(spk.Object, "spec", "template", "spec", "containers")
		sc := cs[0].(map[string]any)["securityContext"].(map[string]any)
		if sc["readOnlyRootFilesystem"] != false || sc["allowPrivilegeEscalation"] != false {
			t.Errorf("speaker.securityContext: %v", sc)
		}
		// Defaults: the least-privilege contexts (TestWorkloadSecurity checks
		// them in full).
		checkWorkloads(t, def)
	})
}

// A release in another namespace: every namespaced object, the Role for
// Secrets and Leases, and every binding's subject are in that namespace.
func TestHelmTemplateOtherNamespace(t *testing.T) {
	const ns = "network-lb"
	objs := decode(t, helmTemplateNS(t, ns, "--set", "controller.replicas=2,metrics.serviceMonitor.enabled=true",
		"--set-json", `ipPools=[{"name":"default","spec":{"addresses":["192.168.254.0/24"]}}]`))
	clusterScoped := map[string]bool{"ClusterRole": true, "ClusterRoleBinding": true, "IPPool": true, "BGPPeer": true, "BGPAdvertisement": true}
	for _, o := range objs {
		want := ns
		if clusterScoped[o.GetKind()] {
			want = ""
		}
		if o.GetNamespace() != want {
			t.Errorf("%s %s in namespace %q, want %q", o.GetKind(), o.GetName(), o.GetNamespace(), want)
		}
	}
	for _, comp := range []string{"controller", "speaker"} {
		if r := find(objs, "Role", "bgplb-"+comp); r == nil || r.GetNamespace() != ns {
			t.Errorf("Role bgplb-%s: %v", comp, r)
		}
	}
	secrets := false
	for _, rule := range mustSlice(t, find(objs, "Role", "bgplb-speaker"), "rules") {
		res, _, _ := unstructured.NestedStringSlice(rule.(map[string]any), "resources")
		secrets = secrets || slices.Contains(res, "secrets")
	}
	if !secrets {
		t.Errorf("the speaker's Role in %s does not grant Secrets", ns)
	}
	checkRBAC(t, objs, "bgplb", ns)
	for _, sm := range byKind(objs, "ServiceMonitor") {
		if names, _, _ := unstructured.NestedStringSlice(sm.Object, "spec", "namespaceSelector", "matchNames"); !slices.Equal(names, []string{ns}) {
			t.Errorf("ServiceMonitor %s selects namespaces %v", sm.GetName(), names)
		}
	}
	// The programs find their namespace (leader election, Secrets) from the
	// pod, not from a value.
	for _, o := range []*unstructured.Unstructured{find(objs, "Deployment", "bgplb-controller"), find(objs, "DaemonSet", "bgplb-speaker")} {
		if env := containerEnv(o); env["POD_NAMESPACE"] != "metadata.namespace" {
			t.Errorf("%s POD_NAMESPACE %v", o.GetName(), env)
		}
	}
	if !strings.Contains(string(helmTemplateNS(t, ns)), "bgplb-system") {
		return
	}
	t.Errorf("the chart rendered in %s mentions bgplb-system", ns)
}

func podSpecString(o *unstructured.Unstructured, field string) string {
	if o == nil {
		return "<missing workload>"
	}
	s, _, _ := unstructured.NestedString(o.Object, "spec", "template", "spec", field)
	return s
}

// containerEnv maps the first container's variables to their value, or to
// the fieldRef path for downward-API ones.
func containerEnv(o *unstructured.Unstructured) map[string]string {
	env := map[string]string{}
	cs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
	es, _, _ := unstructured.NestedSlice(cs[0].(map[string]any), "env")
	for _, e := range es {
		m := e.(map[string]any)
		v, _ := m["value"].(string)
		if p, ok, _ := unstructured.NestedString(m, "valueFrom", "fieldRef", "fieldPath"); ok {
			v = p
		}
		env[m["name"].(string)] = v
	}
	return env
}

func mustSlice(t *testing.T, o *unstructured.Unstructured, fields ...string) []any {
	t.Helper()
	if o == nil {
		t.Fatalf("missing object for %v", fields)
	}
	s, _, _ := unstructured.NestedSlice(o.Object, fields...)
	return s
}

// Both ways of installing get the same least-privilege workloads.
func TestWorkloadSecurity(t *testing.T) {
	for name, objs := range map[string][]*unstructured.Unstructured{
		"dist/install.yaml": decode(t, readFile(t, "dist/install.yaml")),
		"chart":             decode(t, helmTemplate(t)),
	} {
		t.Run(name, func(t *testing.T) {
			checkWorkloads(t, objs)
			checkRBAC(t, objs, "bgplb", "bgplb-system")
		})
	}
}

func checkWorkloads(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	ctrl := find(objs, "Deployment", "bgplb-controller")
	spk := find(objs, "DaemonSet", "bgplb-speaker")
	if ctrl == nil || spk == nil {
		t.Fatalf("want Deployment and DaemonSet bgplb-controller/bgplb-speaker")
	}
	for _, o := range []*unstructured.Unstructured{ctrl, spk} {
		if o.GetNamespace() != "bgplb-system" {
			t.Errorf("%s in namespace %q", o.GetName(), o.GetNamespace())
		}
		pod, _, _ := unstructured.NestedMap(o.Object, "spec", "template", "spec")
		host, _, _ := unstructured.NestedBool(pod, "hostNetwork")
		if want := o == spk; host != want {
			t.Errorf("%s hostNetwork %v, want %v", o.GetName(), host, want)
		}
		if nonRoot, _, _ := unstructured.NestedBool(pod, "securityContext", "runAsNonRoot"); !nonRoot {
			t.Errorf("%s: pod securityContext.runAsNonRoot not true", o.GetName())
		}
		if sa, _, _ := unstructured.NestedString(pod, "serviceAccountName"); sa != o.GetName() {
			t.Errorf("%s runs as service account %q", o.GetName(), sa)
		}
		cs, _, _ := unstructured.NestedSlice(pod, "containers")
		if len(cs) != 1 {
			t.Fatalf("%s: %d containers", o.GetName(), len(cs))
		}
		c := cs[0].(map[string]any)
		sc, _, _ := unstructured.NestedMap(c, "securityContext")
		if v, _, _ := unstructured.NestedBool(sc, "privileged"); v {
			t.Errorf("%s privileged", o.GetName())
		}
		if v, found, _ := unstructured.NestedBool(sc, "allowPrivilegeEscalation"); !found || v {
			t.Errorf("%s: allowPrivilegeEscalation not false", o.GetName())
		}
		if v, _, _ := unstructured.NestedBool(sc, "readOnlyRootFilesystem"); !v {
			t.Errorf("%s: root filesystem not read-only", o.GetName())
		}
		if drop, _, _ := unstructured.NestedStringSlice(sc, "capabilities", "drop"); !slices.Equal(drop, []string{"ALL"}) {
			t.Errorf("%s drops capabilities %v, want ALL", o.GetName(), drop)
		}
		// The speaker only dials out to its peers: no capability at all.
		if add, _, _ := unstructured.NestedStringSlice(sc, "capabilities", "add"); len(add) != 0 {
			t.Errorf("%s adds capabilities %v", o.GetName(), add)
		}
		for _, probe := range []string{"livenessProbe", "readinessProbe"} {
			if _, ok := c[probe]; !ok {
				t.Errorf("%s has no %s", o.GetName(), probe)
			}
		}
		if _, ok := c["resources"]; !ok {
			t.Errorf("%s has no resources", o.GetName())
		}
		// Every named probe port is a declared container port.
		ports := map[string]bool{}
		ps, _, _ := unstructured.NestedSlice(c, "ports")
		for _, p := range ps {
			ports[p.(map[string]any)["name"].(string)] = true
		}
		if !ports["metrics"] || !ports["health"] {
			t.Errorf("%s ports %v, want metrics and health", o.GetName(), ports)
		}
	}
	env, _, _ := unstructured.NestedSlice(spk.Object, "spec", "template", "spec", "containers")
	found := false
	for _, e := range env[0].(map[string]any)["env"].([]any) {
		m := e.(map[string]any)
		if m["name"] == "NODE_NAME" {
			p, _, _ := unstructured.NestedString(m, "valueFrom", "fieldRef", "fieldPath")
			found = p == "spec.nodeName"
		}
	}
	if !found {
		t.Errorf("speaker lacks NODE_NAME from fieldRef spec.nodeName")
	}
	for _, comp := range []string{"controller", "speaker"} {
		svc := find(objs, "Service", "bgplb-"+comp+"-metrics")
		if svc == nil {
			t.Errorf("no metrics Service for the %s", comp)
			continue
		}
		sel, _, _ := unstructured.NestedStringMap(svc.Object, "spec", "selector")
		if sel["app.kubernetes.io/component"] != comp {
			t.Errorf("metrics Service of the %s selects %v", comp, sel)
		}
	}
}

// checkRBAC: no wildcard anywhere; every binding binds an existing role of
// the same scope to an existing service account; each program's service
// account is bound to its own roles only; <prefix>-metrics-reader, the role
// for the user's Prometheus, is installed, bound to nobody, and grants GET
// /metrics only.
func checkRBAC(t *testing.T, objs []*unstructured.Unstructured, prefix, ns string) {
	t.Helper()
	roles := map[string]bool{}
	for _, kind := range []string{"Role", "ClusterRole"} {
		for _, r := range byKind(objs, kind) {
			roles[kind+"/"+r.GetName()] = true
			rules, _, _ := unstructured.NestedSlice(r.Object, "rules")
			if len(rules) == 0 {
				t.Errorf("%s %s has no rules", kind, r.GetName())
			}
			for _, rule := range rules {
				for _, field := range []string{"apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"} {
					vals, _, _ := unstructured.NestedStringSlice(rule.(map[string]any), field)
					for _, v := range vals {
						if strings.Contains(v, "*") {
							t.Errorf("%s %s: wildcard %q in %s", kind, r.GetName(), v, field)
						}
					}
				}
			}
		}
	}
	// Each service account's program: its component label, else its name
	// (<prefix>-<program>, as in dist/install.yaml).
	sas := map[string]bool{}
	saComp := map[string]string{}
	for _, sa := range byKind(objs, "ServiceAccount") {
		sas[sa.GetName()] = true
		saComp[sa.GetName()] = cmp.Or(sa.GetLabels()["app.kubernetes.io/component"], strings.TrimPrefix(sa.GetName(), prefix+"-"))
	}
	bound := map[string]bool{}
	for _, kind := range []string{"RoleBinding", "ClusterRoleBinding"} {
		for _, b := range byKind(objs, kind) {
			rk, _, _ := unstructured.NestedString(b.Object, "roleRef", "kind")
			rn, _, _ := unstructured.NestedString(b.Object, "roleRef", "name")
			if !roles[rk+"/"+rn] {
				t.Errorf("%s %s binds %s %s, which is not installed", kind, b.GetName(), rk, rn)
			}
			if kind == "ClusterRoleBinding" && rk != "ClusterRole" {
				t.Errorf("%s %s binds a %s", kind, b.GetName(), rk)
			}
			bound[rk+"/"+rn] = true
			subs, _, _ := unstructured.NestedSlice(b.Object, "subjects")
			for _, s := range subs {
				m := s.(map[string]any)
				if m["kind"] != "ServiceAccount" || !sas[m["name"].(string)] || m["namespace"] != ns {
					t.Errorf("%s %s subject %v is not one of our service accounts", kind, b.GetName(), m)
				}
				// The controller's roles go to the controller only, etc.
				comp := saComp[m["name"].(string)]
				if !strings.HasPrefix(rn, prefix+"-"+comp) {
					t.Errorf("%s %s gives %s to %s", kind, b.GetName(), rn, m["name"])
				}
			}
		}
	}
	reader := "ClusterRole/" + prefix + "-metrics-reader"
	if !roles[reader] {
		t.Errorf("no %s for the metrics endpoints' scrapers", reader)
	} else {
		rules, _, _ := unstructured.NestedSlice(find(objs, "ClusterRole", prefix+"-metrics-reader").Object, "rules")
		want := []any{map[string]any{"nonResourceURLs": []any{"/metrics"}, "verbs": []any{"get"}}}
		if d := gocmp.Diff(want, rules); d != "" {
			t.Errorf("%s rules (-want +got):\n%s", reader, d)
		}
		if bound[reader] {
			t.Errorf("%s is bound by the manifests; only the user binds it (to Prometheus)", reader)
		}
	}
	for r := range roles {
		if !bound[r] && r != reader {
			t.Errorf("%s is installed but bound to nobody", r)
		}
	}
	for _, comp := range []string{"controller", "speaker"} {
		if !slices.Contains(slices.Collect(maps.Values(saComp)), comp) || !roles["ClusterRole/"+prefix+"-"+comp] {
			t.Errorf("want service account and ClusterRole %s-%s", prefix, comp)
		}
	}
}

func containerArgs(t *testing.T, o *unstructured.Unstructured) []string {
	t.Helper()
	if o == nil {
		t.Fatal("missing workload")
	}
	cs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
	args, _, _ := unstructured.NestedStringSlice(cs[0].(map[string]any), "args")
	return args
}

func images(o *unstructured.Unstructured) []string {
	var r []string
	cs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
	for _, c := range cs {
		r = append(r, c.(map[string]any)["image"].(string))
	}
	return r
}

// The binaries the image ships are static (CGO off, no ELF interpreter),
// start with --help, and accept every flag the manifests and the chart pass.
func TestBinariesStaticAndFlagsMatchManifests(t *testing.T) {
	dir := t.TempDir()
	objs := append(decode(t, readFile(t, "dist/install.yaml")),
		decode(t, helmTemplate(t, "--set", "loadBalancerClass.serveUnclassed=false,logLevel=debug",
			"--set-json", `speaker.extraArgs=["--graceful-shutdown-when-cordoned"]`))...)
	objs = append(objs, decode(t, helmTemplate(t, "--set", "logLevel=warn,controller.logLevel=error"))...)
	objs = append(objs, decode(t, helmTemplate(t, "--set", "speaker.symmetricReturnPath.enabled=true"))...)
	for _, prog := range []string{"controller", "speaker"} {
		bin := filepath.Join(dir, "bgplb-"+prog)
		cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/bgplb-"+prog)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build cmd/bgplb-%s as the Dockerfile does: %v\n%s", prog, err, out)
		}
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("bgplb-%s has an ELF interpreter: not static", prog)
			}
		}
		if libs, _ := f.ImportedLibraries(); len(libs) != 0 {
			t.Errorf("bgplb-%s links %v", prog, libs)
		}
		f.Close()
		help, _ := exec.Command(bin, "--help").CombinedOutput()
		if !strings.Contains(string(help), "-metrics-bind-address") {
			t.Fatalf("bgplb-%s --help did not print its flags:\n%s", prog, help)
		}
		kind := map[string]string{"controller": "Deployment", "speaker": "DaemonSet"}[prog]
		for _, o := range byKind(objs, kind) {
			for _, a := range containerArgs(t, o) {
				flag := strings.SplitN(strings.TrimLeft(a, "-"), "=", 2)[0]
				if !regexp.MustCompile(`(?m)^\s+-` + regexp.QuoteMeta(flag) + `\b`).Match(help) {
					t.Errorf("%s %s passes %s, which bgplb-%s does not know", kind, o.GetName(), a, prog)
				}
			}
		}
	}
}

// The Dockerfile copies only some folders into the build stage: every
// package of ours that the two programs import must be in one of them.
func TestDockerfileCopiesEverythingImported(t *testing.T) {
	df := string(readFile(t, "Dockerfile"))
	var copied []string
	for _, m := range regexp.MustCompile(`(?m)^COPY ([a-z0-9_]+)/ `).FindAllStringSubmatch(df, -1) {
		copied = append(copied, m[1])
	}
	cmd := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "./cmd/bgplb-controller", "./cmd/bgplb-speaker")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const mod = "github.com/bgplb/bgplb/"
	for _, p := range strings.Fields(string(out)) {
		rel, ok := strings.CutPrefix(p, mod)
		if !ok {
			continue
		}
		top := strings.SplitN(rel, "/", 2)[0]
		if !slices.Contains(copied, top) {
			t.Errorf("the programs import %s but the Dockerfile does not COPY %s/ (copies %v)", p, top, copied)
		}
	}
	if !strings.Contains(df, "CGO_ENABLED=0") || !strings.Contains(df, "distroless/static") || !strings.Contains(df, "USER 65532") {
		t.Errorf("Dockerfile must build with CGO_ENABLED=0 onto distroless/static as user 65532")
	}
}

// speaker.symmetricReturnPath.enabled passes the flags and grants
// CAP_NET_ADMIN, as root (no ambient capabilities in Kubernetes), and
// nothing else of the hardening goes; off (the default), the speaker has
// no capability (checkWorkloads).
func TestHelmSymmetricReturnPath(t *testing.T) {
	objs := decode(t, helmTemplate(t, "--set", "speaker.symmetricReturnPath.enabled=true,speaker.symmetricReturnPath.markMask=0x00f00000"))
	spk := find(objs, "DaemonSet", "bgplb-speaker")
	args := containerArgs(t, spk)
	for _, want := range []string{"--symmetric-return-path=true", "--return-path-mark-mask=0x00f00000", "--return-path-table-base=4200", "--return-path-rule-priority=4200"} {
		if !slices.Contains(args, want) {
			t.Errorf("speaker args %v lack %s", args, want)
		}
	}
	cs, _, _ := unstructured.NestedSlice(spk.Object, "spec", "template", "spec", "containers")
	sc, _, _ := unstructured.NestedMap(cs[0].(map[string]any), "securityContext")
	if add, _, _ := unstructured.NestedStringSlice(sc, "capabilities", "add"); !slices.Equal(add, []string{"NET_ADMIN"}) {
		t.Errorf("capabilities.add %v, want NET_ADMIN", add)
	}
	if drop, _, _ := unstructured.NestedStringSlice(sc, "capabilities", "drop"); !slices.Equal(drop, []string{"ALL"}) {
		t.Errorf("capabilities.drop %v, want ALL", drop)
	}
	if u, _, _ := unstructured.NestedInt64(sc, "runAsUser"); u != 0 {
		t.Errorf("runAsUser %d, want 0", u)
	}
	for _, k := range []string{"readOnlyRootFilesystem"} {
		if v, _, _ := unstructured.NestedBool(sc, k); !v {
			t.Errorf("%s lost", k)
		}
	}
	if v, found, _ := unstructured.NestedBool(sc, "allowPrivilegeEscalation"); !found || v {
		t.Error("allowPrivilegeEscalation not false")
	}
	for _, a := range containerArgs(t, find(decode(t, helmTemplate(t)), "DaemonSet", "bgplb-speaker")) {
		if strings.Contains(a, "return-path") {
			t.Errorf("default chart passes %s", a)
		}
	}
}
