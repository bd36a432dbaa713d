// Package gateway serves apps behind the front door (package edge), which
// routes a request to an app by host (NAME.DOMAIN, NAME---LABEL.DOMAIN) or
// by path (/apps/NAME/…, /apps/NAME---LABEL/…). The gateway picks a
// revision by traffic weight and a replica by
// load (starting one if the revision is at zero, holding the request
// meanwhile), and proxies with httputil.ReverseProxy through the replica's
// sandbox agent. It understands MCP: the Mcp-Session-Id it hands to the
// client seals the replica that answered the initialize (package
// sessionseal), so that later requests of the session go there from any
// Berth replica that shares the key, with no shared memory; a session
// whose replica is gone, or an id it did not seal, gets 404 so the client
// re-initializes.
// Streams pass through unbuffered and are never cut by a timeout. Every
// request is counted (Prometheus, with the MCP method and tool as labels),
// and the edge's access line gets the revision, method and tool.
package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-dev/berth/app"
	"github.com/berth-dev/berth/edge"
	"github.com/berth-dev/berth/edge/cors"
	"github.com/berth-dev/berth/gateway/sessionseal"
	"github.com/berth-dev/berth/internal/bodymem"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/stdiobridge"
)

// Options configure a Gateway; the zero value (with Apps) works.
type Options struct {
	Apps *app.Manager
	// MaxBodyBytes bounds a request body (default 16 MiB).
	MaxBodyBytes int64
	// Bodies is the server-wide budget of request bodies held in memory
	// (nil: none). A request that finds it spent gets 503 with Retry-After.
	Bodies *bodymem.Budget
	// BodyTimeout bounds the time to receive a request body (default 1
	// minute).
	BodyTimeout time.Duration
	// ColdStartTimeout bounds how long a request waits for a replica when
	// its revision is at zero (default 2 minutes).
	ColdStartTimeout time.Duration
	// FlushWindow is how long streamed response bytes may wait to be sent
	// together (default DefaultFlushWindow; negative: flush every write at
	// once, as ReverseProxy does).
	FlushWindow time.Duration
	// StdioSessionsPerClient bounds the MCP sessions (processes) one client
	// address may hold open on a stdio app (default: half the app's cap).
	// An app's sessions in total are bounded by its revision's max
	// replicas × concurrency.
	StdioSessionsPerClient int
	// Sessions seals the MCP session ids handed to clients (default: a
	// key of this process's own, which other processes cannot open).
	Sessions *sessionseal.Sealer
	// Remote dials the app's port in a replica that another Berth process
	// runs, by its agent's address (nil: sessions on such replicas get
	// 404); agentaddr.DialPort does for the local drivers.
	Remote func(ctx context.Context, addr string, port int) (net.Conn, error)
	// Registerer receives the gateway's metrics (default: a new registry,
	// see Gateway.Registry).
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Gateway is the app router and proxy.
type Gateway struct {
	o        Options
	proxy    *httputil.ReverseProxy
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec

	tools toolLabels // the tool names each app's metrics label

	remoteMu sync.Mutex
	remotes  map[string]*remoteTransport // to other processes' replicas, by address and port

	mu      sync.Mutex
	bridges map[string]*bridgeEntry // stdio apps, by app---label
	closing sync.WaitGroup          // bridges of deleted apps being closed
}

// bridgeEntry is the stdio bridge of one app (and label). An app deleted
// and created again under its name is another *app.App: its bridge is
// another too.
type bridgeEntry struct {
	app *app.App
	h   *stdiobridge.Handler
}

type ctxKey struct{}

type target struct {
	rt   http.RoundTripper // the replica's
	path string
	body []byte // the request body, read whole for the metrics (nil if not read)
}

// New builds a gateway.
func New(o Options) *Gateway {
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = 16 << 20
	}
	if o.BodyTimeout == 0 {
		o.BodyTimeout = time.Minute
	}
	if o.ColdStartTimeout == 0 {
		o.ColdStartTimeout = 2 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.FlushWindow == 0 {
		o.FlushWindow = DefaultFlushWindow
	}
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
	if o.Sessions == nil {
		o.Sessions = sessionseal.NewRandom()
	}
	g := &Gateway{o: o, bridges: map[string]*bridgeEntry{}, remotes: map[string]*remoteTransport{}}
	g.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "berth_app_requests_total",
		Help: "Requests to apps, by app, revision, MCP method, tool and status code.",
	}, []string{"app", "revision", "method", "tool", "code"})
	g.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "berth_app_request_duration_seconds",
		Help:    "Time to the end of the response (streams included), by app, revision and MCP method.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 14),
	}, []string{"app", "revision", "method"})
	o.Registerer.MustRegister(g.requests, g.duration)
	g.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			t := pr.In.Context().Value(ctxKey{}).(*target)
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = "replica"
			pr.Out.URL.Path = t.path
			pr.Out.URL.RawPath = ""
			pr.SetXForwarded()
			// The Host header stays the client's: the app sees (and can
			// check, against DNS rebinding) what the client asked for.
		},
		Transport: roundTripper(func(req *http.Request) (*http.Response, error) {
			t := req.Context().Value(ctxKey{}).(*target)
			if t.body != nil {
				// The body as bytes the Transport recognises: it then
				// sends headers and body in one write, with a
				// Content-Length even if the client sent it chunked
				// (through ReverseProxy's wrapper it would flush the
				// headers first, in a write of their own).
				req = req.WithContext(req.Context())
				req.TransferEncoding = nil
				req.ContentLength = int64(len(t.body))
				req.Body = http.NoBody
				if len(t.body) > 0 {
					req.Body = io.NopCloser(bytes.NewReader(t.body))
				}
			}
			return t.rt.RoundTrip(req)
		}),
		FlushInterval: -1, // stream every byte as it comes (SSE); see coalescer
		BufferPool:    &bufferPool{},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			if errors.Is(err, errRemoteGone) {
				// A session's replica in another process is gone.
				g.o.Logger.Debug("a session's replica in another process is unreachable", "err", err)
				edge.WriteError(w, r, errNoSession)
				return
			}
			if r.Header.Get("Mcp-Session-Id") != "" {
				// The session's own replica did not answer: its app died
				// (its sessions with it) before the replica is known to
				// have failed. The spec's answer, so the client starts a
				// new session, rather than a 502 it would retry in vain.
				g.o.Logger.Info("a session's replica did not answer; the session is lost", "err", err)
				edge.WriteError(w, r, errNoSession)
				return
			}
			edge.WriteError(w, r, &edge.Error{Status: http.StatusBadGateway, Message: "the app's replica did not answer", Cause: err})
		},
	}
	return g
}

