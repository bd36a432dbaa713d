package gateway

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"sync"

	"github.com/berth-dev/berth/internal/bodymem"
)

// Metric labels come from what clients send, so they are bounded: a
// made-up method or tool name must not make a new series each (a client
// could otherwise grow /metrics, and the server's memory, without end).

// otherLabel stands for any method or tool outside the known ones.
const otherLabel = "other"

// mcpMethods are the methods of the MCP specification (2025-03-26 to
// 2025-11-25, and the sessionless 2026-07-28's server/discover).
var mcpMethods = map[string]bool{
	"initialize": true, "ping": true, "server/discover": true,
	"tools/list": true, "tools/call": true,
	"resources/list": true, "resources/templates/list": true, "resources/read": true,
	"resources/subscribe": true, "resources/unsubscribe": true,
	"prompts/list": true, "prompts/get": true,
	"completion/complete": true, "logging/setLevel": true,
	"sampling/createMessage": true, "elicitation/create": true, "roots/list": true,
	"tasks/get": true, "tasks/result": true, "tasks/list": true, "tasks/cancel": true,
	"notifications/initialized": true, "notifications/cancelled": true, "notifications/progress": true,
	"notifications/message": true, "notifications/roots/list_changed": true,
	"notifications/resources/list_changed": true, "notifications/resources/updated": true,
	"notifications/tools/list_changed": true, "notifications/prompts/list_changed": true,
	"notifications/elicitation/complete": true, "notifications/tasks/status": true,
}

// methodLabel is a JSON-RPC method's label: itself if MCP defines it,
// "other" if not, and "" for no method (a response, a GET, not JSON-RPC).
func methodLabel(m string) string {
	if m == "" || mcpMethods[m] {
		return m
	}
	return otherLabel
}

// Bounds on the tool labels of one app.
const (
	// maxDeclaredTools bounds the names learned from the app's own
	// tools/list answers.
	maxDeclaredTools = 1024
	// maxUndeclaredTools bounds the names called before any tools/list
	// answer declared them (clients that do not list tools first), first
	// come first served.
	maxUndeclaredTools = 32
	// maxToolsListCapture bounds the bytes of a tools/list answer read to
	// learn the names.
	maxToolsListCapture = 4 << 20
)

// toolLabels knows, per app, the tool names it labels.
type toolLabels struct {
	mu   sync.RWMutex
	apps map[string]*appTools
}

type appTools struct {
	mu         sync.Mutex
	declared   map[string]bool
	undeclared map[string]bool
}

func (t *toolLabels) app(name string) *appTools {
	t.mu.RLock()
	a := t.apps[name]
	t.mu.RUnlock()
	if a != nil {
		return a
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.apps == nil {
		t.apps = map[string]*appTools{}
	}
	if a = t.apps[name]; a == nil {
		a = &appTools{declared: map[string]bool{}, undeclared: map[string]bool{}}
		t.apps[name] = a
	}
	return a
}

// label is a tool name's label on an app: the name if the app declared it
// (or it is among the first few undeclared ones called), "other" if not.
func (t *toolLabels) label(app, tool string) string {
	if tool == "" {
		return ""
	}
	a := t.app(app)
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.declared[tool] || a.undeclared[tool]:
		return tool
	case len(a.undeclared) < maxUndeclaredTools:
		a.undeclared[tool] = true
		return tool
	}
	return otherLabel
}

// declare records tool names an app's tools/list answer declared.
func (t *toolLabels) declare(app string, names []string) {
	if len(names) == 0 {
		return
	}
	a := t.app(app)
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, n := range names {
		if len(a.declared) >= maxDeclaredTools {
			return
		}
		if n != "" && len(n) <= 64 {
			a.declared[n] = true
		}
	}
}

// toolsListCapture keeps the start of a tools/list answer as it passes to
// the client. What it keeps counts against budget (the server's body
// memory): the answer comes from the app, and clients choose how many
// tools/list calls are in flight. Once the budget is spent it keeps
// nothing more of this answer (its names are not learned this time).
type toolsListCapture struct {
	http.ResponseWriter
	budget   *bodymem.Budget
	buf      bytes.Buffer
	reserved int64
	off      bool
}

func (c *toolsListCapture) Write(p []byte) (int, error) {
	if n := int64(min(len(p), maxToolsListCapture-c.buf.Len())); n > 0 && !c.off {
		if c.budget.Reserve(n) {
			c.reserved += n
			c.buf.Write(p[:n])
		} else {
			c.off = true
		}
	}
	return c.ResponseWriter.Write(p)
}

// release gives back what the capture holds.
func (c *toolsListCapture) release() {
	c.budget.Release(c.reserved)
	c.reserved = 0
	c.buf = bytes.Buffer{}
}

func (c *toolsListCapture) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// toolNames reads the tool names of a tools/list answer: a JSON-RPC
// response (or batch) as JSON, or the events of an SSE stream.
func (c *toolsListCapture) toolNames() []string {
	if c.off {
		return nil // cut short: the answer's end, and names, are missing
	}
	body := c.buf.Bytes()
	if !strings.HasPrefix(c.Header().Get("Content-Type"), "text/event-stream") {
		return namesIn(body)
	}
	var names []string
	for start := 0; ; {
		end, next, ok := eventEnd(body, start)
		if !ok {
			return names
		}
		names = append(names, namesIn(eventData(body[start:end]))...)
		start = next
	}
}

// namesIn reads the tool names of a JSON-RPC tools/list result (or a batch
// of them).
func namesIn(b []byte) []string {
	type result struct {
		Result struct {
			Tools []struct {
				Name string `json:"name"`
			} `json:"tools"`
		} `json:"result"`
	}
	var msgs []result
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '[' {
		_ = json.Unmarshal(b, &msgs)
	} else {
		var one result
		if json.Unmarshal(b, &one) == nil {
			msgs = append(msgs, one)
		}
	}
	var names []string
	for _, m := range msgs {
		for _, t := range m.Result.Tools {
			names = append(names, t.Name)
		}
	}
	return names
}
