package edge

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
)

// JSON-RPC error codes of the HTTP layer (the server error range), used in
// the error bodies of MCP routes.
const (
	CodeUnauthorized = -32001
	CodeForbidden    = -32003
	CodeNotFound     = -32004
	// CodeInvalidRequest is JSON-RPC's own, for other refused requests.
	CodeInvalidRequest = -32600
)

// Error is an error with its own HTTP status and public message, as
// Caddy's handler errors are. Only Message (and Code) reach the client; the
// Cause is logged with the request id.
type Error struct {
	Status int
	// Code is the data plane's error code ("PoolNotFound"; default: the
	// status text).
	Code    string
	Message string
	Cause   error
	// RPCCode, if set, makes the body a JSON-RPC error with this code (MCP
	// routes); the edge sets one by status on its MCP routes.
	RPCCode int
	// RetryAfter, if set, is sent as the Retry-After header (seconds).
	RetryAfter string
	// Authenticate, if set, is sent as the WWW-Authenticate header.
	Authenticate string
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return e.Message + ": " + e.Cause.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Cause }

// Errorf builds an *Error.
func Errorf(status int, code, message string) *Error {
	return &Error{Status: status, Code: code, Message: message}
}

// Body is the JSON error document of the data plane (and of apps' routes
// for errors that are not MCP's).
type Body struct {
	Error struct {
		Code      string `json:"code"`
		Message   string `json:"message"`
		RequestID string `json:"requestId,omitempty"`
	} `json:"error"`
}

// WriteError writes err as the response, in the format of its route: a
// JSON-RPC error body when the error has an RPCCode (the edge gives every
// error of an MCP route one), else {"error":{"code","message","requestId"}}
// with the code in x-ms-error-code too.
// An error that is no *Error is a 500 whose cause only the log sees. The
// cause is logged with the request id: on the edge's logger when the
// request came through an edge, else slog.Default().
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	WriteErrorLog(w, r, nil, err)
}

// WriteErrorLog is WriteError with the logger to use outside an edge (the
// control listener).
func WriteErrorLog(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Status: http.StatusInternalServerError, Code: "InternalError", Message: "internal error; the server log has details", Cause: err}
	}
	st := stateOf(w)
	id := ""
	if st != nil {
		id = st.id
		if st.edge != nil {
			log = st.edge.log
		}
		if st.route.Kind == KindPoolMCP && e.RPCCode == 0 {
			c := *e
			c.RPCCode = rpcCode(e.Status)
			e = &c
		}
	} else {
		id = newID()
	}
	if log == nil {
		log = slog.Default()
	}
	level := slog.LevelInfo
	if e.Status >= 500 {
		level = slog.LevelError
	}
	if e.Cause != nil || e.Status >= 500 {
		log.Log(r.Context(), level, "request failed", "method", r.Method, "path", r.URL.Path,
			"status", e.Status, "code", e.Code, "requestId", id, "err", err)
	}
	h := w.Header()
	if e.RetryAfter != "" {
		h.Set("Retry-After", e.RetryAfter)
	}
	if e.Authenticate != "" {
		h.Set("WWW-Authenticate", e.Authenticate)
	}
	h.Set("X-Content-Type-Options", "nosniff")
	if e.RPCCode != 0 {
		writeRPC(w, r, e)
		return
	}
	var b Body
	b.Error.Code, b.Error.Message, b.Error.RequestID = e.Code, e.Message, id
	if b.Error.Code == "" {
		b.Error.Code = http.StatusText(e.Status)
	}
	h.Set("Content-Type", "application/json; charset=utf-8")
	// Azure's data plane names the code in a header too (the REST
	// reference's x-ms-error-code), for clients that read only headers.
	h.Set("x-ms-error-code", b.Error.Code)
	w.WriteHeader(e.Status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(b)
}

// rpcCode is the JSON-RPC code of an MCP route's error by HTTP status.
func rpcCode(status int) int {
	switch status {
	case http.StatusUnauthorized:
		return CodeUnauthorized
	case http.StatusForbidden:
		return CodeForbidden
	case http.StatusNotFound:
		return CodeNotFound
	}
	return CodeInvalidRequest
}

// writeRPC writes a JSON-RPC error response. Its id is the request's when
// the body is a single request whose id can be read (clients match errors
// to calls by id), else null.
func writeRPC(w http.ResponseWriter, r *http.Request, e *Error) {
	type rpcError struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	body, _ := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   rpcError        `json:"error"`
	}{"2.0", rpcID(r), rpcError{e.RPCCode, e.Message}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Status)
	_, _ = w.Write(append(body, '\n'))
}

// maxPeek bounds how much of a refused request's body is read for its id.
const maxPeek = 1 << 20

// rpcID returns the JSON-RPC id of a refused POST, or null.
func rpcID(r *http.Request) json.RawMessage {
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
