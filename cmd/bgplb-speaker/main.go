// Command bgplb-speaker runs on every node (DaemonSet, host network) and
// announces the addresses of the LoadBalancer Services the node can serve to
// the routers named by BGPPeers, over an embedded GoBGP.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	bgplbv1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/internal/kube"
	"github.com/bgplb/bgplb/internal/loglevel"
	"github.com/bgplb/bgplb/internal/metricsauth"
	"github.com/bgplb/bgplb/internal/version"
	"github.com/bgplb/bgplb/speaker/bfd"
	"github.com/bgplb/bgplb/speaker/bgp"
	"github.com/bgplb/bgplb/speaker/controller"
	"github.com/bgplb/bgplb/speaker/returnpath"
)

// defaultGOGC is the GC target unless $GOGC is set.
const defaultGOGC = 25

// DefaultShutdownDelay is how long SIGTERM keeps the routes, marked
// GRACEFUL_SHUTDOWN, before withdrawing them: long enough for the routers
// to move traffic to the other next hops (the router agent does at once;
// FRR and BIRD after a route-map pass), short against the pod's default
// 30 s termination grace period (the chart derives that from this).
const DefaultShutdownDelay = 5 * time.Second

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bgplb-speaker:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		nodeName      = flag.String("node-name", os.Getenv("NODE_NAME"), "name of the node this speaker runs on (default $NODE_NAME)")
		secretNS      = flag.String("secret-namespace", os.Getenv("POD_NAMESPACE"), "namespace of the BGPPeers' password Secrets: the speaker's own (default $POD_NAMESPACE, set by the manifests from the downward API; empty: "+bgplbv1.Namespace+")")
		probeAddr     = flag.String("health-probe-bind-address", ":7473", "address of the /healthz and /readyz endpoints")
		withoutClass  = flag.Bool("serve-services-without-class", true, "also announce Services of type LoadBalancer without spec.loadBalancerClass (match bgplb-controller's flag)")
		gshutDrain    = flag.Bool("graceful-shutdown-on-drain", true, "announce with the GRACEFUL_SHUTDOWN community (65535:0, RFC 8326) while the node drains (cordoned, tainted unschedulable, or in the kubelet's graceful shutdown) and for Services whose endpoints on this node are all terminating; routes are withdrawn when the last local endpoint is gone (docs/speaker.md)")
		gshutDelay    = flag.Duration("graceful-shutdown-delay", DefaultShutdownDelay, "on SIGTERM, re-announce everything with GRACEFUL_SHUTDOWN and wait this long before withdrawing and closing the sessions (0: withdraw at once); keep the pod's terminationGracePeriodSeconds above this plus 15s")
		serviceEvents = flag.Bool("service-events", true, "emit Announced/Withdrawn events on Services")
		qps           = flag.Float64("kube-api-qps", 20, "client-side limit of API requests per second")
		burst         = flag.Int("kube-api-burst", 40, "client-side burst of API requests")
		showVersion   = flag.Bool("version", false, "print the version and exit")
		pprofOn       = flag.Bool("enable-pprof", false, "serve net/http/pprof under /debug/pprof/ on the metrics endpoint, behind its authentication and authorization unless --metrics-secure=false (for profiling; off by default)")
		symReturn     = flag.Bool("symmetric-return-path", false, "set up the symmetric return path for BGPPeers with returnPath: symmetric: connmark the connections that came from the router's MAC address and route their replies back through it (needs CAP_NET_ADMIN; docs/speaker.md)")
		rpConfig      = returnpath.Config{MarkMask: returnpath.DefaultMarkMask}
	)
	flag.Func("return-path-mark-mask", fmt.Sprintf("ct mark and packet mark bits of the symmetric return path, one value per router (default %#x: 15 routers; keep clear of your CNI's and kube-proxy's marks)", returnpath.DefaultMarkMask), func(v string) error {
		n, err := strconv.ParseUint(v, 0, 32)
		if err != nil {
			return err
		}
		rpConfig.MarkMask = uint32(n)
		return nil
	})
	flag.IntVar(&rpConfig.TableBase, "return-path-table-base", returnpath.DefaultTableBase, "the symmetric return path's route table of router slot n is this plus n")
	flag.IntVar(&rpConfig.RulePriority, "return-path-rule-priority", returnpath.DefaultRulePriority, "preference of the symmetric return path's ip rules (before the main table's 32766)")
	// The old name of --graceful-shutdown-on-drain, when it covered a
	// cordon only and was off by default.
	weightCluster := flag.Bool("weight-cluster-services", false, "also announce a weight (the BGP link-bandwidth community: this node's ready endpoints, at least 1) for externalTrafficPolicy Cluster Services; Local Services always carry one (docs/speaker.md)")
	flag.BoolVar(gshutDrain, "graceful-shutdown-when-cordoned", true, "deprecated: --graceful-shutdown-on-drain")
	// The speaker is in the host network: its metrics endpoint is on the
	// node's addresses, hence HTTPS with authn/authz by default.
	metricsFlags := metricsauth.BindFlags(flag.CommandLine, ":7472")
	var logLevel loglevel.Flag
	flag.Var(&logLevel, "log-level", loglevel.Usage()+" (overrides --zap-log-level)")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine) // --zap-log-level=info|debug|error|N, --zap-devel
	flag.Parse()
	if *showVersion {
		fmt.Println(version.Version)
		return nil
	}
	if *nodeName == "" {
		return errors.New("--node-name or NODE_NAME is required")
	}
	if err := rpConfig.Validate(); err != nil {
		return fmt.Errorf("--return-path-*: %w", err)
	}
	if lv, ok := logLevel.Zap(); ok {
		zapOpts.Level = lv
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	if !*pprofOn {
		// Nobody can fetch a heap profile, so do not sample for one: the
		// sampler's stack table and records take about 1.5 MB and some CPU
		// per allocation. (Samples taken during package initialisation
		// stay.)
		runtime.MemProfileRate = 0
	}
	if os.Getenv("GOGC") == "" {
		// The live heap is mostly long-lived state (the Service store,
		// GoBGP's RIB, the announced paths): about 26 MB at 10,000
		// Services. With GOGC=50 RSS there was 77-85 MB (anon 36-39 MB; the
		// binary's file-backed pages, 40-47 MB, are outside our control),
		// with 25 75-80 MB (anon 2-6 MB less). That cost up to about 5 ms
		// more CPU per EndpointSlice change while every pass decided all
		// Services; with incremental passes a change costs about 1.3 ms of
		// CPU in all (docs/benchmarks.md). An explicit GOGC wins.
		debug.SetGCPercent(defaultGOGC)
	}
	log := ctrl.Log.WithName("speaker").WithValues("node", *nodeName)

	scheme, err := kube.NewScheme()
	if err != nil {
		return err
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = float32(*qps), *burst
	cfg.UserAgent = "bgplb-speaker/" + version.Version

	var extra map[string]http.Handler
	if *pprofOn {
		extra = map[string]http.Handler{
			"/debug/pprof/":        http.HandlerFunc(pprof.Index),
			"/debug/pprof/cmdline": http.HandlerFunc(pprof.Cmdline),
			"/debug/pprof/profile": http.HandlerFunc(pprof.Profile),
			"/debug/pprof/symbol":  http.HandlerFunc(pprof.Symbol),
			"/debug/pprof/trace":   http.HandlerFunc(pprof.Trace),
		}
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsFlags.Options(extra),
		HealthProbeBindAddress: *probeAddr,
		Cache:                  controller.CacheOptions(*nodeName, *secretNS),
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	m, err := controller.NewMetrics(metrics.Registry)
	if err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	speaker := bgp.NewManager(log.WithName("bgp"))
	// Our own recorder rather than the manager's: its correlator caches are
	// small (controller.EventCacheSize), see there.
	events, stopEvents, err := controller.NewEventRecorder(mgr.GetConfig(), mgr.GetHTTPClient(), scheme, "bgplb-speaker", log.WithName("events"))
	if err != nil {
		return err
	}
	defer stopEvents()
	rec := controller.New(mgr.GetClient(), speaker, events, m, log, controller.Options{
		NodeName:                  *nodeName,
		SecretNamespace:           *secretNS,
		ServeServicesWithoutClass: *withoutClass,
		GracefulShutdownOnDrain:   *gshutDrain,
		WeightClusterServices:     *weightCluster,
		ServiceEvents:             *serviceEvents,
	})
	// BFD sessions for the BGPPeers that enable it; the port (UDP 3784) is
	// opened with the first one.
	bfdSessions := bfd.New(bfd.Options{Log: log.WithName("bfd"), Reset: speaker})
	rec.BFD = bfdSessions
	if *symReturn {
		rpMetrics, err := returnpath.NewMetrics(metrics.Registry)
		if err != nil {
			return fmt.Errorf("register return path metrics: %w", err)
		}
		rp := returnpath.NewManager(rpConfig, returnpath.Kernel{}, log.WithName("returnpath"), rpMetrics)
		if err := mgr.Add(manager.RunnableFunc(rp.Run)); err != nil {
			return fmt.Errorf("add the return path loop: %w", err)
		}
		rec.ReturnPath = rp
	} else {
		returnpath.RemoveLeftovers(rpConfig, returnpath.Kernel{}, log.WithName("returnpath"))
	}
	if err := rec.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up speaker controller: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("add healthz: %w", err)
	}
	if err := mgr.AddReadyzCheck("synced", func(*http.Request) error {
		if !rec.Synced() {
			return errors.New("first reconcile not finished")
		}
		return nil
	}); err != nil {
		return fmt.Errorf("add readyz: %w", err)
	}

	log.Info("starting", "version", version.Version)
	runErr := mgr.Start(ctrl.SetupSignalHandler())

	// SIGTERM (or a fatal manager error): withdraw everything and close the
	// sessions with a Cease before exiting, so routers stop sending traffic
	// here at once instead of after the hold time.
	ctx, cancel := context.WithTimeout(context.Background(), *gshutDelay+15*time.Second)
	defer cancel()
	if err := speaker.Shutdown(ctx, bgp.ShutdownOptions{GracefulShutdownFor: *gshutDelay}); err != nil {
		log.Error(err, "closing BGP sessions")
	}
	// After the BGP sessions: the routers hear AdminDown, which they do not
	// take for a failure (RFC 5882 3.2).
	if err := bfdSessions.Close(); err != nil {
		log.Error(err, "closing BFD sessions")
	}
	if err := controller.MarkStopped(ctx, mgr.GetClient(), mgr.GetAPIReader(), *nodeName); err != nil {
		log.Error(err, "reporting stopped sessions")
	}
	log.Info("stopped")
	if runErr != nil {
		return fmt.Errorf("manager: %w", runErr)
	}
	return nil
}
