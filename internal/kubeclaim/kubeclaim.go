// Package kubeclaim claims warm Pods of a session pool for session
// identifiers through the Kubernetes API, so that every Berth replica
// routes an identifier to the same Pod with no state of its own.
//
// A warm Pod carries the kube driver's labels (LabelManagedBy=berth,
// LabelOwnerKind=pool, LabelOwnerName=<pool>). A claim adds the
// annotation AnnotationSession (the identifier) and the label
// LabelSessionHash (the first 40 hex digits of its SHA-256, since an
// identifier need not be a valid label value), written with an Update that
// carries the resourceVersion the claimer read: of two claimers of one Pod
// only one succeeds, the other gets a Conflict and tries again.
//
// Claimers of one identifier try the free Pods in the same order (oldest
// first; among Pods created in the same second, in an order drawn from the
// identifier), so they race for the same Pod and the loser finds the
// winner's claim on its next read. Each claim is checked after it is
// written: if another Pod holds the identifier too (a Pod created between
// two claimers' reads can make them start apart), the one first in that
// order is kept and the other released, before Claim returns. A released
// Pod is deleted, never handed to another identifier: a session's files
// and processes must not reach the next one.
//
// Usage (the pool manager's side):
//
//	c := kubeclaim.New(clientset.CoreV1(), kubeclaim.Options{Namespace: ns, Pool: "shell"})
//	pod, err := c.Claim(ctx, id)   // existing claim, or a free warm Pod; ErrNoWarmPod if none
//	pod, err = c.Find(ctx, id)     // the claim only; ErrNotClaimed if none
//	err = c.Release(ctx, id)       // deletes the identifier's Pod (cooldown, DELETE)
package kubeclaim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
)

// The names the kube driver and the claims share (KUBE-PLAN.md).
const (
	LabelManagedBy    = "app.kubernetes.io/managed-by"
	LabelOwnerKind    = "berth.dev/owner-kind"
	LabelOwnerName    = "berth.dev/owner-name"
	LabelSessionHash  = "berth.dev/session-hash"
	AnnotationSession = "berth.dev/session"
)

// Errors Claim, Find and Release return.
var (
	ErrNoWarmPod  = errors.New("kubeclaim: no warm Pod is free")
	ErrNotClaimed = errors.New("kubeclaim: no Pod is claimed for the identifier")
)

// Options configure a Claimer; Namespace and Pool are required.
type Options struct {
	Namespace string
	Pool      string
	// Ready says whether a free Pod can be claimed (default: its Ready
	// condition is true).
	Ready func(*corev1.Pod) bool
	// MaxAttempts bounds the rounds of one Claim (default 64): each round
	// that loses a race reads the Pods again.
	MaxAttempts int
}

// Claimer claims a pool's warm Pods; it is safe for concurrent use.
type Claimer struct {
	c corev1client.PodsGetter
	o Options
}

// New returns a Claimer; c is a clientset's CoreV1().
func New(c corev1client.PodsGetter, o Options) *Claimer {
	if o.Ready == nil {
		o.Ready = podReady
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = 64
	}
	return &Claimer{c: c, o: o}
}

// Hash is the LabelSessionHash value of an identifier.
func Hash(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])[:40]
}

// Claim returns the Pod claimed for id, claiming a free warm Pod if none is.
func (c *Claimer) Claim(ctx context.Context, id string) (*corev1.Pod, error) {
	if id == "" {
		return nil, errors.New("kubeclaim: empty identifier")
	}
	h := Hash(id)
	for range c.o.MaxAttempts {
		pods, err := c.list(ctx, c.poolSelector())
		if err != nil {
			return nil, err
		}
		if p := c.first(pods, id, h, claimedBy); p != nil {
			return p, nil
		}
		p := c.first(pods, id, h, c.free)
		if p == nil {
			return nil, ErrNoWarmPod
		}
		claimed, err := c.claim(ctx, p, id, h)
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			continue // another claimer took it (or it went): read again
		}
		if err != nil {
			return nil, err
		}
		if kept, err := c.settle(ctx, claimed, id, h); err != nil || kept != nil {
			return kept, err
		}
	}
	return nil, fmt.Errorf("kubeclaim: gave up after %d rounds of conflicts", c.o.MaxAttempts)
}

// claim writes id's claim on p, at the resourceVersion p was read at.
func (c *Claimer) claim(ctx context.Context, p *corev1.Pod, id, h string) (*corev1.Pod, error) {
	p = p.DeepCopy()
	if p.Labels == nil {
		p.Labels = map[string]string{}
	}
	if p.Annotations == nil {
		p.Annotations = map[string]string{}
	}
	p.Labels[LabelSessionHash] = h
	p.Annotations[AnnotationSession] = id
	return c.c.Pods(c.o.Namespace).Update(ctx, p, metav1.UpdateOptions{})
}

