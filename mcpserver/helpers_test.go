package mcpserver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/berth-dev/berth/edge"
	"github.com/berth-dev/berth/internal/testutil"
	"github.com/berth-dev/berth/mcpserver"
	"github.com/berth-dev/berth/pool"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/sandbox/bwrap"
	"github.com/berth-dev/berth/store"
)

// env is an in-process Berth: a pool manager on a real bwrap runtime and
// the MCP handler on a loopback httptest server.
type env struct {
	mgr *pool.Manager
	srv *httptest.Server
	h   *mcpserver.Handler
}

func newEnv(tb testing.TB, o mcpserver.Options, allowedOrigins ...string) *env {
	tb.Helper()
	testutil.RequireRoot(tb)
	testutil.RequireTool(tb, "bwrap")
	bo := bwrap.Options{}
	bo.Instance = "mcp" + fmt.Sprint(time.Now().UnixNano()%1e6)
	bo.StateDir = tb.TempDir()
	bo.AgentPath = testutil.AgentBinary(tb)
	rt, err := bwrap.New(bo)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = rt.Cleanup(context.Background()) })
	st, err := store.Open(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	e := &env{mgr: pool.NewManager(pool.Options{Store: st, Runtimes: map[string]sandbox.Runtime{"bwrap": rt}})}
	tb.Cleanup(e.mgr.Close)
	o.Pools = e.mgr
	if o.Version == "" {
		o.Version = "test"
	}
	e.h, err = mcpserver.New(o)
	if err != nil {
		tb.Fatal(err)
	}
	// The handler is served behind the front door, as berth up serves it:
	// the edge checks Origin, Host and the pool's key.
	front, err := edge.New(edge.Options{
		AllowedOrigins: allowedOrigins,
		Pools: edge.PoolsFunc(func(name string) (edge.Pool, bool) {
			if p, err := e.mgr.Get(name); err == nil {
				return p, true
			}
			return nil, false
		}),
		PoolMCP:   e.h,
		DataPlane: http.NotFoundHandler(),
	})
	if err != nil {
		tb.Fatal(err)
	}
	e.srv = httptest.NewServer(front)
	tb.Cleanup(e.srv.Close)
	return e
}

// create makes a pool with MCP on and returns its key.
func (e *env) create(tb testing.TB, cfg pool.Config) string {
	tb.Helper()
	cfg.MCP = true
	if cfg.Ready == 0 {
		cfg.Ready = 1
	}
	_, key, err := e.mgr.Create(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return key
}

func (e *env) url(name string) string { return e.srv.URL + "/pools/" + name + "/mcp" }

// keyTransport adds the API key to every request; the key can change
// while a session is open.
type keyTransport struct {
	mu     sync.Mutex
	key    string
	bearer bool
	base   http.RoundTripper
}

func (k *keyTransport) set(key string) {
	k.mu.Lock()
	k.key = key
	k.mu.Unlock()
}

func (k *keyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	k.mu.Lock()
	key, bearer := k.key, k.bearer
	k.mu.Unlock()
	r = r.Clone(r.Context())
	if key != "" {
		if bearer {
			r.Header.Set("Authorization", "Bearer "+key)
		} else {
			r.Header.Set("X-Ms-Apikey", key)
		}
	}
	return k.base.RoundTrip(r)
}

// client is a go-sdk client session with its key transport.
type client struct {
	*mcp.ClientSession
	keys *keyTransport
	tb   testing.TB

	mu       sync.Mutex
	progress []*mcp.ProgressNotificationParams
	firstAt  time.Time // when the first progress notification arrived
}

type connectOpts struct {
	version string // protocol version; "" for the SDK's default
	bearer  bool
	base    http.RoundTripper
}

func connect(tb testing.TB, url, key string, o connectOpts) (*client, error) {
	tb.Helper()
	if o.base == nil {
		o.base = http.DefaultTransport
	}
	c := &client{keys: &keyTransport{key: key, bearer: o.bearer, base: o.base}, tb: tb}
	cl := mcp.NewClient(&mcp.Implementation{Name: "berth-test", Version: "1"}, &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, r *mcp.ProgressNotificationClientRequest) {
			c.mu.Lock()
			if len(c.progress) == 0 {
				c.firstAt = time.Now()
			}
			c.progress = append(c.progress, r.Params)
			c.mu.Unlock()
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := cl.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint: url, HTTPClient: &http.Client{Transport: c.keys}, MaxRetries: -1,
	}, &mcp.ClientSessionOptions{ProtocolVersion: o.version})
	if err != nil {
		return nil, err
	}
	c.ClientSession = cs
	tb.Cleanup(func() { _ = cs.Close() })
	return c, nil
}

