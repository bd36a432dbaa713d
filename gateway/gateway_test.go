package gateway

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRPCLabels(t *testing.T) {
	for _, tc := range []struct {
		body, method, tool string
	}{
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"createTask","arguments":{}}}`, "tools/call", "createTask"},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, "tools/list", ""},
		{`{"jsonrpc":"2.0","method":"resources/read","params":{"name":"not a tool"}}`, "resources/read", ""},
		{` [{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},{"method":"ping"}]`, "tools/call", "a"},
		{`{"jsonrpc":"2.0","id":1,"result":{}}`, "", ""},
		{`[]`, "", ""},
		{`not json`, "", ""},
		{``, "", ""},
		{`{"method":"` + strings.Repeat("m", 100) + `"}`, strings.Repeat("m", 64), ""},
	} {
		m, tool := rpcLabels([]byte(tc.body))
		if m != tc.method || tool != tc.tool {
			t.Errorf("rpcLabels(%.40q) = %q, %q; want %q, %q", tc.body, m, tool, tc.method, tc.tool)
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
			got, err := readBody(httptest.NewRecorder(), r, tc.limit)
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
