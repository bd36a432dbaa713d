//lint:file-ignore SA1019 the tests exercise sampling and logging, deprecated by SEP-2577 but part of the protocol versions the bridge relays.
package stdiobridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// everythingServer is the go-sdk's conformance server, built by TestMain. Run
// without -http it is a stdio MCP server.
var everythingServer string

const everythingServerPkg = "github.com/modelcontextprotocol/go-sdk/conformance/everything-server@v1.8.0"

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "stdiobridge-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// go install pkg@version builds outside this module, so go.mod is not
	// touched.
	cmd := exec.Command("go", "install", everythingServerPkg)
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go install %s: %v\n%s", everythingServerPkg, err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	everythingServer = filepath.Join(dir, "everything-server")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// bridge is a Handler serving the everything-server on a loopback
// httptest.Server, recording the processes it starts.
type bridge struct {
	*Handler
	srv *httptest.Server
	url string

	mu   sync.Mutex
	pids []int
}

func (b *bridge) started() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.pids)
}

func newBridge(t *testing.T, o Options) *bridge {
	t.Helper()
	b := &bridge{}
	o.Start = func(ctx context.Context) (Process, error) {
		p, err := CommandProcess(exec.CommandContext(ctx, everythingServer))
		if err != nil {
			return nil, err
		}
		b.mu.Lock()
		b.pids = append(b.pids, p.(*cmdProcess).cmd.Process.Pid)
		b.mu.Unlock()
		return p, nil
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	b.Handler = New(o)
	b.srv = httptest.NewServer(b.Handler)
	b.url = b.srv.URL + "/mcp"
	// Cleanups run last-in first-out: end the sessions (and their hanging
	// requests) before the server waits for its requests.
	t.Cleanup(b.srv.Close)
	t.Cleanup(func() { b.Handler.Close() })
	return b
}

// recorder is a go-sdk client that records what the server sends it.
type recorder struct {
	mu          sync.Mutex
	logs        []string
	progress    []float64
	samplings   []string
	elicitation []string
}

func (r *recorder) snapshot() (logs []string, progress []float64, samplings, elicitations []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.logs), slices.Clone(r.progress), slices.Clone(r.samplings), slices.Clone(r.elicitation)
}

func (b *bridge) connect(t *testing.T, r *recorder) *mcp.ClientSession {
	t.Helper()
	if r == nil {
		r = new(recorder)
	}
	client := mcp.NewClient(&mcp.Implementation{Name: "stdiobridge-test", Version: "1.0.0"}, &mcp.ClientOptions{
		LoggingMessageHandler: func(_ context.Context, req *mcp.LoggingMessageRequest) {
			r.mu.Lock()
			r.logs = append(r.logs, fmt.Sprint(req.Params.Data))
			r.mu.Unlock()
		},
		ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
			r.mu.Lock()
			r.progress = append(r.progress, req.Params.Progress)
			r.mu.Unlock()
		},
		CreateMessageHandler: func(_ context.Context, req *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
			prompt := req.Params.Messages[0].Content.(*mcp.TextContent).Text
			r.mu.Lock()
			r.samplings = append(r.samplings, prompt)
			r.mu.Unlock()
			return &mcp.CreateMessageResult{
				Role:    "assistant",
				Model:   "test-model",
				Content: &mcp.TextContent{Text: "echo " + prompt},
			}, nil
		},
		ElicitationHandler: func(_ context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			r.mu.Lock()
			r.elicitation = append(r.elicitation, req.Params.Message)
			r.mu.Unlock()
			return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"username": "user-of-" + req.Params.Message}}, nil
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: b.url, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

func callText(t *testing.T, cs *mcp.ClientSession, name string, args map[string]any) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("call %s: %v", name, err)
	}
	var parts []string
	for _, c := range res.Content {
		switch c := c.(type) {
		case *mcp.TextContent:
			parts = append(parts, c.Text)
		case *mcp.ImageContent:
			parts = append(parts, "image:"+c.MIMEType)
		case *mcp.AudioContent:
			parts = append(parts, "audio:"+c.MIMEType)
		case *mcp.EmbeddedResource:
			parts = append(parts, "resource:"+c.Resource.URI)
		}
	}
	return strings.Join(parts, "|"), res.IsError
}

