package faults

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// objectKinds are what BenchmarkAPIServerRate creates: from the cheapest
// object to a churn test's Service with its EndpointSlice.
var objectKinds = map[string]func(name string) []client.Object{
	"configmap": func(name string) []client.Object {
		return []client.Object{&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: map[string]string{"k": "v"}}}
	},
	// No ClusterIP: shows what the address allocation costs.
	"service-headless": func(name string) []client.Object {
		s := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone,
				Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}},
		}
		return []client.Object{s}
	},
	"service-clusterip": func(name string) []client.Object {
		s := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}},
		}
		return []client.Object{s}
	},
	"service-lb": func(name string) []client.Object { return []client.Object{service(name)} },
	"service-lb+slice": func(name string) []client.Object {
		return []client.Object{service(name), endpoints(name)}
	},
}

// rate creates n objects of kind from workers clients, then deletes them,
// and returns creates/s and deletes/s (objects of the kind, a Service with
// its slice counting as one).
func rate(tb testing.TB, c client.Client, kind, prefix string, n, workers int) (float64, float64) {
	tb.Helper()
	mk := objectKinds[kind]
	if mk == nil {
		tb.Fatalf("unknown kind %q", kind)
	}
	do := func(op func(client.Object) error) float64 {
		var firstErr atomic.Value
		next := make(chan int)
		var wg sync.WaitGroup
		start := time.Now()
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					for _, o := range mk(prefix + "-" + strconv.Itoa(i)) {
						if err := op(o); err != nil {
							firstErr.CompareAndSwap(nil, err)
						}
					}
				}
			}()
		}
		for i := 0; i < n; i++ {
			next <- i
		}
		close(next)
		wg.Wait()
		if err, _ := firstErr.Load().(error); err != nil {
			tb.Fatal(err)
		}
		return float64(n) / time.Since(start).Seconds()
	}
	ctx := context.Background()
	cr := do(func(o client.Object) error { return c.Create(ctx, o) })
	dr := do(func(o client.Object) error { return c.Delete(ctx, o) })
	return cr, dr
}

// controlPlaneCPU is the CPU time (user+system) used so far by the
// kube-apiserver and etcd processes this test process started.
func controlPlaneCPU() (api, etcd time.Duration) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil || filepath.Dir(exe) != filepath.Clean(dir) {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndex(s, ")")+2:])
		if ppid, _ := strconv.Atoi(f[1]); ppid != os.Getpid() {
			continue
		}
		u, _ := strconv.Atoi(f[11])
		st, _ := strconv.Atoi(f[12])
		d := time.Duration(u+st) * 10 * time.Millisecond // USER_HZ = 100
		switch filepath.Base(exe) {
		case "kube-apiserver":
			api += d
		case "etcd":
			etcd += d
		}
	}
	return api, etcd
}

// profileAPIServer saves 5 s of the kube-apiserver's CPU profile, read from
// its debug socket (see BenchmarkAPIServerRate).
func profileAPIServer(tb testing.TB, sock, path string) {
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	resp, err := hc.Get("http://kube-apiserver/debug/pprof/profile?seconds=5")
	if err != nil {
		tb.Log(err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	_ = os.WriteFile(path, b, 0o644)
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// BenchmarkAPIServerRate measures how fast the envtest kube-apiserver and
// etcd create and delete objects with nothing of bgplb running: ConfigMaps,
// Services without and with a ClusterIP, LoadBalancer Services of our class,
// and those with their EndpointSlice (what the churn test creates), from 1 to
// 64 concurrent clients. BGPLB_APIRATE_N objects per run (default 2,000);
// BGPLB_APIRATE_KINDS and BGPLB_APIRATE_WORKERS (comma-separated) narrow the
// matrix; BGPLB_APIRATE_PPROF=dir saves 5 s of the kube-apiserver's CPU
// profile per run there. Reported besides the rates: the kube-apiserver's
// and etcd's CPU time per operation (a create or a delete), which depends
// far less on the load of a shared machine than the rates do.
func BenchmarkAPIServerRate(b *testing.B) {
	n := 2000
	if v := os.Getenv("BGPLB_APIRATE_N"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	kinds := []string{"configmap", "service-headless", "service-clusterip", "service-lb", "service-lb+slice"}
	if v := os.Getenv("BGPLB_APIRATE_KINDS"); v != "" {
		kinds = strings.Split(v, ",")
	}
	workers := []int{1, 8, 32, 64}
	if v := os.Getenv("BGPLB_APIRATE_WORKERS"); v != "" {
		workers = nil
		for _, s := range strings.Split(v, ",") {
			w, _ := strconv.Atoi(s)
			workers = append(workers, w)
		}
	}
	if dir := os.Getenv("BGPLB_APIRATE_PPROF"); dir != "" {
		// The apiserver serves pprof without authentication on this socket.
		b.Setenv("BGPLB_ENVTEST_APISERVER_FLAGS", os.Getenv("BGPLB_ENVTEST_APISERVER_FLAGS")+" debug-socket-path="+filepath.Join(dir, "kas.sock"))
	}
	c := startCluster(b)
	round := 0
	for _, kind := range kinds {
		for _, w := range workers {
			b.Run(fmt.Sprintf("%s/workers=%d", kind, w), func(b *testing.B) {
				var cr, dr float64
				a0, e0 := controlPlaneCPU()
				if dir := os.Getenv("BGPLB_APIRATE_PPROF"); dir != "" {
					go profileAPIServer(b, filepath.Join(dir, "kas.sock"), filepath.Join(dir, strings.ReplaceAll(b.Name(), "/", "_")+".pprof"))
				}
				for i := 0; i < b.N; i++ {
					round++
					cr, dr = rate(b, c.Client, kind, fmt.Sprintf("r%d", round), n, w)
				}
				a1, e1 := controlPlaneCPU()
				b.ReportMetric(cr, "creates/s")
				b.ReportMetric(dr, "deletes/s")
				ops := float64(2 * n * b.N)
				b.ReportMetric(float64((a1-a0).Microseconds())/ops, "apiserver-cpu-us/op")
				b.ReportMetric(float64((e1-e0).Microseconds())/ops, "etcd-cpu-us/op")
				b.Logf("load average %s", loadavg())
			})
		}
	}
}
