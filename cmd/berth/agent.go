package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime/debug"

	"github.com/berth-dev/berth/agent"
)

// runAgent is the hidden "berth agent" subcommand: the first process inside
// every sandbox. It prints "ready" on stdout once its socket accepts
// connections, which is how the runtime knows the sandbox is up.
func runAgent(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	socket := fs.String("socket", "/.berth/run/agent.sock", "Unix socket to serve on")
	workspace := fs.String("workspace", "/mnt/data", "workspace directory")
	private := fs.String("private", "/tmp/.berth", "the agent's scratch directory")
	maxProcs := fs.Int("max-procs", 0, "RLIMIT_NPROC for the code the agent runs (0: unlimited)")
	execNproc := fs.Int(agent.ExecNprocFlag, 0, "instead of serving, run the command after -- under this RLIMIT_NPROC")
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	if *execNproc > 0 {
		return agent.ExecLimited(*execNproc, fs.Args())
	}
	if err := agent.Harden(); err != nil {
		return fmt.Errorf("harden the agent: %w", err)
	}
	// Idle sandboxes are many: keep the agent's heap small.
	debug.SetGCPercent(50)
	debug.SetMemoryLimit(16 << 20)
	ln, err := agent.Listen(*socket)
	if err != nil {
		return err
	}
	return agent.Serve(ctx, ln, agent.Options{Workspace: *workspace, Private: *private, MaxProcs: *maxProcs}, func() {
		fmt.Fprintln(os.Stdout, "ready")
	})
}
