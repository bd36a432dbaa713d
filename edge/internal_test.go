package edge_test

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/berth-dev/berth/edge"
)

// TestRouteInternal: a request from a sandbox (marked with a Caller) is
// routed by its Host alone, to an app; the same request from a client is
// routed as always, whatever Host it claims.
func TestRouteInternal(t *testing.T) {
	v := newEnv(t)
	caller := edge.Caller{Kind: "app", Name: "a"}
	for _, c := range []struct {
		name, host, path string
		inside           bool
		want             edge.Route
	}{
		{"name", "web", "/mcp", true, edge.Route{Kind: edge.KindApp, Name: "web", Path: "/mcp"}},
		{"name.internal with port", "Web.internal:80", "/x", true, edge.Route{Kind: edge.KindApp, Name: "web", Path: "/x"}},
		{"label", "web---blue", "/mcp", true, edge.Route{Kind: edge.KindApp, Name: "web", Label: "blue", Path: "/mcp"}},
		{"a pool path is not a pool", "p", "/pools/p/mcp", true, edge.Route{Kind: edge.KindApp, Name: "p", Path: "/pools/p/mcp"}},
		{"public host is no app", "berth.test:8080", "/pools/p/mcp", true, edge.Route{Kind: edge.KindApp, Name: "berth.test", Path: "/pools/p/mcp"}},
		{"client claiming .internal", "web.internal", "/pools/p/mcp", false, edge.Route{Kind: edge.KindPoolMCP, Name: "p"}},
		{"client with a bare name", "web", "/apps/tasks/mcp", false, edge.Route{Kind: edge.KindApp, Name: "tasks", Path: "/mcp", ByPath: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "http://x"+c.path, nil)
			r.Host = c.host
			if c.inside {
				r = r.WithContext(edge.WithCaller(context.Background(), caller))
			}
			if got := v.e.Route(r); got != c.want {
				t.Fatalf("Route = %+v, want %+v", got, c.want)
			}
		})
	}
	if got, ok := edge.CallerFrom(edge.WithCaller(context.Background(), caller)); !ok || got.String() != "app:a" {
		t.Fatalf("CallerFrom = %v %v", got, ok)
	}
}
