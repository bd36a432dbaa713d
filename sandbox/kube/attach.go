package kube

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/sandbox"
)

// Attach returns sandbox id, whose Pod this Runtime or another (another
// Berth replica on the same namespace and instance) started: it reads the
// agent's token from the sandbox's Secret, waits until the Pod runs and
// its agent answers. The Sandbox works as Start's does: Destroy deletes
// the Pod, its Secret and its NetworkPolicy, Done is closed once the Pod
// fails or is deleted (by whichever replica). An error wrapping
// sandbox.ErrNotFound means there is no such Pod of the instance.
func (r *Runtime) Attach(ctx context.Context, id string) (sandbox.Sandbox, error) {
	if !idRE.MatchString(id) {
		return nil, fmt.Errorf("kube: attach %q: %w", id, sandbox.ErrNotFound)
	}
	name := podName(id)
	r.mu.Lock()
	held := r.boxes[name]
	if held != nil && held.ended() {
		delete(r.boxes, name) // its Pod ended; a new one may have the name
		held = nil
	}
	r.mu.Unlock()
	if held != nil {
		return held.await(ctx)
	}
	pod, token, err := r.lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	b := newBox(r, id, token)
	r.mu.Lock()
	if held := r.boxes[name]; held != nil {
		r.mu.Unlock()
		return held.await(ctx)
	}
	r.boxes[name] = b
	r.mu.Unlock()
	r.catchUp(ctx, b, pod)
	if err := b.connect(ctx); err != nil {
		r.forget(b)
		return nil, err
	}
	return b, nil
}

// lookup reads sandbox id's Pod and its agent's token.
func (r *Runtime) lookup(ctx context.Context, id string) (*corev1.Pod, string, error) {
	ns, name := r.o.Namespace, podName(id)
	pod, err := r.cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, "", fmt.Errorf("kube: attach %s: no Pod %s in namespace %s: %w", id, name, ns, sandbox.ErrNotFound)
	}
	if err != nil {
		return nil, "", fmt.Errorf("kube: attach %s: %w", id, err)
	}
	if pod.Labels[LabelManagedBy] != managedBy || pod.Labels[LabelInstance] != r.o.Instance || pod.Labels[LabelSandbox] != id {
		return nil, "", fmt.Errorf("kube: attach %s: Pod %s is not a sandbox of instance %q: %w", id, name, r.o.Instance, sandbox.ErrNotFound)
	}
	if why := podFailure(pod); why != "" {
		return nil, "", fmt.Errorf("kube: attach %s: %s: %w", id, why, sandbox.ErrNotFound)
	}
	s, err := r.cs.CoreV1().Secrets(ns).Get(ctx, name+"-agent", metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, "", fmt.Errorf("kube: attach %s: the agent's Secret is gone: %w", id, sandbox.ErrNotFound)
	}
	if err != nil {
		return nil, "", fmt.Errorf("kube: attach %s: the agent's Secret: %w", id, err)
	}
	token := string(s.Data[tokenKey])
	if token == "" {
		return nil, "", fmt.Errorf("kube: attach %s: the agent's Secret holds no token", id)
	}
	return pod, token, nil
}

// catchUp gives a box registered after its Pod's events what the watch
// knows of the Pod, else what the API said (the watch may lag behind the
// read); a Pod deleted in between is read again, and found gone.
func (r *Runtime) catchUp(ctx context.Context, b *box, read *corev1.Pod) {
	obj, exists, _ := r.informer.GetStore().GetByKey(r.o.Namespace + "/" + b.name)
	if p, ok := obj.(*corev1.Pod); exists && ok && p.UID == read.UID {
		r.observe(p, false)
		return
	}
	p, err := r.cs.CoreV1().Pods(r.o.Namespace).Get(ctx, b.name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err) || (err == nil && p.UID != read.UID):
		b.stopped("its Pod was deleted")
	case err == nil:
		r.observe(p, false)
	default:
		r.observe(read, false)
	}
}

// forget drops a box that never became a sandbox of r's, deleting nothing.
func (r *Runtime) forget(b *box) {
	r.mu.Lock()
	if r.boxes[b.name] == b {
		delete(r.boxes, b.name)
	}
	r.mu.Unlock()
	b.stopped("not attached")
}

// connect waits until b's Pod runs, then until its agent answers.
func (b *box) connect(ctx context.Context) error {
	select {
	case <-b.running:
	case <-b.done:
		return b.startError()
	case <-ctx.Done():
		return fmt.Errorf("kube: sandbox %s did not start: %s (%w)", b.id, b.reason(), ctx.Err())
	}
	c := agent.NewTokenClient(b.dialer(net.JoinHostPort(b.ip, strconv.Itoa(b.rt.o.AgentPort))), b.token)
	b.mu.Lock()
	b.client = c
	b.mu.Unlock()
	if err := b.waitAgent(ctx); err != nil {
		return err
	}
	close(b.ready)
	return nil
}

func (b *box) ended() bool {
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

// await returns b once its agent answers (a Start or an Attach of this
// Runtime's may still be on it).
func (b *box) await(ctx context.Context) (sandbox.Sandbox, error) {
	select {
	case <-b.ready:
		return b, nil
	case <-b.done:
		return nil, fmt.Errorf("kube: attach %s: %s: %w", b.id, b.reason(), sandbox.ErrNotFound)
	case <-ctx.Done():
		return nil, fmt.Errorf("kube: attach %s: %w", b.id, ctx.Err())
	}
}

// orphanAge is how old a Secret or NetworkPolicy without its Pod must be
// for a shared Cleanup to delete it: Start makes both before the Pod.
const orphanAge = 2 * time.Minute

// cleanupShared is Cleanup when replicas share the instance's sandboxes:
// it deletes only what no replica can use: Pods that ended, and Secrets
// and NetworkPolicies whose Pod is gone (older than orphanAge).
func (r *Runtime) cleanupShared(ctx context.Context) error {
	ns := r.o.Namespace
	list := metav1.ListOptions{LabelSelector: r.selector}
	pods, err := r.cs.CoreV1().Pods(ns).List(ctx, list)
	if err != nil {
		return fmt.Errorf("kube: cleanup: %w", err)
	}
	live := map[string]bool{}
	var errs []error
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
			if !r.holds(p.Name) {
				errs = append(errs, r.deletePod(ctx, p.Name))
			}
			continue
		}
		live[p.Name] = true
	}
	orphan := func(m metav1.ObjectMeta) bool {
		return !live[podName(m.Labels[LabelSandbox])] && !r.holds(m.Labels[LabelSandbox]) &&
			time.Since(m.CreationTimestamp.Time) > orphanAge
	}
	errs = append(errs, r.sweep(ctx, orphan)...)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("kube: cleanup: %w", err)
	}
	return nil
}
