// Command bgplb-controller allocates addresses from IPPools to Services of
// type LoadBalancer and writes them to the Services' status.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	bgplbv1 "github.com/bgplb/bgplb/api/v1alpha1"
	"github.com/bgplb/bgplb/controllers"
	"github.com/bgplb/bgplb/internal/kube"
	"github.com/bgplb/bgplb/internal/loglevel"
	"github.com/bgplb/bgplb/internal/metricsauth"
	"github.com/bgplb/bgplb/internal/version"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "migrate-metallb" {
		os.Exit(migrateMetalLB(os.Args[2:], os.Stdin, os.Stdout, os.Stderr, ctrl.GetConfig))
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bgplb-controller:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		probeAddr    = flag.String("health-probe-bind-address", ":8081", "address of the /healthz and /readyz endpoints")
		leaderElect  = flag.Bool("leader-elect", false, "elect one active controller among replicas (a Lease in --leader-election-namespace)")
		leNamespace  = flag.String("leader-election-namespace", bgplbv1.Namespace, "namespace of the leader-election Lease")
		withoutClass = flag.Bool("serve-services-without-class", true, "also handle Services of type LoadBalancer that set no spec.loadBalancerClass (those with class "+bgplbv1.LoadBalancerClass+" are always handled)")
		workers      = flag.Int("service-workers", 8, "concurrent Service reconciles (allocation itself is serialised)")
		poolInterval = flag.Duration("pool-status-interval", 500*time.Millisecond, "minimum time between IPPool status writes during bursts")
		qps          = flag.Float64("kube-api-qps", 300, "client-side limit of API requests per second (one status write per allocation; events use their own limiter)")
		burst        = flag.Int("kube-api-burst", 600, "client-side burst of API requests")
		showVersion  = flag.Bool("version", false, "print the version and exit")
	)
	metricsFlags := metricsauth.BindFlags(flag.CommandLine, ":8080")
	var logLevel loglevel.Flag
	flag.Var(&logLevel, "log-level", loglevel.Usage()+" (overrides --zap-log-level)")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	if *showVersion {
		fmt.Println(version.Version)
		return nil
	}
	if lv, ok := logLevel.Zap(); ok {
		zapOpts.Level = lv
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	log := ctrl.Log.WithName("setup")

	scheme, err := kube.NewScheme()
	if err != nil {
		return err
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = float32(*qps), *burst
	cfg.UserAgent = "bgplb-controller/" + version.Version

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsFlags.Options(nil),
		HealthProbeBindAddress:  *probeAddr,
		LeaderElection:          *leaderElect,
		LeaderElectionID:        "bgplb-controller",
		LeaderElectionNamespace: *leNamespace,
		// Step down cleanly on SIGTERM so the next replica takes over at once.
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	if err := controllers.Setup(mgr, controllers.Options{
		ServeServicesWithoutClass: *withoutClass,
		ServiceWorkers:            *workers,
		PoolStatusInterval:        *poolInterval,
	}); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("add healthz: %w", err)
	}
	// Ready once the informer caches are filled: before that nothing can be
	// allocated.
	if err := mgr.AddReadyzCheck("caches", func(*http.Request) error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return errors.New("informer caches not synced")
		}
		return nil
	}); err != nil {
		return fmt.Errorf("add readyz: %w", err)
	}
	log.Info("starting", "version", version.Version, "leaderElect", *leaderElect, "serveServicesWithoutClass", *withoutClass)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	return nil
}
