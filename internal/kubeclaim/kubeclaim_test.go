package kubeclaim

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/berth-dev/berth/internal/apiservertest"
)

const ns = "berth-h-replicas-claim"

// warmPods creates n Pods as the kube driver labels a pool's warm Pods
// (no kubelet runs them: they stay Pending, which claims do not mind).
func warmPods(t *testing.T, c kubernetes.Interface, pool string, n int) {
	t.Helper()
	for i := range n {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-warm-%03d", pool, i), Labels: map[string]string{
				LabelManagedBy: "berth", LabelOwnerKind: "pool", LabelOwnerName: pool, "berth.dev/sandbox": fmt.Sprintf("%s-%d", pool, i)}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "sandbox", Image: "registry.invalid/berth/sandbox:test"}}},
		}
		if _, err := c.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

func cluster(t *testing.T) kubernetes.Interface {
	s := apiservertest.Start(t)
	_, err := s.Client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s.Client
}

func anyPod(*corev1.Pod) bool { return true }

// claimedPods maps each claimed Pod of a pool to its identifier.
func claimedPods(t *testing.T, c kubernetes.Interface, pool string) map[string]string {
	t.Helper()
	l, err := c.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: LabelOwnerName + "=" + pool + "," + LabelSessionHash})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range l.Items {
		if p.Labels[LabelSessionHash] != Hash(p.Annotations[AnnotationSession]) {
			t.Errorf("pod %s: hash label %q does not match its identifier %q", p.Name, p.Labels[LabelSessionHash], p.Annotations[AnnotationSession])
		}
		out[p.Name] = p.Annotations[AnnotationSession]
	}
	return out
}

