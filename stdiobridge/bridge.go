// Package stdiobridge serves stdio-only MCP servers over the MCP streamable
// HTTP transport.
//
// A [Handler] runs one process of the stdio server per MCP session and
// relays JSON-RPC messages between it and the HTTP client in both
// directions, unchanged: initialize, version negotiation, server→client
// requests (sampling, elicitation, roots/list), notifications and responses
// are all the stdio server's and the client's business. The HTTP side is the
// go-sdk's own per-session [mcp.StreamableServerTransport] and the stdio side
// its newline-delimited [mcp.IOTransport]; the bridge copies messages between
// the two connections and keeps the session table (creation on initialize,
// 404 for unknown or ended sessions, DELETE, idle timeout, process exit).
package stdiobridge

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Options configures a Handler. The zero value of every field but Start
// means its default.
type Options struct {
	// Start starts one process for a new MCP session. Required.
	//
	// ctx carries the values of the HTTP request that initializes the
	// session but not its cancellation: it is cancelled once the session has
	// ended and the process has been closed, so it can be given to
	// exec.CommandContext.
	Start func(ctx context.Context) (Process, error)

	// IdleTimeout ends a session (and its process) when no POST request of
	// the session has been in progress for this long (default 10m; negative:
	// never). An open GET stream does not keep a session alive; clients that
	// only listen should ping.
	IdleTimeout time.Duration

	// InitTimeout ends a session that has not got past initialize (no
	// request of the session after the one that created it, such as
	// notifications/initialized) after this long (default 30s; negative:
	// IdleTimeout applies). Clients that flood initialize cannot keep
	// processes running for IdleTimeout.
	InitTimeout time.Duration

	// MaxSessions bounds the number of sessions (running processes). An
	// initialize beyond it gets 503 Service Unavailable, with Retry-After
	// and a JSON-RPC error body. 0 means no limit.
	MaxSessions int

	// MaxSessionsPerClient bounds the sessions of one client (by ClientKey).
	// An initialize beyond it gets 429 Too Many Requests, with Retry-After
	// and a JSON-RPC error body. 0 means no limit.
	MaxSessionsPerClient int

	// ClientKey names the client of a request for MaxSessionsPerClient
	// (default: the host part of r.RemoteAddr).
	ClientKey func(r *http.Request) string

	// EventStore stores server→client messages so that streams can be
	// resumed with Last-Event-ID and so that messages sent while the client
	// has no GET stream open are delivered when it opens one. Nil gives every
	// session its own mcp.MemoryEventStore (which keeps at most 10 MiB).
	EventStore mcp.EventStore

	// MaxRequestBodyBytes bounds a request body (default
	// mcp.DefaultMaxRequestBodyBytes; negative: no limit). Larger bodies get
	// 413.
	MaxRequestBodyBytes int64

	// DisableLocalhostProtection turns off the DNS rebinding protection of
	// the go-sdk's handler, which rejects (403) a request that arrives on a
	// loopback address with a Host header that is not a loopback name.
	DisableLocalhostProtection bool

	// Logger receives session lifecycle events and relay errors. Nil
	// discards them.
	Logger *slog.Logger
}

const (
	defaultIdleTimeout = 10 * time.Minute
	defaultInitTimeout = 30 * time.Second
	// retryAfter is what a refused initialize is told to wait, in seconds.
	retryAfter = "5"
)

// HTTP header names of the streamable HTTP transport.
const (
	headerSessionID       = "Mcp-Session-Id"
	headerProtocolVersion = "Mcp-Protocol-Version"
)

// firstModernVersion is the first protocol version of SEP-2575 (sessionless
// MCP), which a session-based bridge cannot serve.
const firstModernVersion = "2026-07-28"

// Handler is an http.Handler that serves MCP streamable HTTP and runs one
// stdio server process per session. Create it with New.
type Handler struct {
	o   Options
	log *slog.Logger

	mu        sync.Mutex
	sessions  map[string]*session
	starting  int            // sessions being started, counted against MaxSessions
	perClient map[string]int // sessions (started or starting) by client
	closed    bool

	relays sync.WaitGroup // relay goroutines of all sessions
}

// New returns a Handler. It panics if o.Start is nil.
func New(o Options) *Handler {
	if o.Start == nil {
		panic("stdiobridge: Options.Start is required")
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = defaultIdleTimeout
	}
	if o.InitTimeout == 0 {
		o.InitTimeout = defaultInitTimeout
	}
	if o.MaxRequestBodyBytes == 0 {
		o.MaxRequestBodyBytes = mcp.DefaultMaxRequestBodyBytes
	}
	if o.ClientKey == nil {
		o.ClientKey = remoteHost
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Handler{o: o, log: log, sessions: make(map[string]*session), perClient: make(map[string]int)}
}

// SetLimits changes MaxSessions and MaxSessionsPerClient; sessions beyond
// new, lower limits live on, and new ones wait for room.
func (h *Handler) SetLimits(maxSessions, perClient int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.o.MaxSessions, h.o.MaxSessionsPerClient = maxSessions, perClient
}

// Sessions returns the number of live sessions.
func (h *Handler) Sessions() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.sessions)
}

