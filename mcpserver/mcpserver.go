// Package mcpserver is the platform-managed MCP server of a session pool,
// served at /pools/{pool}/mcp on the public listener when the pool has MCP
// enabled. Like the MCP endpoint of an Azure Container Apps session pool, it
// lets MCP clients (VS Code, Claude, custom agents) launch sandboxed
// environments and run shell commands or Python in them, with no server code
// written by the user.
//
// The transport is Streamable HTTP from the official Go SDK
// (github.com/modelcontextprotocol/go-sdk). Protocol versions 2025-03-26,
// 2025-06-18 and 2025-11-25 use stateful sessions (Mcp-Session-Id, DELETE
// to end one); requests carrying MCP-Protocol-Version 2026-07-28 or later
// (the sessionless revision, SEP-2575) are served by a stateless handler,
// and so is any request without a session but an initialize from a client
// that reads SSE: independent POSTs such as Azure's curl tutorials get one
// answer each, as application/json unless they name text/event-stream in
// Accept (route.go). An initialize without params is one for 2025-03-26.
// The front door (package edge) checks every request's Origin and Host
// (DNS rebinding), answers CORS and checks the pool's key before this
// handler sees it; this handler then checks that the pool exists and has
// MCP enabled (404 otherwise). These checks read the pool's current
// settings and key on every request, so rotating a key or turning MCP off
// takes effect at once, even for established MCP sessions. Errors at this
// layer are JSON-RPC error bodies (edge.WriteError); the handler is only
// ever served behind an edge.
//
// An environment is a pool session whose identifier is the environmentId
// (see tools.go): the data plane sees it under ?identifier=environmentId,
// and the pool's cooldown, limits and isolation apply unchanged.
package mcpserver

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/berth-dev/berth/edge"
	"github.com/berth-dev/berth/internal/bodymem"
	"github.com/berth-dev/berth/pool"
)

// Protocol versions served: the stateful ones through initialize, and the
// stateless 2026-07-28 through server/discover.
var protocolVersions = []string{"2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26"}

// statelessVersion is the first protocol version served without sessions.
const statelessVersion = "2026-07-28"

// JSON-RPC error codes of the HTTP layer (the server error range).
const (
	CodeUnauthorized = edge.CodeUnauthorized
	CodeForbidden    = edge.CodeForbidden
	CodeNotFound     = edge.CodeNotFound
)

// Limits.
const (
	// MaxRequestBytes bounds one request body (an upload is base64 in it).
	MaxRequestBytes = 12 << 20
	// DefaultSessionTimeout closes MCP sessions idle for this long; their
	// environments live on until the pool's cooldown.
	DefaultSessionTimeout = time.Hour
)

// Options configure the handler.
type Options struct {
	Pools  *pool.Manager
	Logger *slog.Logger
	// Version is Berth's version, reported as serverInfo.version.
	Version string
	// Bodies is the server-wide budget of request bodies held in memory
	// (nil: none; each body is still bounded by MaxRequestBytes).
	Bodies *bodymem.Budget
	// SessionTimeout closes idle MCP sessions (default DefaultSessionTimeout).
	SessionTimeout time.Duration
}

// Handler serves the MCP endpoint of every pool. It must be mounted so
// that r.PathValue("pool") names the pool (pattern /pools/{pool}/mcp), or
// at that path.
type Handler struct {
	pools   *pool.Manager
	log     *slog.Logger
	version string
	timeout time.Duration
	bodies  *bodymem.Budget

	mu      sync.Mutex
	servers map[string]*poolServer
}

// poolServer is the MCP server of one pool, with its transports (see
// route.go).
type poolServer struct {
	pool      *pool.Pool
	server    *mcp.Server
	stateful  *mcp.StreamableHTTPHandler
	stateless *mcp.StreamableHTTPHandler
	plain     *mcp.StreamableHTTPHandler
}

// New returns the handler.
func New(o Options) (*Handler, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	if o.SessionTimeout <= 0 {
		o.SessionTimeout = DefaultSessionTimeout
	}
	return &Handler{
		pools: o.Pools, log: o.Logger.With("component", "mcp"), version: o.Version,
		timeout: o.SessionTimeout, bodies: o.Bodies,
		servers: map[string]*poolServer{},
	}, nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := poolName(r)
	p, err := h.pools.Get(name)
	if err != nil {
		edge.WriteError(w, r, &edge.Error{Status: http.StatusNotFound, RPCCode: CodeNotFound, Message: fmt.Sprintf("pool %q not found", name)})
		return
	}
	if !p.Config().MCP {
		edge.WriteError(w, r, &edge.Error{Status: http.StatusNotFound, RPCCode: CodeNotFound, Message: fmt.Sprintf(
			"the MCP endpoint of pool %q is disabled; enable it with: berth pool update %s --mcp=true", name, name)})
		return
	}
	ps := h.serverFor(p)
	ew := &errorWriter{ResponseWriter: w, r: r}
	defer ew.finish()
	if r.Body != nil && r.Body != http.NoBody {
		// The SDK reads a body whole: its bytes count against the
		// server's budget until the request is done.
		br := h.bodies.NewReader(r.Body)
		defer br.Release()
		r.Body, ew.body1 = br, br
	}
	ps.route(r).ServeHTTP(ew, r)
}