// TestClaims against a real kube-apiserver: many goroutines (as many Berth
// replicas would) claim a pool's warm Pods at once. Claimers of one
// identifier all end on one Pod; two identifiers never share one; another
// pool's Pods are never taken; Find sees a claim, Release deletes its Pod,
// and a new claim of the identifier gets a fresh Pod.
func TestClaims(t *testing.T) {
	c := cluster(t)
	warmPods(t, c, "shell", 40)
	warmPods(t, c, "other", 5)
	ctx := context.Background()
	claims := New(c.CoreV1(), Options{Namespace: ns, Pool: "shell", Ready: anyPod})

	// 24 claimers of one identifier, at once.
	var wg sync.WaitGroup
	got := make([]string, 24)
	for i := range got {
		wg.Go(func() {
			p, err := claims.Claim(ctx, "same-identifier")
			if err != nil {
				t.Errorf("claim %d: %v", i, err)
				return
			}
			got[i] = p.Name
		})
	}
	wg.Wait()
	for i := range got {
		if got[i] != got[0] {
			t.Fatalf("claimers of one identifier got different Pods: %v", got)
		}
	}
	if m := claimedPods(t, c, "shell"); len(m) != 1 || m[got[0]] != "same-identifier" {
		t.Fatalf("claimed Pods: %v", m)
	}

	// 30 identifiers, each claimed by 3 goroutines at once: 90 claimers
	// for the 39 free Pods.
	start := time.Now()
	const ids = 30
	byID := make([][3]string, ids)
	for i := range ids {
		for j := range 3 {
			wg.Go(func() {
				p, err := claims.Claim(ctx, fmt.Sprintf("user-%02d:notebook/%d", i, i*7))
				if err != nil {
					t.Errorf("claim of identifier %d: %v", i, err)
					return
				}
				byID[i][j] = p.Name
			})
		}
	}
	wg.Wait()
	t.Logf("90 claimers of 30 identifiers: %s", time.Since(start))
	owner := map[string]int{got[0]: -1}
	for i, pods := range byID {
		if pods[0] != pods[1] || pods[1] != pods[2] {
			t.Fatalf("identifier %d's claimers got different Pods: %v", i, pods)
		}
		if o, taken := owner[pods[0]]; taken {
			t.Fatalf("identifiers %d and %d share Pod %s", o, i, pods[0])
		}
		owner[pods[0]] = i
	}
	m := claimedPods(t, c, "shell")
	if len(m) != ids+1 {
		t.Fatalf("%d Pods claimed, want %d: %v", len(m), ids+1, m)
	}
	if o := claimedPods(t, c, "other"); len(o) != 0 {
		t.Fatalf("another pool's Pods were claimed: %v", o)
	}

	// Find, Release, claim again.
	id := "user-03:notebook/21"
	p, err := claims.Find(ctx, id)
	if err != nil || p.Name != byID[3][0] {
		t.Fatalf("Find = %v, %v; want %s", p, err, byID[3][0])
	}
	if err := claims.Release(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := claims.Find(ctx, id); !errors.Is(err, ErrNotClaimed) {
		t.Fatalf("Find after Release: %v", err)
	}
	if _, err := c.CoreV1().Pods(ns).Get(ctx, byID[3][0], metav1.GetOptions{}); err == nil {
		t.Fatalf("the released Pod %s still exists", byID[3][0])
	}
	if p, err := claims.Claim(ctx, id); err != nil || p.Name == byID[3][0] {
		t.Fatalf("claim after release = %v, %v", p, err)
	}
	if err := claims.Release(ctx, "never-claimed"); !errors.Is(err, ErrNotClaimed) {
		t.Fatalf("Release of an unclaimed identifier: %v", err)
	}

	// The pool runs out: 39 Pods left, 31 claimed, 8 free.
	for i := range 8 {
		if _, err := claims.Claim(ctx, fmt.Sprintf("late-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := claims.Claim(ctx, "one-too-many"); !errors.Is(err, ErrNoWarmPod) {
		t.Fatalf("claim with no free Pod: %v", err)
	}
}

// TestClaimSettles: when two Pods hold one identifier (claimers that read
// the Pods before and after a new Pod appeared can start apart), the claim
// first in the identifier's order is kept by both claimers and the other
// is deleted.
func TestClaimSettles(t *testing.T) {
	c := cluster(t)
	ctx := context.Background()
	claims := New(c.CoreV1(), Options{Namespace: ns, Pool: "shell", Ready: anyPod})
	warmPods(t, c, "shell", 2)
	time.Sleep(1100 * time.Millisecond) // a later creation second
	warmPods(t, c, "late", 1)
	late, err := c.CoreV1().Pods(ns).Get(ctx, "late-warm-000", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	late.Labels[LabelOwnerName] = "shell"
	if late, err = c.CoreV1().Pods(ns).Update(ctx, late, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Both older Pods claimed for one identifier, as two racing claimers
	// would leave them.
	var pods []*corev1.Pod
	for _, name := range []string{"shell-warm-000", "shell-warm-001"} {
		p, err := c.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if p, err = claims.claim(ctx, p, "dup", Hash("dup")); err != nil {
			t.Fatal(err)
		}
		pods = append(pods, p)
	}
	first, second := pods[0], pods[1]
	if before(second, first, Hash("dup")) {
		first, second = second, first
	}
	// The claimer of the second settles on the first and deletes its own.
	kept, err := claims.settle(ctx, second, "dup", Hash("dup"))
	if err != nil || kept.Name != first.Name {
		t.Fatalf("settle = %v, %v; want %s", kept, err, first.Name)
	}
	if _, err := c.CoreV1().Pods(ns).Get(ctx, second.Name, metav1.GetOptions{}); err == nil {
		t.Fatalf("the losing claim's Pod %s was not deleted", second.Name)
	}
	// The claimer of the first keeps it.
	if kept, err := claims.settle(ctx, first, "dup", Hash("dup")); err != nil || kept.Name != first.Name {
		t.Fatalf("settle of the first = %v, %v", kept, err)
	}
	// A new identifier gets the older free Pod first: there is none left
	// of the first second, so the late one.
	if p, err := claims.Claim(ctx, "next"); err != nil || p.Name != late.Name {
		t.Fatalf("claim = %v, %v; want %s", p, err, late.Name)
	}
}
