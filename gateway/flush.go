package gateway

import (
	"net/http"
	"strings"
	"sync"
	"time"
)

// DefaultFlushWindow is the longest the gateway holds response bytes back
// to send them together (see coalescer).
const DefaultFlushWindow = time.Millisecond

// coalescer stands between httputil.ReverseProxy and the client's response
// and decides when the proxy's flushes really go out.
//
// ReverseProxy flushes an SSE response after every write, and once more, at
// once, for the headers alone. An MCP server answers a POSTed request with
// a short SSE stream (the headers, the response's event, the end of the
// stream) that it finishes within microseconds, so flushing at every step
// costs three writes (and as many wake-ups of the client) where one does.
// The coalescer:
//   - holds the headers until the first bytes of the body, for at most the
//     window;
//   - when end is set (the request was a single JSON-RPC request), holds the
//     event that carries the JSON-RPC response, after which an MCP server
//     ends the stream, until that end, for at most the window: headers,
//     event and end of stream then leave in one write, with no delay;
//   - flushes everything else at once, so notifications, progress and
//     server-to-client requests flow as they come.
type coalescer struct {
	http.ResponseWriter // the client's response
	window              time.Duration
	end                 *responseSpotter // nil: no JSON-RPC response to wait for

	mu       sync.Mutex // serialises the timer's flush with the proxy's writes
	timer    *time.Timer
	armed    bool // a flush is scheduled
	wrote    bool // body bytes were written
	awaitEnd bool // the response's event was written: the stream ends next
	flushed  bool // something was flushed: the headers are out
	closed   bool // the handler is returning: the timer must not touch the response
	flush    func() error
}

func newCoalescer(w http.ResponseWriter, window time.Duration, end *responseSpotter) *coalescer {
	return &coalescer{ResponseWriter: w, window: window, end: end, flush: http.NewResponseController(w).Flush}
}

func (c *coalescer) WriteHeader(code int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ResponseWriter.WriteHeader(code)
}

func (c *coalescer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, err := c.ResponseWriter.Write(p)
	if n > 0 {
		c.wrote = true
		if c.end != nil && !c.awaitEnd && c.end.feed(p[:n]) {
			c.awaitEnd = true
		}
	}
	return n, err
}

// FlushError flushes now, or schedules a flush within the window (see
// coalescer); http.ResponseController, which ReverseProxy flushes through,
// calls it.
func (c *coalescer) FlushError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	if c.wrote && !c.awaitEnd {
		if c.armed {
			c.timer.Stop()
			c.armed = false
		}
		c.flushed = true
		return c.flush()
	}
	if c.armed {
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
	if aborted && (c.armed || c.wrote) || !c.flushed && hasUnannouncedTrailers(c.ResponseWriter.Header()) {
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