func mustConnect(tb testing.TB, url, key string, o connectOpts) *client {
	tb.Helper()
	c, err := connect(tb, url, key, o)
	if err != nil {
		tb.Fatalf("connect %s: %v", url, err)
	}
	return c
}

// call calls a tool and fails the test on a protocol error.
func (c *client) call(name string, args any) *mcp.CallToolResult {
	c.tb.Helper()
	r, err := c.try(name, args, nil)
	if err != nil {
		c.tb.Fatalf("%s: %v", name, err)
	}
	return r
}

func (c *client) try(name string, args any, token any) (*mcp.CallToolResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p := &mcp.CallToolParams{Name: name, Arguments: args}
	if token != nil {
		p.SetProgressToken(token)
	}
	return c.CallTool(ctx, p)
}

// ok calls a tool that must succeed and decodes its structured content.
func (c *client) ok(name string, args any, out any) {
	c.tb.Helper()
	r := c.call(name, args)
	if r.IsError {
		c.tb.Fatalf("%s(%v): tool error: %s", name, args, text(r))
	}
	decode(c.tb, r, out)
}

// fails calls a tool that must fail and returns its error text.
func (c *client) fails(name string, args any) string {
	c.tb.Helper()
	r := c.call(name, args)
	if !r.IsError {
		c.tb.Fatalf("%s(%v): expected a tool error, got %s", name, args, text(r))
	}
	return text(r)
}

func (c *client) launch() string {
	c.tb.Helper()
	var out struct{ EnvironmentID string }
	c.ok(mcpserver.ToolLaunchShell, map[string]any{}, &out)
	if !strings.HasPrefix(out.EnvironmentID, "env-") {
		c.tb.Fatalf("launchShell returned %q", out.EnvironmentID)
	}
	return out.EnvironmentID
}

func (c *client) sh(id, cmd string) mcpserver.ShellOutput {
	c.tb.Helper()
	var out mcpserver.ShellOutput
	c.ok(mcpserver.ToolRunShell, map[string]any{"environmentId": id, "shellCommand": cmd}, &out)
	return out
}

func (c *client) py(id, code string) mcpserver.PythonOutput {
	c.tb.Helper()
	var out mcpserver.PythonOutput
	c.ok(mcpserver.ToolRunPython, map[string]any{"environmentId": id, "pythonCode": code}, &out)
	return out
}

func (c *client) progressSeen() []*mcp.ProgressNotificationParams {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*mcp.ProgressNotificationParams(nil), c.progress...)
}

func text(r *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range r.Content {
		if t, ok := c.(*mcp.TextContent); ok {
			b.WriteString(t.Text)
		}
	}
	return b.String()
}

// decode reads structuredContent into out and checks that the text item
// is the same JSON.
func decode(tb testing.TB, r *mcp.CallToolResult, out any) {
	tb.Helper()
	raw, err := json.Marshal(r.StructuredContent)
	if err != nil {
		tb.Fatal(err)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		tb.Fatalf("structuredContent %s: %v", raw, err)
	}
	var fromText any
	if err := json.Unmarshal([]byte(text(r)), &fromText); err != nil {
		tb.Fatalf("text item is not the JSON of structuredContent: %q", text(r))
	}
}
