package gateway

import (
	"net/http"
	"strings"
	"sync"
	"time"
)

// DefaultFlushWindow is how long the gateway may hold streamed response
// bytes before it flushes them to the client.
const DefaultFlushWindow = time.Millisecond

// coalescer stands between httputil.ReverseProxy and the client's response
// and turns the proxy's flushes into one flush at most a window later.
//
// ReverseProxy flushes an SSE response after every write, and once more,
// at once, for the headers. An MCP server answers most POSTs with a short
// SSE stream (the headers, one event, the end of the stream) that it
// finishes within microseconds, so flushing at every step costs three
// writes (and as many wake-ups of the client) where one would do. With the
// coalescer, a response that ends within the window leaves in a single
// write when the handler returns; a stream that goes on is flushed no later
// than the window after its bytes arrived, so server-sent events and
// progress notifications still flow as they come.
type coalescer struct {
	http.ResponseWriter // the client's response
	window              time.Duration

	mu      sync.Mutex // serialises the timer's flush with the proxy's writes
	timer   *time.Timer
	armed   bool // a flush is scheduled
	flushed bool // something was flushed: the headers are out
	closed  bool // the handler is returning: the timer must not touch the response
	flush   func() error
}

func newCoalescer(w http.ResponseWriter, window time.Duration) *coalescer {
	return &coalescer{ResponseWriter: w, window: window, flush: http.NewResponseController(w).Flush}
}

func (c *coalescer) WriteHeader(code int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ResponseWriter.WriteHeader(code)
}

func (c *coalescer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ResponseWriter.Write(p)
}

// FlushError schedules a flush within the window; http.ResponseController
// (which ReverseProxy flushes through) calls it.
func (c *coalescer) FlushError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.armed {
		return nil
	}
	c.armed = true
	if c.timer == nil {
		c.timer = time.AfterFunc(c.window, c.flushNow)
	} else {
		c.timer.Reset(c.window)
	}
	return nil
}

func (c *coalescer) flushNow() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.armed && !c.closed {
		c.flushed = true
		_ = c.flush()
	}
	c.armed = false
}

// finish is deferred by the handler that writes through the coalescer.
// ReverseProxy aborts with a panic (http.ErrAbortHandler) when the replica
// breaks off a response; what the replica had sent then goes out before
// the panic goes on.
func (c *coalescer) finish() {
	if p := recover(); p != nil {
		c.close(true)
		panic(p)
	}
	c.close(false)
}

// close stops any scheduled flush: after it, the response belongs to the
// server again, which sends what is left as the handler returns. Two cases
// need a flush now: an aborted handler (the server then drops its buffer
// and closes the connection, so bytes held back would be lost), and
// trailers the upstream did not announce (ReverseProxy flushes before
// adding them to force chunked encoding, without which the server would
// drop them).
func (c *coalescer) close(aborted bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.timer != nil {
		c.timer.Stop()
	}
	if aborted && c.armed || !c.flushed && hasUnannouncedTrailers(c.ResponseWriter.Header()) {
		c.flushed = true
		_ = c.flush()
	}
}

func hasUnannouncedTrailers(h http.Header) bool {
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}

func (c *coalescer) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// bufferPool gives ReverseProxy its 32 KiB copy buffers, which it would
// otherwise allocate (and the GC reclaim) for every response.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }
