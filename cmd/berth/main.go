// Command berth hosts MCP servers and sandboxed code sessions for AI agents.
//
// Run "berth help" for the list of commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string) error
	hidden  bool
}

func commands() []command {
	return []command{
		{name: "up", summary: "start the Berth server", run: runUp},
		{name: "pool", summary: "manage session pools", run: runPool},
		{name: "app", summary: "deploy and manage MCP server apps", run: runApp},
		{name: "secret", summary: "set, list and delete apps' secrets", run: runSecret},
		{name: "apply", summary: "create or update an app from a YAML manifest (-f FILE)", run: runApply},
		{name: "events", summary: "list the server's recent events (deploys, crashes, scale-downs, key rotations)", run: runEvents},
		{name: "image", summary: "pull, list and prune container images", run: runImage},
		{name: "registry", summary: "log in to container registries", run: runRegistry},
		{name: "ca", summary: "export or trust the root of Berth's local CA (HTTPS)", run: runCA},
		{name: "bench", summary: "measure sandbox and session latency", run: runBench},
		{name: "version", summary: "print the version", run: func(context.Context, []string) error {
			fmt.Println("berth", version)
			return nil
		}},
		{name: "agent", summary: "sandbox agent (internal)", run: runAgent, hidden: true},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "berth:", err)
		var ue usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage()
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:])
		}
	}
	return usageError(fmt.Sprintf("unknown command %q (see berth help)", args[0]))
}

func usage() {
	fmt.Println("Berth hosts MCP servers and sandboxed code sessions for AI agents.\n\nUsage: berth COMMAND [flags]\n\nCommands:")
	for _, c := range commands() {
		if !c.hidden {
			fmt.Printf("  %-8s %s\n", c.name, c.summary)
		}
	}
}

// usageError is a mistake in the command line (exit status 2).
type usageError string

func (e usageError) Error() string { return string(e) }
