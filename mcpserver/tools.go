package mcpserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/dataplane"
	"github.com/berth-dev/berth/internal/httpapi"
	"github.com/berth-dev/berth/pool"
	"github.com/berth-dev/berth/sandbox"
)

// Tool names. The first three are Azure's; the rest are Berth's.
const (
	ToolLaunchShell  = "launchShell"
	ToolRunShell     = "runShellCommandInRemoteEnvironment"
	ToolRunPython    = "runPythonCodeInRemoteEnvironment"
	ToolUploadFile   = "uploadFileToRemoteEnvironment"
	ToolDownloadFile = "downloadFileFromRemoteEnvironment"
	ToolListFiles    = "listFilesInRemoteEnvironment"
	ToolClose        = "closeRemoteEnvironment"
)

// Tool names of Azure's tutorials and labs for launchShell: callable, not
// listed (launchPythonEnvironment in the Python tutorial of 2025-11-05,
// launchShellEnvironment in a shell lab).
var toolAliases = map[string]string{
	"launchPythonEnvironment": ToolLaunchShell,
	"launchShellEnvironment":  ToolLaunchShell,
}

// resolveAliases renames an aliased tool in tools/call to its tool.
func resolveAliases(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		if r, ok := req.(*mcp.CallToolRequest); ok && r.Params != nil {
			if name, ok := toolAliases[r.Params.Name]; ok {
				r.Params.Name = name
			}
		}
		return next(ctx, method, req)
	}
}

// MaxFileBytes bounds a file moved by the upload and download tools; the
// data plane's file API takes larger ones.
const MaxFileBytes = 8 << 20

// workspace is the environment's working directory; file tools take paths
// relative to it, or absolute paths inside it.
const workspace = "/mnt/data"

const instructions = `This server runs code in sandboxed Linux environments of a Berth session pool.
Call launchShell once to get an environmentId, then pass it to runShellCommandInRemoteEnvironment (bash) or runPythonCodeInRemoteEnvironment (Python 3).
State persists inside an environment between calls: files in /mnt/data (the working directory), the shell's directory and variables, and Python variables and imports.
Move files with uploadFileToRemoteEnvironment, downloadFileFromRemoteEnvironment and listFilesInRemoteEnvironment; close an environment you no longer need with closeRemoteEnvironment.
An environment idle for longer than the pool's cooldown is destroyed: if a tool reports that an environment does not exist, call launchShell again and redo the setup there.`

// tools implements the tools of one pool.
type tools struct {
	pool *pool.Pool
	log  *slog.Logger
}

// newServer builds the MCP server of a pool.
func newServer(p *pool.Pool, version string, log *slog.Logger) *mcp.Server {
	name := p.Name()
	srv := mcp.NewServer(&mcp.Implementation{
		Name: "berth", Title: "Berth session pool " + name, Version: version,
	}, &mcp.ServerOptions{
		Instructions:              instructions,
		Logger:                    sdkLogger(log),
		Capabilities:              &mcp.ServerCapabilities{Tools: &mcp.ToolCapabilities{}},
		SupportedProtocolVersions: protocolVersions,
	})
	srv.AddReceivingMiddleware(resolveAliases)
	t := &tools{pool: p, log: log.With("pool", name)}
	for _, d := range toolDefs {
		srv.AddTool(d.tool, t.wrap(d.tool.Name, d.handler(t)))
	}
	return srv
}

// handlerFunc is a tool's implementation: a result, or an error that
// becomes a tool error (isError) with the error's text.
type handlerFunc func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error)

