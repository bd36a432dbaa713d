package gateway

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/bodymem"
)

// BenchmarkRequestBody is the gateway's per-request work on a tools/call
// body before the proxy: reading it (within the server's budget), reading
// its method and tool, and their metric labels.
func BenchmarkRequestBody(b *testing.B) {
	const body = `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"createTask","arguments":{"title":"water the plants"}}}`
	budget := bodymem.New(0)
	var tl toolLabels
	w := httptest.NewRecorder()
	for b.Loop() {
		r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(body))
		got, reserved, err := readBody(w, r, 16<<20, budget)
		if err != nil {
			b.Fatal(err)
		}
		m, tool, _ := rpcInfo(got)
		_, _ = methodLabel(m), tl.label("app", tool)
		budget.Release(reserved)
	}
}
