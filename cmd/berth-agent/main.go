// Command berth-agent is Berth's sandbox agent, the first process in every
// sandbox (see package agent). It is its own small binary, apart from
// berth, so that it starts in a millisecond and holds little memory in
// each of thousands of idle sandboxes: berth links the Kubernetes client,
// whose package initialization alone costs tens of milliseconds and
// megabytes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/berth-dev/berth/agent/agentcmd"
)

func main() {
	args := os.Args[1:]
	// "berth-agent agent …" is accepted too: the agent re-runs its own
	// binary that way (agent.ExecLimited), whichever binary it is.
	if len(args) > 0 && args[0] == "agent" {
		args = args[1:]
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := agentcmd.Run(ctx, args, os.Stderr)
	stop()
	switch {
	case err == nil || errors.Is(err, flag.ErrHelp):
	default:
		fmt.Fprintln(os.Stderr, "berth-agent:", err)
		os.Exit(1)
	}
}
