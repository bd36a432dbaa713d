package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Names and URIs the server publishes.
const (
	serverName       = "tasks"
	serverVersion    = "1.0.0"
	schemaURI        = "tasks://schema"
	schemaMIMEType   = "text/plain"
	summarizePrompt  = "summarizeOpenTasks"
	maxTitleLen      = 500
	maxDescribeLen   = 10000
	dueDateFormatDoc = "an RFC 3339 date (YYYY-MM-DD, e.g. 2025-07-01) or date-time (e.g. 2025-07-01T17:00:00Z)"
)

// CreateTaskInput is the input of createTask.
type CreateTaskInput struct {
	Title       string `json:"title" jsonschema:"Short title of the task. Required and must not be blank."`
	Description string `json:"description,omitempty" jsonschema:"Optional longer description or notes."`
	DueDate     string `json:"dueDate,omitempty" jsonschema:"Optional due date: an RFC 3339 date (YYYY-MM-DD, e.g. 2025-07-01) or date-time (e.g. 2025-07-01T17:00:00Z)."`
}

// ListTasksInput is the input of listTasks.
type ListTasksInput struct {
	Status Status `json:"status,omitempty" jsonschema:"Which tasks to list: open (not yet done; the default), done, or all."`
}

// ListTasksOutput is the output of listTasks.
type ListTasksOutput struct {
	Tasks []Task `json:"tasks" jsonschema:"The matching tasks, oldest first."`
}

// TaskIDInput is the input of the tools that act on one task.
type TaskIDInput struct {
	ID int64 `json:"id" jsonschema:"The id of the task, as returned by createTask or listTasks."`
}

// DeleteTaskOutput is the output of deleteTask.
type DeleteTaskOutput struct {
	Deleted int64 `json:"deleted" jsonschema:"The id of the task that was deleted."`
}

// schemaFor infers the JSON Schema of T (descriptions come from the
// jsonschema struct tags) and lets edit add what tags cannot express:
// enums, defaults, bounds.
func schemaFor[T any](edit func(s *jsonschema.Schema)) *jsonschema.Schema {
	s, err := jsonschema.For[T](nil)
	if err != nil {
		panic(err) // the types above are static: this is a programming error
	}
	if edit != nil {
		edit(s)
	}
	return s
}

func boolPtr(b bool) *bool { return &b }

// newMCPServer returns the MCP server with its tools, resource and prompt,
// backed by store.
func newMCPServer(store *Store, logger *slog.Logger) *mcp.Server {
	h := &handlers{store: store, log: logger}
	server := mcp.NewServer(&mcp.Implementation{Name: serverName, Title: "Tasks", Version: serverVersion}, &mcp.ServerOptions{
		Instructions: "A persistent to-do list. Use createTask to add a task, listTasks to see tasks " +
			"(open ones by default), completeTask to mark one done and deleteTask to remove one. " +
			"Tasks are identified by the numeric id these tools return.",
		Logger: logger.With("component", "mcp"),
	})
	server.AddReceivingMiddleware(logRequests(logger))

	mcp.AddTool(server, &mcp.Tool{
		Name:        "createTask",
		Title:       "Create task",
		Description: "Create a new open task and return it, with the id to use in other tools.",
		InputSchema: schemaFor[CreateTaskInput](func(s *jsonschema.Schema) {
			s.Properties["title"].MinLength = jsonschema.Ptr(1)
			s.Properties["title"].MaxLength = jsonschema.Ptr(maxTitleLen)
			s.Properties["title"].Examples = []any{"Buy milk"}
			s.Properties["description"].MaxLength = jsonschema.Ptr(maxDescribeLen)
			s.Properties["dueDate"].Examples = []any{"2025-07-01", "2025-07-01T17:00:00Z"}
		}),
		Annotations: &mcp.ToolAnnotations{DestructiveHint: boolPtr(false), OpenWorldHint: boolPtr(false)},
	}, h.createTask)

	mcp.AddTool(server, &mcp.Tool{
		Name:        "listTasks",
		Title:       "List tasks",
		Description: "List tasks, oldest first: the open ones by default, or the done ones, or all.",
		InputSchema: schemaFor[ListTasksInput](func(s *jsonschema.Schema) {
			s.Properties["status"].Enum = []any{string(StatusOpen), string(StatusDone), string(StatusAll)}
			s.Properties["status"].Default = json.RawMessage(`"open"`)
		}),
		OutputSchema: schemaFor[ListTasksOutput](func(s *jsonschema.Schema) {
			s.Properties["tasks"].Types = nil // the list is never null
			s.Properties["tasks"].Type = "array"
		}),
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, OpenWorldHint: boolPtr(false)},
	}, h.listTasks)

	idSchema := func(s *jsonschema.Schema) { s.Properties["id"].Minimum = jsonschema.Ptr(1.0) }
	mcp.AddTool(server, &mcp.Tool{
		Name:        "completeTask",
		Title:       "Complete task",
		Description: "Mark a task as done and return it. Completing a task that is already done changes nothing.",
		InputSchema: schemaFor[TaskIDInput](idSchema),
		Annotations: &mcp.ToolAnnotations{IdempotentHint: true, DestructiveHint: boolPtr(false), OpenWorldHint: boolPtr(false)},
	}, h.completeTask)

	mcp.AddTool(server, &mcp.Tool{
		Name:        "deleteTask",
		Title:       "Delete task",
		Description: "Delete a task permanently. Its id is never reused.",
		InputSchema: schemaFor[TaskIDInput](idSchema),
		Annotations: &mcp.ToolAnnotations{DestructiveHint: boolPtr(true), OpenWorldHint: boolPtr(false)},
	}, h.deleteTask)

	server.AddResource(&mcp.Resource{
		Name:        "schema",
		Title:       "Task database schema",
		Description: "The SQLite CREATE statements of the database that holds the tasks.",
		MIMEType:    schemaMIMEType,
		URI:         schemaURI,
		Size:        int64(len(schemaSQL)),
	}, func(_ context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{
			{URI: req.Params.URI, MIMEType: schemaMIMEType, Text: schemaSQL},
		}}, nil
	})

	server.AddPrompt(&mcp.Prompt{
		Name:        summarizePrompt,
		Title:       "Summarize all open tasks",
		Description: "Ask the model to summarize every open task; the current open tasks are embedded in the prompt.",
	}, h.summarizeOpenTasks)

	return server
}

