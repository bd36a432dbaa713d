package kubestore

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
)

// TestSetReadyKeepsALaterRefusal: a replica that judged a pool from an
// event read before another replica refused it does not overwrite that
// refusal with its acceptance (replicas that disagree would otherwise flip
// the status in turn).
func TestSetReadyKeepsALaterRefusal(t *testing.T) {
	pool := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": Group + "/" + Version, "kind": "SessionPool",
		"metadata": map[string]any{"name": "split", "namespace": "ns", "generation": int64(1)},
	}}
	dyn := dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{PoolResource: "SessionPoolList"}, pool.DeepCopy())
	s := &Store{dyn: dyn, kube: kubefake.NewClientset(), ns: "ns", log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx := context.Background()
	ri := s.pools()

	seen := pool.DeepCopy() // what the accepting replica's event carried
	s.setReady(ctx, ri, pool.DeepCopy(), errors.New("runtime \"gvisor\" is not available"))
	s.setReady(ctx, ri, seen, nil)

	cur, err := ri.Get(ctx, "split", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	conds, _, _ := unstructured.NestedSlice(cur.Object, "status", "conditions")
	if len(conds) != 1 || conds[0].(map[string]any)["status"] != "False" {
		t.Fatalf("conditions %v, want the refusal kept", conds)
	}
}
