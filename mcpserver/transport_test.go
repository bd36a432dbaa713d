package mcpserver_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/berth-dev/berth/mcpserver"
	"github.com/berth-dev/berth/pool"
)

const initBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"%s","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`

type rawResp struct {
	status int
	header http.Header
	body   string
}

// rpcError decodes a JSON-RPC error body (or the first SSE data line).
func (r rawResp) rpcError() (code int, msg string, id string) {
	body := r.body
	if i := strings.Index(body, "data: "); i >= 0 {
		body = strings.SplitN(body[i+6:], "\n", 2)[0]
	}
	var v struct {
		ID    json.RawMessage
		Error *struct {
			Code    int
			Message string
		}
	}
	if json.Unmarshal([]byte(body), &v) != nil || v.Error == nil {
		return 0, "", ""
	}
	return v.Error.Code, v.Error.Message, string(v.ID)
}

func do(t *testing.T, method, url string, hdr map[string]string, body string) rawResp {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json, text/event-stream")
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	if h := hdr["Host"]; h != "" {
		req.Host = h
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return rawResp{resp.StatusCode, resp.Header, string(b)}
}

// TestTransport checks the Streamable HTTP MUSTs on the wire.
func TestTransport(t *testing.T) {
	e := newEnv(t, mcpserver.Options{}, "https://app.example.com")
	key := e.create(t, pool.Config{Name: "p", Ready: 0})
	u := e.url("p")
	auth := map[string]string{"X-Ms-Apikey": key}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{"X-Ms-Apikey": key}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}

	// initialize: a session id, the requested version.
	r := do(t, "POST", u, auth, fmt.Sprintf(initBody, "2025-03-26"))
	sid := r.header.Get("Mcp-Session-Id")
	if r.status != 200 || sid == "" || !strings.Contains(r.body, `"protocolVersion":"2025-03-26"`) {
		t.Fatalf("initialize: %d %v %s", r.status, r.header, r.body)
	}
	s := with(map[string]string{"Mcp-Session-Id": sid, "Mcp-Protocol-Version": "2025-03-26"})
	// A notification gets 202 and no body.
	if r := do(t, "POST", u, s, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); r.status != http.StatusAccepted || r.body != "" {
		t.Fatalf("notification: %d %q", r.status, r.body)
	}
	if r := do(t, "POST", u, s, `{"jsonrpc":"2.0","id":2,"method":"ping"}`); r.status != 200 || !strings.Contains(r.body, `"result":{}`) {
		t.Fatalf("ping: %d %s", r.status, r.body)
	}
	// Accept must name both JSON and SSE.
	if r := do(t, "POST", u, with(map[string]string{"Mcp-Session-Id": sid, "Accept": "application/json"}), `{"jsonrpc":"2.0","id":3,"method":"ping"}`); r.status != http.StatusBadRequest && r.status != http.StatusNotAcceptable {
		t.Fatalf("Accept without text/event-stream: %d", r.status)
	}
	// A version the server does not speak: 400.
	// Transport errors are JSON-RPC error bodies too.
	r = do(t, "POST", u, with(map[string]string{"Mcp-Session-Id": sid, "Mcp-Protocol-Version": "1999-01-01"}), `{"jsonrpc":"2.0","id":4,"method":"ping"}`)
	if code, msg, _ := r.rpcError(); r.status != http.StatusBadRequest || code != jsonrpc.CodeInvalidRequest || !strings.Contains(msg, "2025-03-26") {
		t.Fatalf("bad MCP-Protocol-Version: %d %s", r.status, r.body)
	}
	// An unknown session: 404.
	r = do(t, "POST", u, with(map[string]string{"Mcp-Session-Id": "nope"}), `{"jsonrpc":"2.0","id":5,"method":"ping"}`)
	if code, msg, id := r.rpcError(); r.status != http.StatusNotFound || code != mcpserver.CodeNotFound || id != "5" || !strings.Contains(msg, "initialize a new session") {
		t.Fatalf("unknown session: %d %s", r.status, r.body)
	}
	// Methods other than GET, POST, DELETE: 405 with Allow.
	if r := do(t, "PUT", u, s, "{}"); r.status != http.StatusMethodNotAllowed || r.header.Get("Allow") == "" {
		t.Fatalf("PUT: %d %v", r.status, r.header)
	}
	// DELETE ends the session; then it is 404.
	if r := do(t, "DELETE", u, s, ""); r.status != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", r.status, r.body)
	}
	if r := do(t, "POST", u, s, `{"jsonrpc":"2.0","id":6,"method":"ping"}`); r.status != http.StatusNotFound {
		t.Fatalf("terminated session: %d", r.status)
	}

	// Origin: loopback, the allow-list and no Origin pass; others get 403
	// with a JSON-RPC error body.
	for origin, want := range map[string]int{
		"http://localhost:5173": 200,
		"http://127.0.0.1:9":    200,
		"http://[::1]:9":        200,
		// Apps are served at NAME.localhost (the default app domain):
		// an app's page must not drive a pool.
		"http://evil.localhost:5173": 403,
		"http://tasks.localhost":     403,
		"http://a.b.localhost:80":    403,
		"https://app.example.com":    200,
		"https://evil.example":       403,
		"http://app.example.com":     403, // scheme matters
		"null":                       403,
	} {
		r := do(t, "POST", u, with(map[string]string{"Origin": origin}), fmt.Sprintf(initBody, "2025-11-25"))
		if r.status != want {
			t.Errorf("Origin %s: %d, want %d (%s)", origin, r.status, want, r.body)
			continue
		}
		if want == 403 {
			if code, msg, id := r.rpcError(); code != mcpserver.CodeForbidden || id != "1" || !strings.Contains(msg, "--allow-origin") {
				t.Errorf("Origin %s: body %s", origin, r.body)
			}
		} else if r.header.Get("Access-Control-Allow-Origin") != origin || !strings.Contains(r.header.Get("Access-Control-Expose-Headers"), "Mcp-Session-Id") {
			t.Errorf("Origin %s: CORS headers %v", origin, r.header)
		}
	}
	// DNS rebinding without Origin: a foreign Host on a loopback listener.
	if r := do(t, "POST", u, with(map[string]string{"Host": "evil.example:80"}), fmt.Sprintf(initBody, "2025-11-25")); r.status != 403 {
		t.Fatalf("foreign Host: %d", r.status)
	}
	if r := do(t, "POST", u, with(map[string]string{"Host": "app.example.com"}), fmt.Sprintf(initBody, "2025-11-25")); r.status != 200 {
		t.Fatalf("allowed Host: %d %s", r.status, r.body)
	}
	// A browser's preflight needs no key.
	r = do(t, "OPTIONS", u, map[string]string{"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
		"Access-Control-Request-Headers": "x-ms-apikey, content-type, mcp-protocol-version", "Accept": ""}, "")
	allow := strings.ToLower(r.header.Get("Access-Control-Allow-Headers"))
	if r.status != http.StatusNoContent || r.header.Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
		!strings.Contains(r.header.Get("Access-Control-Allow-Methods"), "DELETE") {
		t.Fatalf("preflight: %d %v", r.status, r.header)
	}
	for _, h := range []string{"mcp-session-id", "mcp-protocol-version", "x-ms-apikey", "authorization", "content-type", "last-event-id"} {
		if !strings.Contains(allow, h) {
			t.Errorf("preflight does not allow %s: %s", h, allow)
		}
	}
	if r := do(t, "OPTIONS", u, map[string]string{"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}, ""); r.status != 403 {
		t.Fatalf("preflight from a foreign origin: %d", r.status)
	}

	// Stateless 2026-07-28: server/discover and a call, no session.
	meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"raw","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}`
	r = do(t, "POST", u, with(map[string]string{"Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "server/discover"}), `{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{`+meta+`}}`)
	if r.status != 200 || r.header.Get("Mcp-Session-Id") != "" || !strings.Contains(r.body, "2026-07-28") {
		t.Fatalf("server/discover: %d %v %s", r.status, r.header, r.body)
	}
	r = do(t, "POST", u, with(map[string]string{"Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list"}), `{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{`+meta+`}}`)
	if r.status != 200 || !strings.Contains(r.body, mcpserver.ToolLaunchShell) {
		t.Fatalf("stateless tools/list: %d %s", r.status, r.body)
	}
}

// TestAuth checks keys, rotation, mcpAuth none and the MCP switch, all
// per request.
func TestAuth(t *testing.T) {
	e := newEnv(t, mcpserver.Options{})
	key := e.create(t, pool.Config{Name: "p"})
	u := e.url("p")

	// No key, a wrong key: 401 with a JSON-RPC error that says what to do.
	r := do(t, "POST", u, nil, fmt.Sprintf(initBody, "2025-11-25"))
	if code, msg, id := r.rpcError(); r.status != 401 || code != mcpserver.CodeUnauthorized || id != "1" ||
		!strings.Contains(msg, "x-ms-apikey") || !strings.Contains(msg, "Authorization: Bearer") || r.header.Get("WWW-Authenticate") == "" {
		t.Fatalf("no key: %d %v %s", r.status, r.header, r.body)
	}
	r = do(t, "POST", u, map[string]string{"Authorization": "Bearer wrong"}, fmt.Sprintf(initBody, "2025-11-25"))
	if code, msg, _ := r.rpcError(); r.status != 401 || code != mcpserver.CodeUnauthorized || !strings.Contains(msg, "rotated") {
		t.Fatalf("wrong key: %d %s", r.status, r.body)
	}
	// A body that is not a request still gets a JSON-RPC error, id null.
	r = do(t, "POST", u, nil, "not json")
	if code, _, id := r.rpcError(); r.status != 401 || code != mcpserver.CodeUnauthorized || id != "null" {
		t.Fatalf("no key, no request: %d %s", r.status, r.body)
	}
	if _, err := connect(t, u, "wrong", connectOpts{version: "2025-11-25"}); err == nil || !strings.Contains(err.Error(), "invalid API key") {
		t.Fatalf("go-sdk client with a wrong key: %v", err)
	}

	// Both header forms work.
	bearer := mustConnect(t, u, key, connectOpts{version: "2025-11-25", bearer: true})
	c := mustConnect(t, u, key, connectOpts{version: "2025-03-26"})
	id := c.launch()
	if r := bearer.sh(id, "echo shared"); r.Stdout != "shared\n" {
		t.Fatalf("bearer: %+v", r)
	}

	// Rotation: the old key fails at once, even inside an open session;
	// the session goes on with the new key.
	newKey, err := e.mgr.RotateKey(t.Context(), "p")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.try(mcpserver.ToolRunShell, map[string]any{"environmentId": id, "shellCommand": "true"}, nil); err == nil || !strings.Contains(err.Error(), "invalid API key") {
		t.Fatalf("old key after rotation: %v", err)
	}
	c.keys.set(newKey)
	if r := c.sh(id, "echo still here"); r.Stdout != "still here\n" {
		t.Fatalf("new key: %+v", r)
	}

	// MCP off: 404 at once with a clear message; on again: back.
	if _, err := e.mgr.Update(t.Context(), "p", func(c *pool.Config) { c.MCP = false }); err != nil {
		t.Fatal(err)
	}
	r = do(t, "POST", u, map[string]string{"X-Ms-Apikey": newKey}, fmt.Sprintf(initBody, "2025-11-25"))
	if code, msg, _ := r.rpcError(); r.status != 404 || code != mcpserver.CodeNotFound || !strings.Contains(msg, "--mcp=true") {
		t.Fatalf("MCP off: %d %s", r.status, r.body)
	}
	if _, err := c.try(mcpserver.ToolRunShell, map[string]any{"environmentId": id, "shellCommand": "true"}, nil); err == nil {
		t.Fatal("an open session still works after MCP was turned off")
	}
	if _, err := e.mgr.Update(t.Context(), "p", func(c *pool.Config) { c.MCP = true }); err != nil {
		t.Fatal(err)
	}
	if r := c.sh(id, "echo back"); r.Stdout != "back\n" {
		t.Fatalf("MCP on again: %+v", r)
	}

	// mcpAuth none: no key needed, a wrong one is ignored.
	if _, err := e.mgr.Update(t.Context(), "p", func(c *pool.Config) { c.MCPAuth = pool.MCPAuthNone }); err != nil {
		t.Fatal(err)
	}
	open := mustConnect(t, u, "", connectOpts{version: "2025-11-25"})
	if r := open.sh(id, "echo open"); r.Stdout != "open\n" {
		t.Fatalf("mcpAuth none: %+v", r)
	}

	// Unknown pool.
	r = do(t, "POST", e.url("nope"), map[string]string{"X-Ms-Apikey": key}, fmt.Sprintf(initBody, "2025-11-25"))
	if code, msg, _ := r.rpcError(); r.status != 404 || code != mcpserver.CodeNotFound || !strings.Contains(msg, `"nope"`) {
		t.Fatalf("unknown pool: %d %s", r.status, r.body)
	}

	// A session of one pool cannot be used on another pool's endpoint.
	key2 := e.create(t, pool.Config{Name: "other", Ready: 0})
	r = do(t, "POST", u, map[string]string{"X-Ms-Apikey": newKey}, fmt.Sprintf(initBody, "2025-11-25"))
	sid := r.header.Get("Mcp-Session-Id")
	r = do(t, "POST", e.url("other"), map[string]string{"X-Ms-Apikey": key2, "Mcp-Session-Id": sid}, `{"jsonrpc":"2.0","id":2,"method":"ping"}`)
	if r.status != http.StatusNotFound {
		t.Fatalf("another pool's session: %d %s", r.status, r.body)
	}
}

// TestProtocolVersions negotiates each version with the go-sdk client and
// runs tools over it.
func TestProtocolVersions(t *testing.T) {
	e := newEnv(t, mcpserver.Options{})
	key := e.create(t, pool.Config{Name: "p", Type: pool.TypePython, Ready: 2})
	for _, v := range []string{"2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28", ""} {
		t.Run("v"+v, func(t *testing.T) {
			c := mustConnect(t, e.url("p"), key, connectOpts{version: v})
			want := v
			if v == "" {
				want = "2026-07-28" // the SDK's newest, which the server speaks
			}
			if got := c.InitializeResult().ProtocolVersion; got != want {
				t.Fatalf("negotiated %s, want %s", got, want)
			}
			stateless := want >= "2026-07-28"
			if (c.ID() == "") != stateless {
				t.Fatalf("session id %q for %s", c.ID(), want)
			}
			id := c.launch()
			if r := c.sh(id, "echo $((6*7))"); r.Stdout != "42\n" {
				t.Fatalf("shell: %+v", r)
			}
			c.py(id, "n = 41")
			if p := c.py(id, "n + 1"); string(p.Result) != "42" {
				t.Fatalf("python: %+v", p)
			}
			if msg := c.fails(mcpserver.ToolRunShell, map[string]any{"environmentId": "env-gone", "shellCommand": "true"}); !strings.Contains(msg, "launchShell") {
				t.Fatalf("unknown environment: %s", msg)
			}
		})
	}
	// An older client's version is answered with the newest stateful one.
	r := do(t, "POST", e.url("p"), map[string]string{"X-Ms-Apikey": key}, fmt.Sprintf(initBody, "2024-11-05"))
	if r.status != 200 || !strings.Contains(r.body, `"protocolVersion":"2025-11-25"`) {
		t.Fatalf("2024-11-05: %d %s", r.status, r.body)
	}
}

// TestArgumentErrors checks that bad arguments are tool errors naming the
// argument.
func TestArgumentErrors(t *testing.T) {
	e := newEnv(t, mcpserver.Options{})
	key := e.create(t, pool.Config{Name: "p"})
	c := mustConnect(t, e.url("p"), key, connectOpts{version: "2025-11-25"})
	id := c.launch()
	for _, tc := range []struct {
		tool string
		args map[string]any
		want string
	}{
		{mcpserver.ToolLaunchShell, map[string]any{"image": "ubuntu"}, `unknown argument "image"`},
		{mcpserver.ToolRunShell, map[string]any{"shellCommand": "ls"}, `"environmentId": it is required`},
		{mcpserver.ToolRunShell, map[string]any{"environmentId": 42, "shellCommand": "ls"}, `"environmentId": it must be a string`},
		{mcpserver.ToolRunShell, map[string]any{"environmentId": id}, `"shellCommand": it is required`},
		{mcpserver.ToolRunShell, map[string]any{"environmentId": id, "command": "ls"}, `unknown argument "command"`},
		{mcpserver.ToolRunShell, map[string]any{"environmentId": id, "shellCommand": "ls", "execCommandAndArgs": []string{"ls"}}, "not both"},
		{mcpserver.ToolRunShell, map[string]any{"environmentId": id, "execCommandAndArgs": "ls -l"}, `"execCommandAndArgs": it must be an array of strings`},
		{mcpserver.ToolRunShell, map[string]any{"environmentId": id, "execCommandAndArgs": []string{}}, `"execCommandAndArgs": it must start with the program`},
		{mcpserver.ToolRunShell, map[string]any{"environmentId": id, "shellCommand": "ls", "timeoutInSeconds": 0}, `"timeoutInSeconds"`},
		{mcpserver.ToolRunShell, map[string]any{"environmentId": id, "shellCommand": "ls", "timeoutInSeconds": 1.5}, `"timeoutInSeconds"`},
		{mcpserver.ToolRunPython, map[string]any{"environmentId": id}, `"pythonCode": it is required`},
		{mcpserver.ToolRunPython, map[string]any{"environmentId": id, "pythonCode": ""}, `"pythonCode": it must not be empty`},
		{mcpserver.ToolUploadFile, map[string]any{"environmentId": id, "path": "../etc/passwd", "content": "x"}, `"path"`},
		{mcpserver.ToolUploadFile, map[string]any{"environmentId": id, "path": "/etc/passwd", "content": "x"}, `"path"`},
		{mcpserver.ToolUploadFile, map[string]any{"environmentId": id, "path": "a"}, `"content": it is required`},
		{mcpserver.ToolUploadFile, map[string]any{"environmentId": id, "path": "a", "content": "%%%", "encoding": "base64"}, `"content": it is not valid base64`},
		{mcpserver.ToolUploadFile, map[string]any{"environmentId": id, "path": "a", "content": "x", "encoding": "latin1"}, `"encoding"`},
		{mcpserver.ToolDownloadFile, map[string]any{"environmentId": id, "path": "/mnt/data"}, `"path": it must name a file`},
		{mcpserver.ToolListFiles, map[string]any{"environmentId": id, "path": "/tmp"}, `"path"`},
		{mcpserver.ToolClose, map[string]any{}, `"environmentId": it is required`},
		{mcpserver.ToolRunShell, map[string]any{"environmentId": "not valid!", "shellCommand": "ls"}, "launchShell"},
	} {
		if msg := c.fails(tc.tool, tc.args); !strings.Contains(msg, tc.want) {
			t.Errorf("%s %v: %q, want it to contain %q", tc.tool, tc.args, msg, tc.want)
		}
	}
	// An unknown tool is a protocol error, not a tool error.
	_, err := c.try("rm-rf", map[string]any{}, nil)
	var werr *jsonrpc.Error
	if !errors.As(err, &werr) {
		t.Fatalf("unknown tool: %v", err)
	}
	// The environment is unharmed.
	if r := c.sh(id, "echo fine"); r.Stdout != "fine\n" {
		t.Fatalf("after errors: %+v", r)
	}
}

// TestExpiry checks that an environment past the pool's cooldown is gone
// and that the error says to launch a new one.
func TestExpiry(t *testing.T) {
	e := newEnv(t, mcpserver.Options{})
	key := e.create(t, pool.Config{Name: "p", CooldownSeconds: 1})
	c := mustConnect(t, e.url("p"), key, connectOpts{version: "2025-11-25"})
	id := c.launch()
	c.sh(id, "echo x > f")
	p := e.mustPool(t, "p")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for {
		if _, err := p.Lookup(id); err != nil {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("environment did not expire")
		case <-time.After(100 * time.Millisecond):
		}
	}
	msg := c.fails(mcpserver.ToolRunShell, map[string]any{"environmentId": id, "shellCommand": "cat f"})
	if !strings.Contains(msg, "launchShell") || !strings.Contains(msg, "idle for more than 1s") {
		t.Fatalf("expired environment: %s", msg)
	}
	id2 := c.launch()
	if r := c.sh(id2, "test -e f; echo $?"); r.Stdout != "1\n" {
		t.Fatalf("a new environment starts empty: %+v", r)
	}
}

// TestFileLimits checks the size limit of files moved through MCP.
func TestFileLimits(t *testing.T) {
	e := newEnv(t, mcpserver.Options{})
	key := e.create(t, pool.Config{Name: "p"})
	c := mustConnect(t, e.url("p"), key, connectOpts{version: "2025-11-25"})
	id := c.launch()
	big := strings.Repeat("a", mcpserver.MaxFileBytes+1)
	if msg := c.fails(mcpserver.ToolUploadFile, map[string]any{"environmentId": id, "path": "big", "content": big}); !strings.Contains(msg, "8 MiB") {
		t.Fatalf("oversized upload: %s", msg)
	}
	c.sh(id, "head -c 9000000 /dev/zero > big")
	if msg := c.fails(mcpserver.ToolDownloadFile, map[string]any{"environmentId": id, "path": "big"}); !strings.Contains(msg, "8 MiB") {
		t.Fatalf("oversized download: %s", msg)
	}
}

// TestSessionless checks requests without a session: answered each on
// its own, as JSON unless the client names SSE in Accept, while an
// initialize from a client that reads SSE still opens a session.
func TestSessionless(t *testing.T) {
	e := newEnv(t, mcpserver.Options{})
	key := e.create(t, pool.Config{Name: "p"})
	u := e.url("p")
	hdr := func(accept string) map[string]string { return map[string]string{"X-Ms-Apikey": key, "Accept": accept} }
	call := func(id int, tool string, args string) string {
		return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q,"arguments":%s}}`, id, tool, args)
	}
	for _, accept := range []string{"", "*/*", "application/json"} {
		// initialize without params: 2025-03-26, no session, one JSON body.
		r := do(t, "POST", u, hdr(accept), `{"jsonrpc":"2.0","id":"1","method":"initialize"}`)
		if r.status != 200 || r.header.Get("Content-Type") != "application/json" || r.header.Get("Mcp-Session-Id") != "" ||
			!strings.Contains(r.body, `"protocolVersion":"2025-03-26"`) || !json.Valid([]byte(r.body)) {
			t.Fatalf("Accept %q: initialize: %d %v %s", accept, r.status, r.header, r.body)
		}
		// With params, too.
		if r := do(t, "POST", u, hdr(accept), fmt.Sprintf(initBody, "2025-06-18")); r.status != 200 || r.header.Get("Mcp-Session-Id") != "" ||
			!strings.Contains(r.body, `"protocolVersion":"2025-06-18"`) {
			t.Fatalf("Accept %q: initialize with params: %d %v %s", accept, r.status, r.header, r.body)
		}
		// tools/list hides the aliases; they launch environments.
		if r := do(t, "POST", u, hdr(accept), `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`); r.status != 200 ||
			!strings.Contains(r.body, mcpserver.ToolLaunchShell) || strings.Contains(r.body, "launchPythonEnvironment") || strings.Contains(r.body, "launchShellEnvironment") {
			t.Fatalf("Accept %q: tools/list: %d %s", accept, r.status, r.body)
		}
		var env string
		for _, alias := range []string{"launchPythonEnvironment", "launchShellEnvironment", mcpserver.ToolLaunchShell} {
			r := do(t, "POST", u, hdr(accept), call(3, alias, "{}"))
			var out struct {
				Result struct {
					StructuredContent struct{ EnvironmentID string }
				}
			}
			if err := json.Unmarshal([]byte(r.body), &out); err != nil || !strings.HasPrefix(out.Result.StructuredContent.EnvironmentID, "env-") {
				t.Fatalf("Accept %q: %s: %d %s", accept, alias, r.status, r.body)
			}
			env = out.Result.StructuredContent.EnvironmentID
		}
		// A large body (past what routing reads) arrives whole.
		big := strings.Repeat("x", 200<<10)
		r = do(t, "POST", u, hdr(accept), call(4, mcpserver.ToolRunShell, fmt.Sprintf(`{"environmentId":%q,"shellCommand":"echo %s | wc -c"}`, env, big)))
		if !strings.Contains(r.body, fmt.Sprintf(`"stdout":"%d\n"`, len(big)+1)) {
			t.Fatalf("Accept %q: large call: %d %.300s", accept, r.status, r.body)
		}
	}
	// A client that names SSE: a tools/call without a session is answered
	// as SSE, and an initialize opens a session.
	both := "application/json, text/event-stream"
	r := do(t, "POST", u, hdr(both), call(5, "launchShellEnvironment", "{}"))
	if r.status != 200 || r.header.Get("Content-Type") != "text/event-stream" || !strings.Contains(r.body, "env-") {
		t.Fatalf("SSE tools/call without a session: %d %v %s", r.status, r.header, r.body)
	}
	if r := do(t, "POST", u, hdr(both), `{"jsonrpc":"2.0","id":"1","method":"initialize"}`); r.status != 200 || r.header.Get("Mcp-Session-Id") == "" {
		t.Fatalf("SSE initialize: %d %v %s", r.status, r.header, r.body)
	}
	// A session's requests keep the session's rules.
	if r := do(t, "POST", u, map[string]string{"X-Ms-Apikey": key, "Accept": "", "Mcp-Session-Id": "nope"}, `{"jsonrpc":"2.0","id":6,"method":"ping"}`); r.status != http.StatusBadRequest && r.status != http.StatusNotFound {
		t.Fatalf("unknown session without Accept: %d %s", r.status, r.body)
	}
}
