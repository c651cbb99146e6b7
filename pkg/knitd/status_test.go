package knitd

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	ktypes "k8s.io/apimachinery/pkg/types"

	"github.com/knit-cni/knit/pkg/annotations"
	kubetest "github.com/knit-cni/knit/pkg/testutil/kube"
)

// The writer retries conflicts and outages, drops statuses of pods that
// are gone, and writes only the newest status of a pod.
func TestStatusWriter(t *testing.T) {
	var mu sync.Mutex
	calls := map[string][]string{}
	fail := map[string]int{"retry": 2}
	patch := func(_ context.Context, key ktypes.NamespacedName, body []byte) error {
		mu.Lock()
		defer mu.Unlock()
		calls[key.Name] = append(calls[key.Name], string(body))
		switch {
		case key.Name == "gone":
			return apierrors.NewNotFound(schema.GroupResource{Resource: "pods"}, key.Name)
		case fail[key.Name] > 0:
			fail[key.Name]--
			return apierrors.NewConflict(schema.GroupResource{Resource: "pods"}, key.Name, nil)
		}
		return nil
	}
	w := newStatusWriter(patch, slog.New(slog.NewTextHandler(io.Discard, nil)), newMetrics())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.run(ctx, 2); close(done) }()
	st := []annotations.NetworkStatus{{Name: "cbr0", Interface: "eth0", Default: true}}
	for _, n := range []string{"retry", "gone", "ok"} {
		if err := w.enqueue(ktypes.NamespacedName{Namespace: "ns", Name: n}, ktypes.UID("uid-"+n), st); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for !w.idle() {
		if time.Now().After(deadline) {
			t.Fatal("status writer never idle")
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(calls["retry"]) != 3 || len(calls["gone"]) != 1 || len(calls["ok"]) != 1 {
		t.Errorf("calls: retry %d gone %d ok %d", len(calls["retry"]), len(calls["gone"]), len(calls["ok"]))
	}
	var body struct {
		Metadata struct {
			UID         string            `json:"uid"`
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal([]byte(calls["ok"][0]), &body); err != nil {
		t.Fatal(err)
	}
	if body.Metadata.UID != "uid-ok" || body.Metadata.Annotations[annotations.NetworkStatusKey] == "" {
		t.Errorf("patch body %s", calls["ok"][0])
	}
}

// The UID in the patch is a real precondition on the API server: a
// status meant for a deleted pod never lands on its same-named successor.
func TestPatchUIDPrecondition(t *testing.T) {
	c := kubetest.Shared(t)
	rc := *c.Rest
	k, err := newKube(&rc, "n")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "uid-precondition", Namespace: "default"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}}}
	created, err := c.Client.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	key := ktypes.NamespacedName{Namespace: "default", Name: p.Name}
	err = k.patchPod(ctx, key, []byte(`{"metadata":{"uid":"not-the-uid","annotations":{"x":"y"}}}`))
	if !apierrors.IsInvalid(err) && !apierrors.IsConflict(err) {
		t.Errorf("patch with a stale UID: %v", err)
	}
	t.Logf("stale-UID patch error: %v (conflict %v)", err, apierrors.IsConflict(err))
	if err := k.patchPod(ctx, key, []byte(`{"metadata":{"uid":"`+string(created.UID)+`","annotations":{"x":"y"}}}`)); err != nil {
		t.Errorf("patch with the right UID: %v", err)
	}
	got, err := c.Client.CoreV1().Pods("default").Get(ctx, p.Name, metav1.GetOptions{})
	if err != nil || got.Annotations["x"] != "y" {
		t.Errorf("annotation not set: %v %v", got.Annotations, err)
	}
}
