package knitd

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	ktypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/knit-cni/knit/pkg/cni"
)

// RestConfig builds the API client config: a kubeconfig file when given,
// else the in-cluster service account.
func RestConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	return rest.InClusterConfig()
}

// kube holds knitd's API access: two REST clients (core v1 in protobuf,
// NADs in JSON) over a scheme of just the types knitd uses, and informer
// caches of the pods on this node and of all NADs, stripped to what knit
// reads. Not using client-go's generated clientset, informer factory and
// event recorder keeps every other API group out of the binary and out of
// the scheme — the bulk of a typical client-go daemon's memory.
type kube struct {
	core   rest.Interface
	nadAPI rest.Interface
	params runtime.ParameterCodec

	podInformer cache.SharedIndexInformer
	nadInformer cache.SharedIndexInformer

	// changed is closed and replaced whenever the pod cache changes, so
	// an ADD waiting for its pod wakes up without polling.
	mu      sync.Mutex
	changed chan struct{}
}

func newScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, nadv1.AddToScheme} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	// List/watch options travel as unversioned parameters.
	metav1.AddToGroupVersion(s, schema.GroupVersion{Version: "v1"})
	return s, nil
}

func restClient(cfg *rest.Config, gv schema.GroupVersion, apiPath, contentType string, codecs serializer.CodecFactory) (rest.Interface, error) {
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &gv
	c.APIPath = apiPath
	c.NegotiatedSerializer = codecs.WithoutConversion()
	c.ContentType = contentType
	c.AcceptContentTypes = contentType
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	return rest.RESTClientFor(c)
}

func newKube(cfg *rest.Config, nodeName string) (*kube, error) {
	scheme, err := newScheme()
	if err != nil {
		return nil, err
	}
	codecs := serializer.NewCodecFactory(scheme)
	k := &kube{params: runtime.NewParameterCodec(scheme), changed: make(chan struct{})}
	// Pods travel as protobuf: less CPU and garbage than JSON. NADs are
	// custom resources, which are JSON only.
	if k.core, err = restClient(cfg, corev1.SchemeGroupVersion, "/api", runtime.ContentTypeProtobuf, codecs); err != nil {
		return nil, fmt.Errorf("core client: %w", err)
	}
	if k.nadAPI, err = restClient(cfg, nadv1.SchemeGroupVersion, "/apis", runtime.ContentTypeJSON, codecs); err != nil {
		return nil, fmt.Errorf("NAD client: %w", err)
	}
	podSel := fields.OneTermEqualSelector("spec.nodeName", nodeName).String()
	k.podInformer = k.informer(k.core, "pods", podSel, &corev1.Pod{}, func() runtime.Object { return &corev1.PodList{} })
	k.nadInformer = k.informer(k.nadAPI, "network-attachment-definitions", "", &nadv1.NetworkAttachmentDefinition{},
		func() runtime.Object { return &nadv1.NetworkAttachmentDefinitionList{} })
	if err := k.podInformer.SetTransform(stripPod); err != nil {
		return nil, err
	}
	if err := k.nadInformer.SetTransform(stripNAD); err != nil {
		return nil, err
	}
	notify := func(any) { k.notify() }
	if _, err := k.podInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: notify, UpdateFunc: func(_, o any) { notify(o) }, DeleteFunc: notify}); err != nil {
		return nil, err
	}
	return k, nil
}

// informer is a shared informer over one resource in all namespaces.
func (k *kube) informer(c rest.Interface, resource, fieldSel string, obj runtime.Object, list func() runtime.Object) cache.SharedIndexInformer {
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = fieldSel
			out := list()
			err := c.Get().Resource(resource).VersionedParams(&o, k.params).Do(ctx).Into(out)
			return out, err
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = fieldSel
			o.Watch = true
			return c.Get().Resource(resource).VersionedParams(&o, k.params).Watch(ctx)
		},
	}
	return cache.NewSharedIndexInformerWithOptions(lw, obj, cache.SharedIndexInformerOptions{
		Indexers: cache.Indexers{}, ObjectDescription: resource})
}

func (k *kube) start(stop <-chan struct{}) {
	go k.podInformer.Run(stop)
	go k.nadInformer.Run(stop)
}

func (k *kube) synced() bool { return k.podInformer.HasSynced() && k.nadInformer.HasSynced() }

// waitSynced waits for the caches up to d.
func (k *kube) waitSynced(ctx context.Context, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return cache.WaitForCacheSync(ctx.Done(), k.podInformer.HasSynced, k.nadInformer.HasSynced)
}

func (k *kube) notify() {
	k.mu.Lock()
	close(k.changed)
	k.changed = make(chan struct{})
	k.mu.Unlock()
}

