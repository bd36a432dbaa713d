package stdiobridge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

const initializeBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`

// do sends one request with the streamable HTTP headers a client uses
// (overridable through hdr) and returns the response; a body that is not an
// event stream has been read already.
func do(t *testing.T, method, url, sid, body string, hdr map[string]string) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json, text/event-stream")
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if sid != "" {
		req.Header.Set(headerSessionID, sid)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
		} else if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("%s: %v", method, err)
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(data))
		cancel()
	} else {
		t.Cleanup(func() { resp.Body.Close(); cancel() })
	}
	return resp
}

func post(t *testing.T, url, sid, body string, hdr map[string]string) *http.Response {
	t.Helper()
	return do(t, http.MethodPost, url, sid, body, hdr)
}

type sseEvent struct{ name, id, data string }

// events parses an event stream as it arrives.
func events(r io.Reader) <-chan sseEvent {
	c := make(chan sseEvent, 100)
	go func() {
		defer close(c)
		sc := bufio.NewScanner(r)
		var e sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if e != (sseEvent{}) {
					c <- e
				}
				e = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				e.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "id: "):
				e.id = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "data: "):
				e.data = strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	return c
}

// nextMessage returns the next event carrying a JSON-RPC message.
func nextMessage(t *testing.T, c <-chan sseEvent) (sseEvent, map[string]any) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case e, ok := <-c:
			if !ok {
				t.Fatal("event stream ended")
			}
			if e.data == "" {
				continue // priming event
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(e.data), &m); err != nil {
				t.Fatalf("event %+v: %v", e, err)
			}
			return e, m
		case <-timeout:
			t.Fatal("timed out waiting for an event")
		}
	}
}

// rawSession initializes a session by hand and returns its ID.
func rawSession(t *testing.T, url string) string {
	t.Helper()
	resp := post(t, url, "", initializeBody, nil)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("initialize: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	sid := resp.Header.Get(headerSessionID)
	if sid == "" {
		t.Fatal("initialize: no session ID")
	}
	_, m := nextMessage(t, events(resp.Body))
	result, _ := m["result"].(map[string]any)
	if m["id"] != 1.0 || result["protocolVersion"] != "2025-06-18" {
		t.Fatalf("initialize answered %v", m)
	}
	resp = post(t, url, sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`, map[string]string{headerProtocolVersion: "2025-06-18"})
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("notifications/initialized: %s, want 202", resp.Status)
	}
	return sid
}