// Close ends all sessions, stopping their processes, and makes the Handler
// refuse new ones (503). It waits until every process has been closed.
func (h *Handler) Close() error {
	h.mu.Lock()
	h.closed = true
	all := slices.Collect(maps.Values(h.sessions))
	h.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range all {
		wg.Go(func() { s.close("bridge closed") })
	}
	wg.Wait()
	h.relays.Wait()
	return nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Same DNS rebinding protection as mcp.StreamableHTTPHandler.
	if !h.o.DisableLocalhostProtection {
		if local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && local != nil {
			if isLoopback(local.String()) && !isLoopback(r.Host) {
				http.Error(w, fmt.Sprintf("Forbidden: invalid Host header %q", r.Host), http.StatusForbidden)
				return
			}
		}
	}
	if r.Body != nil && h.o.MaxRequestBodyBytes > 0 {
		r.Body = http.MaxBytesReader(w, r.Body, h.o.MaxRequestBodyBytes)
	}
	switch r.Method {
	case http.MethodPost:
		h.servePOST(w, r)
	case http.MethodGet:
		h.serveGET(w, r)
	case http.MethodDelete:
		h.serveDELETE(w, r)
	default:
		w.Header().Set("Allow", "GET, POST, DELETE")
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
	}
}

// lookup finds the session named by the request's Mcp-Session-Id header and
// checks its MCP-Protocol-Version header. It writes the error response and
// returns nil if the request cannot go on.
func (h *Handler) lookup(w http.ResponseWriter, r *http.Request) *session {
	id := r.Header.Get(headerSessionID)
	if id == "" {
		http.Error(w, fmt.Sprintf("Bad Request: %s requires an %s header", r.Method, headerSessionID), http.StatusBadRequest)
		return nil
	}
	h.mu.Lock()
	s := h.sessions[id]
	h.mu.Unlock()
	if s == nil {
		http.Error(w, "session not found", http.StatusNotFound)
		return nil
	}
	if !h.checkVersion(w, r, s.negotiatedVersion()) {
		return nil
	}
	s.establish()
	return s
}

// checkVersion validates the MCP-Protocol-Version header as
// mcp.StreamableHTTPHandler does: a version the go-sdk knows (before
// SEP-2575's sessionless protocol) is accepted, and so is the version the
// stdio server negotiated for this session, whatever it is.
func (h *Handler) checkVersion(w http.ResponseWriter, r *http.Request, negotiated string) bool {
	v := r.Header.Get(headerProtocolVersion)
	if v == "" || v == negotiated {
		return true
	}
	legacy := legacyVersions()
	if slices.Contains(legacy, v) {
		return true
	}
	if v >= firstModernVersion {
		rejectModern(w, jsonrpc.ID{}, v)
		return false
	}
	http.Error(w, fmt.Sprintf("Bad Request: Unsupported protocol version (supported versions: %s)", strings.Join(legacy, ",")), http.StatusBadRequest)
	return false
}

// legacyVersions are the session-based protocol versions the go-sdk knows.
func legacyVersions() []string {
	return slices.DeleteFunc(mcp.SupportedProtocolVersions(), func(v string) bool { return v >= firstModernVersion })
}

// rejectModern answers a request of SEP-2575's sessionless protocol the way a
// stateful mcp.StreamableHTTPHandler does, so that clients fall back to
// initialize.
func rejectModern(w http.ResponseWriter, id jsonrpc.ID, requested string) {
	data, _ := json.Marshal(mcp.UnsupportedProtocolVersionData{Supported: legacyVersions(), Requested: requested})
	writeJSONRPCError(w, http.StatusBadRequest, id, &jsonrpc.Error{
		Code:    mcp.CodeUnsupportedProtocolVersion,
		Message: fmt.Sprintf("protocol version %q is not supported by this server: it needs a session (initialize)", requested),
		Data:    data,
	})
}