// statusClientClosed is what the metrics and the access log record for a
// request whose client left before it was answered (nginx's 499).
const statusClientClosed = 499

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// AppKind says whether an app exists and whether it is a stdio app (the
// edge applies the DNS rebinding rule for stdio apps, which cannot).
func (g *Gateway) AppKind(name string) (stdio, found bool) {
	a, err := g.o.Apps.Get(name)
	if err != nil {
		return false, false
	}
	return a.Stdio(), true
}

// AppAuth gives the edge an app's authentication, read anew on every
// request (a change applies at once, to every revision).
func (g *Gateway) AppAuth(name string) (edge.AppAuth, bool) {
	a, err := g.o.Apps.Get(name)
	if err != nil {
		return edge.AppAuth{}, false
	}
	ai := a.AuthInfo()
	out := edge.AppAuth{
		Mode: ai.Auth.Mode, OIDCSettings: edge.OIDCSettings{Issuer: ai.Auth.Issuer, Audience: ai.Auth.Audience,
			Scopes: ai.Auth.Scopes, AllowedClients: ai.Auth.AllowedClients},
		ForwardToken: ai.Auth.ForwardToken, MCPPath: ai.MCPPath,
	}
	if out.Mode == edge.AuthAPIKey {
		out.Keys = make([]edge.AppKey, len(ai.Keys))
		for i, k := range ai.Keys {
			out.Keys[i] = edge.AppKey{Name: k.Name, Hash: k.Hash}
		}
	}
	return out, true
}

// InternalApp says whether an app has internal ingress, for the edge.
func (g *Gateway) InternalApp(name string) bool {
	a, err := g.o.Apps.Get(name)
	return err == nil && a.Internal()
}

// AppCORS is an app's CORS policy (nil if it has none), for the edge.
func (g *Gateway) AppCORS(name string) *cors.Policy {
	a, err := g.o.Apps.Get(name)
	if err != nil {
		return nil
	}
	return a.CORS()
}

