// Package agentaddr reaches a sandbox's agent by the address its driver
// gives (a sandbox.Sandbox that implements Addresser), from any Berth
// process that can reach it, not only the one that started the sandbox:
// the gateway of another Berth replica dials an app replica this way.
// Local drivers' addresses ("unix:…") name the agent's socket on the host.
package agentaddr

import (
	"context"
	"fmt"
	"net"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/sandbox/internal/local"
)

// Addresser is implemented by sandboxes another process can reach.
type Addresser interface {
	// Addr is the agent's address, for Client.
	Addr() string
}

// Client returns a client for the agent at addr. Each connection opens the
// address anew; a sandbox that is gone fails the dial.
func Client(addr string) (*agent.Client, error) {
	if _, err := parse(addr); err != nil {
		return nil, err
	}
	return agent.NewClient(func(ctx context.Context) (net.Conn, error) { return local.DialAddr(ctx, addr) }), nil
}

// DialPort opens a connection to a port inside the sandbox whose agent is
// at addr.
func DialPort(ctx context.Context, addr string, port int) (net.Conn, error) {
	c, err := Client(addr)
	if err != nil {
		return nil, err
	}
	return c.DialPort(ctx, port)
}

func parse(addr string) (string, error) {
	if len(addr) > 5 && addr[:5] == "unix:" {
		return "unix", nil
	}
	return "", fmt.Errorf("agentaddr: %q: %w", addr, local.ErrBadAddr)
}
