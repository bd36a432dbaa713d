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
)

func benchRuntime(b *testing.B) *bwrap.Runtime {
	testutil.RequireRoot(b)
	testutil.RequireTool(b, "bwrap")
	rt, err := bwrap.New(bwrap.Options{Options: local.Options{
		Instance: "bench", StateDir: b.TempDir(), AgentPath: testutil.BerthBinary(b),
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