func (k *kube) changes() <-chan struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.changed
}

// cachedPod returns a pod from the informer cache.
func (k *kube) cachedPod(namespace, name string) (*corev1.Pod, bool) {
	obj, ok, err := k.podInformer.GetStore().GetByKey(namespace + "/" + name)
	if err != nil || !ok {
		return nil, false
	}
	p, ok := obj.(*corev1.Pod)
	return p, ok
}

// keptAnnotation reports whether knit reads a pod or NAD annotation.
func keptAnnotation(key string) bool {
	return strings.HasPrefix(key, "k8s.v1.cni.cncf.io/") || strings.HasPrefix(key, "v1.multus-cni.io/") ||
		key == configSourceAnnotation
}

// configSourceAnnotation marks static pods (whose mirror pod has another UID).
const configSourceAnnotation = "kubernetes.io/config.source"

func keepAnnotations(in map[string]string) map[string]string {
	var out map[string]string
	for k, v := range in {
		if keptAnnotation(k) {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}

// stripPod keeps only what knit reads of a pod: identity, its network
// annotations and node. A node's pods then cost a few hundred bytes each
// in the cache instead of kilobytes (managedFields, specs, statuses).
func stripPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID,
			ResourceVersion: p.ResourceVersion, Annotations: keepAnnotations(p.Annotations)},
		Spec: corev1.PodSpec{NodeName: p.Spec.NodeName},
	}, nil
}

// stripNAD drops managedFields, labels and unrelated annotations.
func stripNAD(obj any) (any, error) {
	n, ok := obj.(*nadv1.NetworkAttachmentDefinition)
	if !ok {
		return obj, nil
	}
	return &nadv1.NetworkAttachmentDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, Namespace: n.Namespace, UID: n.UID,
			ResourceVersion: n.ResourceVersion, Annotations: keepAnnotations(n.Annotations)},
		Spec: n.Spec,
	}, nil
}

func isStatic(p *corev1.Pod) bool {
	src, ok := p.Annotations[configSourceAnnotation]
	return ok && src != "api"
}

// getPod returns the pod a CNI call is for from the informer cache,
// waiting up to wait for the informer to see a just-created pod, then
// asking the API server once. uid, when known, must match (a pod deleted
// and recreated under the same name is another pod), except for static
// pods whose API object is a mirror.
func (k *kube) getPod(ctx context.Context, namespace, name, uid string, wait time.Duration) (*corev1.Pod, error) {
	match := func(p *corev1.Pod) bool { return uid == "" || string(p.UID) == uid || isStatic(p) }
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for waiting := true; waiting; {
		ch := k.changes()
		if p, ok := k.cachedPod(namespace, name); ok && match(p) {
			return p, nil
		}
		select {
		case <-ch:
		case <-timer.C:
			waiting = false
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var p corev1.Pod
	err := k.core.Get().Namespace(namespace).Resource("pods").Name(name).Do(gctx).Into(&p)
	if apierrors.IsNotFound(err) {
		return nil, cni.Errorf(types.ErrTryAgainLater, "pod %s/%s not found", namespace, name)
	}
	if err != nil {
		return nil, cni.Errorf(types.ErrTryAgainLater, "getting pod %s/%s: %v", namespace, name, err)
	}
	if !match(&p) {
		return nil, cni.Errorf(types.ErrTryAgainLater, "pod %s/%s has UID %s, the runtime asks for %s", namespace, name, p.UID, uid)
	}
	sp, _ := stripPod(&p)
	return sp.(*corev1.Pod), nil
}

// getNAD returns a NAD from the informer cache (a NotFound API error if
// there is none).
func (k *kube) getNAD(namespace, name string) (*nadv1.NetworkAttachmentDefinition, error) {
	obj, ok, err := k.nadInformer.GetStore().GetByKey(namespace + "/" + name)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, apierrors.NewNotFound(nadv1.Resource("network-attachment-definitions"), name)
	}
	return obj.(*nadv1.NetworkAttachmentDefinition), nil
}

// patchPod applies a JSON merge patch to a pod.
func (k *kube) patchPod(ctx context.Context, key ktypes.NamespacedName, body []byte) error {
	return k.core.Patch(ktypes.MergePatchType).Namespace(key.Namespace).Resource("pods").Name(key.Name).
		Body(body).Do(ctx).Error()
}

// createEvent posts an event.
func (k *kube) createEvent(ctx context.Context, ev *corev1.Event) error {
	return k.core.Post().Namespace(ev.Namespace).Resource("events").Body(ev).Do(ctx).Error()
}
