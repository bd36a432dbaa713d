// Package kubepool is pool.Cluster on Kubernetes: the sandboxes of the
// session pools are the kube driver's Pods, shared by the Berth replicas
// of a namespace (--runtime kube --state kube). A session identifier's
// sandbox is the Pod claimed for it (package kubeclaim: a label and an
// annotation written with a resourceVersion-checked Update); the pool
// manager of any replica finds the claim and attaches to the Pod.
//
// Annotations on a pool's Pods, besides the claim's:
//
//	berth.dev/warm              the shape hash the Pod was warmed up for:
//	                            set once its interpreter runs, so that only
//	                            then may it be claimed
//	berth.dev/session-created   when its session claimed it
//	berth.dev/last-active       when its session was last active (written
//	                            by the replica that served it, throttled)
package kubepool

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/berth-dev/berth/internal/kubeclaim"
	"github.com/berth-dev/berth/pool"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/sandbox/kube"
)

// Annotations of a pool's Pods (see the package comment).
const (
	AnnotationWarm           = "berth.dev/warm"
	AnnotationSessionCreated = "berth.dev/session-created"
	AnnotationLastActive     = "berth.dev/last-active"
)

// Cluster is a pool.Cluster on a shared kube Runtime.
type Cluster struct {
	rt *kube.Runtime
	cs kubernetes.Interface
	ns string
}

var _ pool.Cluster = (*Cluster)(nil)

// New returns the Cluster of rt's namespace.
func New(rt *kube.Runtime) *Cluster {
	o := rt.Options()
	return &Cluster{rt: rt, cs: o.Client, ns: o.Namespace}
}

// Find returns the shared kube Runtime among rt and those it wraps (nil
// if there is none).
func Find(rt sandbox.Runtime) *kube.Runtime {
	for _, r := range sandbox.Unwrap(rt) {
		if k, ok := r.(*kube.Runtime); ok && k.Options().Shared {
			return k
		}
	}
	return nil
}

// Attach implements pool.Cluster.
func (c *Cluster) Attach(ctx context.Context, sandboxID string) (sandbox.Sandbox, error) {
	return c.rt.Attach(ctx, sandboxID)
}

// Claims implements pool.Cluster.
func (c *Cluster) Claims(name string) pool.Claims {
	return &claims{c: c, pool: name}
}

type claims struct {
	c    *Cluster
	pool string
}

func (cl *claims) claimer(shape string) *kubeclaim.Claimer {
	return kubeclaim.New(cl.c.cs.CoreV1(), kubeclaim.Options{Namespace: cl.c.ns, Pool: cl.pool,
		// Marked warm once its agent answered and its interpreter ran
		// (its phase may still read Pending until the kubelet's next
		// status sync); kubeclaim skips Pods that ended.
		Ready: func(p *corev1.Pod) bool {
			return shape != "" && p.Annotations[AnnotationWarm] == shape
		}})
}

func (cl *claims) pods() corev1client.PodInterface { return cl.c.cs.CoreV1().Pods(cl.c.ns) }

// List implements pool.Claims.
func (cl *claims) List(ctx context.Context) ([]pool.ClusterSandbox, error) {
	sel := labels.SelectorFromSet(labels.Set{kube.LabelManagedBy: "berth", kube.LabelOwnerKind: "pool", kube.LabelOwnerName: cl.pool})
	l, err := cl.pods().List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, err
	}
	out := make([]pool.ClusterSandbox, 0, len(l.Items))
	for i := range l.Items {
		out = append(out, sandboxOf(&l.Items[i]))
	}
	return out, nil
}

func sandboxOf(p *corev1.Pod) pool.ClusterSandbox {
	a := p.Annotations
	return pool.ClusterSandbox{
		ID: p.Labels[kube.LabelSandbox], Session: a[kubeclaim.AnnotationSession], Shape: a[AnnotationWarm],
		Created: p.CreationTimestamp.Time, SessionCreated: parseTime(a[AnnotationSessionCreated]), LastActive: parseTime(a[AnnotationLastActive]),
		Gone:    p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded,
		Version: p.ResourceVersion,
	}
}

func parseTime(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

// annotate merges annotations into sandbox id's Pod.
func (cl *claims) annotate(ctx context.Context, id string, a map[string]string) error {
	b, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": a}})
	if err != nil {
		return err
	}
	_, err = cl.pods().Patch(ctx, "berth-"+id, types.MergePatchType, b, metav1.PatchOptions{})
	return err
}

// MarkWarm implements pool.Claims.
func (cl *claims) MarkWarm(ctx context.Context, id, shape string) error {
	return cl.annotate(ctx, id, map[string]string{AnnotationWarm: shape})
}

// Touch implements pool.Claims.
func (cl *claims) Touch(ctx context.Context, id string, at time.Time, first bool) error {
	a := map[string]string{AnnotationLastActive: at.UTC().Format(time.RFC3339Nano)}
	if first {
		a[AnnotationSessionCreated] = a[AnnotationLastActive]
	}
	err := cl.annotate(ctx, id, a)
	if apierrors.IsNotFound(err) {
		return nil // reaped meanwhile
	}
	return err
}

// Claim implements pool.Claims.
func (cl *claims) Claim(ctx context.Context, id, shape string) (pool.ClusterSandbox, bool, error) {
	p, err := cl.claimer(shape).Claim(ctx, id)
	if errors.Is(err, kubeclaim.ErrNoWarmPod) {
		return pool.ClusterSandbox{}, false, nil
	}
	if err != nil {
		return pool.ClusterSandbox{}, false, err
	}
	return sandboxOf(p), true, nil
}

// Find implements pool.Claims.
func (cl *claims) Find(ctx context.Context, id string) (pool.ClusterSandbox, bool, error) {
	p, err := cl.claimer("").Find(ctx, id)
	if errors.Is(err, kubeclaim.ErrNotClaimed) {
		return pool.ClusterSandbox{}, false, nil
	}
	if err != nil {
		return pool.ClusterSandbox{}, false, err
	}
	return sandboxOf(p), true, nil
}

// Release implements pool.Claims: the Pod goes, and its Secrets and
// NetworkPolicy with it.
func (cl *claims) Release(ctx context.Context, id string) (bool, error) {
	c := cl.claimer("")
	p, err := c.Find(ctx, id)
	if errors.Is(err, kubeclaim.ErrNotClaimed) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := c.Release(ctx, id); err != nil && !errors.Is(err, kubeclaim.ErrNotClaimed) {
		return false, err
	}
	return true, cl.c.rt.DeleteObjects(ctx, p.Labels[kube.LabelSandbox])
}

// Delete implements pool.Claims: only the Pod as listed (its
// resourceVersion): one claimed since stays.
func (cl *claims) Delete(ctx context.Context, sb pool.ClusterSandbox) error {
	name := "berth-" + sb.ID
	grace := int64(1)
	err := cl.pods().Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &grace,
		Preconditions: &metav1.Preconditions{ResourceVersion: &sb.Version}})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	// Its Secrets (the agent's, the pull login's…) and NetworkPolicy.
	return cl.c.rt.DeleteObjects(ctx, sb.ID)
}
