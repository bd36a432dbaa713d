package e2e

// Hardening of the public front (issue 9): what an anonymous client of the
// public listener can make the server hold (memory, connections, metric
// series, stdio processes), and the apps it can reach.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

const initializeBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}`

// clientFrom is an HTTP client whose connections come from a loopback
// address of its own (127.0.0.N), as another client machine's would.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
}

// mcpPost POSTs a JSON-RPC message as an MCP client does.
func mcpPost(t testing.TB, c *http.Client, url, body string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// TestStdioAppRecreated: a stdio app deleted and deployed again under its
// name serves at once (the gateway kept the deleted app's bridge: 502 until
// a restart).
func TestStdioAppRecreated(t *testing.T) {
	dir := everythingServer(t)
	b := startBerth(t, "")
	url := b.info.PublicURL + "/apps/echo/mcp"
	for i := range 2 {
		b.cli("app", "deploy", "echo", "--dir", dir, "--command", "./everything-server", "--transport", "stdio", "--min", "1")
		b.waitReplicas("echo", 1)
		if resp, body := mcpPost(t, http.DefaultClient, url, initializeBody); resp.StatusCode != http.StatusOK || resp.Header.Get("Mcp-Session-Id") == "" {
			t.Fatalf("deploy %d: initialize: %s %s", i+1, resp.Status, body)
		}
		if i == 0 {
			b.cli("app", "delete", "echo")
		}
	}
}

// TestStdioAppSessionFlood: anonymous initialize calls cannot fill a stdio
// app. One client address gets 429 beyond its share (half the app's cap),
// the app 503 beyond max replicas × concurrency (both with a JSON-RPC error
// and Retry-After), and other clients still get sessions until the app's
// cap; sessions that never got past initialize end soon.
func TestStdioAppSessionFlood(t *testing.T) {
	dir := everythingServer(t)
	b := startBerth(t, "")
	// A cap of 1 × 20 sessions.
	b.cli("app", "deploy", "flood", "--dir", dir, "--command", "./everything-server", "--transport", "stdio",
		"--min", "1", "--max", "1", "--concurrency", "20")
	b.waitReplicas("flood", 1)
	url := b.info.PublicURL + "/apps/flood/mcp"
	refused := func(resp *http.Response, body []byte, status int) {
		t.Helper()
		var msg struct {
			JSONRPC string `json:"jsonrpc"`
			Error   struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if resp.StatusCode != status || resp.Header.Get("Retry-After") == "" || json.Unmarshal(body, &msg) != nil || msg.JSONRPC != "2.0" || msg.Error.Message == "" {
			t.Fatalf("initialize beyond the cap: %s (Retry-After %q) %s; want %d with a JSON-RPC error", resp.Status, resp.Header.Get("Retry-After"), body, status)
		}
	}
	flooder := clientFrom("127.0.0.2")
	// A label the app does not have is 404: not a bridge of its own, with
	// a session cap of its own, for every name a client makes up.
	for i := range 3 {
		u := b.info.PublicURL + "/apps/flood---made-up-" + strconv.Itoa(i) + "/mcp"
		if resp, body := mcpPost(t, flooder, u, initializeBody); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("initialize on a made-up label: %s %s, want 404", resp.Status, body)
		}
	}
	for i := range 10 {
		if resp, body := mcpPost(t, flooder, url, initializeBody); resp.StatusCode != http.StatusOK {
			t.Fatalf("initialize %d of one client: %s %s", i+1, resp.Status, body)
		}
	}
	resp, body := mcpPost(t, flooder, url, initializeBody)
	refused(resp, body, http.StatusTooManyRequests)
	other := clientFrom("127.0.0.3")
	for i := range 10 {
		if resp, body := mcpPost(t, other, url, initializeBody); resp.StatusCode != http.StatusOK {
			t.Fatalf("initialize %d of another client: %s %s", i+1, resp.Status, body)
		}
	}
	resp, body = mcpPost(t, clientFrom("127.0.0.4"), url, initializeBody)
	refused(resp, body, http.StatusServiceUnavailable)
	// The flood's sessions never got past initialize: they end soon, and
	// the app takes sessions again.
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, body = mcpPost(t, clientFrom("127.0.0.4"), url, initializeBody)
		if resp.StatusCode == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("initialize after the flood: %s %s", resp.Status, body)
		}
		time.Sleep(time.Second)
	}
}

// TestGatewayMetricLabelsBounded: made-up JSON-RPC methods and tool names
// do not each make a metric series; a tool the app declared keeps its own.
func TestGatewayMetricLabelsBounded(t *testing.T) {
	dir := everythingServer(t)
	b := startBerth(t, "")
	b.cli("app", "deploy", "labels", "--dir", dir, "--command", everythingCommand, "--min", "1")
	b.waitReplicas("labels", 1)
	url := b.info.PublicURL + "/apps/labels/mcp"
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 375 {
				n := w*1000 + i
				mcpPost(t, c, url, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"made/up/%d"}`, n, n))
				mcpPost(t, c, url, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"tool%d"}}`, n, n))
			}
		})
	}
	wg.Wait()

	// A real client lists the tools and calls one.
	ctx := context.Background()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil).Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	tools, err := cs.ListTools(ctx, nil)
	if err != nil || len(tools.Tools) == 0 {
		t.Fatalf("tools/list: %v", err)
	}
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "test_simple_text", Arguments: map[string]any{}}); err != nil {
		t.Fatalf("tools/call test_simple_text: %v", err)
	}

	metrics := getMetrics(t, b)
	series := 0
	for _, l := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(l, `berth_app_requests_total{app="labels"`) {
			series++
		}
	}
	if series > 100 {
		t.Errorf("6,000 made-up requests made %d series of berth_app_requests_total (want a bounded number, at most 100)", series)
	}
	for _, want := range []string{`method="other"`, `tool="test_simple_text"`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s:\n%.3000s", want, grepLines(metrics, `app="labels"`))
		}
	}
}

func getMetrics(t testing.TB, b *berth) string {
	t.Helper()
	resp, err := http.Get(b.info.AdminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	m, _ := io.ReadAll(resp.Body)
	return string(m)
}

// TestConflictingLengthHeaders: a request with both Content-Length and
// Transfer-Encoding (request smuggling) ends its connection, on every path
// of the public listener; a plain request keeps its connection.
func TestConflictingLengthHeaders(t *testing.T) {
	b := startBerth(t, "")
	addr := strings.TrimPrefix(b.info.PublicURL, "http://")
	for _, path := range []string{"/pools/default/code/execute?identifier=smuggle", "/pools/default/mcp", "/apps/none/mcp", "/nothing"} {
		// Two requests on one connection: the first announces both
		// lengths, the second hides in what a front proxy reading
		// Content-Length would take for the first one's body.
		smuggled := "GET /pools/default/sessions HTTP/1.1\r\nHost: x\r\n\r\n"
		body := "0\r\n\r\n" + smuggled
		raw := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n%s",
			path, addr, len(body), body)
		if n := responsesOnConn(t, addr, raw); n != 1 {
			t.Errorf("%s: %d responses on a connection whose first request had both Content-Length and Transfer-Encoding; want 1 and the connection closed", path, n)
		}
	}
	// A chunked request alone, and two plain ones, are served on one connection.
	plain := "GET /pools/default/sessions HTTP/1.1\r\nHost: x\r\n\r\n"
	chunked := "POST /nothing HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
	if n := responsesOnConn(t, addr, chunked+plain+plain); n != 3 {
		t.Errorf("plain keep-alive requests: %d responses, want 3", n)
	}
}

// responsesOnConn writes raw to a new connection and counts the responses
// that come back before the server closes it (or goes quiet for 2 s).
func responsesOnConn(t *testing.T, addr, raw string) int {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	n := 0
	for {
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return n
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		n++
	}
}

// TestListenerLimits: idle connections cannot stop the server. One client
// address holds at most its share of the public listener's connections
// (the rest are closed at once); when the listener is full, the control
// API, with its own budget, still answers; idle connections of both
// listeners are closed after the idle timeout.
func TestListenerLimits(t *testing.T) {
	b := startBerth(t, "", "--max-connections", "300", "--max-connections-per-client", "100", "--idle-timeout", "2s")
	pub := strings.TrimPrefix(b.info.PublicURL, "http://")
	adm := strings.TrimPrefix(b.info.AdminURL, "http://")
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	dial := func(from, addr string) net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial from %s: %v", from, err)
		}
		conns = append(conns, c)
		return c
	}
	// 1,000 idle connections from one address: 100 stay open.
	var mine []net.Conn
	for range 1000 {
		mine = append(mine, dial("127.0.0.2", pub))
	}
	var open atomic.Int32
	var wg sync.WaitGroup
	deadline := time.Now().Add(2 * time.Second)
	for _, c := range mine {
		wg.Go(func() {
			_ = c.SetReadDeadline(deadline)
			if _, err := c.Read(make([]byte, 1)); err != nil && isTimeout(err) {
				open.Add(1)
			}
		})
	}
	wg.Wait()
	if open.Load() > 100 {
		t.Fatalf("%d of 1,000 idle connections from one address are open; want at most 100", open.Load())
	}
	t.Logf("%d of 1,000 idle connections from one address stay open", open.Load())

	// Fill the listener from two more addresses.
	for _, ip := range []string{"127.0.0.3", "127.0.0.4"} {
		for range 100 {
			dial(ip, pub)
		}
	}
	time.Sleep(200 * time.Millisecond)
	// A new client waits; the control API answers.
	c := clientFrom("127.0.0.5")
	c.Timeout = time.Second
	if resp, err := c.Get(b.info.PublicURL + "/pools/default/sessions"); err == nil {
		resp.Body.Close()
		t.Fatalf("a new client got %s from a full public listener", resp.Status)
	}
	if resp, err := clientFrom("127.0.0.5").Get(b.info.AdminURL + "/metrics"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the control API did not answer while the public listener is full: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// Once the idle connections are gone, new clients are served again.
	for _, conn := range conns {
		conn.Close()
	}
	conns = nil
	c.Timeout = 30 * time.Second
	resp, err := c.Get(b.info.PublicURL + "/pools/default/sessions")
	if err != nil {
		t.Fatalf("a new client after the idle connections closed: %v", err)
	}
	resp.Body.Close()

	// Idle connections close after --idle-timeout (on both listeners).
	for _, addr := range []string{pub, adm} {
		conn := dial("127.0.0.6", addr)
		if _, err := io.WriteString(conn, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(conn)
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := br.ReadByte(); err == nil || isTimeout(err) {
			t.Errorf("%s: an idle keep-alive connection was not closed after the 2 s idle timeout (%v)", addr, err)
		}
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestGatewayBodyMemoryBound: clients that send most of a large body and
// stall cannot make the server hold more than its body-memory budget
// (the gateway, the data plane's execute, the pools' MCP endpoint). A
// request beyond the budget gets 503 with Retry-After; once the stalled
// clients leave, requests go through.
func TestGatewayBodyMemoryBound(t *testing.T) {
	dir := everythingServer(t)
	const budget = 128 << 20
	b := startBerth(t, "", "--body-memory", "128Mi")
	b.cli("app", "deploy", "mem", "--dir", dir, "--command", everythingCommand, "--min", "1")
	b.waitReplicas("mem", 1)
	key := b.cli("pool", "credentials", "default")
	key = strings.TrimSpace(key)
	addr := strings.TrimPrefix(b.info.PublicURL, "http://")
	before := rssBytes(t, b.cmd.Process.Pid)

	type stall struct {
		path, header string
		size, sent   int
	}
	var stalls []stall
	for range 48 {
		stalls = append(stalls, stall{"/apps/mem/mcp", "", 16 << 20, 15 << 20})
	}
	for range 48 {
		stalls = append(stalls, stall{"/pools/default/code/execute?identifier=stall", "X-Ms-Apikey: " + key + "\r\n", 4 << 20, 4<<20 - 1024})
		stalls = append(stalls, stall{"/pools/default/mcp", "X-Ms-Apikey: " + key + "\r\nAccept: application/json, text/event-stream\r\n", 12 << 20, 11 << 20})
	}
	var conns []net.Conn
	var mu sync.Mutex
	var wg sync.WaitGroup
	chunk := make([]byte, 64<<10)
	for i := range chunk {
		chunk[i] = ' '
	}
	for _, s := range stalls {
		wg.Go(func() {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n{\"a\":\"", s.path, addr, s.header, s.size)
			for sent := 0; sent < s.sent; sent += len(chunk) {
				_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
				if _, err := conn.Write(chunk[:min(len(chunk), s.sent-sent)]); err != nil {
					return // refused: the server answered and closed
				}
			}
		})
	}
	wg.Wait()
	time.Sleep(2 * time.Second) // the server reads what was sent
	peak := rssBytes(t, b.cmd.Process.Pid)
	t.Logf("server RSS: %d MiB before, %d MiB with %d stalled bodies (%d MiB sent)", before>>20, peak>>20, len(stalls), (48*15+48*4+48*11)<<20>>20)
	// What the clients sent is 1.4 GiB (without a budget the server grows
	// by about as much). The heap holds the budget's bytes, and may grow
	// to about twice what it holds before the GC collects (buffers
	// outgrown, bodies refused), and readers' own buffers come on top.
	if grew := peak - before; grew > 4*budget {
		t.Errorf("the server grew by %d MiB while clients stalled mid-body; want it bounded by the %d MiB body budget (4× at most)", grew>>20, budget>>20)
	}
	// A request now gets through, or a clear 503.
	resp, body := mcpPost(t, &http.Client{Timeout: 30 * time.Second}, b.info.PublicURL+"/apps/mem/mcp", initializeBody)
	if resp.StatusCode != http.StatusOK && (resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "") {
		t.Errorf("a request while bodies stall: %s %s", resp.Status, body)
	}
	mu.Lock()
	for _, c := range conns {
		c.Close()
	}
	mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, body := mcpPost(t, &http.Client{Timeout: 30 * time.Second}, b.info.PublicURL+"/apps/mem/mcp", initializeBody)
		if resp.StatusCode == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a request after the stalled clients left: %s %s", resp.Status, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// rssBytes is a process's resident memory.
func rssBytes(t testing.TB, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}
