package kubepool_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/internal/kubepool"
	"github.com/berth-dev/berth/internal/kubetest"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/sandbox/kube"
)

// TestClaims: two replicas' Clusters on one namespace of the test
// cluster. A Pod is claimable only once marked warm for the shape asked
// for; a claim made through one replica is found through the other, which
// attaches to its Pod; activity written by one is read by the other;
// Delete leaves a Pod claimed since it was listed; Release deletes the
// Pod with its Secrets (the agent's, the files') and NetworkPolicy.
func TestClaims(t *testing.T) {
	k := kubetest.Cluster(t)
	ns := k.Namespace(t, "h-kpool")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var rts []*kube.Runtime
	for range 2 {
		rt, err := kube.New(ctx, kube.Options{Client: k.Client, Namespace: ns, Shared: true,
			AgentImage: k.BerthImage(t), Image: k.BerthImage(t), AgentFrom: []string{"10.88.0.1/32"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(rt.Close)
		rts = append(rts, rt)
	}
	a, b := kubepool.New(rts[0]).Claims("p"), kubepool.New(rts[1]).Claims("p")
	// w2 has files (a Secret of its own besides the agent's).
	files := t.TempDir()
	if err := os.WriteFile(filepath.Join(files, "f"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	start := func(id string, fs ...sandbox.Files) sandbox.Sandbox {
		sb, err := rts[0].Start(ctx, sandbox.Spec{ID: id, Owner: sandbox.Owner{Kind: "pool", Name: "p"}, Files: fs})
		if err != nil {
			t.Fatal(err)
		}
		return sb
	}
	w1, w2 := start("p-w1"), start("p-w2", sandbox.Files{Dir: files, Target: "/mnt/files"})

	if _, ok, err := b.Claim(ctx, "sess-1", "shape-1"); err != nil || ok {
		t.Fatalf("claim before any Pod is warm: ok %v, %v", ok, err)
	}
	if err := a.MarkWarm(ctx, w1.ID(), "shape-0"); err != nil {
		t.Fatal(err)
	}
	if err := a.MarkWarm(ctx, w2.ID(), "shape-1"); err != nil {
		t.Fatal(err)
	}
	got, ok, err := b.Claim(ctx, "sess-1", "shape-1")
	if err != nil || !ok || got.ID != w2.ID() || got.Session != "sess-1" {
		t.Fatalf("claim: %+v ok %v, %v; want %s (the Pod of shape-1)", got, ok, err, w2.ID())
	}
	found, ok, err := a.Find(ctx, "sess-1")
	if err != nil || !ok || found.ID != w2.ID() {
		t.Fatalf("find through the other replica: %+v ok %v, %v", found, ok, err)
	}
	sb, err := kubepool.New(rts[1]).Attach(ctx, found.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := sb.Agent().Ping(ctx); err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(-time.Minute).Round(time.Millisecond)
	if err := b.Touch(ctx, found.ID, at, true); err != nil {
		t.Fatal(err)
	}
	all, err := a.List(ctx)
	if err != nil || len(all) != 2 {
		t.Fatalf("list: %+v, %v", all, err)
	}
	for _, c := range all {
		if c.ID == w2.ID() && (!c.LastActive.Equal(at) || !c.SessionCreated.Equal(at) || c.Shape != "shape-1") {
			t.Fatalf("the claimed Pod as listed: %+v, want activity at %v", c, at)
		}
	}

	// Delete of a Pod as listed before it was claimed: it stays.
	var stale = all[0]
	for _, c := range all {
		if c.ID == w1.ID() {
			stale = c
		}
	}
	if _, ok, err := b.Claim(ctx, "sess-2", "shape-0"); err != nil || !ok {
		t.Fatalf("claim of the shape-0 Pod: %v %v", ok, err)
	}
	if err := a.Delete(ctx, stale); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := a.Find(ctx, "sess-2"); !ok {
		t.Fatal("Delete removed a Pod claimed after it was listed")
	}

	if ok, err := a.Release(ctx, "sess-1"); err != nil || !ok {
		t.Fatalf("release: %v %v", ok, err)
	}
	select {
	case <-sb.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the attached sandbox is not done after its release")
	}
	select {
	case <-w2.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the starting replica's sandbox is not done after the release")
	}
	name := "berth-" + w2.ID()
	l, err := k.Client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{LabelSelector: kube.LabelSandbox + "=" + w2.ID()})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range l.Items {
		t.Errorf("the released Pod's Secret %s is left", s.Name)
	}
	if _, err := k.Client.NetworkingV1().NetworkPolicies(ns).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the released Pod's NetworkPolicy: %v", err)
	}
	if ok, err := b.Release(ctx, "sess-1"); err != nil || ok {
		t.Fatalf("second release: %v %v", ok, err)
	}
}
