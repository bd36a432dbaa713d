package bwrap_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testutil"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/sandbox/bwrap"
	"github.com/berth-dev/berth/sandbox/internal/local"
	"github.com/berth-dev/berth/sandbox/sandboxtest"
)

// newRuntime returns a runtime with state of its own, for tb, with the
// hooks that look at it from the host.
func newRuntime(tb testing.TB) sandboxtest.Runtime {
	testutil.RequireRoot(tb)
	testutil.RequireTool(tb, "bwrap")
	o := bwrap.Options{Options: local.Options{
		Instance:  "t" + strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(tb.Name())),
		StateDir:  tb.TempDir(),
		AgentPath: testutil.BerthBinary(tb),
	}}
	rt, err := bwrap.New(o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := rt.Cleanup(context.Background()); err != nil {
			tb.Errorf("cleanup: %v", err)
		}
	})
	return sandboxtest.Runtime{
		Runtime: rt,
		Host:    sandboxtest.LocalHost{Driver: "bwrap", Instance: o.Instance, StateDir: o.StateDir, HostProcesses: true},
		Reopen: func(tb testing.TB) sandbox.Runtime {
			rt, err := bwrap.New(o)
			if err != nil {
				tb.Fatal(err)
			}
			return rt
		},
	}
}

// TestConformance runs the drivers' conformance suite: bubblewrap can do
// everything it checks.
func TestConformance(t *testing.T) {
	sandboxtest.Run(t, sandboxtest.Driver{New: newRuntime, Network: sandboxtest.LocalNetwork{}})
}

func TestUnavailable(t *testing.T) {
	_, err := bwrap.New(bwrap.Options{Bwrap: "/nonexistent/bwrap"})
	if !errors.Is(err, sandbox.ErrUnavailable) || !strings.Contains(err.Error(), "apt-get install bubblewrap") {
		t.Fatalf("got %v, want ErrUnavailable saying how to install bubblewrap", err)
	}
}
