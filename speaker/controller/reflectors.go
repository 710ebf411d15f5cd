package controller

import (
	"context"
	"fmt"
	"net/http"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	discoveryv1client "k8s.io/client-go/kubernetes/typed/discovery/v1"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// reflectors returns a Runnable that lists and watches Services and
// EndpointSlices straight into the store: no informer, no indexer, no second
// copy of the objects. A reflector relists (Replace) when its watch cannot
// resume, which is how deletions during a watch gap reach the store.
func (s *serviceStore) reflectors(cfg *rest.Config, httpClient *http.Client, kick func()) (manager.Runnable, error) {
	cfg = rest.CopyConfig(cfg)
	// Protobuf is cheaper to decode than JSON, and both kinds support it.
	cfg.ContentType = runtime.ContentTypeProtobuf
	cfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	core, err := corev1client.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("core/v1 client: %w", err)
	}
	disc, err := discoveryv1client.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("discovery/v1 client: %w", err)
	}
	services := &toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return core.Services(metav1.NamespaceAll).List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return core.Services(metav1.NamespaceAll).Watch(ctx, o)
		},
	}
	// Only slices that name their Service; one that loses the label is
	// reported as deleted.
	withOwner := func(o *metav1.ListOptions) { o.LabelSelector = discoveryv1.LabelServiceName }
	slices := &toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			withOwner(&o)
			return disc.EndpointSlices(metav1.NamespaceAll).List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			withOwner(&o)
			return disc.EndpointSlices(metav1.NamespaceAll).Watch(ctx, o)
		},
	}
	rs := []*toolscache.Reflector{
		toolscache.NewReflectorWithOptions(services, &corev1.Service{}, s.serviceWriter(kick),
			toolscache.ReflectorOptions{Name: "bgplb-speaker services"}),
		toolscache.NewReflectorWithOptions(slices, &discoveryv1.EndpointSlice{}, s.sliceWriter(kick),
			toolscache.ReflectorOptions{Name: "bgplb-speaker endpointslices"}),
	}
	return manager.RunnableFunc(func(ctx context.Context) error {
		var wg sync.WaitGroup
		for _, r := range rs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.RunWithContext(ctx)
			}()
		}
		wg.Wait()
		return nil
	}), nil
}
