package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// testTimeout bounds every test's MCP traffic.
const testTimeout = 30 * time.Second

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func newClient() *mcp.Client {
	return mcp.NewClient(&mcp.Implementation{Name: "tasks-test", Version: "0"}, nil)
}

// startHTTP serves a fresh database over a real loopback HTTP server and
// returns its base URL.
func startHTTP(t *testing.T, stateless bool) string {
	t.Helper()
	store, err := OpenStore(t.Context(), filepath.Join(t.TempDir(), "tasks.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	logger := testLogger(t)
	app := newHTTPApp(newMCPServer(store, logger), store, logger, stateless, false)
	ts := httptest.NewServer(app.Handler())
	t.Cleanup(func() {
		app.closeSessions(t.Context())
		ts.Close()
	})
	return ts.URL
}

func connectHTTP(t *testing.T, ctx context.Context, baseURL string) *mcp.ClientSession {
	t.Helper()
	cs, err := newClient().Connect(ctx, &mcp.StreamableClientTransport{Endpoint: baseURL + "/mcp"}, nil)
	if err != nil {
		t.Fatalf("connect %s/mcp: %v", baseURL, err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// call calls a tool; a protocol error fails the test, a tool error does not.
func call(t *testing.T, ctx context.Context, cs *mcp.ClientSession, tool string, args any) *mcp.CallToolResult {
	t.Helper()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Fatalf("%s(%v): protocol error: %v", tool, args, err)
	}
	return res
}

// callOK calls a tool that must succeed and decodes its structured content.
func callOK[T any](t *testing.T, ctx context.Context, cs *mcp.ClientSession, tool string, args any) (T, string) {
	t.Helper()
	var out T
	res := call(t, ctx, cs, tool, args)
	if res.IsError {
		t.Fatalf("%s(%v): tool error: %s", tool, args, resultText(res))
	}
	if res.StructuredContent == nil {
		t.Fatalf("%s(%v): no structuredContent", tool, args)
	}
	b, err := json.Marshal(res.StructuredContent)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%s: decode structuredContent %s: %v", tool, b, err)
	}
	text := resultText(res)
	if text == "" {
		t.Fatalf("%s(%v): no text content", tool, args)
	}
	return out, text
}

func resultText(res *mcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, "\n")
}

func listTasks(t *testing.T, ctx context.Context, cs *mcp.ClientSession, status string) []Task {
	t.Helper()
	args := map[string]any{}
	if status != "" {
		args["status"] = status
	}
	out, _ := callOK[ListTasksOutput](t, ctx, cs, "listTasks", args)
	if out.Tasks == nil {
		t.Fatalf("listTasks(%q): tasks is null, want a list", status)
	}
	return out.Tasks
}

func ids(tasks []Task) []int64 {
	out := []int64{}
	for _, t := range tasks {
		out = append(out, t.ID)
	}
	return out
}

// exerciseServer runs every tool, the resource and the prompt, including
// their errors, against a server whose database starts empty. It leaves the
// tasks returned, with "Buy milk" (#1) open and "Write report" (#2) done.
func exerciseServer(t *testing.T, ctx context.Context, cs *mcp.ClientSession) []Task {
	t.Helper()

	t.Run("listTools", func(t *testing.T) {
		res, err := cs.ListTools(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		tools := map[string]*mcp.Tool{}
		for _, tool := range res.Tools {
			tools[tool.Name] = tool
			if tool.Description == "" || tool.Title == "" || tool.OutputSchema == nil {
				t.Errorf("tool %s lacks a description, title or output schema", tool.Name)
			}
		}
		for _, name := range []string{"createTask", "listTasks", "completeTask", "deleteTask"} {
			if tools[name] == nil {
				t.Fatalf("tool %s missing; have %v", name, res.Tools)
			}
		}
		schema := func(name string) string {
			b, _ := json.Marshal(tools[name].InputSchema)
			return string(b)
		}
		for name, want := range map[string][]string{
			"createTask":   {`"required":["title"]`, `"minLength":1`, `"dueDate":{`, `RFC 3339`, `"additionalProperties":false`},
			"listTasks":    {`"enum":["open","done","all"]`, `"default":"open"`},
			"deleteTask":   {`"required":["id"]`, `"type":"integer"`, `"minimum":1`},
			"completeTask": {`"required":["id"]`},
		} {
			for _, w := range want {
				if !strings.Contains(schema(name), w) {
					t.Errorf("%s input schema %s lacks %s", name, schema(name), w)
				}
			}
		}
		if !tools["listTasks"].Annotations.ReadOnlyHint || !*tools["deleteTask"].Annotations.DestructiveHint {
			t.Errorf("annotations: listTasks %+v, deleteTask %+v", tools["listTasks"].Annotations, tools["deleteTask"].Annotations)
		}
	})

	t.Run("emptyList", func(t *testing.T) {
		out, text := callOK[ListTasksOutput](t, ctx, cs, "listTasks", nil)
		if len(out.Tasks) != 0 || out.Tasks == nil || text != "There are no open tasks." {
			t.Fatalf("got %+v, %q; want [] and no open tasks", out.Tasks, text)
		}
	})

	var created []Task
	t.Run("createTask", func(t *testing.T) {
		for _, tc := range []struct {
			args                 map[string]any
			title, desc, dueDate string
		}{
			{map[string]any{"title": "Buy milk"}, "Buy milk", "", ""},
			{map[string]any{"title": "  Write report ", "description": "Q3 numbers", "dueDate": "2025-07-01"}, "Write report", "Q3 numbers", "2025-07-01"},
			{map[string]any{"title": "Call Bob", "dueDate": "2025-07-01T17:00:00+02:00"}, "Call Bob", "", "2025-07-01T17:00:00+02:00"},
			{map[string]any{"title": "Ship it", "dueDate": "2025-07-01T15:00:00.5Z", "description": ""}, "Ship it", "", "2025-07-01T15:00:00Z"},
		} {
			task, text := callOK[Task](t, ctx, cs, "createTask", tc.args)
			if task.ID != int64(len(created)+1) || task.Title != tc.title || task.Description != tc.desc || task.Done {
				t.Errorf("createTask(%v) = %+v", tc.args, task)
			}
			if (task.DueDate == nil) != (tc.dueDate == "") || (task.DueDate != nil && *task.DueDate != tc.dueDate) {
				t.Errorf("createTask(%v): dueDate %v, want %q", tc.args, task.DueDate, tc.dueDate)
			}
			if ts, err := time.Parse(time.RFC3339, task.CreatedAt); err != nil || time.Since(ts) > time.Minute {
				t.Errorf("createTask(%v): createdAt %q", tc.args, task.CreatedAt)
			}
			if want := fmt.Sprintf("#%d %q", task.ID, tc.title); !strings.Contains(text, want) {
				t.Errorf("createTask text %q lacks %s", text, want)
			}
			created = append(created, task)
		}
	})

	t.Run("createTaskErrors", func(t *testing.T) {
		for _, tc := range []struct {
			args any
			want string
		}{
			{map[string]any{}, `missing properties: ["title"]`},
			{nil, `missing properties: ["title"]`},
			{map[string]any{"title": ""}, "/properties/title: minLength"},
			{map[string]any{"title": " \t\n"}, "title is required and must not be blank"},
			{map[string]any{"title": 42}, "/properties/title: type"},
			{map[string]any{"title": strings.Repeat("x", maxTitleLen+1)}, "/properties/title: maxLength"},
			{map[string]any{"title": "x", "dueDate": "tomorrow"}, `dueDate "tomorrow" is not an RFC 3339 date`},
			{map[string]any{"title": "x", "dueDate": "2025-02-30"}, `dueDate "2025-02-30" is not`},
			{map[string]any{"title": "x", "dueDate": "2025-07-01 17:00"}, `dueDate "2025-07-01 17:00" is not`},
			{map[string]any{"title": "x", "priority": 1}, `additional properties ["priority"]`},
		} {
			res := call(t, ctx, cs, "createTask", tc.args)
			if !res.IsError || !strings.Contains(resultText(res), tc.want) {
				t.Errorf("createTask(%v) = error %v %q; want an error naming %q", tc.args, res.IsError, resultText(res), tc.want)
			}
		}
		if got := ids(listTasks(t, ctx, cs, "all")); len(got) != len(created) {
			t.Errorf("failed creates stored tasks: %v", got)
		}
	})

	t.Run("completeTask", func(t *testing.T) {
		for range 2 { // completing twice is a no-op
			task, text := callOK[Task](t, ctx, cs, "completeTask", map[string]any{"id": 2})
			if task.ID != 2 || !task.Done || task.Title != "Write report" {
				t.Fatalf("completeTask(2) = %+v", task)
			}
			if !strings.Contains(text, "[done]") {
				t.Errorf("completeTask text %q", text)
			}
		}
	})

	t.Run("listTasks", func(t *testing.T) {
		for _, tc := range []struct {
			status string
			want   []int64
			text   string
		}{
			{"", []int64{1, 3, 4}, "3 open tasks:"},
			{"open", []int64{1, 3, 4}, "3 open tasks:"},
			{"done", []int64{2}, "1 done tasks:"},
			{"all", []int64{1, 2, 3, 4}, "4 tasks:"},
		} {
			args := map[string]any{}
			if tc.status != "" {
				args["status"] = tc.status
			}
			out, text := callOK[ListTasksOutput](t, ctx, cs, "listTasks", args)
			if got := ids(out.Tasks); !slices.Equal(got, tc.want) {
				t.Errorf("listTasks(%q) ids = %v, want %v", tc.status, got, tc.want)
			}
			if !strings.HasPrefix(text, tc.text) {
				t.Errorf("listTasks(%q) text = %q, want prefix %q", tc.status, text, tc.text)
			}
		}
		all := listTasks(t, ctx, cs, "all")
		if all[1].Description != "Q3 numbers" || *all[1].DueDate != "2025-07-01" || !all[1].Done || all[0].DueDate != nil {
			t.Errorf("listTasks(all) = %+v", all)
		}
		for _, status := range []any{"pending", "OPEN", 3} {
			res := call(t, ctx, cs, "listTasks", map[string]any{"status": status})
			if !res.IsError || !strings.Contains(resultText(res), "/properties/status") {
				t.Errorf("listTasks(%v) = error %v %q; want an error naming status", status, res.IsError, resultText(res))
			}
		}
	})

	t.Run("idErrors", func(t *testing.T) {
		for _, tool := range []string{"completeTask", "deleteTask"} {
			for _, tc := range []struct {
				args any
				want string
			}{
				{map[string]any{"id": 999}, "task 999 not found"},
				{map[string]any{"id": 0}, "/properties/id: minimum"},
				{map[string]any{"id": -3}, "/properties/id: minimum"},
				{map[string]any{"id": "abc"}, "/properties/id: type"},
				{map[string]any{"id": 1.5}, "/properties/id: type"},
				{map[string]any{}, `missing properties: ["id"]`},
			} {
				res := call(t, ctx, cs, tool, tc.args)
				if !res.IsError || !strings.Contains(resultText(res), tc.want) {
					t.Errorf("%s(%v) = error %v %q; want an error naming %q", tool, tc.args, res.IsError, resultText(res), tc.want)
				}
			}
		}
	})

	t.Run("deleteTask", func(t *testing.T) {
		for _, id := range []int64{3, 4} {
			out, text := callOK[DeleteTaskOutput](t, ctx, cs, "deleteTask", map[string]any{"id": id})
			if out.Deleted != id || !strings.Contains(text, fmt.Sprintf("#%d", id)) {
				t.Fatalf("deleteTask(%d) = %+v, %q", id, out, text)
			}
		}
		res := call(t, ctx, cs, "deleteTask", map[string]any{"id": 3})
		if !res.IsError || !strings.Contains(resultText(res), "task 3 not found") {
			t.Errorf("second deleteTask(3) = %v %q", res.IsError, resultText(res))
		}
		if got := ids(listTasks(t, ctx, cs, "all")); !slices.Equal(got, []int64{1, 2}) {
			t.Errorf("after deletes: ids %v", got)
		}
		// Ids are never reused.
		task, _ := callOK[Task](t, ctx, cs, "createTask", map[string]any{"title": "Temp"})
		if task.ID != 5 {
			t.Errorf("new task after deletes has id %d, want 5", task.ID)
		}
		callOK[DeleteTaskOutput](t, ctx, cs, "deleteTask", map[string]any{"id": task.ID})
	})

	t.Run("schemaResource", func(t *testing.T) {
		list, err := cs.ListResources(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Resources) != 1 || list.Resources[0].URI != schemaURI || list.Resources[0].MIMEType != "text/plain" || list.Resources[0].Name == "" {
			t.Fatalf("resources = %+v", list.Resources)
		}
		res, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: schemaURI})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Contents) != 1 {
			t.Fatalf("contents = %+v", res.Contents)
		}
		c := res.Contents[0]
		if c.URI != schemaURI || c.MIMEType != "text/plain" || c.Text != schemaSQL || !strings.Contains(c.Text, "CREATE TABLE IF NOT EXISTS tasks (") {
			t.Errorf("schema resource = %+v", c)
		}
		if _, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "tasks://nope"}); err == nil {
			t.Error("reading tasks://nope succeeded")
		}
	})

	t.Run("summarizePrompt", func(t *testing.T) {
		list, err := cs.ListPrompts(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Prompts) != 1 || list.Prompts[0].Name != "summarizeOpenTasks" || list.Prompts[0].Title != "Summarize all open tasks" {
			t.Fatalf("prompts = %+v", list.Prompts)
		}
		res, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "summarizeOpenTasks"})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Messages) != 1 || res.Messages[0].Role != "user" {
			t.Fatalf("messages = %+v", res.Messages)
		}
		text := res.Messages[0].Content.(*mcp.TextContent).Text
		for _, want := range []string{"summarize all of my open tasks", "1 open tasks:", `#1 "Buy milk" [open]`} {
			if !strings.Contains(text, want) {
				t.Errorf("prompt text lacks %q:\n%s", want, text)
			}
		}
		if strings.Contains(text, "Write report") {
			t.Errorf("prompt text includes a done task:\n%s", text)
		}
		if _, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "nope"}); err == nil {
			t.Error("getting prompt nope succeeded")
		}
	})

	return listTasks(t, ctx, cs, "all")
}

