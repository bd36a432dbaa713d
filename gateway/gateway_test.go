package gateway

import (
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/berth-dev/berth/app"
	"github.com/berth-dev/berth/internal/bodymem"
)

func TestRPCInfo(t *testing.T) {
	for _, tc := range []struct {
		body, method, tool string
		request            bool
	}{
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"createTask","arguments":{}}}`, "tools/call", "createTask", true},
		{`{"jsonrpc":"2.0","id":"a","method":"tools/list"}`, "tools/list", "", true},
		{`{"jsonrpc":"2.0","method":"notifications/initialized"}`, "notifications/initialized", "", false},
		{`{"jsonrpc":"2.0","id":null,"method":"ping"}`, "ping", "", false},
		{`{"jsonrpc":"2.0","method":"resources/read","params":{"name":"not a tool"}}`, "resources/read", "", false},
		{` [{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},{"method":"ping"}]`, "tools/call", "a", false},
		{`{"jsonrpc":"2.0","id":1,"result":{}}`, "", "", false},
		{`[]`, "", "", false},
		{`not json`, "", "", false},
		{``, "", "", false},
		{`{"id":1,"method":"` + strings.Repeat("m", 100) + `"}`, strings.Repeat("m", 64), "", true},
	} {
		m, tool, req := rpcInfo([]byte(tc.body))
		if m != tc.method || tool != tc.tool || req != tc.request {
			t.Errorf("rpcInfo(%.40q) = %q, %q, %v; want %q, %q, %v", tc.body, m, tool, req, tc.method, tc.tool, tc.request)
		}
	}
}

func TestReadBody(t *testing.T) {
	for _, tc := range []struct {
		name     string
		body     string
		chunked  bool
		limit    int64
		tooLarge bool
	}{
		{"sized", `{"a":1}`, false, 100, false},
		{"chunked", `{"a":1}`, true, 100, false},
		{"chunked over the limit", strings.Repeat("x", 101), true, 100, true},
		{"empty", ``, false, 100, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(tc.body))
			if tc.chunked {
				r.ContentLength = -1
			}
			got, _, err := readBody(httptest.NewRecorder(), r, tc.limit, nil)
			var mbe *http.MaxBytesError
			if tc.tooLarge {
				if !errors.As(err, &mbe) {
					t.Fatalf("err = %v, want a MaxBytesError", err)
				}
				return
			}
			if err != nil || string(got) != tc.body {
				t.Fatalf("readBody = %q, %v; want %q", got, err, tc.body)
			}
		})
	}
}

// TestReadBodyBudget: bodies read whole hold their memory against the
// server's budget; beyond it, reading fails with bodymem.ErrBusy.
func TestReadBodyBudget(t *testing.T) {
	budget := bodymem.New(256 << 10)
	var held []int64
	for i := 0; ; i++ {
		r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(strings.Repeat("x", 100<<10)))
		r.ContentLength = -1 // no announced length: the buffer grows as bytes come
		_, reserved, err := readBody(httptest.NewRecorder(), r, 16<<20, budget)
		if errors.Is(err, bodymem.ErrBusy) {
			budget.Release(reserved)
			if i == 0 {
				t.Fatal("the first body was refused")
			}
			break
		}
		if err != nil || i > 10 {
			t.Fatalf("body %d: %v (budget used %d)", i, err, budget.Used())
		}
		held = append(held, reserved)
	}
	for _, n := range held {
		budget.Release(n)
	}
	if budget.Used() != 0 {
		t.Fatalf("budget used after every body was released: %d", budget.Used())
	}
}

// TestStdioLimits: a stdio app's session cap is max replicas ×
// concurrency, and a share per client; a concurrency large enough to
// overflow the product still gives a positive cap (a cap of zero or less
// means none at all).
func TestStdioLimits(t *testing.T) {
	g := &Gateway{}
	for _, tc := range []struct {
		max, concurrency    int
		wantMax, wantClient int
	}{
		{10, 10, 100, 50},
		{1, 1, 1, 1},
		{100, math.MaxInt, 1 << 20, 1 << 19},
		{3, math.MaxInt / 2, 1 << 20, 1 << 19},
	} {
		d := app.Doc{Revisions: []app.Revision{{Config: app.Config{Max: tc.max, Concurrency: tc.concurrency}}}}
		if m, c := g.stdioLimits(d); m != tc.wantMax || c != tc.wantClient {
			t.Errorf("max %d × concurrency %d: caps %d, %d per client; want %d, %d", tc.max, tc.concurrency, m, c, tc.wantMax, tc.wantClient)
		}
	}
}

// TestSessionHeader: a response in a session carries the client's sealed
// id, never the replica's own; a failed initialize hands out none.
func TestSessionHeader(t *testing.T) {
	g := New(Options{})
	for _, tc := range []struct {
		name, sid, upstream string
		code                int
		want                string
	}{
		{"in a session", "b1.sealed", "RAW-UPSTREAM", 200, "b1.sealed"},
		{"in a session, none from the replica", "b1.sealed", "", 200, ""},
		{"failed initialize", "", "RAW-UPSTREAM", 400, ""},
	} {
		h := http.Header{}
		if tc.upstream != "" {
			h.Set("Mcp-Session-Id", tc.upstream)
		}
		g.sessionHeader(h, tc.code, http.MethodPost, tc.sid, nil, nil)
		if got := h.Get("Mcp-Session-Id"); got != tc.want {
			t.Errorf("%s: Mcp-Session-Id %q, want %q", tc.name, got, tc.want)
		}
	}
}