// wrap turns errors into tool errors, except a canceled request's, and
// never lets a panic escape.
func (t *tools) wrap(name string, h handlerFunc) mcp.ToolHandler {
	return func(ctx context.Context, req *mcp.CallToolRequest) (res *mcp.CallToolResult, err error) {
		start := time.Now()
		defer func() {
			if v := recover(); v != nil {
				t.log.Error("tool panicked", "tool", name, "panic", v)
				res, err = toolError("internal error in tool "+name+"; the server log has details"), nil
			}
			t.log.Debug("tool call", "tool", name, "duration", time.Since(start), "isError", res != nil && res.IsError)
		}()
		res, err = h(ctx, req)
		if err == nil {
			return res, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return toolError(t.public(name, err)), nil
	}
}

// public turns an error into a message for the model.
func (t *tools) public(tool string, err error) string {
	var ae *argError
	if errors.As(err, &ae) {
		return ae.msg
	}
	var te *toolErr
	if errors.As(err, &te) {
		return te.msg
	}
	e := httpapi.Classify(err)
	if e.Status >= 500 {
		t.log.Error("tool failed", "tool", tool, "err", err)
	}
	return e.Message
}

// toolErr is an error whose text is already written for the model.
type toolErr struct{ msg string }

func (e *toolErr) Error() string { return e.msg }

func toolErrorf(format string, a ...any) error { return &toolErr{fmt.Sprintf(format, a...)} }

func toolError(msg string) *mcp.CallToolResult {
	return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: msg}}}
}

// structured returns v as structuredContent and as its JSON text, as the
// specification recommends.
func structured(v any, extra ...mcp.Content) (*mcp.CallToolResult, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return &mcp.CallToolResult{
		StructuredContent: json.RawMessage(b),
		Content:           append([]mcp.Content{&mcp.TextContent{Text: string(b)}}, extra...),
	}, nil
}

// NewEnvironmentID returns a fresh environment identifier: "env-" and 24
// hex digits, a valid pool session identifier.
func NewEnvironmentID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return "env-" + hex.EncodeToString(b)
}

// environment finds the session named by the environmentId argument; it
// never creates one.
func (t *tools) environment(a args) (*pool.Session, string, error) {
	id, err := a.str("environmentId", true)
	if err != nil {
		return nil, "", &argError{msg: err.Error() + ": pass the environmentId that launchShell returned"}
	}
	if pool.ValidIdentifier(id) != nil {
		return nil, id, t.missing(id, pool.ErrSessionNotFound)
	}
	s, err := t.pool.Lookup(id)
	if err != nil {
		return nil, id, t.missing(id, err)
	}
	return s, id, nil
}

// missing explains an unknown or lost environment and what to do.
func (t *tools) missing(id string, err error) error {
	if errors.Is(err, pool.ErrSessionLost) {
		return toolErrorf("environment %q stopped (for example, it ran out of memory) and its files and state are gone. "+
			"Call launchShell to get a new environmentId, redo any setup there, and use it from now on.", id)
	}
	if errors.Is(err, pool.ErrSessionNotFound) {
		return toolErrorf("environment %q does not exist: it expired after being idle for more than %ds, was closed, or was never launched. "+
			"Call launchShell to get a new environmentId, redo any setup there (files and state of the old environment are gone), and use it from now on.",
			id, t.pool.Config().CooldownSeconds)
	}
	return err
}

// execError maps an execution's failure; a lost sandbox is a missing
// environment.
func (t *tools) execError(id string, err error) error {
	if errors.Is(err, pool.ErrSessionLost) || errors.Is(err, pool.ErrSessionNotFound) {
		return t.missing(id, err)
	}
	if errors.Is(err, agent.ErrUnavailable) {
		return toolErrorf("environment %q did not answer; try again, or call launchShell for a new environment", id)
	}
	return err
}

