package kubestore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/berth-dev/berth/store"
	"github.com/berth-dev/berth/store/kubestore"
)

// TestPoolLifecycle: a pool created, changed and deleted through the store
// is a SessionPool whose spec is its configuration; its key is a Secret
// owned by it, never in the resource.
func TestPoolLifecycle(t *testing.T) {
	e := newEnv(t)
	s := e.store(t)
	ctx := context.Background()
	const key = "the-pool-key-0123456789-abcdefghij"
	if err := s.CreatePool(ctx, "py", []byte(`{"name":"py","type":"python","runtime":"gvisor","readySessions":2,"maxSessions":10,"cpu":0.5}`), key); err != nil {
		t.Fatal(err)
	}
	if err := s.CreatePool(ctx, "py", []byte(`{"name":"py"}`), key); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	u := e.get(t, kubestore.PoolResource, "py")
	if typ, _, _ := unstructured.NestedString(u.Object, "spec", "type"); typ != "python" {
		t.Errorf("spec.type = %q; object %v", typ, u.Object)
	}
	if n, _, _ := unstructured.NestedInt64(u.Object, "spec", "readySessions"); n != 2 {
		t.Errorf("spec.readySessions = %d", n)
	}
	if u.GetLabels()[kubestore.LabelManagedBy] != "berth" {
		t.Errorf("labels %v", u.GetLabels())
	}
	sec, err := e.kube.CoreV1().Secrets(e.ns).Get(ctx, "berth-pool-py-key", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if string(sec.Data["key"]) != key || len(sec.OwnerReferences) != 1 || sec.OwnerReferences[0].UID != u.GetUID() ||
		sec.Labels[kubestore.LabelManagedBy] != "berth" {
		t.Errorf("key Secret: owners %v labels %v", sec.OwnerReferences, sec.Labels)
	}
	p, err := s.GetPool(ctx, "py")
	if err != nil || p.KeyHash != store.HashKey(key) || p.CreatedAt.IsZero() {
		t.Fatalf("GetPool: %+v %v", p, err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(p.Config, &cfg); err != nil || cfg["name"] != "py" || cfg["cpu"] != 0.5 {
		t.Errorf("config %s: %v", p.Config, err)
	}

	if err := s.UpdatePool(ctx, "py", func(cur []byte) ([]byte, error) {
		return []byte(strings.Replace(string(cur), `"maxSessions":10`, `"maxSessions":20`, 1)), nil
	}); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := unstructured.NestedInt64(e.get(t, kubestore.PoolResource, "py").Object, "spec", "maxSessions"); n != 20 {
		t.Errorf("after update spec.maxSessions = %d", n)
	}
	if err := s.SetPoolKey(ctx, "py", "a-rotated-key-0123456789"); err != nil {
		t.Fatal(err)
	}
	if k, err := s.PoolKey(ctx, "py"); err != nil || k != "a-rotated-key-0123456789" {
		t.Fatalf("PoolKey = %q, %v", k, err)
	}
	if all := e.notSecrets(t); strings.Contains(all, key) || strings.Contains(all, "a-rotated-key") {
		t.Fatalf("a key is in a resource: %s", all)
	}

	if err := s.DeletePool(ctx, "py"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetPool(ctx, "py"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	if _, err := e.kube.CoreV1().Secrets(e.ns).Get(ctx, "berth-pool-py-key", metav1.GetOptions{}); err == nil {
		t.Error("the key Secret outlived its pool")
	}
	if err := s.DeletePool(ctx, "py"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

// TestAppLifecycle: an app's document (revisions, traffic) is an App's
// spec; its secrets are Secrets, never in the resource.
func TestAppLifecycle(t *testing.T) {
	e := newEnv(t)
	s := e.store(t)
	ctx := context.Background()
	doc := `{"name":"tasks","revisions":[{"name":"tasks--r1","config":{"command":"./run","registries":[{"server":"r.example","username":"u","password":"pw-sent-in-a-doc"}],"transport":"http","port":8000,"path":"/mcp","minReplicas":0,"maxReplicas":3}}],"traffic":[{"revision":"tasks--r1","percent":100}],"latestRevision":true,"nextRevision":1}`
	if _, err := s.UpdateApp(ctx, "tasks", func(cur []byte) ([]byte, error) {
		if cur != nil {
			t.Errorf("a new app has a document: %s", cur)
		}
		return []byte(doc), nil
	}); err != nil {
		t.Fatal(err)
	}
	u := e.get(t, kubestore.AppResource, "tasks")
	revs, _, _ := unstructured.NestedSlice(u.Object, "spec", "revisions")
	traffic, _, _ := unstructured.NestedSlice(u.Object, "spec", "traffic")
	if len(revs) != 1 || len(traffic) != 1 {
		t.Fatalf("spec %v", u.Object["spec"])
	}
	if _, err := s.UpdateApp(ctx, "tasks", func(cur []byte) ([]byte, error) {
		var d map[string]any
		if err := json.Unmarshal(cur, &d); err != nil {
			return nil, err
		}
		d["labels"] = map[string]string{"blue": "tasks--r1"}
		return json.Marshal(d)
	}); err != nil {
		t.Fatal(err)
	}
	apps, err := s.ListApps(ctx)
	if err != nil || len(apps) != 1 || !strings.Contains(string(apps[0].Doc), `"blue":"tasks--r1"`) || !strings.Contains(string(apps[0].Doc), `"port":8000`) {
		t.Fatalf("ListApps: %v %v", apps, err)
	}

	const secret = "s3cr3t-value-that-must-stay-in-secrets"
	if err := s.SetSecret(ctx, "tasks", "api-token", []byte(secret)); err != nil {
		t.Fatal(err)
	}
	if err := s.SetSecret(ctx, "tasks", "api-token", []byte(secret+"2")); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Secret(ctx, "tasks", "api-token"); err != nil || string(v) != secret+"2" {
		t.Fatalf("Secret = %q, %v", v, err)
	}
	if l, err := s.ListSecrets(ctx, "tasks"); err != nil || len(l) != 1 || l[0].Name != "api-token" || l[0].UpdatedAt.IsZero() {
		t.Fatalf("ListSecrets = %v, %v", l, err)
	}
	secs, err := e.kube.CoreV1().Secrets(e.ns).List(ctx, metav1.ListOptions{LabelSelector: "berth.dev/owner-name=tasks"})
	if err != nil || len(secs.Items) != 1 || len(secs.Items[0].OwnerReferences) != 1 || secs.Items[0].OwnerReferences[0].UID != u.GetUID() {
		t.Fatalf("app Secret: %v %v", secs, err)
	}
	if all := e.notSecrets(t); strings.Contains(all, secret) || strings.Contains(all, "pw-sent-in-a-doc") {
		t.Fatal("a secret's value or a registry password is in a resource")
	}
	if err := s.DeleteSecret(ctx, "tasks", "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("delete of a missing secret: %v", err)
	}
	if err := s.DeleteApp(ctx, "tasks"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSecrets(ctx, "tasks"); err != nil {
		t.Fatal(err)
	}
	if apps, _ := s.ListApps(ctx); len(apps) != 0 {
		t.Fatalf("after delete: %v", apps)
	}
	if l, _ := s.ListSecrets(ctx, "tasks"); len(l) != 0 {
		t.Fatalf("secrets after delete: %v", l)
	}
}

// TestRegistriesAndMeta: registry logins (Secrets) and meta values (a
// ConfigMap) round-trip; passwords stay out of everything but Secrets.
func TestRegistriesAndMeta(t *testing.T) {
	e := newEnv(t)
	s := e.store(t)
	ctx := context.Background()
	if err := s.PutRegistryCredential(ctx, "127.0.0.1:5000", "bob", "hunter2-password"); err != nil {
		t.Fatal(err)
	}
	if u, p, ok, err := s.RegistryCredential(ctx, "127.0.0.1:5000"); err != nil || !ok || u != "bob" || p != "hunter2-password" {
		t.Fatalf("RegistryCredential = %q %q %v %v", u, p, ok, err)
	}
	if l, err := s.ListRegistries(ctx); err != nil || len(l) != 1 || l[0].Host != "127.0.0.1:5000" {
		t.Fatalf("ListRegistries = %v, %v", l, err)
	}
	if err := s.PutAppRegistryCredential(ctx, "tasks", "ghcr.io", "ann", "app-password"); err != nil {
		t.Fatal(err)
	}
	if u, p, ok, err := s.AppRegistryCredential(ctx, "tasks", "ghcr.io"); err != nil || !ok || u != "ann" || p != "app-password" {
		t.Fatalf("AppRegistryCredential = %q %q %v %v", u, p, ok, err)
	}
	if err := s.DeleteAppRegistryCredentials(ctx, "tasks"); err != nil {
		t.Fatal(err)
	}
	if _, _, ok, _ := s.AppRegistryCredential(ctx, "tasks", "ghcr.io"); ok {
		t.Error("app login outlived its deletion")
	}
	if err := s.DeleteRegistryCredential(ctx, "127.0.0.1:5000"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRegistryCredential(ctx, "127.0.0.1:5000"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second delete: %v", err)
	}
	if v, err := s.Meta(ctx, "defaultPoolCreated"); err != nil || v != "" {
		t.Fatalf("Meta before = %q, %v", v, err)
	}
	if err := s.SetMeta(ctx, "defaultPoolCreated", "yes"); err != nil {
		t.Fatal(err)
	}
	if v, err := e.store(t).Meta(ctx, "defaultPoolCreated"); err != nil || v != "yes" {
		t.Fatalf("Meta from another instance = %q, %v", v, err)
	}
}

// TestConcurrentUpdates: two store instances (two replicas) change one
// pool and one app at once; every change survives, because a write that
// another beat is retried on the newer object.
func TestConcurrentUpdates(t *testing.T) {
	e := newEnv(t)
	a, b := e.store(t), e.store(t)
	ctx := context.Background()
	if err := a.CreatePool(ctx, "p", []byte(`{"name":"p","maxSessions":0}`), "key-0123456789"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.UpdateApp(ctx, "x", func([]byte) ([]byte, error) { return []byte(`{"name":"x","labels":{}}`), nil }); err != nil {
		t.Fatal(err)
	}
	const n = 15 // per instance
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 4*n)
	for i := range n {
		for j, s := range []*kubestore.Store{a, b} {
			wg.Add(2)
			go func() {
				defer wg.Done()
				errs <- s.UpdatePool(ctx, "p", func(cur []byte) ([]byte, error) {
					var c map[string]any
					if err := json.Unmarshal(cur, &c); err != nil {
						return nil, err
					}
					c["maxSessions"] = c["maxSessions"].(float64) + 1
					return json.Marshal(c)
				})
			}()
			go func() {
				defer wg.Done()
				_, err := s.UpdateApp(ctx, "x", func(cur []byte) ([]byte, error) {
					var d struct {
						Name   string            `json:"name"`
						Labels map[string]string `json:"labels"`
					}
					if err := json.Unmarshal(cur, &d); err != nil {
						return nil, err
					}
					if d.Labels == nil {
						d.Labels = map[string]string{}
					}
					d.Labels[fmt.Sprintf("l%d-%d", j, i)] = "r"
					return json.Marshal(d)
				})
				errs <- err
			}()
		}
	}
	wg.Wait()
	t.Logf("%d concurrent updates (two instances, two objects): %v", 4*n, time.Since(start))
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n2, _, _ := unstructured.NestedInt64(e.get(t, kubestore.PoolResource, "p").Object, "spec", "maxSessions"); n2 != 2*n {
		t.Errorf("pool: %d increments kept of %d", n2, 2*n)
	}
	labels, _, _ := unstructured.NestedStringMap(e.get(t, kubestore.AppResource, "x").Object, "spec", "labels")
	if len(labels) != 2*n {
		t.Errorf("app: %d labels kept of %d", len(labels), 2*n)
	}
}