// eventually polls cond for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alive reports whether process pid exists (it is reaped once exited, since
// CommandProcess waits for it).
func alive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

func TestRoundTrip(t *testing.T) {
	b := newBridge(t, Options{})
	r := new(recorder)
	cs := b.connect(t, r)
	ctx := context.Background()

	init := cs.InitializeResult()
	if init.ServerInfo == nil || init.ServerInfo.Name != "mcp-conformance-test-server" {
		t.Fatalf("serverInfo = %+v, want the stdio server's", init.ServerInfo)
	}
	// The stdio server negotiated the version with the client.
	if init.ProtocolVersion != "2025-11-25" {
		t.Errorf("protocol version %q", init.ProtocolVersion)
	}
	if cs.ID() == "" {
		t.Error("no session ID")
	}

	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
	}
	for _, want := range []string{"test_simple_text", "test_tool_with_logging", "test_tool_with_progress", "test_sampling", "test_elicitation"} {
		if !slices.Contains(names, want) {
			t.Errorf("tools/list lacks %s: %v", want, names)
		}
	}

	for name, want := range map[string]string{
		"test_simple_text":            "This is a simple text response for testing.",
		"test_image_content":          "image:image/png",
		"test_audio_content":          "audio:audio/wav",
		"test_multiple_content_types": "This is text content|image:image/png|resource:test://embedded-in-multiple",
	} {
		if got, isErr := callText(t, cs, name, nil); got != want || isErr {
			t.Errorf("%s = %q (error %v), want %q", name, got, isErr, want)
		}
	}
	if got, isErr := callText(t, cs, "test_error_handling", nil); !isErr || !strings.Contains(got, "intentionally") {
		t.Errorf("test_error_handling = %q, isError %v", got, isErr)
	}

	// Other requests are relayed too.
	prompt, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "test_prompt_with_arguments", Arguments: map[string]string{"arg1": "a", "arg2": "b"}})
	if err != nil || len(prompt.Messages) == 0 {
		t.Errorf("prompts/get: %v %v", prompt, err)
	}
	if _, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "test://static-text"}); err != nil {
		t.Errorf("resources/read: %v", err)
	}
	// A JSON-RPC error of the server comes back as one.
	if _, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "no_such_prompt"}); err == nil {
		t.Error("prompts/get of an unknown prompt succeeded")
	}

	// Notifications from the server: logging (after logging/setLevel) and
	// progress.
	if err := cs.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: "debug"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := callText(t, cs, "test_tool_with_logging", nil); got != "Tool with logging executed successfully" {
		t.Errorf("logging tool = %q", got)
	}
	eventually(t, "3 log messages", func() bool { l, _, _, _ := r.snapshot(); return len(l) >= 3 })
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{
		Name: "test_tool_with_progress",
		Meta: mcp.Meta{"progressToken": "tok-1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if txt := res.Content[0].(*mcp.TextContent).Text; txt != "tok-1" {
		t.Errorf("progress tool = %q", txt)
	}
	eventually(t, "3 progress notifications", func() bool { _, p, _, _ := r.snapshot(); return len(p) >= 3 })

	// Server→client requests, answered by the client's handlers.
	if got, _ := callText(t, cs, "test_sampling", map[string]any{"prompt": "hello"}); got != "LLM response: echo hello" {
		t.Errorf("sampling tool = %q", got)
	}
	if got, _ := callText(t, cs, "test_elicitation", map[string]any{"message": "who?"}); got != "Elicitation result: action=accept, content=map[username:user-of-who?]" {
		t.Errorf("elicitation tool = %q", got)
	}
	logs, progress, samplings, elicitations := r.snapshot()
	t.Logf("logs %q, progress %v, samplings %q, elicitations %q", logs, progress, samplings, elicitations)
	if !slices.Equal(logs[:3], []string{"Tool execution started", "Tool processing data", "Tool execution completed"}) {
		t.Errorf("logs = %q", logs)
	}
	if !slices.Equal(progress, []float64{0, 50, 100}) {
		t.Errorf("progress = %v", progress)
	}
	if !slices.Equal(samplings, []string{"hello"}) || !slices.Equal(elicitations, []string{"who?"}) {
		t.Errorf("samplings %q, elicitations %q", samplings, elicitations)
	}
	if n := len(b.started()); n != 1 {
		t.Errorf("%d processes started, want 1", n)
	}
}

