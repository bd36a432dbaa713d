// Package kubeslots is app.Shared on the kube driver with the state in the
// cluster: the app replicas' Pods, which every Berth replica of the
// namespace shares. It watches the namespace's app sandbox Pods (their
// slots, package app), attaches to a Pod another replica started through
// the driver, and keeps two annotations on the Pods: berth.dev/last-busy,
// when a Berth replica last sent the replica requests (the leader scales
// down only after no replica has for the scale-down delay), and
// berth.dev/scaled-down, written by the leader before it deletes a Pod to
// scale down (the others then drop the replica instead of replacing it).
package kubeslots

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/berth-dev/berth/app"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/sandbox/kube"
)

// Annotations on app sandbox Pods.
const (
	AnnotationLastBusy   = "berth.dev/last-busy"
	AnnotationScaledDown = "berth.dev/scaled-down"
)

// Attacher attaches to a sandbox another Berth replica started
// ((*kube.Runtime).Attach).
type Attacher interface {
	Attach(ctx context.Context, id string) (sandbox.Sandbox, error)
}

// Options configure New; all are required.
type Options struct {
	Client    kubernetes.Interface
	Namespace string
	// Instance is the driver's instance label (kube.Options.Instance).
	Instance string
	Attacher Attacher
}

// Slots implements app.Shared. Close stops it.
type Slots struct {
	o        Options
	informer cache.SharedIndexInformer
	stop     context.CancelFunc
	stopped  chan struct{}

	mu   sync.Mutex
	last map[string]entry // by sandbox ID: the Pod as last seen
}

// entry is what Slots keeps of a Pod.
type entry struct {
	pod        string
	uid        types.UID
	lastBusy   time.Time
	scaledDown bool
	going      bool // being deleted, ended, or gone
	gone       bool
}

var _ app.Shared = (*Slots)(nil)

// New starts watching the app sandbox Pods of the namespace; it returns
// once the watch has synced.
func New(ctx context.Context, o Options) (*Slots, error) {
	if o.Client == nil || o.Namespace == "" || o.Attacher == nil {
		return nil, errors.New("kubeslots: Client, Namespace and Attacher are required")
	}
	s := &Slots{o: o, last: map[string]entry{}, stopped: make(chan struct{})}
	selector := kube.LabelManagedBy + "=berth," + kube.LabelOwnerKind + "=app"
	if o.Instance != "" {
		selector += "," + kube.LabelInstance + "=" + o.Instance
	}
	pods := o.Client.CoreV1().Pods(o.Namespace)
	s.informer = cache.NewSharedIndexInformer(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			opts.LabelSelector = selector
			return pods.List(ctx, opts)
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.LabelSelector = selector
			return pods.Watch(ctx, opts)
		},
	}, &corev1.Pod{}, 0, cache.Indexers{})
	if _, err := s.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { s.observe(obj, false) },
		UpdateFunc: func(_, obj any) { s.observe(obj, false) },
		DeleteFunc: func(obj any) { s.observe(obj, true) },
	}); err != nil {
		return nil, err
	}
	runCtx, stop := context.WithCancel(context.Background())
	s.stop = stop
	go func() {
		defer close(s.stopped)
		s.informer.RunWithContext(runCtx)
	}()
	if !cache.WaitForCacheSync(ctx.Done(), s.informer.HasSynced) {
		s.Close()
		return nil, fmt.Errorf("kubeslots: watching Pods in namespace %q: %w", o.Namespace, context.Cause(ctx))
	}
	return s, nil
}

// Close stops watching.
func (s *Slots) Close() {
	s.stop()
	<-s.stopped
}

func (s *Slots) observe(obj any, deleted bool) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj, deleted = t.Obj, true
	}
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	id := p.Labels[kube.LabelSandbox]
	if id == "" {
		return
	}
	e := entry{pod: p.Name, uid: p.UID, gone: deleted, scaledDown: p.Annotations[AnnotationScaledDown] != ""}
	e.going = deleted || p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded
	if t, err := time.Parse(time.RFC3339Nano, p.Annotations[AnnotationLastBusy]); err == nil {
		e.lastBusy = t
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.last[id]; ok && deleted && old.uid != p.UID {
		return // an older Pod of the ID went after a new one came
	}
	s.last[id] = e
}

// Attach implements app.Shared.
func (s *Slots) Attach(ctx context.Context, id string) (sandbox.Sandbox, error) {
	return s.o.Attacher.Attach(ctx, id)
}

// Slots implements app.Shared.
func (s *Slots) Slots(prefix string) []app.SlotState {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []app.SlotState
	for id, e := range s.last {
		if e.gone || !strings.HasPrefix(id, prefix) {
			continue
		}
		out = append(out, app.SlotState{ID: id, LastBusy: e.lastBusy, ScaledDown: e.scaledDown, Going: e.going})
	}
	return out
}

// ScaledDown implements app.Shared.
func (s *Slots) ScaledDown(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last[id].scaledDown
}

// MarkBusy implements app.Shared.
func (s *Slots) MarkBusy(ctx context.Context, id string, t time.Time) error {
	return s.annotate(ctx, id, AnnotationLastBusy, t.UTC().Format(time.RFC3339Nano))
}

// MarkScaledDown implements app.Shared.
func (s *Slots) MarkScaledDown(ctx context.Context, id string) error {
	return s.annotate(ctx, id, AnnotationScaledDown, time.Now().UTC().Format(time.RFC3339Nano))
}

// annotate sets an annotation on sandbox id's Pod (the one last seen).
func (s *Slots) annotate(ctx context.Context, id, key, value string) error {
	s.mu.Lock()
	e, ok := s.last[id]
	s.mu.Unlock()
	if !ok || e.gone {
		return fmt.Errorf("kubeslots: no Pod of sandbox %s", id)
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"uid": e.uid, "annotations": map[string]string{key: value},
	}})
	if err != nil {
		return err
	}
	_, err = s.o.Client.CoreV1().Pods(s.o.Namespace).Patch(ctx, e.pod, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		return fmt.Errorf("kubeslots: annotate Pod %s: %w", e.pod, err)
	}
	return nil
}
