package knitd

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// eventWriter posts pod events off the CNI path: a bounded queue and one
// worker. A full queue (API server down during a burst) drops events
// rather than slowing pods down; events are informational.
type eventWriter struct {
	post func(context.Context, *corev1.Event) error
	node string
	log  *slog.Logger
	ch   chan *corev1.Event
}

func newEventWriter(post func(context.Context, *corev1.Event) error, node string, log *slog.Logger) *eventWriter {
	return &eventWriter{post: post, node: node, log: log, ch: make(chan *corev1.Event, 512)}
}

// emit queues an event about a pod (a nil pod is ignored).
func (w *eventWriter) emit(pod *corev1.Pod, typ, reason, msg string) {
	if pod == nil {
		return
	}
	if len(msg) > 1024 {
		msg = msg[:1021] + "..."
	}
	now := metav1.Now()
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", pod.Name, now.UnixNano()), Namespace: pod.Namespace},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: pod.Namespace, Name: pod.Name,
			UID: pod.UID},
		Reason: reason, Message: msg, Type: typ, Count: 1, FirstTimestamp: now, LastTimestamp: now,
		Source: corev1.EventSource{Component: "knit", Host: w.node}, ReportingController: "knit", ReportingInstance: w.node,
	}
	select {
	case w.ch <- ev:
	default:
		w.log.Warn("event queue full, event dropped", "pod", pod.Namespace+"/"+pod.Name, "reason", reason)
	}
}

// run posts events until ctx ends, retrying each a few times.
func (w *eventWriter) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-w.ch:
			w.send(ctx, ev)
		}
	}
}

func (w *eventWriter) send(ctx context.Context, ev *corev1.Event) {
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := w.post(pctx, ev)
		cancel()
		if err == nil {
			return
		}
		if attempt == 5 || ctx.Err() != nil {
			w.log.Warn("event not posted", "pod", ev.Namespace+"/"+ev.InvolvedObject.Name, "reason", ev.Reason, "err", err)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff): // retry backoff
		}
		backoff *= 2
	}
}
