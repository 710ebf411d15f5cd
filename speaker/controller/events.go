package controller

import (
	"fmt"
	"net/http"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
)

// EventCacheSize is the size of each of the event correlator's three LRU
// caches (spam filter, aggregator, deduplication), instead of client-go's
// 4096. The correlator only needs to remember recent events: the same
// Service flapping (which it rate-limits and counts) or one pass's events.
// At 4096 entries each the caches held about 5 MB after the 10,000
// Announced events of a start with 10,000 Services, kept for the life of
// the process; at 256 they hold about 0.3 MB. An evicted key only means the
// next event about that object is posted as a new Event rather than as a
// count increment of the old one, and its spam-filter budget starts again.
const EventCacheSize = 256

// NewEventRecorder returns a recorder that posts events through the given
// config, with small correlator caches (EventCacheSize), and a function that
// flushes and stops it. Events are also logged at V(1).
func NewEventRecorder(cfg *rest.Config, httpClient *http.Client, scheme *runtime.Scheme, component string, log logr.Logger) (record.EventRecorder, func(), error) {
	c, err := corev1client.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, nil, fmt.Errorf("events client: %w", err)
	}
	b := record.NewBroadcaster(record.WithCorrelatorOptions(record.CorrelatorOptions{LRUCacheSize: EventCacheSize}))
	b.StartRecordingToSink(&corev1client.EventSinkImpl{Interface: c.Events("")})
	b.StartEventWatcher(func(e *corev1.Event) {
		log.V(1).Info(e.Message, "type", e.Type, "object", e.InvolvedObject, "reason", e.Reason)
	})
	return b.NewRecorder(scheme, corev1.EventSource{Component: component}), b.Shutdown, nil
}
