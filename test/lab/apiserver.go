package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// RunAPIServer runs a real kube-apiserver and etcd (the envtest binaries
// named by KUBEBUILDER_ASSETS) serving on address:port, installs the CRDs
// found in crdDir, writes an administrator kubeconfig to kubeconfigPath, and
// serves until ctx ends. It is meant to run inside the lab's control-plane
// namespace (`bgplb-lab apiserver`), standing in for a cluster's control plane.
func RunAPIServer(ctx context.Context, address string, port int, crdDir, kubeconfigPath string) error {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		return fmt.Errorf("KUBEBUILDER_ASSETS is not set (hack/envtest-assets.sh prints it)")
	}
	e := &envtest.Environment{
		CRDDirectoryPaths:        []string{crdDir},
		ErrorIfCRDPathMissing:    true,
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	api := e.ControlPlane.GetAPIServer()
	api.SecureServing.ListenAddr.Address = address
	api.SecureServing.ListenAddr.Port = fmt.Sprint(port)
	api.Configure().Set("advertise-address", address)
	// Dual-stack Services need a ClusterIP range per family.
	api.Configure().Set("service-cluster-ip-range", "10.0.0.0/24,fd00:10:96::/112")
	if _, err := e.Start(); err != nil {
		return fmt.Errorf("start control plane: %w", err)
	}
	defer func() { _ = e.Stop() }()

	user, err := e.ControlPlane.AddUser(envtest.User{Name: "lab-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fmt.Errorf("add lab user: %w", err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		return fmt.Errorf("render kubeconfig: %w", err)
	}
	tmp := kubeconfigPath + ".tmp"
	if err := os.MkdirAll(filepath.Dir(kubeconfigPath), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(tmp, kc, 0o600); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	if err := os.Rename(tmp, kubeconfigPath); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	<-ctx.Done()
	return nil
}
