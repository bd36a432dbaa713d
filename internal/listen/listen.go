// Package listen guards the server's TCP listeners against clients that
// hold connections open or smuggle requests: it caps the connections of a
// listener and of each client address, and spots HTTP/1 requests that carry
// both Content-Length and Transfer-Encoding, whose connection must then
// close (RFC 9112, section 6.3).
package listen

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	"golang.org/x/net/netutil"
)

// Options bound a listener's connections; zero fields mean no limit.
type Options struct {
	// MaxConns bounds the open connections: beyond it, new ones wait in
	// the kernel's backlog until one closes.
	MaxConns int
	// MaxConnsPerClient bounds the open connections of one client IP
	// address: beyond it, a new one is closed at once.
	MaxConnsPerClient int
}

// Limit wraps ln with o's limits. Its connections are *Conn.
func Limit(ln net.Listener, o Options) net.Listener {
	if o.MaxConns > 0 {
		ln = netutil.LimitListener(ln, o.MaxConns)
	}
	return &listener{Listener: ln, perClient: o.MaxConnsPerClient, open: map[string]int{}}
}

type listener struct {
	net.Listener
	perClient int

	mu   sync.Mutex
	open map[string]int // open connections by client IP
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := clientIP(c.RemoteAddr())
		l.mu.Lock()
		if l.perClient > 0 && l.open[ip] >= l.perClient {
			l.mu.Unlock()
			c.Close()
			continue
		}
		l.open[ip]++
		l.mu.Unlock()
		return &Conn{Conn: c, release: func() { l.release(ip) }}, nil
	}
}

func (l *listener) release(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[ip]--; l.open[ip] <= 0 {
		delete(l.open, ip)
	}
}

func clientIP(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// Conn is a connection accepted by a Limit listener. It counts the
// Content-Length header lines that pass through it.
type Conn struct {
	net.Conn
	release   func()
	closeOnce sync.Once

	state   int          // bytes of lengthHeader matched so far (read by one goroutine at a time)
	lengths atomic.Int64 // Content-Length lines read
	counted int64        // of which requests without Transfer-Encoding account for (see Guard)
}

// lengthHeader is what starts a Content-Length header line, lowercased.
const lengthHeader = "\ncontent-length:"

func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.scan(p[:n])
	return n, err
}

// scan counts the Content-Length lines in the next bytes read, across
// reads. Bytes that merely look like one (in a body) count too: that can
// only close a connection that could have stayed open.
func (c *Conn) scan(b []byte) {
	st := c.state
	for len(b) > 0 {
		if st == 0 {
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				break
			}
			b = b[i+1:]
			// Most lines differ at once: look at the first byte before
			// going byte by byte.
			if len(b) > 0 && b[0]|0x20 != 'c' {
				continue
			}
			st = 1
			continue
		}
		if b[0]|0x20 != lengthHeader[st] {
			st = 0 // b[0] is looked at again: it may start a line
			continue
		}
		st++
		b = b[1:]
		if st == len(lengthHeader) {
			c.lengths.Add(1)
			st = 0
		}
	}
	c.state = st
}

// Close closes the connection and gives its place back.
func (c *Conn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(c.release)
	return err
}

type connKey struct{}

// ConnContext is an http.Server's ConnContext that lets Guard find the
// request's connection.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if lc, ok := c.(*Conn); ok {
		return context.WithValue(ctx, connKey{}, lc)
	}
	return ctx
}

// Guard closes the connection after a request that came with both
// Content-Length and Transfer-Encoding (net/http serves it by its
// Transfer-Encoding and drops the Content-Length, so that only the
// connection's bytes tell): a front proxy that went by the Content-Length
// would read the rest of the connection differently (request smuggling).
// The server needs ConnContext and a Limit listener.
func Guard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, ok := r.Context().Value(connKey{}).(*Conn); ok {
			if len(r.TransferEncoding) > 0 {
				// Every request before this one with a Content-Length
				// line is accounted for: one more line was this one's.
				if c.lengths.Load() > c.counted {
					w.Header().Set("Connection", "close")
				}
			} else if _, ok := r.Header["Content-Length"]; ok {
				c.counted++
			}
		}
		h.ServeHTTP(w, r)
	})
}
