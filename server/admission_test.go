package server

import (
	"io"
	"log/slog"
	"testing"

	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/sandbox/admit"
)

type hostRuntime struct{ sandbox.Runtime }

type clusterRuntime struct{ sandbox.Runtime }

func (clusterRuntime) AdmitsItself() bool { return true }

// TestAdmitAll: sandboxes of a local runtime hold a share of the host's
// budget; Pods on a cluster do not (the cluster admits them), and with no
// local runtime pools and apps get no budget at all.
func TestAdmitAll(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ao := admit.Options{MemoryCapacity: 1 << 30, DiskCapacity: 1 << 30}
	for _, tc := range []struct {
		name    string
		rts     map[string]sandbox.Runtime
		budget  bool
		wrapped []string
	}{
		{"local", map[string]sandbox.Runtime{"bwrap": hostRuntime{}, "gvisor": hostRuntime{}}, true, []string{"bwrap", "gvisor"}},
		{"kube", map[string]sandbox.Runtime{"kube": clusterRuntime{}, "bwrap": clusterRuntime{}}, false, nil},
		{"mixed", map[string]sandbox.Runtime{"kube": clusterRuntime{}, "bwrap": hostRuntime{}}, true, []string{"bwrap"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := admitAll(ao, t.TempDir(), tc.rts, log)
			if err != nil {
				t.Fatal(err)
			}
			if (b != nil) != tc.budget {
				t.Fatalf("budget %v, want one: %v", b, tc.budget)
			}
			pc, ac := capacities(b)
			if (pc != nil) != tc.budget || (ac != nil) != tc.budget {
				t.Fatalf("capacities %v %v (a typed nil would make pools call a nil budget)", pc, ac)
			}
			n := 0
			for name, rt := range tc.rts {
				switch rt.(type) {
				case hostRuntime, clusterRuntime:
				default:
					n++
					if len(sandbox.Unwrap(rt)) != 2 {
						t.Errorf("%s: wrapped in something that does not unwrap", name)
					}
				}
			}
			if n != len(tc.wrapped) {
				t.Fatalf("%d runtimes hold a share of the host's budget, want %v", n, tc.wrapped)
			}
		})
	}
}