func TestHTTPInProcess(t *testing.T) {
	for _, stateless := range []bool{false, true} {
		t.Run(fmt.Sprintf("stateless=%v", stateless), func(t *testing.T) { testHTTPInProcess(t, stateless) })
	}
}

func testHTTPInProcess(t *testing.T, stateless bool) {
	ctx := testContext(t)
	base := startHTTP(t, stateless)

	resp, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
		t.Fatalf("GET /healthz = %d %q", resp.StatusCode, body)
	}

	cs := connectHTTP(t, ctx, base)
	final := exerciseServer(t, ctx, cs)
	if got := ids(final); !slices.Equal(got, []int64{1, 2}) {
		t.Errorf("final ids %v", got)
	}

	// A second session sees the same data.
	cs2 := connectHTTP(t, ctx, base)
	if got := ids(listTasks(t, ctx, cs2, "all")); !slices.Equal(got, []int64{1, 2}) {
		t.Errorf("second session: ids %v", got)
	}
}

func TestHTTPConcurrentCreates(t *testing.T) {
	ctx := testContext(t)
	base := startHTTP(t, false)
	const clients, perClient = 4, 10
	var wg sync.WaitGroup
	for c := range clients {
		cs := connectHTTP(t, ctx, base)
		wg.Go(func() {
			for i := range perClient {
				res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "createTask", Arguments: map[string]any{"title": fmt.Sprintf("c%d-%d", c, i)}})
				if err != nil || res.IsError {
					t.Errorf("createTask: %v %v", err, res)
					return
				}
			}
		})
	}
	wg.Wait()
	cs := connectHTTP(t, ctx, base)
	got := ids(listTasks(t, ctx, cs, "open"))
	if len(got) != clients*perClient || got[0] != 1 || got[len(got)-1] != clients*perClient {
		t.Errorf("ids after concurrent creates: %v", got)
	}
}

func TestHealthzMethod(t *testing.T) {
	base := startHTTP(t, false)
	resp, err := http.Post(base+"/healthz", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /healthz = %d, want 405", resp.StatusCode)
	}
}

func TestParseDueDate(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"", "", true},
		{"  ", "", true},
		{"2025-07-01", "2025-07-01", true},
		{" 2025-07-01 ", "2025-07-01", true},
		{"2025-07-01T17:00:00Z", "2025-07-01T17:00:00Z", true},
		{"2025-07-01t17:00:00z", "2025-07-01T17:00:00Z", true},
		{"2025-07-01T17:00:00-05:00", "2025-07-01T17:00:00-05:00", true},
		{"2025-7-1", "", false},
		{"07/01/2025", "", false},
		{"2025-07-01T17:00", "", false},
	} {
		got, err := parseDueDate(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("parseDueDate(%q) error %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if tc.ok && ((got == nil) != (tc.want == "") || (got != nil && *got != tc.want)) {
			t.Errorf("parseDueDate(%q) = %v, want %q", tc.in, got, tc.want)
		}
	}
}
