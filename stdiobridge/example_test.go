package stdiobridge_test

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"time"

	"github.com/berth-dev/berth/stdiobridge"
)

// Serve a stdio MCP server at /mcp, one process per MCP session.
func Example() {
	bridge := stdiobridge.New(stdiobridge.Options{
		Start: func(ctx context.Context) (stdiobridge.Process, error) {
			cmd := exec.CommandContext(ctx, "npx", "-y", "@modelcontextprotocol/server-everything")
			cmd.Stderr = os.Stderr
			return stdiobridge.CommandProcess(cmd)
		},
		IdleTimeout: 5 * time.Minute,
		MaxSessions: 50,
	})
	defer bridge.Close()
	http.Handle("/mcp", bridge)
	_ = http.ListenAndServe("127.0.0.1:8080", nil)
}
