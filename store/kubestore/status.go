package kubestore

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
)

// Condition reasons of the Ready condition.
const (
	ReasonServed   = "Served"
	ReasonRejected = "Rejected"
)

// setReady records in the object's status whether Berth serves it as its
// spec says (err nil) or why not, for its current generation, and a
// Warning event when it does not. A generation's verdict is written once,
// by the first replica to judge it; later a refusal may replace an
// acceptance, never the other way round, so that replicas that disagree
// (one lacks a runtime, say) do not rewrite the status forever: every
// status write is a change all of them see again.
func (s *Store) setReady(ctx context.Context, ri dynamic.ResourceInterface, u *unstructured.Unstructured, err error) {
	status, reason, msg := metav1.ConditionTrue, ReasonServed, "Berth serves it as its spec says"
	if err != nil {
		status, reason, msg = metav1.ConditionFalse, ReasonRejected, err.Error()
	}
	if !shouldWrite(u, status) {
		return
	}
	written := false
	werr := onConflict(func() error {
		cur, err := ri.Get(ctx, u.GetName(), metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.GetGeneration() != u.GetGeneration() {
			return nil // a newer spec: its own event will tell
		}
		if !shouldWrite(cur, status) {
			return nil // another replica judged it since u was read
		}
		cond := map[string]any{
			"type": "Ready", "status": string(status), "reason": reason, "message": msg,
			"observedGeneration": cur.GetGeneration(), "lastTransitionTime": metav1.Now().UTC().Format("2006-01-02T15:04:05Z"),
		}
		_ = unstructured.SetNestedSlice(cur.Object, []any{cond}, "status", "conditions")
		_ = unstructured.SetNestedField(cur.Object, cur.GetGeneration(), "status", "observedGeneration")
		_, err = ri.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		written = err == nil
		return err
	})
	if written && err != nil {
		s.event(ctx, u, reason, msg)
	}
	if werr != nil && !apierrors.IsNotFound(werr) && ctx.Err() == nil {
		s.log.Warn("kubestore: record status", "kind", u.GetKind(), "name", u.GetName(), "err", werr)
	}
}

// shouldWrite reports whether a verdict goes into u's status (see
// setReady).
func shouldWrite(u *unstructured.Unstructured, status metav1.ConditionStatus) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if !ok || m["type"] != "Ready" {
			continue
		}
		gen, _, _ := unstructured.NestedInt64(m, "observedGeneration")
		if gen != u.GetGeneration() {
			return true
		}
		return status == metav1.ConditionFalse && m["status"] == string(metav1.ConditionTrue)
	}
	return true
}

// event records a Warning event on the object, for kubectl describe.
func (s *Store) event(ctx context.Context, u *unstructured.Unstructured, reason, msg string) {
	t := metav1.Now()
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{GenerateName: u.GetName() + ".", Namespace: s.ns},
		InvolvedObject: corev1.ObjectReference{APIVersion: u.GetAPIVersion(), Kind: u.GetKind(), Name: u.GetName(),
			Namespace: s.ns, UID: u.GetUID(), ResourceVersion: u.GetResourceVersion()},
		Reason: reason, Message: msg, Type: corev1.EventTypeWarning, Source: corev1.EventSource{Component: "berth"},
		FirstTimestamp: t, LastTimestamp: t, Count: 1,
	}
	if _, err := s.kube.CoreV1().Events(s.ns).Create(ctx, ev, metav1.CreateOptions{}); err != nil && ctx.Err() == nil {
		s.log.Warn("kubestore: record event", "kind", u.GetKind(), "name", u.GetName(), "err", err)
	}
}
