package gateway

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// countingListener counts the writes made on the connections it accepts.
type countingListener struct {
	net.Listener
	writes atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, n: &l.writes}, nil
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.n.Add(1)
	return c.Conn.Write(p)
}

// proxyThrough serves upstream behind an httputil.ReverseProxy that writes
// through a coalescer with the given window, as the gateway does (with no
// coalescer for a negative window), and returns the proxy's URL and the
// count of its writes to clients.
func proxyThrough(t *testing.T, upstream http.Handler, window time.Duration) (string, *atomic.Int64) {
	t.Helper()
	up := httptest.NewServer(upstream)
	t.Cleanup(up.Close)
	target, _ := url.Parse(up.URL)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.FlushInterval = -1
	rp.BufferPool = &bufferPool{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: ln}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if window < 0 {
			rp.ServeHTTP(w, r)
			return
		}
		cw := newCoalescer(w, window)
		defer cw.finish()
		rp.ServeHTTP(cw, r)
	})}
	go func() { _ = srv.Serve(cl) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String(), &cl.writes
}

func TestCoalescerSendsAShortStreamInOneWrite(t *testing.T) {
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// What an MCP server answers a POST with: an SSE stream of one
		// event, flushed, then the end of the stream.
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n")
		w.(http.Flusher).Flush()
	})
	for _, tc := range []struct {
		name   string
		window time.Duration
		want   func(int64) bool
		says   string
	}{
		// A window far longer than the upstream takes: the headers, the
		// event and the end of the chunked body leave together.
		{"coalesced", time.Minute, func(n int64) bool { return n == 1 }, "one write"},
		// No window: ReverseProxy's own behaviour, a write per flush.
		{"flush every write", -1, func(n int64) bool { return n >= 2 }, "a write per flush"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, writes := proxyThrough(t, upstream, tc.window)
			resp, err := http.Post(u, "application/json", strings.NewReader(`{}`))
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || !strings.Contains(string(body), `"id":1`) {
				t.Fatalf("body %q, %v", body, err)
			}
			if n := writes.Load(); !tc.want(n) {
				t.Fatalf("the response took %d writes, want %s", n, tc.says)
			}
		})
	}
}

func TestCoalescerKeepsAStreamFlowing(t *testing.T) {
	got := make(chan struct{})
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		// The stream goes on only once the client has the first event:
		// if the gateway held it until the end, this would never happen.
		select {
		case <-got:
		case <-time.After(20 * time.Second):
			return
		}
		_, _ = io.WriteString(w, "data: second\n\n")
	})
	u, _ := proxyThrough(t, upstream, time.Millisecond)
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for _, want := range []string{"data: first", "data: second"} {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("waiting for %q: %v", want, err)
		}
		if strings.TrimSpace(line) != want {
			t.Fatalf("got %q, want %q", line, want)
		}
		if want == "data: first" {
			close(got)
		}
		_, _ = br.ReadString('\n') // the blank line ending the event
	}
}

// An upstream that breaks off its response: the client still gets what it
// had sent (status, event), then an error, as without the coalescer.
func TestCoalescerSendsWhatCameBeforeAnAbort(t *testing.T) {
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: last words\n\n")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the connection drops mid-stream
	})
	u, _ := proxyThrough(t, upstream, time.Minute)
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("no response at all: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "data: last words") {
		t.Fatalf("HTTP %d, body %q", resp.StatusCode, body)
	}
	if err == nil {
		t.Fatal("the broken-off stream ended cleanly")
	}
}

// Trailers the upstream did not announce still reach the client.
func TestCoalescerKeepsUnannouncedTrailers(t *testing.T) {
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello")
		w.(http.Flusher).Flush() // chunked, so that trailers can follow
		w.Header().Set(http.TrailerPrefix+"X-Sum", "abc")
	})
	u, _ := proxyThrough(t, upstream, time.Minute)
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if b, _ := io.ReadAll(resp.Body); string(b) != "hello" {
		t.Fatalf("body %q", b)
	}
	if got := resp.Trailer.Get("X-Sum"); got != "abc" {
		t.Fatalf("trailer X-Sum = %q, want abc (trailers %v)", got, resp.Trailer)
	}
}