// Closing the client sends DELETE, which ends the session and its process.
func TestDeleteStopsProcess(t *testing.T) {
	b := newBridge(t, Options{})
	cs := b.connect(t, nil)
	sid := cs.ID()
	pids := b.started()
	if len(pids) != 1 || !alive(pids[0]) {
		t.Fatalf("processes %v", pids)
	}
	if err := cs.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	// The DELETE returns once the process has been closed (and reaped).
	if alive(pids[0]) {
		t.Errorf("process %d still alive after DELETE", pids[0])
	}
	if n := b.Sessions(); n != 0 {
		t.Errorf("%d sessions after DELETE", n)
	}
	resp := post(t, b.url, sid, `{"jsonrpc":"2.0","id":9,"method":"tools/list","params":{}}`, nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("POST after DELETE: %s, want 404", resp.Status)
	}
	resp = do(t, http.MethodDelete, b.url, sid, "", nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("second DELETE: %s, want 404", resp.Status)
	}
}

func TestUnknownSession(t *testing.T) {
	b := newBridge(t, Options{})
	b.connect(t, nil) // a real session exists, too
	for _, method := range []string{http.MethodPost, http.MethodGet, http.MethodDelete} {
		body := ""
		if method == http.MethodPost {
			body = `{"jsonrpc":"2.0","id":1,"method":"ping"}`
		}
		resp := do(t, method, b.url, "no-such-session", body, nil)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s with an unknown session: %s, want 404", method, resp.Status)
		}
	}
	if n := len(b.started()); n != 1 {
		t.Errorf("%d processes started, want 1", n)
	}
}

