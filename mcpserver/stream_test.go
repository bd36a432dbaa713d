package mcpserver_test

import (
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/mcpserver"
	"github.com/berth-dev/berth/pool"
)

// TestProgressStreaming checks that output streams as progress
// notifications while the command runs, in order and complete, on both
// the stateful and the stateless transport.
func TestProgressStreaming(t *testing.T) {
	e := newEnv(t, mcpserver.Options{})
	key := e.create(t, pool.Config{Name: "p"})
	for _, v := range []string{"2025-11-25", "2026-07-28"} {
		t.Run(v, func(t *testing.T) {
			c := mustConnect(t, e.url("p"), key, connectOpts{version: v})
			id := c.launch()
			cmd := `for i in 1 2 3 4 5; do printf 'line %d %s\n' $i $(printf '%060d' $i); echo "err $i" >&2; sleep 0.15; done`
			r, err := c.try(mcpserver.ToolRunShell, map[string]any{"environmentId": id, "shellCommand": cmd}, "tok-"+v)
			if err != nil || r.IsError {
				t.Fatalf("%v %v", err, r)
			}
			end := time.Now()
			var out mcpserver.ShellOutput
			decode(t, r, &out)
			if !strings.HasPrefix(out.Stdout, "line 1 ") || strings.Count(out.Stdout, "\n") != 5 || strings.Count(out.Stderr, "err") != 5 {
				t.Fatalf("result: %+v", out)
			}
			// Notifications may be handled just after the result arrives.
			deadline := time.Now().Add(2 * time.Second)
			var stdout, stderr strings.Builder
			for {
				stdout.Reset()
				stderr.Reset()
				last := 0.0
				for i, p := range c.progressSeen() {
					if p.ProgressToken != "tok-"+v {
						t.Fatalf("progress token %v", p.ProgressToken)
					}
					if p.Progress <= last {
						t.Fatalf("progress %d went from %v to %v", i, last, p.Progress)
					}
					last = p.Progress
					switch p.Meta[mcpserver.MetaStream] {
					case "stdout":
						stdout.WriteString(p.Message)
					case "stderr":
						stderr.WriteString(p.Message)
					default:
						t.Fatalf("progress without a stream: %+v", p)
					}
				}
				if stdout.String() == out.Stdout && stderr.String() == out.Stderr || time.Now().After(deadline) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if stdout.String() != out.Stdout || stderr.String() != out.Stderr {
				t.Fatalf("streamed stdout %q stderr %q; result %q %q", stdout.String(), stderr.String(), out.Stdout, out.Stderr)
			}
			c.mu.Lock()
			n, first := len(c.progress), c.firstAt
			c.mu.Unlock()
			if n < 3 {
				t.Fatalf("only %d notifications for output spread over 750 ms", n)
			}
			if early := end.Sub(first); early < 300*time.Millisecond {
				t.Fatalf("the first notification came only %v before the result: output is not streamed", early)
			}
		})
	}
}
