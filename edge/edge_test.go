package edge_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/berth-dev/berth/edge"
)

// fakeApps is a gateway with two apps: "web" (HTTP) and "tasks" (stdio).
type fakeApps struct{ served []edge.AppRequest }

func (f *fakeApps) AppKind(name string) (stdio, found bool) {
	switch name {
	case "web":
		return false, true
	case "tasks":
		return true, true
	}
	return false, false
}

func (f *fakeApps) ServeApp(w http.ResponseWriter, r *http.Request, a *edge.AppRequest) {
	f.served = append(f.served, *a)
	if a.Name == "fail" {
		edge.WriteError(w, r, &edge.Error{Status: http.StatusServiceUnavailable, Message: "no replica", Cause: errors.New("secret cause"), RetryAfter: "1"})
		return
	}
	a.Revision, a.MCPMethod, a.Tool = "web--1", "tools/call", "echo"
	_, _ = io.WriteString(w, "app "+a.Name+" "+a.Label+" "+a.Path)
}

// fakePool has key "k"; "open" has mcpAuth none, "off" its MCP off.
type fakePool struct{ name string }

func (p fakePool) Authenticate(key string) bool { return key == "k" }
func (p fakePool) MCPEndpoint() (enabled, keyed bool) {
	return p.name != "off", p.name != "open"
}

func pools(name string) (edge.Pool, bool) {
	switch name {
	case "p", "open", "off":
		return fakePool{name}, true
	}
	return nil, false
}

type env struct {
	e    *edge.Edge
	apps *fakeApps
	log  *bytes.Buffer
}

func newEnv(t testing.TB, origins ...string) *env {
	t.Helper()
	v := &env{apps: &fakeApps{}, log: &bytes.Buffer{}}
	var err error
	v.e, err = edge.New(edge.Options{
		AppDomain: "apps.test", AllowedOrigins: origins, PublicURL: "http://berth.test:8080",
		Apps: v.apps, Pools: edge.PoolsFunc(pools),
		PoolMCP: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "mcp")
		}),
		DataPlane: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "/boom") {
				edge.WriteError(w, r, errors.New("internal detail"))
				return
			}
			_, _ = io.WriteString(w, "data")
		}),
		AccessLog: slog.New(slog.NewJSONHandler(v.log, nil)),
		Logger:    slog.New(slog.NewJSONHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// do serves a request as if it arrived on a loopback listener.
func (v *env) do(method, target string, h map[string]string, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}))
	r.Host = "127.0.0.1:8080"
	for k, val := range h {
		if k == "Host" {
			r.Host = val
		} else {
			r.Header.Set(k, val)
		}
	}
	w := httptest.NewRecorder()
	v.e.ServeHTTP(w, r)
	return w
}

func TestRoute(t *testing.T) {
	v := newEnv(t)
	for _, c := range []struct {
		host, path string
		want       edge.Route
	}{
		{"web.apps.test", "/mcp", edge.Route{Kind: edge.KindApp, Name: "web", Path: "/mcp"}},
		{"Web---Blue.APPS.test:8080", "/x", edge.Route{Kind: edge.KindApp, Name: "web", Label: "blue", Path: "/x"}},
		{"a.b.apps.test", "/x", edge.Route{Kind: edge.KindDataPlane}},
		{"apps.test", "/x", edge.Route{Kind: edge.KindDataPlane}},
		{"xapps.test", "/x", edge.Route{Kind: edge.KindDataPlane}},
		{"127.0.0.1:8080", "/apps/web/mcp", edge.Route{Kind: edge.KindApp, Name: "web", Path: "/mcp", ByPath: true}},
		{"127.0.0.1:8080", "/apps/web---v2", edge.Route{Kind: edge.KindApp, Name: "web", Label: "v2", Path: "/", ByPath: true}},
		{"127.0.0.1:8080", "/apps/", edge.Route{Kind: edge.KindDataPlane}},
		{"127.0.0.1:8080", "/pools/p/mcp", edge.Route{Kind: edge.KindPoolMCP, Name: "p"}},
		{"[::1]:8080", "/pools/p/mcp/x", edge.Route{Kind: edge.KindDataPlane, Name: "p"}},
		{"127.0.0.1:8080", "/pools/p/code/execute", edge.Route{Kind: edge.KindDataPlane, Name: "p"}},
		{"127.0.0.1:8080", "/pools//mcp", edge.Route{Kind: edge.KindDataPlane}},
		{"127.0.0.1:8080", "/", edge.Route{Kind: edge.KindDataPlane}},
	} {
		r := httptest.NewRequest("GET", c.path, nil)
		r.Host = c.host
		if got := v.e.Route(r); got != c.want {
			t.Errorf("%s%s: %+v, want %+v", c.host, c.path, got, c.want)
		}
	}
}

