package kube

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/berth-dev/berth/sandbox"
)

// The cluster admits the driver's Pods, not Berth: a Pod that no node can
// take (the scheduler finds it Unschedulable) or that the namespace's
// ResourceQuota refuses fails Start with an error wrapping
// sandbox.ErrNoCapacity, which callers answer with 503 "try again later"
// as they do when a host is full. A host's budget (sandbox/admit) does not
// apply to Pods: Berth's own machine or Pod is not where they run.

// AdmitsItself reports that the cluster, not the host Berth runs on,
// decides whether a sandbox fits (see the server's admission).
func (r *Runtime) AdmitsItself() bool { return true }

// DefaultUnschedulableWait is how long Start waits for an Unschedulable
// Pod to be scheduled (a node may free up, an autoscaler may add one)
// before it gives up with sandbox.ErrNoCapacity.
const DefaultUnschedulableWait = 10 * time.Second

// capacityError wraps a quota refusal of the API server in
// sandbox.ErrNoCapacity; other errors are returned as they are.
func capacityError(what string, err error) error {
	if apierrors.IsForbidden(err) && strings.Contains(err.Error(), "exceeded quota") {
		return fmt.Errorf("%w: the namespace's ResourceQuota refuses %s: %v", sandbox.ErrNoCapacity, what, err)
	}
	return fmt.Errorf("kube: %s: %w", what, err)
}

// unschedulable is the scheduler's message for a Pod it cannot place, if
// that is where the Pod stands.
func unschedulable(p *corev1.Pod) (string, bool) {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			return c.Message, true
		}
	}
	return "", false
}

// unschedulable records that the scheduler cannot place the box's Pod
// (msg says why); if that still holds after wait, the box stops for lack
// of capacity.
func (b *box) unschedulable(msg string, wait time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.unsched = msg
	if b.unschedTimer != nil {
		return
	}
	b.unschedTimer = time.AfterFunc(wait, func() {
		b.mu.Lock()
		msg := b.unsched
		b.noCapacity = msg != ""
		b.mu.Unlock()
		if msg != "" {
			b.stopped("no node can take its Pod: " + msg)
		}
	})
}

// scheduled records that the box's Pod has a node.
func (b *box) scheduled() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.unsched = ""
}

// startError is Start's error for a box that stopped before it ran.
func (b *box) startError() error {
	b.mu.Lock()
	noCap := b.noCapacity
	b.mu.Unlock()
	if noCap {
		return fmt.Errorf("%w: kube: sandbox %s: %s", sandbox.ErrNoCapacity, b.id, b.reason())
	}
	return fmt.Errorf("kube: sandbox %s: %s", b.id, b.reason())
}
