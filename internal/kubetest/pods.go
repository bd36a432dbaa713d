package kubetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// WaitRunning waits until the Pod runs (all containers started) and has an
// IP, and returns it; it fails the test on a timeout or a failed Pod.
func (k *Kube) WaitRunning(t testing.TB, ns, name string, timeout time.Duration) *corev1.Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last *corev1.Pod
	for {
		p, err := k.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			last = p
			if p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" && allStarted(p) {
				return p
			}
			if p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
				t.Fatalf("pod %s/%s ended: %s", ns, name, describe(p))
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pod %s/%s not running after %v: %s", ns, name, timeout, describe(last))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func allStarted(p *corev1.Pod) bool {
	for _, c := range p.Status.ContainerStatuses {
		if c.State.Running == nil {
			return false
		}
	}
	return len(p.Status.ContainerStatuses) > 0
}

func describe(p *corev1.Pod) string {
	if p == nil {
		return "not found"
	}
	s := string(p.Status.Phase)
	for _, c := range p.Status.Conditions {
		if c.Status != corev1.ConditionTrue && c.Message != "" {
			s += fmt.Sprintf("; %s: %s", c.Type, c.Message)
		}
	}
	for _, c := range p.Status.ContainerStatuses {
		if w := c.State.Waiting; w != nil {
			s += fmt.Sprintf("; %s waiting: %s %s", c.Name, w.Reason, w.Message)
		}
		if x := c.State.Terminated; x != nil {
			s += fmt.Sprintf("; %s terminated: %s (exit %d) %s", c.Name, x.Reason, x.ExitCode, x.Message)
		}
	}
	return s
}

// Logs returns the Pod's (first container's) log.
func (k *Kube) Logs(t testing.TB, ns, name string) string {
	t.Helper()
	b, err := k.Client.CoreV1().Pods(ns).GetLogs(name, &corev1.PodLogOptions{}).DoRaw(context.Background())
	if err != nil {
		t.Fatalf("logs of %s/%s: %v", ns, name, err)
	}
	return string(b)
}

// WaitExited waits until the Pod has ended (Succeeded or Failed) and returns it.
func (k *Kube) WaitExited(t testing.TB, ns, name string, timeout time.Duration) *corev1.Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last *corev1.Pod
	for {
		p, err := k.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			last = p
			if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
				return p
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pod %s/%s still not ended after %v: %s", ns, name, timeout, describe(last))
		case <-time.After(200 * time.Millisecond):
		}
	}
}
