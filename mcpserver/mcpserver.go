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
// (the sessionless revision, SEP-2575) are served by a stateless handler.
// Around the SDK, this package checks on every request, in order:
//
//   - the Origin and Host headers (DNS rebinding protection): a browser
//     origin that is not loopback, the public URL or in the allow-list gets
//     403, and allowed origins get CORS headers and preflight answers;
//   - that the pool exists and has MCP enabled (404 otherwise);
//   - the pool's API key, in x-ms-apikey or Authorization: Bearer, unless
//     the pool's mcpAuth is "none" (401 otherwise).
//
// These checks read the pool's current settings and key on every request,
// so rotating a key or turning MCP off takes effect at once, even for
// established MCP sessions. Errors at this layer are JSON-RPC error bodies
// with a null id.
//
// An environment is a pool session whose identifier is the environmentId
// (see tools.go): the data plane sees it under ?identifier=environmentId,
// and the pool's cooldown, limits and isolation apply unchanged.
package mcpserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/berth-dev/berth/internal/bodymem"
	"github.com/berth-dev/berth/internal/httpapi"
	"github.com/berth-dev/berth/pool"
)

// Protocol versions served: the stateful ones through initialize, and the
// stateless 2026-07-28 through server/discover.
var protocolVersions = []string{"2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26"}

// statelessVersion is the first protocol version served without sessions.
const statelessVersion = "2026-07-28"

// JSON-RPC error codes of the HTTP layer (the server error range).
const (
	CodeUnauthorized = -32001
	CodeForbidden    = -32003
	CodeNotFound     = -32004
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
	// PublicURL is how clients reach the public listener; its origin and
	// host are always allowed.
	PublicURL string
	// AllowedOrigins lists browser origins (scheme://host[:port]) allowed
	// besides loopback ones; "*" allows any origin.
	AllowedOrigins []string
	// AppDomain is where the gateway serves apps, NAME.AppDomain (default
	// "localhost"): origins under it are refused even though .localhost
	// is loopback, so that an app's page cannot drive a pool.
	AppDomain string
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
	origins *originPolicy
	bodies  *bodymem.Budget

	mu      sync.Mutex
	servers map[string]*poolServer
	warned  map[string]bool
}

// poolServer is the MCP server of one pool, with its two transports.
type poolServer struct {
	pool      *pool.Pool
	server    *mcp.Server
	stateful  *mcp.StreamableHTTPHandler
	stateless *mcp.StreamableHTTPHandler
}

// New returns the handler; it fails if an allowed origin is malformed.
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
	op, err := newOriginPolicy(o.AllowedOrigins, o.PublicURL, o.AppDomain)
	if err != nil {
		return nil, err
	}
	return &Handler{
		pools: o.Pools, log: o.Logger.With("component", "mcp"), version: o.Version,
		timeout: o.SessionTimeout, origins: op, bodies: o.Bodies,
		servers: map[string]*poolServer{}, warned: map[string]bool{},
	}, nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := poolName(r)
	if !h.origins.check(w, r) {
		return
	}
	if r.Method == http.MethodOptions {
		// A CORS preflight carries no credentials: answer it before the key
		// check (check has set the CORS headers for an allowed origin).
		w.Header().Set("Allow", "GET, POST, DELETE, OPTIONS")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	p, err := h.pools.Get(name)
	if err != nil {
		writeError(w, r, http.StatusNotFound, CodeNotFound, fmt.Sprintf("pool %q not found", name))
		return
	}
	cfg := p.Config()
	if !cfg.MCP {
		writeError(w, r, http.StatusNotFound, CodeNotFound, fmt.Sprintf(
			"the MCP endpoint of pool %q is disabled; enable it with: berth pool update %s --mcp=true", name, name))
		return
	}
	if cfg.MCPAuth == pool.MCPAuthNone {
		h.warnNoAuth(r, name)
	} else {
		key := httpapi.APIKey(r)
		if key == "" {
			unauthorized(w, r, "missing API key: send x-ms-apikey: KEY or Authorization: Bearer KEY (the key is shown by: berth pool credentials "+name+")")
			return
		}
		if !p.Authenticate(key) {
			unauthorized(w, r, fmt.Sprintf("invalid API key for pool %q (was it rotated? berth pool credentials %s shows the current one)", name, name))
			return
		}
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
	if v := r.Header.Get("Mcp-Protocol-Version"); v >= statelessVersion {
		ps.stateless.ServeHTTP(ew, r)
		return
	}
	ps.stateful.ServeHTTP(ew, r)
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
	writeError(e.ResponseWriter, e.r, e.status, code, msg)
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
	opts := func(stateless bool) *mcp.StreamableHTTPOptions {
		return &mcp.StreamableHTTPOptions{
			Stateless:                  stateless,
			Logger:                     sdkLogger(h.log),
			SessionTimeout:             h.timeout,
			MaxRequestBodyBytes:        MaxRequestBytes,
			DisableLocalhostProtection: true, // originPolicy does it, with an allow-list
		}
	}
	ps := &poolServer{
		pool: p, server: srv,
		stateful:  mcp.NewStreamableHTTPHandler(get, opts(false)),
		stateless: mcp.NewStreamableHTTPHandler(get, opts(true)),
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

// warnNoAuth warns once per pool when an unauthenticated MCP endpoint is
// reached on an address beyond loopback.
func (h *Handler) warnNoAuth(r *http.Request, name string) {
	a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok || isLoopbackAddr(a.String()) {
		return
	}
	h.mu.Lock()
	first := !h.warned[name]
	h.warned[name] = true
	h.mu.Unlock()
	if first {
		h.log.Warn("pool's MCP endpoint has no authentication (mcpAuth none) and is served beyond loopback",
			"pool", name, "addr", a.String())
	}
}

func unauthorized(w http.ResponseWriter, r *http.Request, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="berth"`)
	writeError(w, r, http.StatusUnauthorized, CodeUnauthorized, msg)
}

// writeError writes a JSON-RPC error response. Its id is the request's
// when the body is a single request whose id can be read (clients match
// errors to calls by id), else null.
func writeError(w http.ResponseWriter, r *http.Request, status, code int, msg string) {
	type rpcError struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	body, _ := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   rpcError        `json:"error"`
	}{"2.0", requestID(r), rpcError{code, msg}})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// maxPeek bounds how much of a refused request's body is read for its id.
const maxPeek = 1 << 20

// requestID returns the JSON-RPC id of a refused POST, or null.
func requestID(r *http.Request) json.RawMessage {
	null := json.RawMessage("null")
	if r == nil || r.Method != http.MethodPost || r.Body == nil {
		return null
	}
	var msg struct {
		ID json.RawMessage `json:"id"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, maxPeek)).Decode(&msg); err != nil || len(msg.ID) == 0 {
		return null
	}
	if c := msg.ID[0]; c != '"' && c != '-' && (c < '0' || c > '9') {
		return null
	}
	return msg.ID
}
