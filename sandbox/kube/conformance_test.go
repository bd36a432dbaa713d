package kube_test

import (
	"testing"

	"github.com/berth-dev/berth/sandbox/sandboxtest"
)

// TestConformance runs the drivers' shared suite on Pods, runc and gVisor.
// The kube driver lacks the host's root and unpacked image roots (it runs
// images by reference: the suite's Debian root is the driver's default
// image, pushed to the cluster's registry), a bounded /dev/shm, and stats.
// It has no Host hooks (nothing of a Pod is on Berth's host) and no
// outside Network: the egress subtests are TestHostile's here.
func TestConformance(t *testing.T) {
	for _, c := range classes {
		t.Run(c.name, func(t *testing.T) {
			sandboxtest.Run(t, sandboxtest.Driver{
				New: func(tb testing.TB) sandboxtest.Runtime {
					return sandboxtest.Runtime{Runtime: newRuntime(tb, c.rc, nil)}
				},
				Lacks: sandboxtest.HostRoot | sandboxtest.ImageRoots | sandboxtest.TmpLimit | sandboxtest.Stats,
			})
		})
	}
}
