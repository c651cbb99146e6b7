package knitd

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ktypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"

	"github.com/knit-cni/knit/pkg/annotations"
)

// statusWriter writes network-status annotations off the ADD path: ADD
// returns as soon as the pod is attached, and one PATCH per ADD follows,
// retried with backoff on conflicts, throttling and API outages. A newer
// status for the same pod replaces a pending older one, and one pod is
// never written by two workers at once (the workqueue guarantees it).
type statusWriter struct {
	patchFn func(context.Context, ktypes.NamespacedName, []byte) error
	log     *slog.Logger
	metrics *metrics
	queue   workqueue.TypedRateLimitingInterface[ktypes.NamespacedName]

	mu      sync.Mutex
	pending map[ktypes.NamespacedName]statusJob
	// attempts bounds retries per job (an API server that stays down must
	// not pin jobs forever).
	attempts int
}

type statusJob struct {
	uid   ktypes.UID
	value string
	tries int
}

func newStatusWriter(patch func(context.Context, ktypes.NamespacedName, []byte) error, log *slog.Logger, m *metrics) *statusWriter {
	rl := workqueue.NewTypedItemExponentialFailureRateLimiter[ktypes.NamespacedName](50*time.Millisecond, 5*time.Second)
	return &statusWriter{patchFn: patch, log: log, metrics: m, attempts: 60,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(rl,
			workqueue.TypedRateLimitingQueueConfig[ktypes.NamespacedName]{Name: "network-status"}),
		pending: map[ktypes.NamespacedName]statusJob{}}
}

// enqueue schedules a write of statuses for the pod with uid.
func (w *statusWriter) enqueue(pod ktypes.NamespacedName, uid ktypes.UID, statuses []annotations.NetworkStatus) error {
	v, err := annotations.MarshalStatus(statuses)
	if err != nil {
		return fmt.Errorf("encoding network-status: %w", err)
	}
	w.mu.Lock()
	w.pending[pod] = statusJob{uid: uid, value: v}
	w.mu.Unlock()
	w.queue.Forget(pod)
	w.queue.Add(pod)
	return nil
}

// run serves the queue with n workers until ctx ends.
func (w *statusWriter) run(ctx context.Context, n int) {
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for w.next(ctx) {
			}
		}()
	}
	<-ctx.Done()
	w.queue.ShutDown()
	wg.Wait()
}

func (w *statusWriter) next(ctx context.Context) bool {
	key, quit := w.queue.Get()
	if quit {
		return false
	}
	defer w.queue.Done(key)
	w.mu.Lock()
	job, ok := w.pending[key]
	w.mu.Unlock()
	if !ok {
		return true
	}
	err := w.patch(ctx, key, job)
	w.mu.Lock()
	defer w.mu.Unlock()
	cur, still := w.pending[key]
	if !still || cur.value != job.value || cur.uid != job.uid {
		return true // a newer status came in; it is queued already
	}
	switch {
	case err == nil:
		w.metrics.status.WithLabelValues("ok").Inc()
		delete(w.pending, key)
		w.queue.Forget(key)
	case apierrors.IsNotFound(err) || apierrors.IsInvalid(err):
		// The pod is gone, or its UID changed (the patch's UID
		// precondition failed): this status belongs to no pod any more.
		w.metrics.status.WithLabelValues("gone").Inc()
		w.log.Info("network-status not written: pod gone", "pod", key.String(), "err", err)
		delete(w.pending, key)
		w.queue.Forget(key)
	case job.tries+1 >= w.attempts:
		w.metrics.status.WithLabelValues("failed").Inc()
		w.log.Error("network-status not written, giving up", "pod", key.String(), "err", err)
		delete(w.pending, key)
		w.queue.Forget(key)
	default:
		w.metrics.status.WithLabelValues("retry").Inc()
		w.log.Warn("network-status write failed, retrying", "pod", key.String(), "err", err)
		job.tries++
		w.pending[key] = job
		w.queue.AddRateLimited(key)
	}
	return true
}

// patch sets the annotation with a merge patch of the annotations only.
// The UID in the patch is a precondition: UIDs are immutable, so the patch
// is rejected if the name now belongs to another pod.
func (w *statusWriter) patch(ctx context.Context, key ktypes.NamespacedName, job statusJob) error {
	meta := map[string]any{"annotations": map[string]string{annotations.NetworkStatusKey: job.value}}
	if job.uid != "" {
		meta["uid"] = job.uid
	}
	body, err := json.Marshal(map[string]any{"metadata": meta})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return w.patchFn(ctx, key, body)
}

// idle reports whether nothing is pending (tests, shutdown).
func (w *statusWriter) idle() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pending) == 0
}
