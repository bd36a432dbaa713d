package kubestore

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/berth-dev/berth/store"
)

// Handler gets the changes Watch sees: pools and apps created, changed or
// deleted by another replica or with kubectl (and this replica's own
// writes, which a handler recognises as nothing new). An error says why
// Berth cannot serve the resource as it is; it becomes the resource's
// Ready condition.
type Handler struct {
	Pool     func(ctx context.Context, p store.Pool) error
	PoolGone func(ctx context.Context, name string)
	App      func(ctx context.Context, a store.App) error
	AppGone  func(ctx context.Context, name string)
	// Synced, if set, is called once the watch has seen what there was
	// when it started.
	Synced func()
}

// Watch feeds h with every change to the namespace's SessionPools, Apps and
// pool keys until ctx is done, then returns once its informers have
// stopped. It calls h from one goroutine per kind, in the order of the
// changes; it returns an error if the informers cannot sync.
func (s *Store) Watch(ctx context.Context, h Handler) error {
	dyn := dynamicinformer.NewFilteredDynamicSharedInformerFactory(s.dyn, 0, s.ns, nil)
	keys := informers.NewSharedInformerFactoryWithOptions(s.kube, 0, informers.WithNamespace(s.ns),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector(RolePoolKey, "", "") }))
	pools := dyn.ForResource(PoolResource).Informer()
	apps := dyn.ForResource(AppResource).Informer()
	secrets := keys.Core().V1().Secrets().Informer()

	onPool := func(obj any) {
		u, ok := s.fresh(ctx, s.pools(), obj)
		if !ok || h.Pool == nil {
			return
		}
		p, err := s.poolFromObject(ctx, u, false)
		if err == nil {
			err = h.Pool(ctx, p)
		}
		s.setReady(ctx, s.pools(), u, err)
	}
	onApp := func(obj any) {
		u, ok := s.fresh(ctx, s.apps(), obj)
		if !ok || h.App == nil {
			return
		}
		a, err := appFromObject(u)
		if err == nil {
			err = h.App(ctx, a)
		}
		s.setReady(ctx, s.apps(), u, err)
	}
	_, _ = pools.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    onPool,
		UpdateFunc: func(_, obj any) { onPool(obj) },
		DeleteFunc: func(obj any) {
			if h.PoolGone != nil {
				h.PoolGone(ctx, nameOf(obj))
			}
		},
	})
	_, _ = apps.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    onApp,
		UpdateFunc: func(_, obj any) { onApp(obj) },
		DeleteFunc: func(obj any) {
			if h.AppGone != nil {
				h.AppGone(ctx, nameOf(obj))
			}
		},
	})
	// A key made or rotated by another replica: the pool is read again.
	onKey := func(obj any) {
		sec, ok := obj.(*corev1.Secret)
		if !ok || h.Pool == nil {
			return
		}
		if p, err := s.GetPool(ctx, sec.Labels[LabelOwnerName]); err == nil {
			_ = h.Pool(ctx, p)
		}
	}
	_, _ = secrets.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    onKey,
		UpdateFunc: func(_, obj any) { onKey(obj) },
	})
	dyn.Start(ctx.Done())
	keys.Start(ctx.Done())
	defer dyn.Shutdown()
	defer keys.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), pools.HasSynced, apps.HasSynced, secrets.HasSynced) {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("kubestore: the watch of %s did not sync", s.ns)
	}
	if h.Synced != nil {
		h.Synced()
	}
	<-ctx.Done()
	return nil
}

// fresh reads the object of an event again: an event can be older than
// what this replica wrote since (and already serves), and handing it on
// would turn the replica back for a moment. false if it is gone (its
// delete event follows); the event's object if it cannot be read.
func (s *Store) fresh(ctx context.Context, ri dynamic.ResourceInterface, obj any) (*unstructured.Unstructured, bool) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, false
	}
	cur, err := ri.Get(ctx, u.GetName(), metav1.GetOptions{})
	if isNotFound(err) {
		return nil, false
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, false
		}
		s.log.Warn("kubestore: read changed object again; using the event's", "kind", u.GetKind(), "name", u.GetName(), "err", err)
		return u, true
	}
	return cur, true
}

func nameOf(obj any) string {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	if m, ok := obj.(metav1.Object); ok {
		return m.GetName()
	}
	return ""
}
