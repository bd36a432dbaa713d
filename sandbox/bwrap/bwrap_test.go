package bwrap_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/internal/testutil"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/sandbox/bwrap"
	"github.com/berth-dev/berth/sandbox/internal/local"
	"github.com/berth-dev/berth/sandbox/sandboxtest"
)

func newRuntime(t *testing.T) *bwrap.Runtime {
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "bwrap")
	rt, err := bwrap.New(bwrap.Options{Options: local.Options{
		Instance:  "t" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")),
		StateDir:  t.TempDir(),
		AgentPath: testutil.BerthBinary(t),
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Cleanup(context.Background()) })
	return rt
}

func TestSmoke(t *testing.T) {
	rt := newRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sb, err := rt.Start(ctx, sandbox.Spec{ID: "smoke"})
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Destroy(ctx)
	for _, code := range []string{"id; pwd; cat /proc/self/status | grep -E 'Seccomp|NoNewPrivs|CapEff'; ls /; cd /tmp; export X=1", "pwd; echo $X"} {
		out, err := sb.Agent().Exec(ctx, agent.ExecRequest{Language: agent.Shell, Code: code}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%+v", out)
	}
	out, err := sb.Agent().Exec(ctx, agent.ExecRequest{Language: agent.Python, Code: "x = 41\nx + 1"}, nil)
	t.Logf("%+v %v", out, err)
}

func TestCgroupHoldsEverySandboxProcess(t *testing.T) {
	rt := newRuntime(t)
	ctx := context.Background()
	sb, err := rt.Start(ctx, sandbox.Spec{ID: "cg"})
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Destroy(ctx)
	out, err := sb.Agent().Exec(ctx, agent.ExecRequest{Language: agent.Shell, Code: "for i in 1 2 3 4 5; do sleep 5 & done; ps -e --no-headers | wc -l"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := sb.(sandbox.StatsReporter).Stats()
	t.Logf("inside: %s stats: %+v", out.Stdout, st)
	if st.Pids < 8 || st.MemoryBytes == 0 || st.PidsLimit != bwrap.DefaultLimits.Pids {
		t.Fatalf("cgroup does not hold the sandbox's processes: %+v", st)
	}
}

func TestConformance(t *testing.T) {
	sandboxtest.Run(t, newRuntime(t))
}
