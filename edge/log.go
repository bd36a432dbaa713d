package edge

import (
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// state is the edge's record of one request: the ResponseWriter the
// handlers get (it notes status and size), the route, the request id and
// the MCP detail a gateway adds. Handlers reach it through the writer they
// were given (stateOf follows Unwrap), so the edge adds no context value
// (and no copy of the request) per request.
type state struct {
	http.ResponseWriter
	edge   *Edge
	route  Route
	id     string
	status int
	wrote  bool
	bytes  int64
	app    AppRequest
}

func (s *state) WriteHeader(code int) {
	if !s.wrote && code >= 200 {
		s.status, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *state) Write(p []byte) (int, error) {
	if !s.wrote {
		s.status, s.wrote = http.StatusOK, true
	}
	n, err := s.ResponseWriter.Write(p)
	s.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection (Flush,
// deadlines).
func (s *state) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// stateOf finds the edge's state under w (nil if the request did not come
// through an edge).
func stateOf(w http.ResponseWriter) *state {
	for range 16 {
		switch x := w.(type) {
		case *state:
			return x
		case interface{ Unwrap() http.ResponseWriter }:
			w = x.Unwrap()
		default:
			return nil
		}
	}
	return nil
}

// RequestID returns the id the edge gave the request whose ResponseWriter
// is w ("" outside an edge).
func RequestID(w http.ResponseWriter) string {
	if s := stateOf(w); s != nil {
		return s.id
	}
	return ""
}

// access logs the request's one access line.
func (s *state) access(r *http.Request, start time.Time) {
	status := s.status
	if !s.wrote {
		status = http.StatusOK
		if s.app.Status != 0 {
			status = s.app.Status
		}
	}
	d := time.Since(start).Round(time.Microsecond)
	if s.route.Kind == KindApp {
		s.edge.access.LogAttrs(r.Context(), slog.LevelInfo, "app request",
			slog.String("app", s.route.Name), slog.String("revision", s.app.Revision),
			slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.String("mcpMethod", s.app.MCPMethod), slog.String("tool", s.app.Tool),
			slog.String("caller", s.app.Caller), slog.Int("status", status), slog.Int64("bytes", s.bytes), slog.Duration("duration", d),
			slog.String("requestId", s.id))
		return
	}
	s.edge.access.LogAttrs(r.Context(), slog.LevelInfo, "request",
		slog.String("method", r.Method), slog.String("path", r.URL.Path),
		slog.Int("status", status), slog.Int64("bytes", s.bytes), slog.Duration("duration", d),
		slog.String("remote", r.RemoteAddr), slog.String("requestId", s.id))
}

// Request ids: a random prefix per process and a counter, so making one
// costs no system call.
var (
	idPrefix = func() string {
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		return hex.EncodeToString(b)
	}()
	idCounter atomic.Uint64
)

func newID() string {
	var buf [32]byte
	b := append(buf[:0], idPrefix...)
	b = append(b, '-')
	b = strconv.AppendUint(b, idCounter.Add(1), 36)
	return string(b)
}
