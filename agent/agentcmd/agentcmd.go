// Package agentcmd is the command line of Berth's sandbox agent: the first
// process inside every sandbox. It is shared by the berth-agent binary
// (small and quick to start: what the drivers put in sandboxes) and the
// hidden "berth agent" subcommand, and imports nothing but the agent.
package agentcmd

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"github.com/berth-dev/berth/agent"
)

// Run parses the agent's flags and serves until ctx is done. It prints
// "ready" on stdout once its socket accepts connections, which is how the
// runtime knows the sandbox is up. A bad flag is returned as is (the
// caller prints usage); flag.ErrHelp after -h.
func Run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", "/.berth/run/agent.sock", "Unix socket to serve on")
	workspace := fs.String("workspace", "/mnt/data", "workspace directory")
	private := fs.String("private", "/tmp/.berth", "the agent's scratch directory")
	maxProcs := fs.Int("max-procs", 0, "RLIMIT_NPROC for the code the agent runs (0: unlimited)")
	execNproc := fs.Int(agent.ExecNprocFlag, 0, "instead of serving, run the command after -- under this RLIMIT_NPROC")
	if err := fs.Parse(args); err != nil {
		return err
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
