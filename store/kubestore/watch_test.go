package kubestore_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/berth-dev/berth/store"
	"github.com/berth-dev/berth/store/kubestore"
)

// recorder is a watch handler that keeps what it was told.
type recorder struct {
	mu     sync.Mutex
	pools  map[string]store.Pool
	apps   map[string]store.App
	gone   map[string]bool
	reject map[string]error // pools the handler refuses
}

func newRecorder() *recorder {
	return &recorder{pools: map[string]store.Pool{}, apps: map[string]store.App{}, gone: map[string]bool{}, reject: map[string]error{}}
}

func (r *recorder) handler() kubestore.Handler {
	return kubestore.Handler{
		Pool: func(_ context.Context, p store.Pool) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.pools[p.Name] = p
			delete(r.gone, "pool/"+p.Name)
			return r.reject[p.Name]
		},
		PoolGone: func(_ context.Context, name string) { r.mu.Lock(); r.gone["pool/"+name] = true; r.mu.Unlock() },
		App: func(_ context.Context, a store.App) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.apps[a.Name] = a
			return nil
		},
		AppGone: func(_ context.Context, name string) { r.mu.Lock(); r.gone["app/"+name] = true; r.mu.Unlock() },
	}
}

func (r *recorder) pool(name string) (store.Pool, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.pools[name]
	return p, ok
}

func (r *recorder) app(name string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return string(r.apps[name].Doc)
}

func (r *recorder) isGone(what string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gone[what]
}

