// Package httpapi adapts handlers that return errors: Classify maps the
// domain's errors (pool, agent, JSON decoding) to an edge.Error with a
// status and a message a person can act on, and edge.WriteError, the one
// place errors become responses, writes it {"error":{"code","message",
// "requestId"}} while the cause goes to the log with the request id.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/edge"
	"github.com/berth-dev/berth/internal/bodymem"
	"github.com/berth-dev/berth/pool"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/sandbox/admit"
)

// Error is an error with an HTTP status and a public message (the edge's).
type Error = edge.Error

// Errorf builds an *Error.
func Errorf(status int, code, message string) *Error { return edge.Errorf(status, code, message) }

// Body is the JSON error document.
type Body = edge.Body

// HandlerFunc is an HTTP handler that returns an error.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// Handle adapts h, writing its error (if any) as a JSON response.
func Handle(log *slog.Logger, h HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			WriteError(w, r, log, err)
		}
	})
}

// Classify maps an error to its public form.
func Classify(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var ce *pool.ConfigError
	var mbe *http.MaxBytesError
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, pool.ErrPoolUnusable): // before ConfigError, which it wraps
		return &Error{Status: http.StatusServiceUnavailable, Code: "PoolUnusable", Message: err.Error() + " (its administrator can change it with berth pool update)", Cause: err}
	case errors.As(err, &ce):
		return &Error{Status: http.StatusBadRequest, Code: "InvalidSetting", Message: ce.Message, Cause: err}
	case errors.Is(err, bodymem.ErrBusy):
		return &Error{Status: http.StatusServiceUnavailable, Code: "ServerBusy", Message: err.Error(), Cause: err, RetryAfter: bodymem.RetryAfter}
	case errors.As(err, &mbe):
		return &Error{Status: http.StatusRequestEntityTooLarge, Code: "PayloadTooLarge", Message: "the request body is larger than the limit", Cause: err}
	case errors.As(err, &syn), errors.As(err, &typ), errors.Is(err, io.ErrUnexpectedEOF):
		return &Error{Status: http.StatusBadRequest, Code: "MalformedJSON", Message: "the request body is not valid JSON of the expected shape: " + err.Error(), Cause: err}
	case errors.Is(err, pool.ErrPoolNotFound):
		return &Error{Status: http.StatusNotFound, Code: "PoolNotFound", Message: err.Error(), Cause: err}
	case errors.Is(err, pool.ErrSecretNotFound):
		return &Error{Status: http.StatusNotFound, Code: "SecretNotFound", Message: err.Error(), Cause: err}
	case errors.Is(err, pool.ErrPoolExists):
		return &Error{Status: http.StatusConflict, Code: "PoolExists", Message: err.Error(), Cause: err}
	case errors.Is(err, sandbox.ErrNoCapacity):
		return &Error{Status: http.StatusServiceUnavailable, Code: "HostAtCapacity", Message: noCapacityMessage(err), Cause: err, RetryAfter: "10"}
	case errors.Is(err, pool.ErrPoolFull):
		return &Error{Status: http.StatusTooManyRequests, Code: "SessionLimitReached", Message: err.Error(), Cause: err}
	case errors.Is(err, pool.ErrBadIdentifier):
		return &Error{Status: http.StatusBadRequest, Code: "InvalidIdentifier", Message: err.Error(), Cause: err}
	case errors.Is(err, pool.ErrSessionNotFound):
		return &Error{Status: http.StatusNotFound, Code: "SessionNotFound", Message: err.Error(), Cause: err}
	case errors.Is(err, pool.ErrSessionLost):
		return &Error{Status: http.StatusGone, Code: "SessionLost", Message: err.Error(), Cause: err}
	case errors.Is(err, pool.ErrUnauthorized):
		return &Error{Status: http.StatusUnauthorized, Code: "Unauthorized", Message: err.Error(), Cause: err}
	case errors.Is(err, pool.ErrClosed):
		return &Error{Status: http.StatusServiceUnavailable, Code: "ShuttingDown", Message: "the server is shutting down", Cause: err}
	case errors.Is(err, agent.ErrBadRequest):
		return &Error{Status: http.StatusBadRequest, Code: "BadRequest", Message: publicAgentMessage(err), Cause: err}
	case errors.Is(err, agent.ErrDiskFull):
		return &Error{Status: http.StatusInsufficientStorage, Code: "DiskFull", Message: "the session's disk is full (its /mnt/data and /tmp together are at the pool's --disk limit, in bytes or files): delete files and try again", Cause: err}
	case errors.Is(err, agent.ErrNotFound):
		return &Error{Status: http.StatusNotFound, Code: "FileNotFound", Message: publicAgentMessage(err), Cause: err}
	case errors.Is(err, agent.ErrUnavailable):
		return &Error{Status: http.StatusServiceUnavailable, Code: "SandboxUnavailable", Message: "the session's sandbox did not answer; try again", Cause: err}
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Status: http.StatusGatewayTimeout, Code: "Timeout", Message: "the operation did not finish in time", Cause: err}
	case errors.Is(err, context.Canceled):
		return &Error{Status: 499, Code: "Canceled", Message: "the request was canceled", Cause: err}
	}
	return &Error{Status: http.StatusInternalServerError, Code: "InternalError", Message: "internal error; the server log has details", Cause: err}
}

// noCapacityMessage is the admission's own message, without what wraps it
// ("start sandbox: …").
func noCapacityMessage(err error) string {
	var ae *admit.Error
	if errors.As(err, &ae) {
		return ae.Error()
	}
	return sandbox.ErrNoCapacity.Error() + ": try again later"
}

func publicAgentMessage(err error) string {
	var ae *agent.Error
	if errors.As(err, &ae) {
		return ae.Message
	}
	return err.Error()
}

// WriteError writes err as an error response (edge.WriteError, which logs
// its cause with the request id).
func WriteError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	edge.WriteErrorLog(w, r, log, Classify(err))
}

// WriteJSON writes v as a JSON response.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// NDJSON sets up a newline-delimited JSON answer and returns the function
// that writes one value and flushes it to the client. The status is
// written with the first value (or by the caller), so an error before it
// still becomes an error response.
func NDJSON(w http.ResponseWriter) func(v any) error {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	enc := json.NewEncoder(w)
	rc := http.NewResponseController(w)
	return func(v any) error {
		if err := enc.Encode(v); err != nil {
			return err
		}
		_ = rc.Flush()
		return nil
	}
}

// DecodeJSON reads a JSON body of at most limit bytes into v.
func DecodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	return DecodeJSONWithin(w, r, limit, nil, v)
}

// DecodeJSONWithin is DecodeJSON for bodies that may be large: the bytes
// read, which the decoder holds, count against budget until it returns.
func DecodeJSONWithin(w http.ResponseWriter, r *http.Request, limit int64, budget *bodymem.Budget, v any) error {
	if r.Body == nil || r.ContentLength == 0 {
		return Errorf(http.StatusBadRequest, "MissingBody", "the request needs a JSON body")
	}
	br := budget.NewReader(http.MaxBytesReader(w, r.Body, limit))
	defer br.Release()
	if err := json.NewDecoder(br).Decode(v); err != nil {
		return err
	}
	return nil
}