// TestPathAppSandboxed: an app reached by path shares the listener's origin
// with the pools, so its pages get an opaque origin (whose requests to a
// pool say "Origin: null", refused in TestOriginAndCORS); an app on its own
// host keeps its origin.
func TestPathAppSandboxed(t *testing.T) {
	v := newEnv(t)
	if w := v.do("GET", "/apps/web/", nil, ""); w.Code != 200 || w.Header().Get("Content-Security-Policy") != edge.PathAppCSP {
		t.Errorf("by path: %d, CSP %q", w.Code, w.Header().Get("Content-Security-Policy"))
	}
	if w := v.do("GET", "/", map[string]string{"Host": "web.apps.test"}, ""); w.Code != 200 || w.Header().Get("Content-Security-Policy") != "" {
		t.Errorf("by host: %d, CSP %q", w.Code, w.Header().Get("Content-Security-Policy"))
	}
	if w := v.do("POST", "/pools/open/mcp", nil, ""); w.Header().Get("Content-Security-Policy") != "" {
		t.Errorf("pool MCP: CSP %q", w.Header().Get("Content-Security-Policy"))
	}
}

func TestOriginAndCORS(t *testing.T) {
	v := newEnv(t, "https://app.example.com")
	for _, c := range []struct {
		name, method, path string
		h                  map[string]string
		status             int
		allowOrigin        string
	}{
		{"pool MCP, no Origin", "POST", "/pools/open/mcp", nil, 200, ""},
		{"pool MCP, loopback origin", "POST", "/pools/open/mcp", map[string]string{"Origin": "http://localhost:5173"}, 200, "http://localhost:5173"},
		{"pool MCP, allowed origin", "POST", "/pools/open/mcp", map[string]string{"Origin": "https://app.example.com"}, 200, "https://app.example.com"},
		{"pool MCP, public URL's origin", "POST", "/pools/open/mcp", map[string]string{"Origin": "http://berth.test:8080"}, 200, "http://berth.test:8080"},
		{"pool MCP, foreign origin", "POST", "/pools/open/mcp", map[string]string{"Origin": "https://evil.example"}, 403, ""},
		{"pool MCP, an app's origin", "POST", "/pools/open/mcp", map[string]string{"Origin": "http://web.apps.test"}, 403, ""},
		{"pool MCP, null origin", "POST", "/pools/open/mcp", map[string]string{"Origin": "null"}, 403, ""},
		{"pool MCP, rebound Host", "POST", "/pools/open/mcp", map[string]string{"Host": "evil.example"}, 403, ""},
		{"pool MCP, preflight before the key", "OPTIONS", "/pools/p/mcp", map[string]string{"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}, 204, "https://app.example.com"},
		{"pool MCP, refused preflight", "OPTIONS", "/pools/p/mcp", map[string]string{"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}, 403, ""},
		{"stdio app, foreign origin", "POST", "/apps/tasks/mcp", map[string]string{"Origin": "https://evil.example"}, 403, ""},
		{"stdio app, rebound Host", "POST", "/apps/tasks/mcp", map[string]string{"Host": "evil.example"}, 403, ""},
		{"stdio app, its own origin", "POST", "/mcp", map[string]string{"Host": "tasks.apps.test", "Origin": "http://tasks.apps.test"}, 200, ""},
		{"HTTP app checks for itself", "POST", "/apps/web/mcp", map[string]string{"Origin": "https://evil.example"}, 200, ""},
		{"data plane has no Origin rule", "GET", "/pools/p/sessions", map[string]string{"Origin": "https://evil.example", "x-ms-apikey": "k"}, 200, ""},
	} {
		w := v.do(c.method, c.path, c.h, "")
		if w.Code != c.status || w.Header().Get("Access-Control-Allow-Origin") != c.allowOrigin {
			t.Errorf("%s: %d %v, want %d with Allow-Origin %q", c.name, w.Code, w.Header(), c.status, c.allowOrigin)
		}
		if c.allowOrigin != "" {
			if e := w.Header().Get("Access-Control-Expose-Headers"); !strings.Contains(e, "Mcp-Session-Id") || !strings.Contains(e, "WWW-Authenticate") {
				t.Errorf("%s: Expose-Headers %q", c.name, e)
			}
		}
		if c.method == "OPTIONS" && c.status == 204 {
			a := w.Header().Get("Access-Control-Allow-Headers")
			for _, h := range []string{"Mcp-Session-Id", "Mcp-Protocol-Version", "Last-Event-Id", "Authorization", "Content-Type"} {
				if !strings.Contains(a, h) {
					t.Errorf("%s: Allow-Headers %q lacks %s", c.name, a, h)
				}
			}
		}
		if c.status == 403 {
			var b struct{ Error struct{ Code int } }
			if json.Unmarshal(w.Body.Bytes(), &b) != nil || b.Error.Code != edge.CodeForbidden {
				t.Errorf("%s: body %s, want a JSON-RPC error %d", c.name, w.Body, edge.CodeForbidden)
			}
		}
	}
}

func TestAuth(t *testing.T) {
	v := newEnv(t)
	for _, c := range []struct {
		name, method, path string
		h                  map[string]string
		status             int
	}{
		{"data plane, no key", "GET", "/pools/p/sessions", nil, 401},
		{"data plane, wrong key", "GET", "/pools/p/sessions", map[string]string{"x-ms-apikey": "no"}, 401},
		{"data plane, x-ms-apikey", "GET", "/pools/p/sessions", map[string]string{"x-ms-apikey": "k"}, 200},
		{"data plane, bearer", "GET", "/pools/p/sessions", map[string]string{"Authorization": "Bearer k"}, 200},
		{"data plane, unknown pool goes on (404 there)", "GET", "/pools/nope/sessions", nil, 200},
		{"data plane, mcpAuth none does not apply", "GET", "/pools/open/sessions", nil, 401},
		{"pool MCP, no key", "POST", "/pools/p/mcp", nil, 401},
		{"pool MCP, wrong bearer", "POST", "/pools/p/mcp", map[string]string{"Authorization": "Bearer no"}, 401},
		{"pool MCP, key", "POST", "/pools/p/mcp", map[string]string{"Authorization": "bearer k"}, 200},
		{"pool MCP, mcpAuth none", "POST", "/pools/open/mcp", nil, 200},
		{"pool MCP, endpoint off goes on (404 there)", "POST", "/pools/off/mcp", nil, 200},
		{"app, no authentication", "POST", "/apps/web/mcp", nil, 200},
	} {
		w := v.do(c.method, c.path, c.h, `{"jsonrpc":"2.0","id":7,"method":"tools/list"}`)
		if w.Code != c.status {
			t.Errorf("%s: %d, want %d (%s)", c.name, w.Code, c.status, w.Body)
		}
	}
}

func TestErrorRendering(t *testing.T) {
	v := newEnv(t)
	type rpc struct {
		JSONRPC string
		ID      json.RawMessage
		Error   struct {
			Code    int
			Message string
		}
	}
	// Data plane: JSON with a request id, the cause never sent.
	w := v.do("GET", "/pools/p/sessions", nil, "")
	var b edge.Body
	if err := json.Unmarshal(w.Body.Bytes(), &b); err != nil || b.Error.Code != "Unauthorized" || b.Error.RequestID == "" ||
		!strings.Contains(b.Error.Message, "x-ms-apikey") || w.Header().Get("Content-Type") != "application/json; charset=utf-8" {
		t.Errorf("data plane 401: %s %v", w.Body, w.Header())
	}
	w = v.do("GET", "/pools/p/boom", map[string]string{"x-ms-apikey": "k"}, "")
	if json.Unmarshal(w.Body.Bytes(), &b) != nil || w.Code != 500 || b.Error.Code != "InternalError" || strings.Contains(w.Body.String(), "internal detail") {
		t.Errorf("data plane 500: %d %s", w.Code, w.Body)
	}
	// Pool MCP: a JSON-RPC error with the request's id and the challenge.
	w = v.do("POST", "/pools/p/mcp", nil, `{"jsonrpc":"2.0","id":7,"method":"tools/list"}`)
	var m rpc
	if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil || m.JSONRPC != "2.0" || string(m.ID) != "7" ||
		m.Error.Code != edge.CodeUnauthorized || w.Header().Get("WWW-Authenticate") == "" {
		t.Errorf("pool MCP 401: %s %v", w.Body, w.Header())
	}
	w = v.do("POST", "/pools/p/mcp", nil, `[{"jsonrpc":"2.0","id":7,"method":"tools/list"}]`)
	if json.Unmarshal(w.Body.Bytes(), &m) != nil || string(m.ID) != "null" {
		t.Errorf("pool MCP 401 of a batch: %s", w.Body)
	}
	// An app's error: its status, Retry-After, no cause.
	w = v.do("GET", "/apps/fail/", nil, "")
	if w.Code != 503 || w.Header().Get("Retry-After") != "1" || strings.Contains(w.Body.String(), "secret") ||
		json.Unmarshal(w.Body.Bytes(), &b) != nil || b.Error.Message != "no replica" {
		t.Errorf("app 503: %d %v %s", w.Code, w.Header(), w.Body)
	}
	// Outside an edge (the control listener): JSON, a request id still.
	rec := httptest.NewRecorder()
	edge.WriteErrorLog(rec, httptest.NewRequest("GET", "/", nil), slog.New(slog.NewTextHandler(io.Discard, nil)),
		&edge.Error{Status: 404, Code: "PoolNotFound", Message: "pool \"x\" not found"})
	if json.Unmarshal(rec.Body.Bytes(), &b) != nil || rec.Code != 404 || b.Error.Code != "PoolNotFound" || b.Error.RequestID == "" {
		t.Errorf("outside an edge: %d %s", rec.Code, rec.Body)
	}
}

// TestAccessLine: every route gets exactly one access line, with a request
// id, and app routes the gateway's MCP detail.
func TestAccessLine(t *testing.T) {
	v := newEnv(t)
	ids := map[string]bool{}
	for _, c := range []struct {
		name, method, path string
		h                  map[string]string
		status             int
		app                bool
	}{
		{"data plane", "GET", "/pools/p/sessions", map[string]string{"x-ms-apikey": "k"}, 200, false},
		{"data plane refused", "GET", "/pools/p/sessions", nil, 401, false},
		{"pool MCP", "POST", "/pools/open/mcp", nil, 200, false},
		{"pool MCP refused", "POST", "/pools/open/mcp", map[string]string{"Origin": "https://evil.example"}, 403, false},
		{"app by path", "POST", "/apps/web/mcp", nil, 200, true},
		{"app by host", "POST", "/mcp", map[string]string{"Host": "web.apps.test"}, 200, true},
		{"app refused", "POST", "/apps/tasks/mcp", map[string]string{"Origin": "https://evil.example"}, 403, true},
		{"app error", "GET", "/apps/fail/", nil, 503, true},
	} {
		v.log.Reset()
		w := v.do(c.method, c.path, c.h, "")
		lines := strings.Split(strings.TrimSpace(v.log.String()), "\n")
		if len(lines) != 1 {
			t.Errorf("%s: %d access lines: %s", c.name, len(lines), v.log)
			continue
		}
		var l struct {
			Msg, Method, Path, RequestID, App, Revision, McpMethod, Tool string
			Status                                                       int
		}
		if err := json.Unmarshal([]byte(lines[0]), &l); err != nil {
			t.Fatal(err)
		}
		if l.RequestID == "" || ids[l.RequestID] || l.Status != c.status || w.Code != c.status || l.Method != c.method || l.Path != c.path {
			t.Errorf("%s: line %s (response %d)", c.name, lines[0], w.Code)
		}
		ids[l.RequestID] = true
		if c.app && (l.Msg != "app request" || l.App == "") || !c.app && l.Msg != "request" {
			t.Errorf("%s: line %s", c.name, lines[0])
		}
		if c.app && c.status == 200 && (l.Revision != "web--1" || l.McpMethod != "tools/call" || l.Tool != "echo") {
			t.Errorf("%s: no MCP detail: %s", c.name, lines[0])
		}
		if c.status >= 400 && !strings.Contains(w.Body.String(), l.RequestID) && c.status != 403 {
			t.Errorf("%s: the error body does not carry the request id %s: %s", c.name, l.RequestID, w.Body)
		}
	}
}

// BenchmarkEdge is the edge's own work per request (routing, state,
// request id) around a no-op app, with its access line written by a JSON
// handler to nowhere ("line") and without it ("noLine").
func BenchmarkEdge(b *testing.B) {
	for _, c := range []struct {
		name string
		h    slog.Handler
	}{{"line", slog.NewJSONHandler(io.Discard, nil)}, {"noLine", slog.DiscardHandler}} {
		b.Run(c.name, func(b *testing.B) {
			e, err := edge.New(edge.Options{
				AppDomain: "apps.test", Apps: nopApps{}, Pools: edge.PoolsFunc(pools),
				PoolMCP: http.NotFoundHandler(), DataPlane: http.NotFoundHandler(),
				AccessLog: slog.New(c.h),
			})
			if err != nil {
				b.Fatal(err)
			}
			r := httptest.NewRequest("POST", "/mcp", nil)
			r.Host = "web.apps.test"
			w := nopWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				e.ServeHTTP(w, r)
			}
		})
	}
}

type nopApps struct{}

func (nopApps) AppKind(string) (bool, bool) { return false, true }
func (nopApps) ServeApp(w http.ResponseWriter, _ *http.Request, a *edge.AppRequest) {
	a.Revision, a.MCPMethod, a.Tool = "web--1", "tools/call", "echo"
	w.WriteHeader(200)
}

type nopWriter struct{ h http.Header }

func (w nopWriter) Header() http.Header         { return w.h }
func (w nopWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w nopWriter) WriteHeader(int)             {}
