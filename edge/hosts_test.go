package edge_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/berth-dev/berth/edge"
)

// hostMap is a custom-domain table.
type hostMap map[string][2]string

func (m hostMap) Host(host string) (name, label string, ok bool) {
	t, ok := m[host]
	return t[0], t[1], ok
}

// TestCustomDomains: a request whose Host is a custom domain reaches its
// app (or label), whatever the case and port; a stdio app accepts its
// custom domain as Host and Origin and still refuses foreign origins.
func TestCustomDomains(t *testing.T) {
	apps := &fakeApps{}
	e, err := edge.New(edge.Options{
		AppDomain: "apps.test", Apps: apps, Pools: edge.PoolsFunc(pools),
		Hosts:   hostMap{"mcp.example.com": {"tasks", ""}, "web.example.org": {"web", "blue"}},
		PoolMCP: http.NotFoundHandler(), DataPlane: http.NotFoundHandler(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		host string
		want edge.Route
	}{
		{"mcp.example.com", edge.Route{Kind: edge.KindApp, Name: "tasks", Path: "/mcp", Host: "mcp.example.com"}},
		{"MCP.Example.com:8443", edge.Route{Kind: edge.KindApp, Name: "tasks", Path: "/mcp", Host: "mcp.example.com"}},
		{"web.example.org", edge.Route{Kind: edge.KindApp, Name: "web", Label: "blue", Path: "/mcp", Host: "web.example.org"}},
		{"other.example.com", edge.Route{Kind: edge.KindDataPlane}},
		{"tasks.apps.test", edge.Route{Kind: edge.KindApp, Name: "tasks", Path: "/mcp"}},
	} {
		r := httptest.NewRequest("POST", "/mcp", nil)
		r.Host = c.host
		if got := e.Route(r); got != c.want {
			t.Errorf("%s: %+v, want %+v", c.host, got, c.want)
		}
	}
	for _, c := range []struct {
		origin string
		code   int
	}{
		{"", 200},
		{"https://mcp.example.com", 200},
		{"https://tasks.apps.test", 200},
		{"https://evil.example", 403},
		{"https://web.example.org", 403}, // another app's domain
	} {
		r := httptest.NewRequest("POST", "/mcp", nil)
		r.Host = "mcp.example.com"
		if c.origin != "" {
			r.Header.Set("Origin", c.origin)
		}
		w := httptest.NewRecorder()
		e.ServeHTTP(w, r)
		if w.Code != c.code {
			t.Errorf("stdio app by custom domain, Origin %q: %d, want %d", c.origin, w.Code, c.code)
		}
	}
}
