package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/berth-dev/berth/internal/imagetest"
	"github.com/berth-dev/berth/internal/kubeapitest"
	"github.com/berth-dev/berth/internal/registrytest"
	"github.com/berth-dev/berth/internal/testutil"
	"github.com/berth-dev/berth/store/kubestore"
)

// TestKubeStateReplicas: two `berth up --state kube` share one state in a
// real API server (etcd + kube-apiserver on loopback). A pool created with
// the CLI of one is served by the other; a SessionPool applied with
// kubectl (the dynamic client) is served by both, with a key Berth gives
// it; an update, a key rotation and a delete made on one reach the other.
func TestKubeStateReplicas(t *testing.T) {
	a, b, dyn, ns := kubeReplicas(t)
	ctx := context.Background()
	start := time.Now()
	key := a.createPool("cli-pool", "--ready", "1", "--max", "5")
	waitUntil(t, "replica b to serve the pool a created", func() bool {
		return b.executeRaw("cli-pool", key, "sess-1", "echo hi").Status == 200
	})
	t.Logf("pool create on a → first execute served by b: %v", time.Since(start))
	if out := b.execute("cli-pool", key, "sess-1", "echo from-b").Stdout; out != "from-b\n" {
		t.Fatalf("stdout %q", out)
	}

	sp := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "berth.dev/v1", "kind": "SessionPool", "metadata": map[string]any{"name": "applied"},
		"spec": map[string]any{"type": "shell", "readySessions": int64(1), "maxSessions": int64(3)},
	}}
	if _, err := dyn.Resource(kubestore.PoolResource).Namespace(ns).Create(ctx, sp, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "both replicas to list the applied pool", func() bool {
		_, _, ca := a.try("pool", "show", "applied")
		_, _, cb := b.try("pool", "show", "applied")
		return ca == 0 && cb == 0
	})
	appliedKey := strings.TrimSpace(a.cli("pool", "credentials", "applied"))
	for _, r := range []*berth{a, b} {
		if out := r.execute("applied", appliedKey, "key-sess-1", "echo applied").Stdout; out != "applied\n" {
			t.Fatalf("stdout %q", out)
		}
	}
	waitUntil(t, "Ready=True on the applied pool", func() bool {
		u, err := dyn.Resource(kubestore.PoolResource).Namespace(ns).Get(ctx, "applied", metav1.GetOptions{})
		if err != nil {
			return false
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		return len(conds) == 1 && conds[0].(map[string]any)["status"] == "True"
	})

	// Changes on one replica reach the other.
	b.cli("pool", "update", "cli-pool", "--max", "7")
	waitUntil(t, "replica a to see the update b made", func() bool {
		return a.poolView("cli-pool").Max == 7
	})
	start = time.Now()
	newKey := strings.TrimSpace(a.cli("pool", "rotate-key", "cli-pool"))
	waitUntil(t, "replica b to refuse the old key", func() bool {
		return b.executeRaw("cli-pool", key, "sess-2", "true").Status == 401
	})
	t.Logf("rotate-key on a → old key refused by b: %v", time.Since(start))
	if r := b.executeRaw("cli-pool", newKey, "sess-2", "true"); r.Status != 200 {
		t.Fatalf("new key on b: %d %s", r.Status, r.Body)
	}
	a.cli("pool", "delete", "cli-pool")
	waitUntil(t, "replica b to drop the pool a deleted", func() bool {
		return b.executeRaw("cli-pool", newKey, "sess-3", "true").Status == 404
	})
}

// kubeReplicas starts an API server with Berth's CRDs, a namespace, and two
// berth up --state kube on it.
func kubeReplicas(t *testing.T, extra ...string) (a, b *berth, dyn dynamic.Interface, ns string) {
	t.Helper()
	testutil.RequireRoot(t)
	bins, err := kubeapitest.Bins()
	if err != nil {
		if kubeapitest.Required() {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	ctx := context.Background()
	api, err := kubeapitest.Start(ctx, bins, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(api.Stop)
	if err := api.ApplyCRDs(ctx, "../deploy/kubernetes/crds"); err != nil {
		t.Fatal(err)
	}
	ns = "berth-h-kstore-e2e"
	kube := kubernetes.NewForConfigOrDie(api.Config)
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// No default pool: its warm sandboxes, twice, are not what this tests.
	if _, err := kube.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "berth-meta"},
		Data: map[string]string{"defaultPoolCreated": "test"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	flags := append([]string{"--state", "kube", "--kubeconfig", api.Kubeconfig, "--kube-namespace", ns}, extra...)
	a, b = startBerth(t, "", flags...), startBerth(t, "", flags...)
	if a.token() != b.token() {
		t.Error("the replicas' admin tokens differ")
	}
	return a, b, dynamic.NewForConfigOrDie(api.Config), ns
}

// TestKubeStateApps: an app deployed from an image on one replica runs on
// the other too; an App applied with kubectl (the dynamic client), made
// from it, runs on both; kubectl delete stops it on both.
func TestKubeStateApps(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	imagetest.Push(t, reg.Ref("ids:1"), idsImage(t, imagetest.GoBinary(t, idsGo), "v1"))
	a, b, dyn, ns := kubeReplicas(t, "--insecure-registry", reg.Host)
	ctx := context.Background()
	if _, errOut, code := a.try("app", "deploy", "ids", "--image", reg.Ref("ids:1"), "--min", "1"); code != 0 {
		t.Fatalf("deploy: %s", errOut)
	}
	a.waitReplicas("ids", 1)
	waitUntil(t, "replica b to know the app a deployed", func() bool { _, _, code := b.try("app", "show", "ids"); return code == 0 })
	b.waitReplicas("ids", 1)
	if info := b.appInfo("ids"); info.Version != "v1" {
		t.Fatalf("replica b runs %+v", info)
	}

	apps := dyn.Resource(kubestore.AppResource).Namespace(ns)
	src, err := apps.Get(ctx, "ids", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	spec, _ := json.Marshal(src.Object["spec"])
	spec = []byte(strings.ReplaceAll(string(spec), "ids--r1", "kubectl-app--r1"))
	var sp map[string]any
	if err := json.Unmarshal(spec, &sp); err != nil {
		t.Fatal(err)
	}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "berth.dev/v1", "kind": "App", "metadata": map[string]any{"name": "kubectl-app"}, "spec": sp,
	}}
	if _, err := apps.Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*berth{a, b} {
		waitUntil(t, "the replicas to know the applied app", func() bool { _, _, code := r.try("app", "show", "kubectl-app"); return code == 0 })
		r.waitReplicas("kubectl-app", 1)
		if info := r.appInfo("kubectl-app"); info.Version != "v1" {
			t.Fatalf("the applied app runs %+v", info)
		}
	}
	if err := apps.Delete(ctx, "kubectl-app", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*berth{a, b} {
		waitUntil(t, "kubectl delete to reach the replicas", func() bool {
			_, _, code := r.try("app", "show", "kubectl-app")
			return code != 0
		})
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
