package cluster

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Backend describes a Deployment of the lab's backend image.
type Backend struct {
	Name     string
	Replicas int
	// App is the pods' app label, which Services select (default Name).
	App string
	// Node pins the pods to one node (empty: spread over both).
	Node string
	// Unready makes every pod's readiness probe fail.
	Unready bool
}

// YAML renders the Deployment.
func (b Backend) YAML() string {
	app := b.App
	if app == "" {
		app = b.Name
	}
	pin := ""
	if b.Node != "" {
		pin = fmt.Sprintf("      nodeSelector: {kubernetes.io/hostname: %s}\n", b.Node)
	}
	unready := "0"
	if b.Unready {
		unready = "1"
	}
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s
  namespace: default
spec:
  replicas: %[2]d
  selector:
    matchLabels: {app: %[3]s, deployment: %[1]s}
  strategy:
    rollingUpdate: {maxUnavailable: 0, maxSurge: 1}
  template:
    metadata:
      labels: {app: %[3]s, deployment: %[1]s}
    spec:
      terminationGracePeriodSeconds: 15
%[4]s      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: kubernetes.io/hostname
        whenUnsatisfiable: ScheduleAnyway
        labelSelector:
          matchLabels: {deployment: %[1]s}
      containers:
      - name: backend
        image: %[5]s
        imagePullPolicy: Never
        env:
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
        - {name: UNREADY, value: "%[6]s"}
        ports:
        - {containerPort: 8080, name: http}
        readinessProbe:
          httpGet: {path: /ready, port: http}
          periodSeconds: 1
          failureThreshold: 1
`, b.Name, b.Replicas, app, pin, BackendImage, unready)
}

// ServiceYAML renders a LoadBalancer Service on port 80 for the pods
// labelled app, with the given externalTrafficPolicy (Cluster or Local).
func ServiceYAML(name, app, policy string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: %s
  namespace: default
spec:
  type: LoadBalancer
  externalTrafficPolicy: %s
  selector: {app: %s}
  ports:
  - {name: http, port: 80, targetPort: http}
`, name, policy, app)
}

// Apply pipes manifests to `kubectl apply -f -`.
func (c *Cluster) Apply(ctx context.Context, manifests string) error {
	f, err := os.CreateTemp(c.opts.StateDir, "manifest-*.yaml")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(manifests); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	_, err = c.Kubectl(ctx, "apply", "-f", f.Name())
	return err
}

// WaitServiceIP waits until the Service has a load-balancer address.
func (c *Cluster) WaitServiceIP(ctx context.Context, name string, timeout time.Duration) (string, error) {
	var ip string
	err := c.waitFor(ctx, "Service "+name+" address", timeout, "", func() (bool, error) {
		svc, err := c.Kube.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, in := range svc.Status.LoadBalancer.Ingress {
			if in.IP != "" {
				ip = in.IP
				return true, nil
			}
		}
		return false, nil
	})
	return ip, err
}

// WaitServed waits until the client gets an answer from addr:80 and
// returns it.
func (c *Cluster) WaitServed(ctx context.Context, addr string, timeout time.Duration) (string, error) {
	var body string
	err := c.waitFor(ctx, "client served by "+addr, timeout, "", func() (bool, error) {
		b, err := c.ClientGet(ctx, addr, 80, time.Second)
		body = b
		return err == nil, err
	})
	return body, err
}

// WaitRollout waits for `kubectl rollout status` of a workload
// (deployment/NAME, daemonset/NAME) in a namespace.
func (c *Cluster) WaitRollout(ctx context.Context, ns, workload string, timeout time.Duration) error {
	_, err := c.Kubectl(ctx, "-n", ns, "rollout", "status", workload, "--timeout", timeout.String())
	return err
}

// PodsOn returns the names of the Running pods matching selector in ns on
// a node.
func (c *Cluster) PodsOn(ctx context.Context, ns, selector, node string) ([]string, error) {
	pods, err := c.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector, FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			out = append(out, p.Name)
		}
	}
	return out, nil
}

// Loop is a client requesting a Service address in a loop, one new
// connection per request, until Stop.
type Loop struct {
	mu       sync.Mutex
	ok, fail int
	errs     []string
	stop     chan struct{}
	done     chan struct{}
}

// StartLoop starts requesting addr:80 from the lab's client every interval
// (each request times out after 2 s).
func (c *Cluster) StartLoop(ctx context.Context, addr string, interval time.Duration) *Loop {
	l := &Loop{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for {
			_, err := c.ClientGet(ctx, addr, 80, 2*time.Second)
			l.mu.Lock()
			if err != nil {
				l.fail++
				if len(l.errs) < 5 {
					l.errs = append(l.errs, err.Error())
				}
			} else {
				l.ok++
			}
			l.mu.Unlock()
			select {
			case <-l.stop:
				return
			case <-ctx.Done():
				return
			case <-time.After(interval):
			}
		}
	}()
	return l
}

// Stop ends the loop and returns the counts and the first errors.
func (l *Loop) Stop() (ok, fail int, errs string) {
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok, l.fail, strings.Join(l.errs, "; ")
}