func writeJSONRPCError(w http.ResponseWriter, status int, id jsonrpc.ID, e *jsonrpc.Error) {
	data, err := jsonrpc.EncodeMessage(&jsonrpc.Response{ID: id, Error: e})
	if err != nil {
		http.Error(w, e.Message, status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(data)
}

func (h *Handler) serveGET(w http.ResponseWriter, r *http.Request) {
	if _, stream := accepts(r.Header.Values("Accept")); !stream {
		http.Error(w, "Accept must contain 'text/event-stream' for GET requests", http.StatusBadRequest)
		return
	}
	s := h.lookup(w, r)
	if s == nil {
		return
	}
	s.transport.ServeHTTP(w, r)
}

func (h *Handler) serveDELETE(w http.ResponseWriter, r *http.Request) {
	s := h.lookup(w, r)
	if s == nil {
		return
	}
	s.close("deleted by client")
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) servePOST(w http.ResponseWriter, r *http.Request) {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		http.Error(w, "Content-Type must be 'application/json'", http.StatusUnsupportedMediaType)
		return
	}
	if js, stream := accepts(r.Header.Values("Accept")); !js || !stream {
		http.Error(w, "Accept must contain both 'application/json' and 'text/event-stream'", http.StatusBadRequest)
		return
	}
	if r.Header.Get(headerSessionID) != "" {
		s := h.lookup(w, r)
		if s == nil {
			return
		}
		s.startRequest()
		defer s.endRequest()
		s.transport.ServeHTTP(w, r)
		return
	}

	// No session: this must be an initialize request, which starts one.
	body, err := io.ReadAll(r.Body)
	if err != nil {
		if mbe, ok := errors.AsType[*http.MaxBytesError](err); ok {
			http.Error(w, fmt.Sprintf("request body exceeds %d bytes", mbe.Limit), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "failed to read body", http.StatusBadRequest)
		return
	}
	msg, err := jsonrpc.DecodeMessage(body)
	if err != nil {
		// A batch, which cannot hold an initialize, or not JSON-RPC.
		http.Error(w, fmt.Sprintf("Bad Request: without an %s header, the body must be one initialize request", headerSessionID), http.StatusBadRequest)
		return
	}
	req, _ := msg.(*jsonrpc.Request)
	if req != nil && req.IsCall() {
		if v := requestedModernVersion(r, req); v != "" {
			rejectModern(w, req.ID, v)
			return
		}
	}
	if !h.checkVersion(w, r, "") {
		return
	}
	if req == nil || !req.IsCall() || req.Method != "initialize" {
		var id jsonrpc.ID
		if req != nil {
			id = req.ID
		}
		writeJSONRPCError(w, http.StatusBadRequest, id, &jsonrpc.Error{
			Code:    jsonrpc.CodeInvalidRequest,
			Message: fmt.Sprintf("Bad Request: missing %s header (a session starts with initialize)", headerSessionID),
		})
		return
	}

	s, status, err := h.startSession(r, req.ID)
	if err != nil {
		if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
			h.log.Warn("stdiobridge: initialize refused", "client", h.o.ClientKey(r), "error", err)
			w.Header().Set("Retry-After", retryAfter)
			writeJSONRPCError(w, status, req.ID, &jsonrpc.Error{Code: codeServerBusy, Message: err.Error()})
			return
		}
		// The cause (the process's start, the sandbox's agent) is for the
		// log, not for an anonymous client.
		h.log.Error("stdiobridge: starting session", "error", err)
		http.Error(w, "the MCP server's process could not be started", status)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	s.startRequest()
	s.transport.ServeHTTP(w, r)
	s.endRequest()
	if !s.isInitialized() {
		// Rejected by the transport or the server, or the client went away
		// before the answer: nobody can address this session.
		s.close("initialize did not succeed")
	}
}

// requestedModernVersion reports the SEP-2575 protocol version a sessionless
// request asks for (header or _meta), if any.
func requestedModernVersion(r *http.Request, req *jsonrpc.Request) string {
	if v := r.Header.Get(headerProtocolVersion); v >= firstModernVersion {
		return v
	}
	var p struct {
		Meta map[string]any `json:"_meta"`
	}
	if json.Unmarshal(req.Params, &p) == nil {
		if v, _ := p.Meta[mcp.MetaKeyProtocolVersion].(string); v != "" {
			return v
		}
	}
	if req.Method == "server/discover" {
		return firstModernVersion
	}
	return ""
}

var errClosed = errors.New("the MCP server is shutting down")

// ErrNoRoom is what Options.Start returns (wrapped) when there is no room
// for a process now (the host is at capacity, say): the initialize then
// gets 503 with Retry-After and a JSON-RPC error, as beyond MaxSessions,
// instead of 502. Its message is all the client is told.
var ErrNoRoom = errors.New("the MCP server has no room for another session now: try again later")

// codeServerBusy is the JSON-RPC error code of a refused initialize (in the
// range JSON-RPC leaves to servers).
const codeServerBusy = -32000

// startSession starts a process and a session for an initialize request
// with the given ID. On error it returns the HTTP status to answer with.
func (h *Handler) startSession(r *http.Request, initID jsonrpc.ID) (*session, int, error) {
	client := h.o.ClientKey(r)
	h.mu.Lock()
	switch {
	case h.closed:
		h.mu.Unlock()
		return nil, http.StatusServiceUnavailable, errClosed
	case h.o.MaxSessions > 0 && len(h.sessions)+h.starting >= h.o.MaxSessions:
		h.mu.Unlock()
		return nil, http.StatusServiceUnavailable, fmt.Errorf("the MCP server has as many sessions as it may run (%d): try again later", h.o.MaxSessions)
	case h.o.MaxSessionsPerClient > 0 && h.perClient[client] >= h.o.MaxSessionsPerClient:
		h.mu.Unlock()
		return nil, http.StatusTooManyRequests, fmt.Errorf("this client has as many sessions of the MCP server as it may open (%d): end one (DELETE) or try again later", h.o.MaxSessionsPerClient)
	}
	h.starting++
	h.perClient[client]++
	h.mu.Unlock()
	registered := false
	defer func() {
		if !registered {
			h.mu.Lock()
			h.starting--
			h.releaseClientLocked(client)
			h.mu.Unlock()
		}
	}()

	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	proc, err := h.o.Start(ctx)
	if errors.Is(err, ErrNoRoom) {
		cancel()
		h.log.Warn("stdiobridge: no room for a process", "error", err)
		return nil, http.StatusServiceUnavailable, ErrNoRoom
	}
	if err != nil {
		cancel()
		return nil, http.StatusBadGateway, fmt.Errorf("starting MCP server: %w", err)
	}
	id := crand.Text()
	store := h.o.EventStore
	if store == nil {
		store = mcp.NewMemoryEventStore(nil)
	}
	transport := &mcp.StreamableServerTransport{SessionID: id, EventStore: store}
	httpConn, err := transport.Connect(ctx)
	if err != nil {
		proc.Close()
		cancel()
		return nil, http.StatusInternalServerError, fmt.Errorf("connecting HTTP transport: %w", err)
	}
	stdioConn, err := (&mcp.IOTransport{Reader: io.NopCloser(proc.Stdout()), Writer: proc.Stdin()}).Connect(ctx)
	if err != nil {
		httpConn.Close()
		proc.Close()
		cancel()
		return nil, http.StatusInternalServerError, fmt.Errorf("connecting stdio transport: %w", err)
	}
	s := &session{
		h:         h,
		id:        id,
		client:    client,
		log:       h.log.With("session", id),
		ctx:       ctx,
		cancel:    cancel,
		proc:      proc,
		transport: transport,
		httpConn:  httpConn,
		stdioConn: stdioConn,
		initID:    initID,
		pending:   make(map[jsonrpc.ID]struct{}),
		closing:   make(chan struct{}),
		done:      make(chan struct{}),
	}
	if d := s.idleTimeout(); d > 0 {
		s.timer = time.AfterFunc(d, func() { s.close("idle") })
	}

	h.mu.Lock()
	h.starting--
	registered = true
	if h.closed {
		h.releaseClientLocked(client)
		h.mu.Unlock()
		s.close("bridge closed")
		return nil, http.StatusServiceUnavailable, errClosed
	}
	h.sessions[id] = s
	h.relays.Add(2)
	h.mu.Unlock()
	go s.clientToServer()
	go s.serverToClient()
	s.log.Info("stdiobridge: session started")
	return s, 0, nil
}

func (h *Handler) remove(s *session) {
	h.mu.Lock()
	if h.sessions[s.id] == s {
		delete(h.sessions, s.id)
		h.releaseClientLocked(s.client)
	}
	h.mu.Unlock()
}

func (h *Handler) releaseClientLocked(client string) {
	if h.perClient[client]--; h.perClient[client] <= 0 {
		delete(h.perClient, client)
	}
}

// remoteHost is the default ClientKey: the client's IP address.
func remoteHost(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// accepts reports whether Accept header values admit application/json and
// text/event-stream, as mcp.StreamableHTTPHandler judges them.
func accepts(values []string) (jsonOK, streamOK bool) {
	for _, value := range values {
		for raw := range strings.SplitSeq(value, ",") {
			base, _, _ := strings.Cut(strings.TrimSpace(raw), ";")
			switch strings.ToLower(strings.TrimSpace(base)) {
			case "application/json", "application/*":
				jsonOK = true
			case "text/event-stream", "text/*":
				streamOK = true
			case "*/*":
				jsonOK, streamOK = true, true
			}
		}
	}
	return jsonOK, streamOK
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = strings.Trim(addr, "[]")
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