// settle checks a fresh claim against the others of id: it returns the Pod
// to use (mine, or another claimer's that comes first, mine then being
// deleted), or nil to try again if mine was lost.
func (c *Claimer) settle(ctx context.Context, mine *corev1.Pod, id, h string) (*corev1.Pod, error) {
	pods, err := c.list(ctx, c.hashSelector(h))
	if err != nil {
		return nil, err
	}
	keep := c.first(pods, id, h, claimedBy)
	if keep == nil {
		return nil, nil // mine is gone already
	}
	if keep.UID != mine.UID {
		if err := c.delete(ctx, mine); err != nil {
			return nil, err
		}
	}
	return keep, nil
}

// Find returns the Pod claimed for id.
func (c *Claimer) Find(ctx context.Context, id string) (*corev1.Pod, error) {
	h := Hash(id)
	pods, err := c.list(ctx, c.hashSelector(h))
	if err != nil {
		return nil, err
	}
	if p := c.first(pods, id, h, claimedBy); p != nil {
		return p, nil
	}
	return nil, ErrNotClaimed
}

// Release deletes the Pod claimed for id (ErrNotClaimed if none is).
func (c *Claimer) Release(ctx context.Context, id string) error {
	h := Hash(id)
	pods, err := c.list(ctx, c.hashSelector(h))
	if err != nil {
		return err
	}
	found := false
	for i := range pods {
		if claimedBy(&pods[i], id, h) {
			found = true
			if err := c.delete(ctx, &pods[i]); err != nil {
				return err
			}
		}
	}
	if !found {
		return ErrNotClaimed
	}
	return nil
}

// delete deletes a Pod, that Pod only (its UID).
func (c *Claimer) delete(ctx context.Context, p *corev1.Pod) error {
	uid := p.UID
	err := c.c.Pods(c.o.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil // gone already (a Conflict on the UID: another Pod of the name)
	}
	return err
}

// list reads Pods from etcd (a quorum read, not a cache).
func (c *Claimer) list(ctx context.Context, sel labels.Selector) ([]corev1.Pod, error) {
	l, err := c.c.Pods(c.o.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, err
	}
	return l.Items, nil
}

func (c *Claimer) poolSelector() labels.Selector {
	return labels.SelectorFromSet(labels.Set{LabelManagedBy: "berth", LabelOwnerKind: "pool", LabelOwnerName: c.o.Pool})
}

func (c *Claimer) hashSelector(h string) labels.Selector {
	r, _ := labels.NewRequirement(LabelSessionHash, selection.Equals, []string{h})
	return c.poolSelector().Add(*r)
}

// first returns the Pod that comes first in id's order among those that
// match, or nil.
func (c *Claimer) first(pods []corev1.Pod, id, h string, match func(*corev1.Pod, string, string) bool) *corev1.Pod {
	var best *corev1.Pod
	for i := range pods {
		p := &pods[i]
		if p.DeletionTimestamp != nil || !match(p, id, h) {
			continue
		}
		if best == nil || before(p, best, h) {
			best = p
		}
	}
	return best
}

// before orders Pods for an identifier's hash: older first, then by a
// score drawn from the hash and the Pod's name (rendezvous hashing), so
// that claimers of different identifiers spread over a batch of Pods made
// together while those of one identifier race for the same one.
func before(a, b *corev1.Pod, h string) bool {
	ta, tb := a.CreationTimestamp.Time, b.CreationTimestamp.Time
	if !ta.Equal(tb) {
		return ta.Before(tb)
	}
	sa, sb := score(h, a.Name), score(h, b.Name)
	if sa != sb {
		return sa < sb
	}
	return strings.Compare(a.Name, b.Name) < 0
}

func score(h, name string) string {
	sum := sha256.Sum256([]byte(h + "/" + name))
	return string(sum[:8])
}

// claimedBy says whether p is claimed for id.
func claimedBy(p *corev1.Pod, id, h string) bool {
	return p.Labels[LabelSessionHash] == h && p.Annotations[AnnotationSession] == id
}

// free says whether p can be claimed.
func (c *Claimer) free(p *corev1.Pod, _, _ string) bool {
	_, claimed := p.Labels[LabelSessionHash]
	return !claimed && p.Status.Phase != corev1.PodFailed && p.Status.Phase != corev1.PodSucceeded && c.o.Ready(p)
}

func podReady(p *corev1.Pod) bool {
	return slices.ContainsFunc(p.Status.Conditions, func(c corev1.PodCondition) bool {
		return c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue
	})
}
