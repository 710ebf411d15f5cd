// Command pause is the pod sandbox image of the real-cluster lab
// (test/cluster): like registry.k8s.io/pause it holds the pod's namespaces
// and does nothing until it is told to stop. Built FROM scratch by
// hack/cluster-images.sh, because the lab has no registry to pull from.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	<-ch
}
