package main

import (
	"context"
	"os"

	"github.com/berth-dev/berth/agent/agentcmd"
)

// runAgent is the hidden "berth agent" subcommand, the agent from the berth
// binary itself; sandboxes run the small berth-agent binary (see
// cmd/berth-agent), which shares this command line.
func runAgent(ctx context.Context, args []string) error {
	return flagError(agentcmd.Run(ctx, args, os.Stderr))
}
