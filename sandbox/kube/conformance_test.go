package kube_test

import (
	"context"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/sandbox/kube"
	"github.com/berth-dev/berth/sandbox/sandboxtest"
)

// TestConformance runs the drivers' shared suite on Pods, runc and gVisor.
// The kube driver lacks the host's root and unpacked image roots (it runs
// images by reference: the suite's Debian root is the driver's default
// image, pushed to the cluster's registry), a bounded /dev/shm, and stats.
// Its Host hooks look at the cluster (nothing of a Pod is on Berth's
// host); it has no outside Network: the egress checks are TestHostile's.
func TestConformance(t *testing.T) {
	for _, c := range classes {
		t.Run(c.name, func(t *testing.T) {
			sandboxtest.Run(t, sandboxtest.Driver{
				New: func(tb testing.TB) sandboxtest.Runtime {
					rt := newRuntime(tb, c.rc, nil)
					return sandboxtest.Runtime{Runtime: rt, Host: podHost{}, Reopen: func(tb testing.TB) sandbox.Runtime {
						ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
						defer cancel()
						again, err := kube.New(ctx, rt.Options())
						if err != nil {
							tb.Fatal(err)
						}
						tb.Cleanup(again.Close)
						return again
					}}
				},
				Lacks: c.lacks | sandboxtest.HostRoot | sandboxtest.ImageRoots | sandboxtest.TmpLimit | sandboxtest.Stats |
					sandboxtest.DiskQuota | sandboxtest.LoopbackOnly,
			})
		})
	}
}

// podHost looks at sandboxes through the cluster's API.
type podHost struct{}

// CheckUIDs: a Pod's processes are on a node, not on Berth's host; the
// code's uid is TestContract's and TestHostile's to check.
func (podHost) CheckUIDs(tb testing.TB, sb sandbox.Sandbox) {}

func (podHost) UIDs(tb testing.TB, sb sandbox.Sandbox) map[uint32]bool {
	tb.Skip("a Pod's host uids are the node's")
	return nil
}

// Kill deletes the Pod at once, as a node's failure or an operator would.
func (podHost) Kill(tb testing.TB, sb sandbox.Sandbox) {
	zero := int64(0)
	err := cluster.cs.CoreV1().Pods(cluster.ns).Delete(context.Background(), "berth-"+sb.ID(), metav1.DeleteOptions{GracePeriodSeconds: &zero})
	if err != nil {
		tb.Fatal(err)
	}
}

// Leftovers lists the sandbox's Pod, Secret and NetworkPolicy that exist.
func (podHost) Leftovers(tb testing.TB, sb sandbox.Sandbox) []string {
	ctx := context.Background()
	name := "berth-" + sb.ID()
	_, e1 := cluster.cs.CoreV1().Pods(cluster.ns).Get(ctx, name, metav1.GetOptions{})
	_, e2 := cluster.cs.CoreV1().Secrets(cluster.ns).Get(ctx, name+"-agent", metav1.GetOptions{})
	_, e3 := cluster.cs.NetworkingV1().NetworkPolicies(cluster.ns).Get(ctx, name, metav1.GetOptions{})
	var left []string
	for i, err := range []error{e1, e2, e3} {
		if !apierrors.IsNotFound(err) {
			left = append(left, []string{"pod ", "secret ", "networkpolicy "}[i]+name)
		}
	}
	return left
}

// Processes: a Pod's processes are the node's to count.
func (podHost) Processes(tb testing.TB, sb sandbox.Sandbox) int {
	tb.Skip("a Pod's processes are the node's")
	return 0
}

func (podHost) ProcessLimits(tb testing.TB, sb sandbox.Sandbox, cmdline string) (string, bool) {
	return "", false
}
