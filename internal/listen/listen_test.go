package listen

import (
	"net"
	"strings"
	"testing"
	"time"
)

func TestPerClientLimit(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := Limit(inner, Options{MaxConns: 10, MaxConnsPerClient: 2})
	defer ln.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	var clients []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	// Two are served; the third is closed by the server.
	for range 2 {
		select {
		case c := <-accepted:
			defer c.Close()
		case <-time.After(5 * time.Second):
			t.Fatal("a connection within the limit was not accepted")
		}
	}
	_ = clients[2].SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := clients[2].Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("the connection beyond the per-client limit: %v, want it closed", err)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func TestScanCountsLengthLines(t *testing.T) {
	for _, tc := range []struct {
		stream string
		want   int64
	}{
		{"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 1},
		{"POST / HTTP/1.1\r\nCONTENT-LENGTH: 5\r\ncontent-length: 5\r\n\r\n", 2},
		{"GET / HTTP/1.1\r\nHost: x\r\nX-Content-Length: 5\r\n\r\n", 0},
		{"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0},
		{"\n\ncontent-length:", 1},
	} {
		for piece := 1; piece <= len(tc.stream); piece++ {
			c := &Conn{}
			for s := tc.stream; s != ""; {
				n := min(piece, len(s))
				c.scan([]byte(s[:n]))
				s = s[n:]
			}
			if got := c.lengths.Load(); got != tc.want {
				t.Errorf("%q in %d-byte reads: %d Content-Length lines, want %d", strings.ReplaceAll(tc.stream, "\r\n", "|"), piece, got, tc.want)
				break
			}
		}
	}
}

// BenchmarkScan is the cost a request's bytes add on a guarded connection.
func BenchmarkScan(b *testing.B) {
	req := []byte("POST /apps/tasks/mcp HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: Go-http-client/1.1\r\nContent-Length: 120\r\n" +
		"Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\nMcp-Protocol-Version: 2025-06-18\r\n" +
		"Mcp-Session-Id: 5JQ2WFRQ6DQUOCK3HT3FOIXQ3E\r\nAccept-Encoding: gzip\r\n\r\n" +
		`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"createTask","arguments":{"title":"water the plants"}}}`)
	c := &Conn{}
	b.SetBytes(int64(len(req)))
	for b.Loop() {
		c.scan(req)
	}
}