type handlers struct {
	store *Store
	log   *slog.Logger
}

func textResult(format string, args ...any) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprintf(format, args...)}}}
}

func (h *handlers) createTask(ctx context.Context, _ *mcp.CallToolRequest, in CreateTaskInput) (*mcp.CallToolResult, *Task, error) {
	title := strings.TrimSpace(in.Title)
	if title == "" {
		return nil, nil, errors.New("title is required and must not be blank")
	}
	due, err := parseDueDate(in.DueDate)
	if err != nil {
		return nil, nil, err
	}
	t, err := h.store.Create(ctx, title, strings.TrimSpace(in.Description), due)
	if err != nil {
		return nil, nil, fmt.Errorf("create task: %w", err)
	}
	h.log.Info("task created", "id", t.ID)
	return textResult("Created task %s", formatTask(t)), &t, nil
}

func (h *handlers) listTasks(ctx context.Context, _ *mcp.CallToolRequest, in ListTasksInput) (*mcp.CallToolResult, *ListTasksOutput, error) {
	status := in.Status
	if status == "" {
		status = StatusOpen
	}
	switch status {
	case StatusOpen, StatusDone, StatusAll:
	default:
		return nil, nil, fmt.Errorf("status %q is not one of open, done, all", in.Status)
	}
	tasks, err := h.store.List(ctx, status)
	if err != nil {
		return nil, nil, fmt.Errorf("list tasks: %w", err)
	}
	return textResult("%s", formatList(status, tasks)), &ListTasksOutput{Tasks: tasks}, nil
}

func (h *handlers) completeTask(ctx context.Context, _ *mcp.CallToolRequest, in TaskIDInput) (*mcp.CallToolResult, *Task, error) {
	if err := checkID(in.ID); err != nil {
		return nil, nil, err
	}
	t, err := h.store.Complete(ctx, in.ID)
	if errors.Is(err, errNotFound) {
		return nil, nil, fmt.Errorf("task %d not found", in.ID)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("complete task %d: %w", in.ID, err)
	}
	h.log.Info("task completed", "id", t.ID)
	return textResult("Completed task %s", formatTask(t)), &t, nil
}

