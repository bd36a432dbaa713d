package kubeslots

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/sandbox/kube"
)

type noAttach struct{}

func (noAttach) Attach(context.Context, string) (sandbox.Sandbox, error) {
	return nil, sandbox.ErrNotFound
}

func appPod(id, uid string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "berth-" + id, Namespace: "ns", UID: types.UID("uid-" + uid), Labels: map[string]string{
		kube.LabelManagedBy: "berth", kube.LabelInstance: "berth", kube.LabelOwnerKind: "app", kube.LabelSandbox: id,
	}}}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestSlots: the watch's view of the app Pods, the busy and scaled-down
// marks, and a scaled-down Pod's mark kept once it is gone (until a new
// Pod of the ID comes).
func TestSlots(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset(appPod("a--r1-s0", "0"), appPod("a--r1-s1", "1"), appPod("b--r1-s0", "b"))
	s, err := New(ctx, Options{Client: cs, Namespace: "ns", Instance: "berth", Attacher: noAttach{}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := len(s.Slots("a--r1-s")); got != 2 {
		t.Fatalf("%d slots of a--r1, want 2", got)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	if err := s.MarkBusy(ctx, "a--r1-s1", at); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the busy mark", func() bool {
		for _, st := range s.Slots("a--r1-s1") {
			return st.LastBusy.Equal(at)
		}
		return false
	})
	if err := s.MarkScaledDown(ctx, "a--r1-s1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the scaled-down mark", func() bool { return s.ScaledDown("a--r1-s1") })
	if err := cs.CoreV1().Pods("ns").Delete(ctx, "berth-a--r1-s1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the Pod to go", func() bool { return len(s.Slots("a--r1-s")) == 1 })
	if !s.ScaledDown("a--r1-s1") {
		t.Fatal("a scaled-down Pod that is gone is no longer known as scaled down")
	}
	if s.ScaledDown("a--r1-s0") {
		t.Fatal("an unmarked Pod is scaled down")
	}
	if _, err := cs.CoreV1().Pods("ns").Create(ctx, appPod("a--r1-s1", "new"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new Pod", func() bool { return len(s.Slots("a--r1-s")) == 2 })
	if s.ScaledDown("a--r1-s1") {
		t.Fatal("a new Pod of a scaled-down ID is scaled down")
	}
	if err := s.MarkBusy(ctx, "nope", at); err == nil {
		t.Fatal("a mark on no Pod")
	}
}
