package kubestore

import (
	"context"

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
// spec says (err nil) or why not, for its current generation. Nothing is
// written if the status says so already: a status write is a change the
// watch sees again.
func (s *Store) setReady(ctx context.Context, ri dynamic.ResourceInterface, u *unstructured.Unstructured, err error) {
	status, reason, msg := metav1.ConditionTrue, ReasonServed, "Berth serves it as its spec says"
	if err != nil {
		status, reason, msg = metav1.ConditionFalse, ReasonRejected, err.Error()
	}
	if readyIs(u, status, reason, msg) {
		return
	}
	werr := onConflict(func() error {
		cur, err := ri.Get(ctx, u.GetName(), metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.GetGeneration() != u.GetGeneration() {
			return nil // a newer spec: its own event will tell
		}
		cond := map[string]any{
			"type": "Ready", "status": string(status), "reason": reason, "message": msg,
			"observedGeneration": cur.GetGeneration(), "lastTransitionTime": metav1.Now().UTC().Format("2006-01-02T15:04:05Z"),
		}
		_ = unstructured.SetNestedSlice(cur.Object, []any{cond}, "status", "conditions")
		_ = unstructured.SetNestedField(cur.Object, cur.GetGeneration(), "status", "observedGeneration")
		_, err = ri.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if werr != nil && !apierrors.IsNotFound(werr) && ctx.Err() == nil {
		s.log.Warn("kubestore: record status", "kind", u.GetKind(), "name", u.GetName(), "err", werr)
	}
}

// readyIs reports whether u's Ready condition is already this one, for
// its generation.
func readyIs(u *unstructured.Unstructured, status metav1.ConditionStatus, reason, msg string) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if !ok || m["type"] != "Ready" {
			continue
		}
		gen, _, _ := unstructured.NestedInt64(m, "observedGeneration")
		return m["status"] == string(status) && m["reason"] == reason && m["message"] == msg && gen == u.GetGeneration()
	}
	return false
}