// ServeApp serves a request the edge routed to an app, and tells the edge
// the revision, JSON-RPC method and tool for the access line.
func (g *Gateway) ServeApp(w http.ResponseWriter, r *http.Request, req *edge.AppRequest) {
	start := time.Now()
	name, label, path := req.Name, req.Label, req.Path
	a, err := g.o.Apps.Get(name)
	if _, inside := edge.CallerFrom(r.Context()); err == nil && a.Internal() && !inside {
		// Internal ingress: to a public listener the app does not exist.
		a, err = nil, fmt.Errorf("%w: %q", app.ErrNotFound, name)
	}
	if err != nil {
		edge.WriteError(w, r, &edge.Error{Status: http.StatusNotFound, Message: err.Error()})
		return
	}
	rec := &recorder{ResponseWriter: w, code: http.StatusOK}
	defer func() {
		ml := methodLabel(req.MCPMethod)
		g.requests.WithLabelValues(name, req.Revision, ml, g.tools.label(name, req.Tool), strconv.Itoa(rec.code)).Inc()
		g.duration.WithLabelValues(name, req.Revision, ml).Observe(time.Since(start).Seconds())
	}()

	if r.ContentLength > g.o.MaxBodyBytes {
		edge.WriteError(rec, r, errTooLarge)
		return
	}
	var body []byte
	request := false // the body is one JSON-RPC request
	if r.Body != nil && r.Method == http.MethodPost {
		var reserved int64
		var ok bool
		body, reserved, ok = g.readRequestBody(w, rec, r)
		defer g.o.Bodies.Release(reserved)
		if !ok {
			return
		}
		req.MCPMethod, req.Tool, request = rpcInfo(body)
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	var out http.ResponseWriter = rec
	if req.MCPMethod == "tools/list" && request {
		// The app's answer declares its tools: their names become labels.
		c := &toolsListCapture{ResponseWriter: rec, budget: g.o.Bodies}
		out = c
		defer func() {
			g.tools.declare(name, c.toolNames())
			c.release()
		}()
	}

	if a.Stdio() {
		req.Revision = "stdio"
		g.serveStdio(rec, out, r, a, label, path)
		return
	}

	g.serveHTTPApp(rec, out, r, a, label, path, body, request, req)
}

// serveHTTPApp proxies a request to a replica of an HTTP app: the one its
// MCP session is bound to, or one picked for a new session; it sets
// req.Revision to the replica's revision. out is rec, or a writer over it;
// request says that body is one JSON-RPC request.
func (g *Gateway) serveHTTPApp(rec *recorder, out http.ResponseWriter, r *http.Request, a *app.App, label, path string, body []byte, request bool, req *edge.AppRequest) {
	sid := r.Header.Get("Mcp-Session-Id")
	t := &target{path: path, body: body}
	var rep *app.Replica // the replica, if this process runs it
	if sid != "" {
		up, err := g.o.Sessions.Open(a.Name(), sid)
		if err != nil {
			// Not an id this gateway's key sealed for this app.
			edge.WriteError(rec, r, errNoSession)
			return
		}
		// The replica sees its own session id, never the sealed one.
		r.Header.Set("Mcp-Session-Id", up.Session)
		var found bool
		if rep, found = a.Session(sid, up.Replica, up.Addr); found {
			defer a.SessionDone(sid)
			t.rt, req.Revision = rep.Transport, rep.Revision()
		} else if t.rt = g.remote(up); t.rt != nil {
			req.Revision = up.Revision
		} else {
			// The session's replica is gone (or never existed): the
			// spec's answer, so the client starts a new session.
			edge.WriteError(rec, r, errNoSession)
			return
		}
	} else {
		ctx, cancel := context.WithTimeout(r.Context(), g.o.ColdStartTimeout)
		var err error
		rep, err = a.Acquire(ctx, label)
		cancel()
		if err != nil {
			if r.Context().Err() != nil {
				rec.code = statusClientClosed // nobody is there to answer
				req.Status = statusClientClosed
				return
			}
			edge.WriteError(rec, r, g.acquireError(a.Name(), err))
			return
		}
		t.rt, req.Revision = rep.Transport, rep.Revision()
	}
	if rep != nil {
		defer rep.Done()
	}
	rec.Header().Set("Berth-Revision", req.Revision)

	if g.o.FlushWindow > 0 {
		var end *responseSpotter
		if request {
			end = &responseSpotter{}
		}
		cw := newCoalescer(out, g.o.FlushWindow, end)
		defer cw.finish()
		out = cw
	}
	rw := &sessionWatcher{ResponseWriter: out, onHeader: func(h http.Header, code int) {
		g.sessionHeader(h, code, r.Method, sid, a, rep)
	}}
	g.proxy.ServeHTTP(rw, r.WithContext(context.WithValue(r.Context(), ctxKey{}, t)))
}

// sessionHeader sees a replica's response headers in an MCP session (sid,
// the client's sealed id) or outside one (sid ""): the replica's session
// id a client sees is always the sealed one; a new session is bound to its
// replica rep (which this process runs), an ended one forgotten.
func (g *Gateway) sessionHeader(h http.Header, code int, method, sid string, a *app.App, rep *app.Replica) {
	upstream := h.Get("Mcp-Session-Id")
	switch {
	case sid == "" && upstream != "" && code < 300:
		sealed := g.o.Sessions.Seal(a.Name(), sessionseal.Upstream{Revision: rep.Revision(), Replica: rep.ID,
			Addr: rep.Addr(), Port: rep.Port(), Session: upstream})
		h.Set("Mcp-Session-Id", sealed)
		a.BindSession(sealed, rep)
		return
	case sid == "" && upstream != "":
		h.Del("Mcp-Session-Id")
		return
	case upstream != "":
		h.Set("Mcp-Session-Id", sid)
	}
	if sid != "" && (method == http.MethodDelete && code < 300 || code == http.StatusNotFound) {
		a.EndSession(sid)
	}
}

// errRemoteGone means a replica in another process could not be reached.
var errRemoteGone = errors.New("the session's replica is gone")

// maxRemotes bounds the transports kept to other processes' replicas.
const maxRemotes = 512

// remote returns the transport to a session's replica in another Berth
// process (nil if the gateway has no Remote or the id no address).
func (g *Gateway) remote(up sessionseal.Upstream) http.RoundTripper {
	if g.o.Remote == nil || up.Addr == "" || up.Port <= 0 {
		return nil
	}
	key := up.Addr + "|" + strconv.Itoa(up.Port)
	g.remoteMu.Lock()
	defer g.remoteMu.Unlock()
	if tr := g.remotes[key]; tr != nil {
		return tr
	}
	if len(g.remotes) >= maxRemotes {
		for k, tr := range g.remotes {
			tr.CloseIdleConnections()
			delete(g.remotes, k)
		}
	}
	addr, port := up.Addr, up.Port
	tr := &remoteTransport{&http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return g.o.Remote(ctx, addr, port)
		},
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
	}}
	g.remotes[key] = tr
	return tr
}