// apply is kubectl apply -f of a manifest, through the dynamic client.
func (e *env) apply(t *testing.T, manifest string) {
	t.Helper()
	var u unstructured.Unstructured
	if err := yaml.Unmarshal([]byte(manifest), &u.Object); err != nil {
		t.Fatal(err)
	}
	r := kubestore.PoolResource
	if u.GetKind() == "App" {
		r = kubestore.AppResource
	}
	ctx := context.Background()
	cur, err := e.res(r).Get(ctx, u.GetName(), metav1.GetOptions{})
	if err == nil {
		cur.Object["spec"] = u.Object["spec"]
		_, err = e.res(r).Update(ctx, cur, metav1.UpdateOptions{})
	} else {
		_, err = e.res(r).Create(ctx, &u, metav1.CreateOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
}

func readyCondition(u *unstructured.Unstructured) (status, message string) {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == "Ready" {
			s, _ := m["status"].(string)
			msg, _ := m["message"].(string)
			return s, msg
		}
	}
	return "", ""
}

// TestWatchSeesApply: a SessionPool or an App applied with kubectl (the
// dynamic client here), or written by another store instance, reaches a
// store's watch; a pool applied without a key gets one (in a Secret); the
// handler's verdict becomes the resource's Ready condition.
func TestWatchSeesApply(t *testing.T) {
	e := newEnv(t)
	watcher, writer := e.store(t), e.store(t)
	rec := newRecorder()
	rec.reject["bad"] = errors.New("runtime \"nope\" is not available")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	synced := make(chan struct{})
	h := rec.handler()
	h.Synced = func() { close(synced) }
	go func() { done <- watcher.Watch(ctx, h) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	<-synced
	start := time.Now()
	e.apply(t, `
apiVersion: berth.dev/v1
kind: SessionPool
metadata: {name: kubectl-pool}
spec: {type: shell, runtime: bwrap, readySessions: 1, maxSessions: 5}
`)
	eventually(t, "the watch to see the applied pool", func() bool { _, ok := rec.pool("kubectl-pool"); return ok })
	t.Logf("first apply → the other instance's handler (key made too): %v", time.Since(start))
	p, _ := rec.pool("kubectl-pool")
	if !strings.Contains(string(p.Config), `"maxSessions":5`) || !strings.Contains(string(p.Config), `"name":"kubectl-pool"`) {
		t.Errorf("config %s", p.Config)
	}
	key, err := writer.PoolKey(context.Background(), "kubectl-pool")
	if err != nil || key == "" || p.KeyHash != store.HashKey(key) {
		t.Fatalf("the applied pool's key: %q %v (hash matches: %v)", key, err, p.KeyHash == store.HashKey(key))
	}
	eventually(t, "Ready=True on the applied pool", func() bool {
		s, _ := readyCondition(e.get(t, kubestore.PoolResource, "kubectl-pool"))
		return s == "True"
	})

	start = time.Now()
	e.apply(t, `
apiVersion: berth.dev/v1
kind: SessionPool
metadata: {name: kubectl-pool}
spec: {type: shell, runtime: bwrap, readySessions: 1, maxSessions: 9}
`)
	eventually(t, "the watch to see the change", func() bool {
		p, _ := rec.pool("kubectl-pool")
		return strings.Contains(string(p.Config), `"maxSessions":9`)
	})
	t.Logf("apply of a change → the other instance's handler: %v", time.Since(start))

	e.apply(t, `
apiVersion: berth.dev/v1
kind: SessionPool
metadata: {name: bad}
spec: {type: shell, runtime: nope}
`)
	eventually(t, "Ready=False on the refused pool", func() bool {
		s, msg := readyCondition(e.get(t, kubestore.PoolResource, "bad"))
		return s == "False" && strings.Contains(msg, "not available")
	})
	eventually(t, "a Warning event on the refused pool", func() bool {
		evs, err := e.kube.CoreV1().Events(e.ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=bad"})
		return err == nil && len(evs.Items) == 1 && evs.Items[0].Reason == kubestore.ReasonRejected && evs.Items[0].Type == "Warning"
	})

	// Another replica's writes reach the watch too.
	if _, err := writer.UpdateApp(context.Background(), "tasks", func([]byte) ([]byte, error) {
		return []byte(`{"name":"tasks","revisions":[],"traffic":[],"nextRevision":7}`), nil
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the watch to see the other instance's app", func() bool { return strings.Contains(rec.app("tasks"), `"nextRevision":7`) })
	if err := writer.DeletePool(context.Background(), "kubectl-pool"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the watch to see the deletion", func() bool { return rec.isGone("pool/kubectl-pool") })
	if err := e.res(kubestore.AppResource).Delete(context.Background(), "tasks", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the watch to see kubectl delete app", func() bool { return rec.isGone("app/tasks") })
}

// TestReplicasDisagree: two replicas that judge a pool differently (one
// refuses it) settle on the refusal instead of rewriting its status in
// turn forever.
func TestReplicasDisagree(t *testing.T) {
	e := newEnv(t)
	ok, refuses := newRecorder(), newRecorder()
	refuses.reject["split"] = errors.New("runtime \"gvisor\" is not available on this server")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, r := range []*recorder{ok, refuses} {
		s := e.store(t)
		wg.Add(1)
		go func() { defer wg.Done(); _ = s.Watch(ctx, r.handler()) }()
	}
	defer func() { cancel(); wg.Wait() }()
	e.apply(t, `
apiVersion: berth.dev/v1
kind: SessionPool
metadata: {name: split}
spec: {type: shell, runtime: gvisor}
`)
	eventually(t, "Ready=False", func() bool {
		s, _ := readyCondition(e.get(t, kubestore.PoolResource, "split"))
		return s == "False"
	})
	rv := e.get(t, kubestore.PoolResource, "split").GetResourceVersion()
	time.Sleep(2 * time.Second)
	if now := e.get(t, kubestore.PoolResource, "split").GetResourceVersion(); now != rv {
		t.Fatalf("the status is still being rewritten (resourceVersion %s, then %s)", rv, now)
	}
	if s, _ := readyCondition(e.get(t, kubestore.PoolResource, "split")); s != "False" {
		t.Fatalf("Ready=%s, want the refusal kept", s)
	}
}
