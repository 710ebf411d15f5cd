// Command bgplb-backend is the backend image of the real-cluster lab
// (test/cluster): an HTTP server that answers with its pod and node name, so
// that a client in the lab's LAN sees which pod served it through the
// router and kube-proxy.
//
//	GET /        "hello from POD on NODE"
//	GET /healthz 200
//	GET /ready   200, or 503 when the file named by UNREADY_FILE exists
//	             (or UNREADY=1), for readiness-probe tests
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	addr := os.Getenv("LISTEN")
	if addr == "" {
		addr = ":8080"
	}
	pod, node := os.Getenv("POD_NAME"), os.Getenv("NODE_NAME")
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s on %s\n", pod, node)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/ready", func(w http.ResponseWriter, r *http.Request) {
		if unready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		// As a well-behaved backend does: keep serving while the endpoint
		// is being removed everywhere, then drain.
		time.Sleep(time.Duration(envInt("SHUTDOWN_DELAY_SECONDS", 2)) * time.Second)
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Printf("bgplb-backend %s on %s listening on %s", pod, node, addr)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}

func unready() bool {
	if os.Getenv("UNREADY") == "1" {
		return true
	}
	if f := os.Getenv("UNREADY_FILE"); f != "" {
		if _, err := os.Stat(f); err == nil {
			return true
		}
	}
	return false
}

func envInt(name string, def int) int {
	var n int
	if _, err := fmt.Sscan(os.Getenv(name), &n); err != nil {
		return def
	}
	return n
}