// remoteTransport reaches a session's replica by its address. A request
// it cannot get an answer to means the session is lost, as when a local
// replica is gone (404: the client starts a new session), not a bad
// gateway: the replica may have crashed, or its sandbox be on the way out
// (the address answers, then the connection drops).
type remoteTransport struct{ *http.Transport }

func (t *remoteTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.Transport.RoundTrip(req)
	if err != nil && req.Context().Err() == nil {
		err = fmt.Errorf("%w: %w", errRemoteGone, err)
	}
	return resp, err
}

// readRequestBody reads a POST's body whole, within BodyTimeout, and
// reserves its memory from the server's budget (give reserved back once
// the body is no longer held, also when ok is false). If it cannot, it
// answers the request (rec) and returns ok false.
func (g *Gateway) readRequestBody(w http.ResponseWriter, rec *recorder, r *http.Request) (body []byte, reserved int64, ok bool) {
	// The body must arrive in reasonable time: a client that sends it a
	// byte at a time cannot hold a connection and its buffer open.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(g.o.BodyTimeout))
	body, reserved, err := readBody(rec, r, g.o.MaxBodyBytes, g.o.Bodies)
	_ = rc.SetReadDeadline(time.Time{})
	var tooLarge *http.MaxBytesError
	switch {
	case err == nil:
		return body, reserved, true
	case errors.Is(err, bodymem.ErrBusy):
		edge.WriteError(rec, r, &edge.Error{Status: http.StatusServiceUnavailable, Message: err.Error(), RetryAfter: bodymem.RetryAfter})
	case errors.As(err, &tooLarge):
		edge.WriteError(rec, r, errTooLarge)
	case isTimeout(err):
		edge.WriteError(rec, r, &edge.Error{Status: http.StatusBadRequest, Message: "could not read the request body: it did not arrive within " + g.o.BodyTimeout.String()})
	default:
		// The cause names the server's own address: it stays in the log.
		edge.WriteError(rec, r, &edge.Error{Status: http.StatusBadRequest, Message: "could not read the request body", Cause: err})
	}
	return nil, reserved, false
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// serveStdio serves a request to a stdio app through its bridge; out is
// rec, or a writer over it.
func (g *Gateway) serveStdio(rec *recorder, out http.ResponseWriter, r *http.Request, a *app.App, label, path string) {
	// The edge has applied the DNS rebinding rule a stdio server, which
	// has no HTTP side, cannot apply itself.
	h, err := g.bridge(a, label)
	if err != nil {
		e := *g.acquireError(a.Name(), err)
		e.RPCCode = edge.CodeUnauthorized
		edge.WriteError(rec, r, &e)
		return
	}
	r2 := r.Clone(r.Context())
	r2.URL.Path = path
	h.ServeHTTP(out, r2)
}

// Errors the gateway answers with.
var (
	errTooLarge  = &edge.Error{Status: http.StatusRequestEntityTooLarge, Message: "the request body is larger than the gateway's limit"}
	errNoSession = &edge.Error{Status: http.StatusNotFound, RPCCode: edge.CodeUnauthorized, Message: "session not found: initialize a new session"}
)

// acquireError maps a failure to find a replica to a status and a public
// message; the cause, which may hold the app's internals, goes to the log
// (the edge logs it with the request id).
func (g *Gateway) acquireError(name string, err error) *edge.Error {
	switch {
	case errors.Is(err, app.ErrLabelNotFound):
		return &edge.Error{Status: http.StatusNotFound, Message: err.Error()}
	case errors.Is(err, sandbox.ErrNoCapacity):
		// The figures (the host's memory and disk, what its sandboxes
		// hold) are for the log and the app's owner, not for anonymous
		// clients.
		return &edge.Error{Status: http.StatusServiceUnavailable, Code: "HostAtCapacity", Cause: err, RetryAfter: "10",
			Message: sandbox.ErrNoCapacity.Error() + ": the app cannot start a replica now; try again later"}
	case errors.Is(err, app.ErrStartFailed):
		return &edge.Error{Status: http.StatusServiceUnavailable, Cause: err,
			Message: "the app could not start a replica (its owner sees why with: berth app logs " + name + ")"}
	case errors.Is(err, context.DeadlineExceeded):
		return &edge.Error{Status: http.StatusServiceUnavailable, Message: "no replica of the app became ready within " + g.o.ColdStartTimeout.String()}
	default:
		return &edge.Error{Status: http.StatusServiceUnavailable, Message: "no replica of the app is ready", Cause: err}
	}
}

// bridge returns the stdio bridge of an app (and label): one process per
// MCP session, started in one of the app's replicas. A label the app does
// not have is an error (app.ErrLabelNotFound): the label comes from the
// client, and a bridge made for each made-up one would grow the map, and
// the sessions allowed, without bound.
func (g *Gateway) bridge(a *app.App, label string) (*stdiobridge.Handler, error) {
	d := a.Doc()
	if _, ok := d.Labels[label]; label != "" && !ok {
		return nil, fmt.Errorf("%w: %q on app %s", app.ErrLabelNotFound, label, a.Name())
	}
	key := a.Name() + "---" + label
	maxSessions, perClient := g.stdioLimits(d)
	g.mu.Lock()
	defer g.mu.Unlock()
	if e := g.bridges[key]; e != nil && e.app == a {
		// A new revision may have changed the app's max or concurrency.
		e.h.SetLimits(maxSessions, perClient)
		return e.h, nil
	}
	// A new app, or one deleted and deployed again: the bridges of apps
	// that are gone (their processes went with their replicas) go too.
	for k, e := range g.bridges {
		if cur, err := g.o.Apps.Get(e.app.Name()); err != nil || cur != e.app {
			delete(g.bridges, k)
			g.closing.Go(func() { _ = e.h.Close() })
		}
	}
	h := stdiobridge.New(stdiobridge.Options{
		Start: func(ctx context.Context) (stdiobridge.Process, error) {
			ctx, cancel := context.WithTimeout(ctx, g.o.ColdStartTimeout)
			defer cancel()
			p, err := a.StartStdio(ctx, label)
			if errors.Is(err, sandbox.ErrNoCapacity) {
				// 503 with Retry-After, not 502, and not the figures.
				return nil, fmt.Errorf("%w: %w", stdiobridge.ErrNoRoom, err)
			}
			if err != nil {
				return nil, err
			}
			return p, nil
		},
		// The client's Host is an app name under the apps' domain, not
		// loopback: the edge has routed it and applied the DNS rebinding
		// rule.
		DisableLocalhostProtection: true,
		MaxSessions:                maxSessions,
		MaxSessionsPerClient:       perClient,
		Logger:                     g.o.Logger,
	})
	g.bridges[key] = &bridgeEntry{app: a, h: h}
	return h, nil
}

// stdioLimits are the session caps of a stdio app: its latest revision's
// max replicas × concurrency, and a share of that per client address.
func (g *Gateway) stdioLimits(d app.Doc) (maxSessions, perClient int) {
	const maxStdioSessions = 1 << 20
	if len(d.Revisions) > 0 {
		c := d.Revisions[len(d.Revisions)-1].Config
		// Concurrency has no upper bound: a product that overflowed to a
		// negative cap would mean none at all.
		maxSessions = int(min(int64(c.Max)*int64(min(c.Concurrency, maxStdioSessions)), maxStdioSessions))
	}
	perClient = g.o.StdioSessionsPerClient
	if perClient == 0 {
		perClient = max(1, maxSessions/2)
	}
	return maxSessions, perClient
}

// Close ends every stdio session.
func (g *Gateway) Close() {
	g.mu.Lock()
	for k, e := range g.bridges {
		delete(g.bridges, k)
		g.closing.Go(func() { _ = e.h.Close() })
	}
	g.mu.Unlock()
	g.closing.Wait()
}

// readBody reads a request body whole, up to limit bytes, and reserves the
// memory it takes from budget (give back reserved when the body is no
// longer held, also on error). Memory follows the bytes that arrive, not
// the length a client announces: a client that announces 16 MiB and stalls
// holds 64 KiB at most; and all clients together hold at most the budget:
// beyond it, readBody fails with bodymem.ErrBusy.
func readBody(w http.ResponseWriter, r *http.Request, limit int64, budget *bodymem.Budget) (body []byte, reserved int64, err error) {
	rd := http.MaxBytesReader(w, r.Body, limit)
	size := int64(4 << 10)
	if r.ContentLength >= 0 {
		// One byte more than announced: the read that sees the end
		// needs no larger buffer.
		size = min(r.ContentLength, 64<<10) + 1
	}
	var buf []byte
	for {
		if len(buf) == cap(buf) {
			next := max(min(max(size, 2*int64(cap(buf))), limit+1), int64(cap(buf))+1)
			if !budget.Reserve(next - int64(cap(buf))) {
				return nil, reserved, bodymem.ErrBusy
			}
			reserved = next
			nb := make([]byte, len(buf), next)
			copy(nb, buf)
			buf = nb
		}
		n, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, reserved, nil
		}
		if err != nil {
			return nil, reserved, err
		}
	}
}

