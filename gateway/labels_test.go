package gateway

import (
	"fmt"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/berth-dev/berth/internal/bodymem"
)

func TestMethodLabel(t *testing.T) {
	for m, want := range map[string]string{
		"tools/call": "tools/call", "notifications/initialized": "notifications/initialized",
		"": "", "made/up": "other", "tools/call2": "other",
	} {
		if got := methodLabel(m); got != want {
			t.Errorf("methodLabel(%q) = %q, want %q", m, got, want)
		}
	}
}

// TestToolLabelsBounded: however many names clients make up, an app has at
// most maxUndeclaredTools of them as labels, and the tools its tools/list
// answer declared keep theirs.
func TestToolLabelsBounded(t *testing.T) {
	var tl toolLabels
	seen := map[string]bool{}
	for i := range 10_000 {
		seen[tl.label("app", fmt.Sprintf("made-up-%d", i))] = true
	}
	if len(seen) > maxUndeclaredTools+1 {
		t.Fatalf("10,000 made-up tool names gave %d labels", len(seen))
	}
	for _, ct := range []string{"text/event-stream", "application/json"} {
		rec := httptest.NewRecorder()
		c := &toolsListCapture{ResponseWriter: rec}
		c.Header().Set("Content-Type", ct)
		body := `{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"createTask"},{"name":"listTasks"}]}}`
		if ct == "text/event-stream" {
			body = "event: message\r\ndata: " + body + "\r\n\r\n"
		}
		_, _ = c.Write([]byte(body))
		names := c.toolNames()
		if !slices.Equal(names, []string{"createTask", "listTasks"}) || rec.Body.String() != body {
			t.Fatalf("%s: names %q, passed on %q", ct, names, rec.Body.String())
		}
		tl.declare("app", names)
	}
	if got := tl.label("app", "createTask"); got != "createTask" {
		t.Errorf("a declared tool's label: %q", got)
	}
	if got := tl.label("app", "made-up-again"); got != otherLabel {
		t.Errorf("a made-up tool's label once the cap is reached: %q", got)
	}
	if got := tl.label("other-app", "made-up-0"); got != "made-up-0" {
		t.Errorf("another app's label: %q", got)
	}
}

// TestToolsListCaptureBudget: what a tools/list capture holds counts
// against the server's body budget, and is given back; with the budget
// spent the answer still passes whole, and no names are learned from it.
func TestToolsListCaptureBudget(t *testing.T) {
	body := `{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"createTask"}]}}`
	for _, tc := range []struct {
		budget int64
		names  []string
	}{{1 << 20, []string{"createTask"}}, {16, nil}} {
		b := bodymem.New(tc.budget)
		rec := httptest.NewRecorder()
		c := &toolsListCapture{ResponseWriter: rec, budget: b}
		_, _ = c.Write([]byte(body[:20]))
		_, _ = c.Write([]byte(body[20:]))
		if held := b.Used(); tc.names != nil && held != int64(len(body)) {
			t.Errorf("budget %d: %d bytes reserved while capturing %d", tc.budget, held, len(body))
		}
		if names := c.toolNames(); !slices.Equal(names, tc.names) || rec.Body.String() != body {
			t.Errorf("budget %d: names %q, passed on %q", tc.budget, names, rec.Body.String())
		}
		c.release()
		if b.Used() != 0 {
			t.Errorf("budget %d: %d bytes still reserved after release", tc.budget, b.Used())
		}
	}
}
