package bwrap_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/internal/testutil"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/sandbox/bwrap"
	"github.com/berth-dev/berth/sandbox/internal/local"
	"github.com/berth-dev/berth/sandbox/sandboxtest"
)

func benchRuntime(b *testing.B) *bwrap.Runtime {
	testutil.RequireRoot(b)
	testutil.RequireTool(b, "bwrap")
	rt, err := bwrap.New(bwrap.Options{Options: local.Options{
		Instance: "bench", StateDir: b.TempDir(), AgentPath: testutil.AgentBinary(b),
	}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = rt.Cleanup(context.Background()) })
	return rt
}

// BenchmarkColdStart measures Start+Destroy of a sandbox (its agent
// answering in between).
func BenchmarkColdStart(b *testing.B) {
	rt := benchRuntime(b)
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		sb, err := rt.Start(ctx, sandbox.Spec{ID: fmt.Sprintf("cold%d", i)})
		if err != nil {
			b.Fatal(err)
		}
		_ = sb.Destroy(ctx)
	}
}

// BenchmarkExec measures one round trip to the agent: echo in the
// sandbox's shell.
func BenchmarkExec(b *testing.B) {
	rt := benchRuntime(b)
	ctx := context.Background()
	sb, err := rt.Start(ctx, sandbox.Spec{ID: "exec"})
	if err != nil {
		b.Fatal(err)
	}
	defer sb.Destroy(ctx)
	for b.Loop() {
		if _, err := sb.Agent().Exec(ctx, agent.ExecRequest{Language: agent.Shell, Code: "echo hi"}, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWarmStart compares a warm start on the host's root with one on
// an image root (Debian with Python).
func BenchmarkWarmStart(b *testing.B) {
	rt := benchRuntime(b)
	b.Run("host", func(b *testing.B) { sandboxtest.BenchStart(b, rt, nil) })
	b.Run("image", func(b *testing.B) { sandboxtest.BenchStart(b, rt, sandboxtest.DebianRoot(b)) })
}

// BenchmarkShared measures 10 sandboxes on one image root.
func BenchmarkShared(b *testing.B) {
	sandboxtest.BenchShared(b, benchRuntime(b), sandboxtest.DebianRoot(b), 10)
}