func (h *handlers) deleteTask(ctx context.Context, _ *mcp.CallToolRequest, in TaskIDInput) (*mcp.CallToolResult, *DeleteTaskOutput, error) {
	if err := checkID(in.ID); err != nil {
		return nil, nil, err
	}
	err := h.store.Delete(ctx, in.ID)
	if errors.Is(err, errNotFound) {
		return nil, nil, fmt.Errorf("task %d not found", in.ID)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("delete task %d: %w", in.ID, err)
	}
	h.log.Info("task deleted", "id", in.ID)
	return textResult("Deleted task #%d.", in.ID), &DeleteTaskOutput{Deleted: in.ID}, nil
}

func (h *handlers) summarizeOpenTasks(ctx context.Context, _ *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
	tasks, err := h.store.List(ctx, StatusOpen)
	if err != nil {
		return nil, fmt.Errorf("list open tasks: %w", err)
	}
	var b strings.Builder
	b.WriteString("Please summarize all of my open tasks. Group them by urgency (overdue, due soon, " +
		"later, no due date), call out anything overdue, and suggest what to work on first. ")
	fmt.Fprintf(&b, "Today is %s.\n\n", time.Now().UTC().Format(time.DateOnly))
	b.WriteString(formatList(StatusOpen, tasks))
	return &mcp.GetPromptResult{
		Description: fmt.Sprintf("Summarize the %d open task(s)", len(tasks)),
		Messages: []*mcp.PromptMessage{
			{Role: "user", Content: &mcp.TextContent{Text: b.String()}},
		},
	}, nil
}

func checkID(id int64) error {
	if id < 1 {
		return fmt.Errorf("invalid id %d: task ids are positive integers", id)
	}
	return nil
}

// parseDueDate validates an RFC 3339 date or date-time and returns it in
// canonical form, or nil if s is blank.
func parseDueDate(s string) (*string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var v string
	if d, err := time.Parse(time.DateOnly, s); err == nil {
		v = d.Format(time.DateOnly)
	} else if ts, err := time.Parse(time.RFC3339, strings.ToUpper(s)); err == nil { // RFC 3339 allows "t" and "z"
		v = ts.Format(time.RFC3339)
	} else {
		return nil, fmt.Errorf("dueDate %q is not %s", s, dueDateFormatDoc)
	}
	return &v, nil
}

// formatTask renders a task on one line, for the text content of results.
func formatTask(t Task) string {
	var b strings.Builder
	fmt.Fprintf(&b, "#%d %q", t.ID, t.Title)
	if t.Done {
		b.WriteString(" [done]")
	} else {
		b.WriteString(" [open]")
	}
	if t.DueDate != nil {
		fmt.Fprintf(&b, ", due %s", *t.DueDate)
	}
	fmt.Fprintf(&b, ", created %s", t.CreatedAt)
	if t.Description != "" {
		fmt.Fprintf(&b, ": %s", strings.ReplaceAll(t.Description, "\n", " "))
	}
	return b.String()
}

func formatList(status Status, tasks []Task) string {
	what := map[Status]string{StatusOpen: "open tasks", StatusDone: "done tasks", StatusAll: "tasks"}[status]
	if len(tasks) == 0 {
		return "There are no " + what + "."
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s:", len(tasks), what)
	for _, t := range tasks {
		b.WriteString("\n- ")
		b.WriteString(formatTask(t))
	}
	return b.String()
}

// logRequests logs every MCP request the server receives, at debug level,
// and failures at warn level.
func logRequests(logger *slog.Logger) mcp.Middleware {
	return func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			start := time.Now()
			res, err := next(ctx, method, req)
			attrs := []any{"method", method, "duration", time.Since(start)}
			if p, ok := req.GetParams().(*mcp.CallToolParamsRaw); ok {
				attrs = append(attrs, "tool", p.Name)
			}
			switch {
			case err != nil:
				logger.Warn("mcp request failed", append(attrs, "error", err)...)
			case isToolError(res):
				logger.Info("tool returned an error", append(attrs, "error", toolErrorText(res))...)
			default:
				logger.Debug("mcp request", attrs...)
			}
			return res, err
		}
	}
}

func isToolError(res mcp.Result) bool {
	r, ok := res.(*mcp.CallToolResult)
	return ok && r.IsError
}

func toolErrorText(res mcp.Result) string {
	var parts []string
	for _, c := range res.(*mcp.CallToolResult).Content {
		if t, ok := c.(*mcp.TextContent); ok {
			parts = append(parts, t.Text)
		}
	}
	return strings.Join(parts, " ")
}