func TestConcurrentSessions(t *testing.T) {
	b := newBridge(t, Options{})
	recs := []*recorder{new(recorder), new(recorder)}
	sessions := []*mcp.ClientSession{b.connect(t, recs[0]), b.connect(t, recs[1])}
	if sessions[0].ID() == sessions[1].ID() {
		t.Fatal("two clients share a session ID")
	}
	pids := b.started()
	if len(pids) != 2 || pids[0] == pids[1] || !alive(pids[0]) || !alive(pids[1]) {
		t.Fatalf("processes %v, want two live ones", pids)
	}
	// Only the first client asks for log messages.
	if err := sessions[0].SetLoggingLevel(context.Background(), &mcp.SetLoggingLevelParams{Level: "info"}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i, cs := range sessions {
		wg.Go(func() {
			for j := range 3 {
				msg := fmt.Sprintf("client%d-%d", i, j)
				if got, _ := callText(t, cs, "test_elicitation", map[string]any{"message": msg}); !strings.Contains(got, "user-of-"+msg) {
					t.Errorf("client %d: elicitation = %q", i, got)
				}
				if got, _ := callText(t, cs, "test_sampling", map[string]any{"prompt": msg}); got != "LLM response: echo "+msg {
					t.Errorf("client %d: sampling = %q", i, got)
				}
			}
			callText(t, cs, "test_tool_with_logging", nil)
		})
	}
	wg.Wait()
	eventually(t, "client 0's logs", func() bool { l, _, _, _ := recs[0].snapshot(); return len(l) >= 3 })
	time.Sleep(200 * time.Millisecond) // would client 1 get any?
	for i, r := range recs {
		logs, _, samplings, elicitations := r.snapshot()
		want := []string{fmt.Sprintf("client%d-0", i), fmt.Sprintf("client%d-1", i), fmt.Sprintf("client%d-2", i)}
		if !slices.Equal(samplings, want) || !slices.Equal(elicitations, want) {
			t.Errorf("client %d saw samplings %q and elicitations %q, want %q", i, samplings, elicitations, want)
		}
		if i == 1 && len(logs) > 0 {
			t.Errorf("client 1 got client 0's log messages: %q", logs)
		}
	}
}

// A process that dies fails the requests it had not answered and ends the
// session: later requests get 404.
func TestProcessCrash(t *testing.T) {
	b := newBridge(t, Options{})
	var pid int
	var once sync.Once
	client := mcp.NewClient(&mcp.Implementation{Name: "crash-test", Version: "1"}, &mcp.ClientOptions{
		ProgressNotificationHandler: func(context.Context, *mcp.ProgressNotificationClientRequest) {
			// The server is in the middle of tools/call: kill it.
			once.Do(func() { syscall.Kill(pid, syscall.SIGKILL) })
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: b.url, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	sid := cs.ID()
	pid = b.started()[0]

	_, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "test_tool_with_progress", Meta: mcp.Meta{"progressToken": 1}})
	t.Logf("in-flight call: %v", err)
	if err == nil || !strings.Contains(err.Error(), "the MCP server process ended") {
		t.Errorf("in-flight call: err = %v, want the bridge's 'process ended' error", err)
	}
	eventually(t, "the session to end", func() bool { return b.Sessions() == 0 })
	eventually(t, "the process to be reaped", func() bool { return !alive(pid) })
	resp := post(t, b.url, sid, `{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{}}`, nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("POST after the crash: %s, want 404", resp.Status)
	}
	if _, err := cs.ListTools(ctx, nil); err == nil {
		t.Error("tools/list after the crash succeeded")
	} else {
		t.Logf("tools/list after the crash: %v", err)
	}
}

func TestIdleTimeout(t *testing.T) {
	b := newBridge(t, Options{IdleTimeout: 300 * time.Millisecond})
	cs := b.connect(t, nil)
	pid := b.started()[0]
	// Requests keep the session alive...
	for range 4 {
		time.Sleep(150 * time.Millisecond)
		if err := cs.Ping(context.Background(), nil); err != nil {
			t.Fatalf("ping: %v", err)
		}
	}
	// ...and it ends without them.
	eventually(t, "the idle session to end", func() bool { return b.Sessions() == 0 })
	// Closing the process takes a moment (stdin EOF, then signals).
	eventually(t, "the idle session's process to exit", func() bool { return !alive(pid) })
	resp := post(t, b.url, cs.ID(), `{"jsonrpc":"2.0","id":7,"method":"ping"}`, nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("POST after idle timeout: %s, want 404", resp.Status)
	}
}

func TestMaxSessionsAndClose(t *testing.T) {
	b := newBridge(t, Options{MaxSessions: 1})
	b.connect(t, nil)
	resp := post(t, b.url, "", initializeBody, nil)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("initialize beyond MaxSessions: %s, want 503", resp.Status)
	}
	pids := b.started()
	b.Handler.Close()
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("process %d alive after Close", pid)
		}
	}
	resp = post(t, b.url, "", initializeBody, nil)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("initialize after Close: %s, want 503", resp.Status)
	}
}

// A process that cannot start fails initialize with 502.
func TestStartFailure(t *testing.T) {
	h := New(Options{Start: func(ctx context.Context) (Process, error) {
		return CommandProcess(exec.CommandContext(ctx, "/nonexistent/mcp-server"))
	}})
	srv := httptest.NewServer(h)
	defer srv.Close()
	defer h.Close()
	resp := post(t, srv.URL, "", initializeBody, nil)
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("initialize: %s, want 502", resp.Status)
	}
}