// errorWriter turns the SDK's plain-text transport errors (400 for a bad
// header, 404 for an ended session, ...) into JSON-RPC error bodies, which
// clients show; statuses are kept.
type errorWriter struct {
	http.ResponseWriter
	r       *http.Request
	status  int
	capture bool
	body    bytes.Buffer
	body1   *bodymem.Reader // the request's body, if any
}

func (e *errorWriter) WriteHeader(status int) {
	if status >= 400 && e.body1 != nil && e.body1.Busy() {
		// The SDK could not read the body: the server's budget is spent.
		e.Header().Set("Content-Type", "text/plain")
		e.Header().Set("Retry-After", bodymem.RetryAfter)
		status = http.StatusServiceUnavailable
	}
	if status >= 400 && strings.HasPrefix(e.Header().Get("Content-Type"), "text/plain") {
		e.status, e.capture = status, true
		return
	}
	e.ResponseWriter.WriteHeader(status)
}

func (e *errorWriter) Write(p []byte) (int, error) {
	if e.capture {
		if e.body.Len() < 4096 {
			e.body.Write(p)
		}
		return len(p), nil
	}
	return e.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController flush server-sent events.
func (e *errorWriter) Unwrap() http.ResponseWriter { return e.ResponseWriter }

func (e *errorWriter) finish() {
	if !e.capture {
		return
	}
	code := jsonrpc.CodeInvalidRequest
	switch e.status {
	case http.StatusNotFound:
		code = CodeNotFound
	case http.StatusForbidden:
		code = CodeForbidden
	}
	msg := strings.TrimSpace(e.body.String())
	if e.body1 != nil && e.body1.Busy() {
		msg = bodymem.ErrBusy.Error()
	}
	if e.status == http.StatusNotFound && strings.Contains(msg, "session not found") {
		msg = "MCP session not found: it ended (DELETE, idle timeout or server restart); initialize a new session"
	}
	edge.WriteError(e.ResponseWriter, e.r, &edge.Error{Status: e.status, RPCCode: code, Message: msg})
}

// poolName reads the pool from the route, or from the path if the handler
// is mounted without a pattern.
func poolName(r *http.Request) string {
	if n := r.PathValue("pool"); n != "" {
		return n
	}
	rest, _ := strings.CutPrefix(r.URL.Path, "/pools/")
	n, _, _ := strings.Cut(rest, "/")
	return n
}

// serverFor returns the pool's MCP server, building it on first use and
// again if the pool was deleted and created anew under the same name.
func (h *Handler) serverFor(p *pool.Pool) *poolServer {
	name := p.Name()
	h.mu.Lock()
	defer h.mu.Unlock()
	if ps := h.servers[name]; ps != nil && ps.pool == p {
		return ps
	}
	// Drop servers of pools that are gone, closing their sessions.
	for n, ps := range h.servers {
		if cur, err := h.pools.Get(n); err != nil || cur != ps.pool {
			delete(h.servers, n)
			go closeSessions(ps.server)
		}
	}
	srv := newServer(p, h.version, h.log)
	get := func(*http.Request) *mcp.Server { return srv }
	opts := func(stateless, json bool) *mcp.StreamableHTTPOptions {
		return &mcp.StreamableHTTPOptions{
			Stateless:                  stateless,
			JSONResponse:               json,
			Logger:                     sdkLogger(h.log),
			SessionTimeout:             h.timeout,
			MaxRequestBodyBytes:        MaxRequestBytes,
			DisableLocalhostProtection: true, // the edge does it, with an allow-list
		}
	}
	ps := &poolServer{
		pool: p, server: srv,
		stateful:  mcp.NewStreamableHTTPHandler(get, opts(false, false)),
		stateless: mcp.NewStreamableHTTPHandler(get, opts(true, false)),
		plain:     mcp.NewStreamableHTTPHandler(get, opts(true, true)),
	}
	h.servers[name] = ps
	return ps
}

// sdkLogger passes on the SDK's warnings and errors only: it logs every
// connection at info level, which the access log already covers.
func sdkLogger(log *slog.Logger) *slog.Logger {
	return slog.New(minLevel{log.Handler(), slog.LevelWarn})
}

type minLevel struct {
	slog.Handler
	min slog.Level
}

func (m minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= m.min && m.Handler.Enabled(ctx, l)
}

func (m minLevel) WithAttrs(a []slog.Attr) slog.Handler {
	return minLevel{m.Handler.WithAttrs(a), m.min}
}
func (m minLevel) WithGroup(n string) slog.Handler { return minLevel{m.Handler.WithGroup(n), m.min} }

func closeSessions(s *mcp.Server) {
	for ss := range s.Sessions() {
		_ = ss.Close()
	}
}
