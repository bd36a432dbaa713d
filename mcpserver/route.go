package mcpserver

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The three ways the endpoint serves a request, all through the one MCP
// server of the pool (see route):
//   - stateful: Streamable HTTP with sessions (Mcp-Session-Id, SSE, DELETE),
//     for MCP clients, which open a session with initialize;
//   - stateless: a one-request session answered as SSE, for requests without a
//     session from clients that read SSE (and for the sessionless protocol,
//     MCP-Protocol-Version 2026-07-28 and later);
//   - plain: the same, answered as application/json, for requests that do not
//     name text/event-stream in Accept, such as the independent curl POSTs of
//     Azure's tutorials (no Mcp-Session-Id, no MCP-Protocol-Version,
//     initialize without params, tools/call straight after) piped into jq.
const methodInitialize = "initialize"

// peekBytes bounds the start of a request body read to route it: a larger
// body is never an initialize.
const peekBytes = 64 << 10

// defaultInitParams stand in for the params an initialize lacks (Azure's
// tutorials send none): the protocol version Azure's endpoint answers.
var defaultInitParams = json.RawMessage(`{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"unknown","version":""}}`)

// route picks the transport for r, by its headers and, for a POST without
// a session, its method. It may replace r.Body (with the same bytes, or an
// initialize given default params) and r's Accept header.
func (ps *poolServer) route(r *http.Request) *mcp.StreamableHTTPHandler {
	if r.Method != http.MethodPost || r.Header.Get("Mcp-Session-Id") != "" {
		return ps.stateful
	}
	sse := namesSSE(r.Header.Values("Accept"))
	if r.Header.Get("Mcp-Protocol-Version") < statelessVersion && peekMethod(r) == methodInitialize && sse {
		return ps.stateful // a client opening a session
	}
	if sse {
		return ps.stateless
	}
	// plain answers JSON whatever the client accepts; the SDK wants both named.
	r.Header.Set("Accept", "application/json, text/event-stream")
	return ps.plain
}

// namesSSE reports whether an Accept header names text/event-stream itself
// (not only through */*, which curl sends by default).
func namesSSE(values []string) bool {
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			base, _, _ := strings.Cut(part, ";")
			if strings.EqualFold(strings.TrimSpace(base), "text/event-stream") {
				return true
			}
		}
	}
	return false
}

// peekMethod returns the method of a body that is one JSON-RPC message of
// at most peekBytes, or "". An initialize without params gets
// defaultInitParams. r.Body reads the whole body as before, including a
// read error met while peeking.
func peekMethod(r *http.Request) string {
	if r.Body == nil || r.Body == http.NoBody {
		return ""
	}
	head, err := io.ReadAll(io.LimitReader(r.Body, peekBytes+1))
	rest := r.Body
	defer func() {
		tail := io.Reader(rest)
		if err != nil {
			tail = errReader{err}
		}
		r.Body = readCloser{io.MultiReader(bytes.NewReader(head), tail), rest}
	}()
	if err != nil || len(head) > peekBytes {
		return ""
	}
	var msg map[string]json.RawMessage
	var method string
	if json.Unmarshal(head, &msg) != nil || json.Unmarshal(msg["method"], &method) != nil {
		return ""
	}
	if p := bytes.TrimSpace(msg["params"]); method == methodInitialize && (len(p) == 0 || string(p) == "null") {
		msg["params"] = defaultInitParams
		if b, err := json.Marshal(msg); err == nil {
			head = b
		}
	}
	return method
}

type readCloser struct {
	io.Reader
	io.Closer
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