// A Start that finds no room (ErrNoRoom, wrapped) fails initialize with
// 503, Retry-After and a JSON-RPC error that says only ErrNoRoom's message;
// any other failure is 502 with a fixed message, the cause in the log.
func TestStartNoRoom(t *testing.T) {
	secret := "host figures: 1Gi of 1Gi"
	for _, tc := range []struct {
		err    error
		status int
	}{
		{fmt.Errorf("%w: %s", ErrNoRoom, secret), http.StatusServiceUnavailable},
		{errors.New(secret), http.StatusBadGateway},
	} {
		h := New(Options{Start: func(ctx context.Context) (Process, error) { return nil, tc.err }})
		srv := httptest.NewServer(h)
		resp := post(t, srv.URL, "", initializeBody, nil)
		body, _ := io.ReadAll(resp.Body)
		srv.Close()
		h.Close()
		if resp.StatusCode != tc.status || strings.Contains(string(body), secret) {
			t.Errorf("Start failing with %q: %s %s; want %d without the cause", tc.err, resp.Status, body, tc.status)
		}
		if tc.status == http.StatusServiceUnavailable && (resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), `"jsonrpc":"2.0"`)) {
			t.Errorf("no room: Retry-After %q, body %s; want a JSON-RPC error with Retry-After", resp.Header.Get("Retry-After"), body)
		}
	}
}

// TestSessionCapsAndInitTimeout: a client that floods initialize is held
// to its share of sessions (429, JSON-RPC error, Retry-After), the bridge
// to its total (503, the same), and sessions that never get past
// initialize end after InitTimeout, while a session in use lives on.
func TestSessionCapsAndInitTimeout(t *testing.T) {
	// Clients are told apart by a header here (by address by default).
	// InitTimeout leaves room for the two initializes below (each starts a
	// process) on a loaded machine: the session made first must still be
	// there when the bridge is checked full.
	b := newBridge(t, Options{MaxSessions: 3, MaxSessionsPerClient: 2, InitTimeout: 3 * time.Second,
		ClientKey: func(r *http.Request) string { return r.Header.Get("X-Client") }})
	cs := b.connect(t, nil) // initialize, then notifications/initialized
	if resp := post(t, b.url, "", initializeBody, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("second initialize of the client: %s", resp.Status)
	}
	refused := func(resp *http.Response, status int) {
		t.Helper()
		body, _ := io.ReadAll(resp.Body)
		var msg struct {
			ID    any `json:"id"`
			Error struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if resp.StatusCode != status || resp.Header.Get("Retry-After") == "" || json.Unmarshal(body, &msg) != nil || msg.Error.Message == "" {
			t.Fatalf("initialize beyond a cap: %s, Retry-After %q, body %s; want %d with a JSON-RPC error", resp.Status, resp.Header.Get("Retry-After"), body, status)
		}
	}
	refused(post(t, b.url, "", initializeBody, nil), http.StatusTooManyRequests)

	// Another client (another key) gets the last session; then the bridge is full.
	other := map[string]string{"X-Client": "other"}
	if resp := post(t, b.url, "", initializeBody, other); resp.StatusCode != http.StatusOK {
		t.Fatalf("initialize of another client: %s", resp.Status)
	}
	refused(post(t, b.url, "", initializeBody, other), http.StatusServiceUnavailable)

	// The two sessions that stopped after initialize end; the one in use stays.
	eventually(t, "the sessions that never got past initialize to end", func() bool { return b.Sessions() == 1 })
	if err := cs.Ping(context.Background(), nil); err != nil {
		t.Fatalf("ping in the established session: %v", err)
	}
	time.Sleep(time.Second)
	if err := cs.Ping(context.Background(), nil); err != nil || b.Sessions() != 1 {
		t.Fatalf("the established session after InitTimeout: %v, %d sessions", err, b.Sessions())
	}
	if resp := post(t, b.url, "", initializeBody, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("initialize after the flood's sessions ended: %s", resp.Status)
	}
	// The client is at its cap again, until the caps are raised.
	refused(post(t, b.url, "", initializeBody, nil), http.StatusTooManyRequests)
	b.SetLimits(4, 3)
	if resp := post(t, b.url, "", initializeBody, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("initialize after SetLimits raised the caps: %s", resp.Status)
	}
}