func (t *tools) launchShell(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	if _, err := parseArgs(req.Params.Arguments); err != nil {
		return nil, err
	}
	id := NewEnvironmentID()
	if _, err := t.pool.Session(ctx, id); err != nil {
		if errors.Is(err, pool.ErrPoolFull) {
			return nil, toolErrorf("cannot launch an environment: %v. Close environments you no longer need with closeRemoteEnvironment.", err)
		}
		if errors.Is(err, sandbox.ErrNoCapacity) || errors.Is(err, pool.ErrPoolUnusable) {
			return nil, toolErrorf("cannot launch an environment: %v", httpapi.Classify(err).Message)
		}
		if errors.Is(err, pool.ErrClosed) {
			return nil, toolErrorf("cannot launch an environment: the server is shutting down")
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		t.log.Error("launch environment", "err", err)
		return nil, toolErrorf("cannot launch an environment: its sandbox failed to start; try again (the server log has details)")
	}
	return structured(struct {
		EnvironmentID string `json:"environmentId"`
	}{id})
}

// ShellOutput is the structured result of runShellCommandInRemoteEnvironment.
type ShellOutput struct {
	Stdout                      string               `json:"stdout"`
	Stderr                      string               `json:"stderr"`
	ExitCode                    int                  `json:"exitCode"`
	ExecutionTimeInMilliseconds int64                `json:"executionTimeInMilliseconds"`
	Status                      agent.Status         `json:"status"`
	Error                       *dataplane.ExecError `json:"error,omitempty"`
	StdoutTruncated             bool                 `json:"stdoutTruncated,omitempty"`
	StderrTruncated             bool                 `json:"stderrTruncated,omitempty"`
}

// PythonOutput is the structured result of runPythonCodeInRemoteEnvironment.
type PythonOutput struct {
	Stdout                      string               `json:"stdout"`
	Stderr                      string               `json:"stderr"`
	Result                      json.RawMessage      `json:"result"`
	ExecutionTimeInMilliseconds int64                `json:"executionTimeInMilliseconds"`
	Status                      agent.Status         `json:"status"`
	Error                       *dataplane.ExecError `json:"error,omitempty"`
	StdoutTruncated             bool                 `json:"stdoutTruncated,omitempty"`
	StderrTruncated             bool                 `json:"stderrTruncated,omitempty"`
	// Images is how many figures the code drew; they follow the text as
	// image content (PNG).
	Images int `json:"images,omitempty"`
}

func (t *tools) runShell(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	a, err := parseArgs(req.Params.Arguments, "environmentId", "shellCommand", "execCommandAndArgs", "stdin", "timeoutInSeconds")
	if err != nil {
		return nil, err
	}
	var (
		lang = agent.Shell
		code string
		argv []string
	)
	switch {
	case a.has("shellCommand") && a.has("execCommandAndArgs"):
		return nil, badArg("execCommandAndArgs", "give either shellCommand or execCommandAndArgs, not both")
	case a.has("execCommandAndArgs"):
		lang = agent.Command
		if argv, err = a.strList("execCommandAndArgs"); err != nil {
			return nil, err
		}
	default:
		if !a.has("shellCommand") {
			return nil, badArg("shellCommand", `it is required: give shellCommand (a bash command line) or execCommandAndArgs (["program", "arg", ...])`)
		}
		if code, err = a.str("shellCommand", true); err != nil {
			return nil, err
		}
	}
	stdin, err := a.str("stdin", false)
	if err != nil {
		return nil, err
	}
	x, err := t.exec(ctx, req, a, lang, code, argv, stdin)
	if err != nil {
		return nil, err
	}
	r := dataplane.Result(lang, x)
	return structured(ShellOutput{
		Stdout: r.Stdout, Stderr: r.Stderr, ExitCode: x.ExitCode,
		ExecutionTimeInMilliseconds: r.ExecutionTimeInMilliseconds, Status: r.Status, Error: r.Error,
		StdoutTruncated: r.StdoutTruncated, StderrTruncated: r.StderrTruncated,
	})
}

func (t *tools) runPython(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	a, err := parseArgs(req.Params.Arguments, "environmentId", "pythonCode", "timeoutInSeconds")
	if err != nil {
		return nil, err
	}
	code, err := a.str("pythonCode", true)
	if err != nil {
		return nil, err
	}
	x, err := t.exec(ctx, req, a, agent.Python, code, nil, "")
	if err != nil {
		return nil, err
	}
	r := dataplane.Result(agent.Python, x)
	out := PythonOutput{
		Stdout: r.Stdout, Stderr: r.Stderr, Result: r.Result,
		ExecutionTimeInMilliseconds: r.ExecutionTimeInMilliseconds, Status: r.Status, Error: r.Error,
		StdoutTruncated: r.StdoutTruncated, StderrTruncated: r.StderrTruncated,
	}
	// Figures go to the model as image content, not as base64 in the text.
	images := dataplane.Images(x)
	extra := make([]mcp.Content, 0, len(images))
	for _, im := range images {
		extra = append(extra, &mcp.ImageContent{Data: im.Base64Data, MIMEType: "image/" + im.Format})
	}
	if len(images) > len(r.Images) { // the first figure is the result
		out.Result = json.RawMessage(`{"type":"image","format":"png"}`)
	}
	out.Images = len(images)
	return structured(out, extra...)
}

// exec runs code in the environment named by the arguments, streaming its
// output as progress notifications if the client asked for progress.
func (t *tools) exec(ctx context.Context, req *mcp.CallToolRequest, a args, lang agent.Language, code string, argv []string, stdin string) (*pool.Execution, error) {
	secs, err := a.seconds("timeoutInSeconds")
	if err != nil {
		return nil, err
	}
	s, id, err := t.environment(a)
	if err != nil {
		return nil, err
	}
	pr := startProgress(ctx, req)
	x, err := s.Exec(ctx, lang, code, argv, pool.ExecOptions{
		Timeout: time.Duration(secs) * time.Second, // Exec caps it at the pool's timeout
		Stdin:   stdin,
		OnEvent: pr.OnEvent(),
	})
	pr.Finish()
	if err != nil {
		return nil, t.execError(id, err)
	}
	return x, nil
}

// filePath reads a workspace path argument: relative to /mnt/data, or
// absolute inside it. It returns "" for the workspace itself when
// allowRoot.
func filePath(a args, name string, required, allowRoot bool) (string, error) {
	p, err := a.str(name, required)
	if err != nil {
		return "", err
	}
	if p == workspace || p == workspace+"/" || p == "." || p == "./" {
		p = ""
	} else {
		p = strings.TrimPrefix(p, workspace+"/")
	}
	if p == "" {
		if allowRoot {
			return "", nil
		}
		return "", badArg(name, "it must name a file in %s, such as data/input.csv", workspace)
	}
	clean, err := agent.CleanName(p)
	if err != nil {
		return "", badArg(name, "%s (paths are relative to %s, or absolute inside it)", strings.TrimPrefix(err.Error(), "bad name: "), workspace)
	}
	return clean, nil
}

// FileOutput describes a file written or read by the file tools.
type FileOutput struct {
	Path             string    `json:"path"`
	Size             int64     `json:"size"`
	LastModifiedTime time.Time `json:"lastModifiedTime,omitzero"`
	// Encoding and Content are set by downloads.
	Encoding string  `json:"encoding,omitempty"`
	Content  *string `json:"content,omitempty"`
}

func (t *tools) uploadFile(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	a, err := parseArgs(req.Params.Arguments, "environmentId", "path", "content", "encoding")
	if err != nil {
		return nil, err
	}
	name, err := filePath(a, "path", true, false)
	if err != nil {
		return nil, err
	}
	content, err := a.str("content", false)
	if err != nil {
		return nil, err
	}
	if !a.has("content") {
		return nil, badArg("content", "it is required (an empty string makes an empty file)")
	}
	enc, err := a.str("encoding", false)
	if err != nil {
		return nil, err
	}
	data := []byte(content)
	switch enc {
	case "", "utf-8", "utf8", "text":
	case "base64":
		if data, err = base64.StdEncoding.DecodeString(strings.TrimSpace(content)); err != nil {
			return nil, badArg("content", "it is not valid base64 (standard alphabet, with padding): %v", err)
		}
	default:
		return nil, badArg("encoding", `it must be "utf-8" or "base64", not %q`, enc)
	}
	if len(data) > MaxFileBytes {
		return nil, badArg("content", "the file is %d bytes; files moved through MCP are limited to %d MiB (use the pool's REST file API for larger ones)", len(data), MaxFileBytes>>20)
	}
	s, id, err := t.environment(a)
	if err != nil {
		return nil, err
	}
	info, err := s.WriteFile(ctx, name, bytes.NewReader(data))
	if err != nil {
		return nil, t.fileError(id, name, err)
	}
	return structured(FileOutput{Path: info.Name, Size: info.Size, LastModifiedTime: info.ModTime})
}

func (t *tools) fileError(id, name string, err error) error {
	switch {
	case errors.Is(err, agent.ErrNotFound):
		return toolErrorf("%s/%s does not exist in environment %q (listFilesInRemoteEnvironment shows what is there)", workspace, name, id)
	case errors.Is(err, agent.ErrBadRequest), errors.Is(err, agent.ErrDiskFull):
		return toolErrorf("%s/%s: %s", workspace, name, httpapi.Classify(err).Message)
	}
	return t.execError(id, err)
}

func (t *tools) downloadFile(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	a, err := parseArgs(req.Params.Arguments, "environmentId", "path")
	if err != nil {
		return nil, err
	}
	name, err := filePath(a, "path", true, false)
	if err != nil {
		return nil, err
	}
	s, id, err := t.environment(a)
	if err != nil {
		return nil, err
	}
	rc, size, err := s.OpenFile(ctx, name)
	if err != nil {
		return nil, t.fileError(id, name, err)
	}
	defer rc.Close()
	if size > MaxFileBytes {
		return nil, toolErrorf("%s/%s is %d bytes; files moved through MCP are limited to %d MiB (use the pool's REST file API, or process it inside the environment)", workspace, name, size, MaxFileBytes>>20)
	}
	data, err := io.ReadAll(io.LimitReader(rc, MaxFileBytes+1))
	if err != nil {
		return nil, t.execError(id, err)
	}
	if len(data) > MaxFileBytes {
		return nil, toolErrorf("%s/%s is larger than %d MiB, the limit for files moved through MCP", workspace, name, MaxFileBytes>>20)
	}
	out := FileOutput{Path: name, Size: int64(len(data)), Encoding: "utf-8"}
	var content string
	if utf8.Valid(data) && !bytes.ContainsRune(data, 0) {
		content = string(data)
	} else {
		out.Encoding, content = "base64", base64.StdEncoding.EncodeToString(data)
	}
	out.Content = &content
	var extra []mcp.Content
	if mt := http.DetectContentType(data); strings.HasPrefix(mt, "image/") && mt != "image/x-icon" {
		// Let a model that reads images see it (a plot, a screenshot).
		extra = append(extra, &mcp.ImageContent{Data: data, MIMEType: mt})
	}
	return structured(out, extra...)
}

// FileEntry is one entry of listFilesInRemoteEnvironment.
type FileEntry struct {
	Name             string    `json:"name"`
	Type             string    `json:"type"`
	Size             int64     `json:"size"`
	LastModifiedTime time.Time `json:"lastModifiedTime"`
}

func (t *tools) listFiles(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	a, err := parseArgs(req.Params.Arguments, "environmentId", "path")
	if err != nil {
		return nil, err
	}
	dir, err := filePath(a, "path", false, true)
	if err != nil {
		return nil, err
	}
	s, id, err := t.environment(a)
	if err != nil {
		return nil, err
	}
	list, err := s.ListFiles(ctx, dir)
	if err != nil {
		return nil, t.fileError(id, dir, err)
	}
	files := make([]FileEntry, 0, len(list))
	for _, f := range list {
		typ := "file"
		switch {
		case f.IsDir:
			typ = "directory"
		case f.Symlink:
			typ = "symlink"
		}
		files = append(files, FileEntry{Name: f.Name, Type: typ, Size: f.Size, LastModifiedTime: f.ModTime})
	}
	shown := workspace
	if dir != "" {
		shown += "/" + dir
	}
	return structured(struct {
		Path  string      `json:"path"`
		Files []FileEntry `json:"files"`
	}{shown, files})
}

func (t *tools) closeEnvironment(_ context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	a, err := parseArgs(req.Params.Arguments, "environmentId")
	if err != nil {
		return nil, err
	}
	id, err := a.str("environmentId", true)
	if err != nil {
		return nil, err
	}
	if err := t.pool.DeleteSession(id); err != nil {
		return nil, toolErrorf("environment %q does not exist (it may have expired or been closed already); nothing to close", id)
	}
	return structured(struct {
		EnvironmentID string `json:"environmentId"`
		Closed        bool   `json:"closed"`
	}{id, true})
}
