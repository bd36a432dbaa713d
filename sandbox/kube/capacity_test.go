package kube_test

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/sandbox/kube"
)

// TestNoCapacity: the cluster, not Berth's host, says when a sandbox does
// not fit. A Pod no node can take, and a Pod the namespace's
// ResourceQuota refuses, fail Start with sandbox.ErrNoCapacity (503 "try
// again later" to callers) and leave nothing behind.
func TestNoCapacity(t *testing.T) {
	t.Run("unschedulable", func(t *testing.T) {
		rt := newRuntime(t, "", func(o *kube.Options) {
			o.Requests.MemoryBytes = 1 << 40 // more than the node has
			o.UnschedulableWait = 2 * time.Second
		})
		t0 := time.Now()
		_, err := rt.Start(context.Background(), sandbox.Spec{ID: "nocap-" + strings.ToLower(rand.Text()[:6]), Limits: sandbox.Limits{MemoryBytes: 1 << 40}})
		if !errors.Is(err, sandbox.ErrNoCapacity) || !strings.Contains(err.Error(), "Insufficient memory") {
			t.Fatalf("Start = %v, want ErrNoCapacity with the scheduler's reason", err)
		}
		t.Logf("refused after %v: %v", time.Since(t0).Round(time.Millisecond), err)
		left(t, rt.Options().Namespace, rt.Options().Instance)
	})
	t.Run("quota", func(t *testing.T) {
		setup(t)
		ns := cluster.ns + "-quota"
		cs := cluster.cs
		if _, err := cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
		q := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Name: "no-pods"},
			Spec: corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{corev1.ResourcePods: resource.MustParse("0")}}}
		if _, err := cs.CoreV1().ResourceQuotas(ns).Create(context.Background(), q, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		rt := newRuntime(t, "", func(o *kube.Options) { o.Namespace = ns })
		// The quota controller fills in the quota's status first; until
		// then the API server refuses every Pod of the namespace anyway.
		_, err := rt.Start(context.Background(), sandbox.Spec{ID: "quota-" + strings.ToLower(rand.Text()[:6])})
		if !errors.Is(err, sandbox.ErrNoCapacity) || !strings.Contains(err.Error(), "exceeded quota") {
			t.Fatalf("Start = %v, want ErrNoCapacity from the quota", err)
		}
		t.Logf("refused: %v", err)
		left(t, ns, rt.Options().Instance)
	})
}

// left fails t if the instance has Pods, Secrets or NetworkPolicies in ns.
func left(t *testing.T, ns, instance string) {
	t.Helper()
	sel := metav1.ListOptions{LabelSelector: kube.LabelInstance + "=" + instance}
	ctx := context.Background()
	pods, err1 := cluster.cs.CoreV1().Pods(ns).List(ctx, sel)
	secs, err2 := cluster.cs.CoreV1().Secrets(ns).List(ctx, sel)
	nps, err3 := cluster.cs.NetworkingV1().NetworkPolicies(ns).List(ctx, sel)
	if err := errors.Join(err1, err2, err3); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			t.Errorf("Pod %s left", p.Name)
		}
	}
	if len(secs.Items)+len(nps.Items) > 0 {
		t.Errorf("%d Secrets and %d NetworkPolicies left", len(secs.Items), len(nps.Items))
	}
}