// The transport rules of the go-sdk's handler hold for the bridge.
func TestHTTPTransportRules(t *testing.T) {
	b := newBridge(t, Options{})
	v := map[string]string{headerProtocolVersion: "2025-06-18"}

	check := func(what string, resp *http.Response, want int) {
		t.Helper()
		if resp.StatusCode != want {
			t.Errorf("%s: %s, want %d", what, resp.Status, want)
		}
	}
	check("initialize without text/event-stream in Accept",
		post(t, b.url, "", initializeBody, map[string]string{"Accept": "application/json"}), http.StatusBadRequest)
	check("initialize as text/plain",
		post(t, b.url, "", initializeBody, map[string]string{"Content-Type": "text/plain"}), http.StatusUnsupportedMediaType)
	check("initialize with a bogus MCP-Protocol-Version",
		post(t, b.url, "", initializeBody, map[string]string{headerProtocolVersion: "1999-01-01"}), http.StatusBadRequest)
	check("tools/list without a session",
		post(t, b.url, "", `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`, nil), http.StatusBadRequest)
	check("not JSON", post(t, b.url, "", `{`, nil), http.StatusBadRequest)
	check("PUT", do(t, http.MethodPut, b.url, "", "", nil), http.StatusMethodNotAllowed)
	check("GET without a session", do(t, http.MethodGet, b.url, "", "", nil), http.StatusBadRequest)
	check("DNS rebinding", post(t, b.url, "", initializeBody, map[string]string{"Host": "evil.example.com"}), http.StatusForbidden)
	if n := len(b.started()); n != 0 {
		t.Fatalf("rejected requests started %d processes", n)
	}

	// SEP-2575's sessionless server/discover is refused as a stateful go-sdk
	// server refuses it, so that clients fall back to initialize.
	resp := post(t, b.url, "", `{"jsonrpc":"2.0","id":3,"method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`,
		map[string]string{headerProtocolVersion: "2026-07-28"})
	check("server/discover", resp, http.StatusBadRequest)
	if body, _ := io.ReadAll(resp.Body); !strings.Contains(string(body), `"code":-32022`) || !strings.Contains(string(body), `"id":3`) {
		t.Errorf("server/discover answered %s", body)
	}

	sid := rawSession(t, b.url)
	check("GET without text/event-stream in Accept",
		do(t, http.MethodGet, b.url, sid, "", map[string]string{"Accept": "application/json"}), http.StatusBadRequest)
	check("request with a bogus MCP-Protocol-Version",
		post(t, b.url, sid, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`, map[string]string{headerProtocolVersion: "1999-01-01"}), http.StatusBadRequest)
	check("notification", post(t, b.url, sid, `{"jsonrpc":"2.0","method":"notifications/roots/list_changed"}`, v), http.StatusAccepted)
	check("response to nothing", post(t, b.url, sid, `{"jsonrpc":"2.0","id":"x","result":{}}`, v), http.StatusAccepted)

	// A request gets its response on an event stream.
	resp = post(t, b.url, sid, `{"jsonrpc":"2.0","id":"list","method":"tools/list"}`, v)
	check("tools/list", resp, http.StatusOK)
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("tools/list Content-Type %q", ct)
	}
	if _, m := nextMessage(t, events(resp.Body)); m["id"] != "list" || m["result"] == nil {
		t.Errorf("tools/list answered %v", m)
	}
	if n := len(b.started()); n != 1 {
		t.Errorf("%d processes started, want 1", n)
	}
}

// Server→client messages go to the GET stream; sent while it is not open,
// they wait in the event store, and a stream resumed with Last-Event-ID gets
// what it missed.
func TestStandaloneStreamAndResumption(t *testing.T) {
	b := newBridge(t, Options{})
	v := map[string]string{headerProtocolVersion: "2025-06-18"}
	sid := rawSession(t, b.url)
	call := func(id int) {
		t.Helper()
		resp := post(t, b.url, sid, `{"jsonrpc":"2.0","id":`+strconv.Itoa(id)+`,"method":"tools/call","params":{"name":"test_tool_with_logging","arguments":{}}}`, v)
		if _, m := nextMessage(t, events(resp.Body)); m["result"] == nil {
			t.Fatalf("tools/call answered %v", m)
		}
	}
	resp := post(t, b.url, sid, `{"jsonrpc":"2.0","id":2,"method":"logging/setLevel","params":{"level":"info"}}`, v)
	nextMessage(t, events(resp.Body))

	// Logged before any GET stream exists.
	call(3)
	get := do(t, http.MethodGet, b.url, sid, "", v)
	if get.StatusCode != http.StatusOK {
		t.Fatalf("GET: %s", get.Status)
	}
	stream := events(get.Body)
	var last string
	for i := range 3 {
		e, m := nextMessage(t, stream)
		if m["method"] != "notifications/message" {
			t.Fatalf("event %d: %v", i, m)
		}
		last = e.id
	}
	get.Body.Close()

	// Logged while the stream is closed; resume after the last event seen.
	call(4)
	get = do(t, http.MethodGet, b.url, sid, "", map[string]string{headerProtocolVersion: "2025-06-18", "Last-Event-ID": last})
	if get.StatusCode != http.StatusOK {
		t.Fatalf("resuming GET: %s", get.Status)
	}
	stream = events(get.Body)
	var got []string
	for range 3 {
		_, m := nextMessage(t, stream)
		got = append(got, m["params"].(map[string]any)["data"].(string))
	}
	if strings.Join(got, ",") != "Tool execution started,Tool processing data,Tool execution completed" {
		t.Errorf("resumed stream got %q", got)
	}
	select {
	case e, ok := <-stream:
		if ok && e.data != "" {
			t.Errorf("unexpected extra event %+v", e)
		}
	case <-time.After(200 * time.Millisecond):
	}
}
