package install

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
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
			cmp.Diff(string(want), string(got)))
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
		pairs[filepath.Join("config/crd/bases", filepath.Base(c))] = filepath.Join("charts/bgplb/files/crds", filepath.Base(c))
	}
	copies, _ := filepath.Glob(filepath.Join(root, "charts/bgplb/files/crds/*.yaml"))
	if len(copies) != len(crds) {
		t.Errorf("charts/bgplb/files/crds has %d CRDs, config/crd/bases %d: run `make chart-sync`", len(copies), len(crds))
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
			if img != "ghcr.io/bgplb/bgplb:"+chart.AppVersion {
				t.Errorf("chart %s/%s image %q, want the appVersion", o.GetKind(), o.GetName(), img)
			}
		}
	}
}

func TestHelmLint(t *testing.T) {
	helm := tool(t, "helm")
	chart := filepath.Join(root, "charts", "bgplb")
	for name, args := range map[string][]string{
		"defaults": nil,
		"everything": {"--set", "crds.install=false,metrics.serviceMonitor.enabled=true,loadBalancerClass.serveUnclassed=false,logLevel=debug",
			"--set-json", `ipPools=[{"name":"default","spec":{"addresses":["192.168.254.0/24"]}}]`},
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
		if n := len(byKind(objs, "CustomResourceDefinition")); n != 4 {
			t.Errorf("%d CRDs, want 4", n)
		}
		for _, crd := range byKind(objs, "CustomResourceDefinition") {
			if crd.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
				t.Errorf("CRD %s lacks helm.sh/resource-policy: keep", crd.GetName())
			}
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
	t.Run("resources wait for their API", func(t *testing.T) {
		// Helm cannot create them in the release that creates their CRDs.
		objs := decode(t, helmTemplate(t, "--set-json", `ipPools=[{"name":"default","spec":{"addresses":["192.168.254.0/24"]}}]`))
		if n := len(byKind(objs, "IPPool")); n != 0 {
			t.Errorf("%d IPPools rendered for a cluster without the bgplb.io API", n)
		}
	})
	t.Run("custom", func(t *testing.T) {
		objs := decode(t, helmTemplate(t, "--api-versions", "bgplb.io/v1alpha1",
			"--set", "crds.install=false,metrics.serviceMonitor.enabled=true,loadBalancerClass.serveUnclassed=false,logLevel=debug",
			"--set", "image.repository=registry.example/bgplb,image.tag=dev1,fullnameOverride=lb",
			"--set", "speaker.nodeSelector.bgp=yes,controller.replicas=2",
			"--set-json", `speaker.extraArgs=["--graceful-shutdown-when-cordoned"]`,
			"--set-json", `ipPools=[{"name":"default","spec":{"addresses":["192.168.254.0/24"]}}]`,
			"--set-json", `bgpPeers=[{"name":"router","spec":{"peerAddress":"192.168.2.1","peerASN":64500,"myASN":64512}}]`,
			"--set-json", `bgpAdvertisements=[{"name":"all","spec":{"ipPools":["default"]}}]`))
		if n := len(byKind(objs, "CustomResourceDefinition")); n != 0 {
			t.Errorf("crds.install=false rendered %d CRDs", n)
		}
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
			for _, want := range []string{"--serve-services-without-class=false", "--zap-log-level=debug"} {
				if !slices.Contains(args, want) {
					t.Errorf("%s args %v lack %s", o.GetName(), args, want)
				}
			}
			if img := images(o); len(img) != 1 || img[0] != "registry.example/bgplb:dev1" {
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
		checkRBAC(t, objs, "lb")
	})
}

// Both ways of installing get the same least-privilege workloads.
func TestWorkloadSecurity(t *testing.T) {
	for name, objs := range map[string][]*unstructured.Unstructured{
		"dist/install.yaml": decode(t, readFile(t, "dist/install.yaml")),
		"chart":             decode(t, helmTemplate(t)),
	} {
		t.Run(name, func(t *testing.T) {
			checkWorkloads(t, objs)
			checkRBAC(t, objs, "bgplb")
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
// account is bound to its own roles only.
func checkRBAC(t *testing.T, objs []*unstructured.Unstructured, prefix string) {
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
	sas := map[string]bool{}
	for _, sa := range byKind(objs, "ServiceAccount") {
		sas[sa.GetName()] = true
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
				if m["kind"] != "ServiceAccount" || !sas[m["name"].(string)] || m["namespace"] != "bgplb-system" {
					t.Errorf("%s %s subject %v is not one of our service accounts", kind, b.GetName(), m)
				}
				// The controller's roles go to the controller only, etc.
				comp := strings.TrimPrefix(m["name"].(string), prefix+"-")
				if !strings.HasPrefix(rn, prefix+"-"+comp) {
					t.Errorf("%s %s gives %s to %s", kind, b.GetName(), rn, m["name"])
				}
			}
		}
	}
	for r := range roles {
		if !bound[r] {
			t.Errorf("%s is installed but bound to nobody", r)
		}
	}
	for _, comp := range []string{"controller", "speaker"} {
		if !sas[prefix+"-"+comp] || !roles["ClusterRole/"+prefix+"-"+comp] {
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
