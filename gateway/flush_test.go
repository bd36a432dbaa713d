package gateway

import (
	"bufio"
	"bytes"
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
// through a coalescer with the given window, as the gateway does for a
// POSTed JSON-RPC request (with no coalescer for a negative window), and
// returns the proxy's URL and the count of its writes to clients.
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
		cw := newCoalescer(w, window, &responseSpotter{})
		defer cw.finish()
		rp.ServeHTTP(cw, r)
	})}
	go func() { _ = srv.Serve(cl) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String(), &cl.writes
}

const responseEvent = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n"

// sse answers with an SSE stream of the given events, flushing after each.
// At "WAIT" it waits until release is closed; after 20 s it gives up,
// closes gaveUp and goes on.
func sse(release <-chan struct{}, gaveUp chan<- struct{}, events ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, e := range events {
			if e == "WAIT" {
				select {
				case <-release:
				case <-time.After(20 * time.Second):
					close(gaveUp)
				}
				continue
			}
			_, _ = io.WriteString(w, e)
			w.(http.Flusher).Flush()
		}
	}
}

func TestCoalescerSendsAResponseStreamInOneWrite(t *testing.T) {
	for _, tc := range []struct {
		name   string
		window time.Duration
		want   func(int64) bool
		says   string
	}{
		// A window far longer than the app takes, so the timer plays no
		// part: the response's event waits for the end of the stream,
		// and headers, event and end leave together.
		{"coalesced", time.Minute, func(n int64) bool { return n == 1 }, "one write"},
		// No coalescer: ReverseProxy's own behaviour, a write per flush.
		{"flush every write", -1, func(n int64) bool { return n >= 2 }, "a write per flush"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, writes := proxyThrough(t, sse(nil, nil, responseEvent), tc.window)
			resp, err := http.Post(u, "application/json", strings.NewReader(`{}`))
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || string(body) != responseEvent {
				t.Fatalf("body %q, %v", body, err)
			}
			if n := writes.Load(); !tc.want(n) {
				t.Fatalf("the response took %d writes, want %s", n, tc.says)
			}
		})
	}
}

// readEvents reads SSE events from r, closing got[i] when event i arrives.
func readEvents(t *testing.T, r io.Reader, want []string, got []chan struct{}) {
	t.Helper()
	br := bufio.NewReader(r)
	for i, w := range want {
		var ev strings.Builder
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("waiting for event %d: %v (so far %q)", i, err, ev.String())
			}
			ev.WriteString(line)
			if line == "\n" {
				break
			}
		}
		if ev.String() != w {
			t.Fatalf("event %d: %q, want %q", i, ev.String(), w)
		}
		close(got[i])
	}
}

func TestCoalescerKeepsStreamsFlowing(t *testing.T) {
	note := "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\n"
	for _, tc := range []struct {
		name   string
		window time.Duration
		events []string // WAIT: the app goes on only once the client has the event before
	}{
		// A notification goes out at once, whatever the window: the app
		// sends the response only after the client has the notification.
		{"notification before the response", time.Minute, []string{note, "WAIT", responseEvent}},
		// A response whose stream does not end goes out within the window.
		{"response with no end of stream", time.Millisecond, []string{responseEvent, "WAIT"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release, gaveUp := make(chan struct{}), make(chan struct{})
			u, _ := proxyThrough(t, sse(release, gaveUp, tc.events...), tc.window)
			resp, err := http.Post(u, "application/json", strings.NewReader(`{}`))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var want []string
			for _, e := range tc.events {
				if e != "WAIT" {
					want = append(want, e)
				}
			}
			got := []chan struct{}{release, make(chan struct{})}
			readEvents(t, resp.Body, want, got[:len(want)])
			select {
			case <-gaveUp:
				t.Fatal("the client got the event only once the app gave up waiting for it")
			default:
			}
		})
	}
}

// An upstream that breaks off its response: the client still gets what it
// had sent (status, event), then an error, as without the coalescer.
func TestCoalescerSendsWhatCameBeforeAnAbort(t *testing.T) {
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, responseEvent) // held for the end of the stream…
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // …which never comes: the connection drops
	})
	u, _ := proxyThrough(t, upstream, time.Minute)
	resp, err := http.Post(u, "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatalf("no response at all: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != responseEvent {
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

func TestResponseSpotter(t *testing.T) {
	for _, tc := range []struct {
		name   string
		chunks []string
		want   []bool // feed's answer per chunk
	}{
		{"response in one chunk", []string{responseEvent}, []bool{true}},
		{"response split across chunks", []string{"event: message\ndata: {\"jsonrpc\":\"2.0\",", "\"id\":1,\"result\":{}}\n", "\n"}, []bool{false, false, true}},
		{"CRLF line endings", []string{"data: {\"id\":\"x\",\"error\":{\"code\":1}}\r\n\r\n"}, []bool{true}},
		{"notification, then response", []string{"data: {\"method\":\"notifications/progress\"}\n\n", "data: {\"id\":2,\"result\":1}\n\n"}, []bool{false, true}},
		{"server-to-client request", []string{"data: {\"id\":7,\"method\":\"sampling/createMessage\",\"params\":{}}\n\n"}, []bool{false}},
		{"multi-line data", []string{"data: {\"id\":1,\ndata: \"result\":{}}\n\n"}, []bool{true}},
		{"not JSON", []string{"data: hello\n\n"}, []bool{false}},
		{"plain JSON body", []string{`{"jsonrpc":"2.0","id":1,"result":{}}`}, []bool{false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s responseSpotter
			for i, c := range tc.chunks {
				if got := s.feed([]byte(c)); got != tc.want[i] {
					t.Fatalf("feed(%q) = %v, want %v", c, got, tc.want[i])
				}
			}
		})
	}
	// An event larger than the spotter looks at turns it off.
	var s responseSpotter
	if s.feed(bytes.Repeat([]byte("x"), maxSpottedEvent+1)) || s.feed([]byte("\n\n"+responseEvent)) {
		t.Fatal("spotted a response after giving up")
	}
}
