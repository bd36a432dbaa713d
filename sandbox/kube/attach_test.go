package kube_test

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/sandbox/kube"
)

// replicas are n Runtimes of one instance on the test namespace, as
// Berth replicas sharing their sandboxes (--state kube) have them.
func replicas(t *testing.T, n int) []*kube.Runtime {
	t.Helper()
	inst := "t-" + strings.ToLower(rand.Text()[:8])
	var rts []*kube.Runtime
	for range n {
		rts = append(rts, newRuntime(t, "", func(o *kube.Options) { o.Instance, o.Shared = inst, true }))
	}
	return rts
}

// TestAttachAcrossReplicas: a sandbox one replica started is reached
// from another by its ID: the same files, the same Pod; a Start of its ID
// from any replica is ErrExists and leaves it running; the second
// replica's Destroy ends it for the first.
func TestAttachAcrossReplicas(t *testing.T) {
	rts := replicas(t, 3)
	a, b, c := rts[0], rts[1], rts[2]
	sa := start(t, a, sandbox.Spec{ID: "attach"})
	if out := shell(t, sa, "echo from-a > /tmp/f && hostname"); out != "sandbox" {
		t.Fatalf("a: %q", out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	t0 := time.Now()
	sb, err := b.Attach(ctx, sa.ID())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("attach: %v", time.Since(t0))
	if out := shell(t, sb, "cat /tmp/f"); out != "from-a" {
		t.Fatalf("b reads %q", out)
	}
	if again, err := b.Attach(ctx, sa.ID()); err != nil || again != sb {
		t.Fatalf("second attach on b: %v, same sandbox %v", err, again == sb)
	}
	if again, err := a.Attach(ctx, sa.ID()); err != nil || again != sa {
		t.Fatalf("attach on a, which started it: %v, same sandbox %v", err, again == sa)
	}
	for name, rt := range map[string]*kube.Runtime{"a (holds it)": a, "b (attached)": b, "c (knows nothing of it)": c} {
		if _, err := rt.Start(ctx, sandbox.Spec{ID: sa.ID()}); !errors.Is(err, sandbox.ErrExists) {
			t.Fatalf("Start of an existing ID on %s: %v, want ErrExists", name, err)
		}
	}
	if out := shell(t, sa, "cat /tmp/f"); out != "from-a" {
		t.Fatalf("a after the refused Starts: %q", out)
	}
	if _, err := c.Attach(ctx, "no-such-sandbox"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("attach of no sandbox: %v, want ErrNotFound", err)
	}

	t0 = time.Now()
	if err := sb.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sa.Done():
		t.Logf("b's Destroy → a's Done: %v", time.Since(t0))
	case <-time.After(30 * time.Second):
		t.Fatal("a's sandbox not done after b destroyed it")
	}
	if _, err := cluster.cs.CoreV1().Secrets(cluster.ns).Get(ctx, "berth-"+sa.ID()+"-agent", metav1.GetOptions{}); err == nil {
		t.Fatal("the agent's Secret outlived Destroy")
	}
	if _, err := cluster.cs.NetworkingV1().NetworkPolicies(cluster.ns).Get(ctx, "berth-"+sa.ID(), metav1.GetOptions{}); err == nil {
		t.Fatal("the NetworkPolicy outlived Destroy")
	}
	if _, err := c.Attach(ctx, sa.ID()); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("attach after destroy: %v, want ErrNotFound", err)
	}
}

// TestSharedCleanup: a replica that starts (its Cleanup at start-up)
// leaves the sandboxes of the other replicas running.
func TestSharedCleanup(t *testing.T) {
	rts := replicas(t, 2)
	a, b := rts[0], rts[1]
	sa := start(t, a, sandbox.Spec{ID: "shared"})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := b.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sa.Done():
		t.Fatal("b's Cleanup ended a's sandbox")
	case <-time.After(2 * time.Second):
	}
	if out := shell(t, sa, "echo alive"); out != "alive" {
		t.Fatalf("a after b's Cleanup: %q", out)
	}
	if _, err := b.Attach(ctx, sa.ID()); err != nil {
		t.Fatal(err)
	}
}
