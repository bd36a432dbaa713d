package dataplane

import (
	"log/slog"
	"mime"
	"net/http"
	"strings"

	"github.com/berth-dev/berth/internal/httpapi"
	"github.com/berth-dev/berth/internal/outqueue"
)

// maxStreamLine bounds the text of one streamed output line.
const maxStreamLine = 64 << 10

// wantsStream reports whether the client asked for a synchronous
// execution's output as it comes (Accept: application/x-ndjson). Azure's
// clients never do, and get the one JSON answer they always had.
func wantsStream(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		for _, part := range strings.Split(v, ",") {
			if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == "application/x-ndjson" {
				return true
			}
		}
	}
	return false
}

// outputLine is a streamed chunk of output: {"stdout":"…"} or
// {"stderr":"…"}.
type outputLine struct {
	Stdout string `json:"stdout,omitempty"`
	Stderr string `json:"stderr,omitempty"`
}

// stream writes an execution's output to the response as NDJSON lines
// while it runs (through an outqueue, so a slow client does not hold up
// the execution), then the answer. The status line goes out with the
// first line, so an error before any output is still an error response.
type stream struct {
	write   func(v any) error
	q       *outqueue.Queue
	started bool // set by q's goroutine; read after q.Finish
}

// startStream returns nil (whose OnEvent is nil) if the client did not ask
// for a stream.
func startStream(w http.ResponseWriter, r *http.Request) *stream {
	if !wantsStream(r) {
		return nil
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	s := &stream{write: httpapi.NDJSON(w)}
	s.q = outqueue.Start(maxStreamLine, func(name, text string) error {
		s.started = true
		if name == "stderr" {
			return s.write(outputLine{Stderr: text})
		}
		return s.write(outputLine{Stdout: text})
	})
	return s
}

// queue is the execution's output queue (nil if not streaming).
func (s *stream) queue() *outqueue.Queue {
	if s == nil {
		return nil
	}
	return s.q
}

// end waits for the output to be written and returns whether the answer
// must be a line of the stream (output went out: the status is sent).
func (s *stream) end() bool {
	if s == nil {
		return false
	}
	s.q.Finish()
	return s.started
}

// answer ends a synchronous execution's response with v, or with err:
// as one JSON answer if the client did not ask for a stream, as the last
// line of the stream if it did. An error before any output is returned,
// for the handler to answer with its status as usual; after output, the
// status is sent, and the line is the error document.
func (a *api) answer(w http.ResponseWriter, r *http.Request, s *stream, v any, err error) error {
	switch {
	case s.end():
		if err != nil {
			e := httpapi.Classify(err)
			a.log.Log(r.Context(), slog.LevelInfo, "streamed execution failed", "path", r.URL.Path, "code", e.Code, "err", err)
			var b httpapi.Body
			b.Error.Code, b.Error.Message = e.Code, e.Message
			v = b
		}
		_ = s.write(v)
	case err != nil:
		return err
	case s != nil:
		w.WriteHeader(http.StatusOK)
		_ = s.write(v)
	default:
		httpapi.WriteJSON(w, http.StatusOK, v)
	}
	return nil
}