// rpcInfo reads the JSON-RPC method and tool name of a request body for
// the metrics (the first of a batch), and whether the body is one request
// (a method and an id), which the app answers with one response.
func rpcInfo(body []byte) (method, tool string, request bool) {
	var msg struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params struct {
			Name string `json:"name"`
		} `json:"params"`
	}
	b := bytes.TrimSpace(body)
	batch := len(b) > 0 && b[0] == '['
	if batch {
		var msgs []json.RawMessage
		if json.Unmarshal(b, &msgs) != nil || len(msgs) == 0 {
			return "", "", false
		}
		b = msgs[0]
	}
	if json.Unmarshal(b, &msg) != nil {
		return "", "", false
	}
	if msg.Method == "tools/call" {
		tool = msg.Params.Name
	}
	request = !batch && msg.Method != "" && msg.ID != nil && string(msg.ID) != "null"
	if len(msg.Method) > 64 {
		msg.Method = msg.Method[:64]
	}
	if len(tool) > 64 {
		tool = tool[:64]
	}
	return msg.Method, tool, request
}

// recorder notes the status and size of a response.
type recorder struct {
	http.ResponseWriter
	code  int
	bytes int64
}

func (r *recorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// sessionWatcher sees the response headers before they are sent.
type sessionWatcher struct {
	http.ResponseWriter
	onHeader func(http.Header, int)
	done     bool
}

func (s *sessionWatcher) WriteHeader(code int) {
	if !s.done {
		s.done = true
		s.onHeader(s.Header(), code)
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *sessionWatcher) Write(p []byte) (int, error) {
	if !s.done {
		s.WriteHeader(http.StatusOK)
	}
	return s.ResponseWriter.Write(p)
}

func (s *sessionWatcher) Unwrap() http.ResponseWriter { return s.ResponseWriter }
