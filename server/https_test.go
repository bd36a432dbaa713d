package server

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/berth-dev/berth/app"
	"github.com/berth-dev/berth/edge"
	"github.com/berth-dev/berth/edge/certs"
)

// TestRedirectToHTTPSOnlyToServedHosts: the plain listener's 308 keeps the
// request's host only if the HTTPS listener serves it; a Host the client
// made up is redirected to the public URL's host, never to itself (an
// open redirect through Host).
func TestRedirectToHTTPSOnlyToServedHosts(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	m, err := certs.New(certs.Options{DataDir: t.TempDir(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.BindAsync("localhost", "127.0.0.1", "::1", "berth.example.com", "tasks.apps.test", "mcp.example.org"); err != nil {
		t.Fatal(err)
	}
	front, err := edge.New(edge.Options{
		AppDomain: "apps.test", PublicURL: "https://berth.example.com:8443",
		Hosts:   hostsMap{"mcp.example.org": "web"},
		Pools:   edge.PoolsFunc(func(string) (edge.Pool, bool) { return nil, false }),
		PoolMCP: http.NotFoundHandler(), DataPlane: http.NotFoundHandler(), Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	h := redirectToHTTPS(front, m.Serves, publicHost("https://berth.example.com:8443"), "8443")
	for _, c := range []struct{ host, path, want string }{
		{"berth.example.com", "/pools/p/mcp", "https://berth.example.com:8443/pools/p/mcp"},
		{"127.0.0.1:8080", "/apps/tasks/mcp?x=1", "https://127.0.0.1:8443/apps/tasks/mcp?x=1"},
		{"[::1]:8080", "/pools/p/mcp", "https://[::1]:8443/pools/p/mcp"},
		{"[::1]", "/pools/p/mcp", "https://[::1]:8443/pools/p/mcp"},
		{"TASKS.apps.test.", "/mcp", "https://tasks.apps.test:8443/mcp"},
		{"mcp.example.org:80", "/mcp", "https://mcp.example.org:8443/mcp"},
		// Names the HTTPS listener does not serve.
		{"evil.example", "/pools/p/mcp", "https://berth.example.com:8443/pools/p/mcp"},
		{"evil.example:80", "/apps/tasks/mcp", "https://berth.example.com:8443/apps/tasks/mcp"},
		{"ghost.apps.test", "/mcp", "https://berth.example.com:8443/mcp"},
		{"10.1.2.3", "/pools/p/mcp", "https://berth.example.com:8443/pools/p/mcp"},
	} {
		r := httptest.NewRequest("POST", c.path, nil)
		r.Host = c.host
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusPermanentRedirect || w.Header().Get("Location") != c.want {
			t.Errorf("Host %s %s: %d %q, want 308 %s", c.host, c.path, w.Code, w.Header().Get("Location"), c.want)
		}
	}
}

type hostsMap map[string]string

func (m hostsMap) Host(host string) (string, string, bool) {
	name, ok := m[host]
	return name, "", ok
}

// TestAppNamesFollowTheApp: the names bound are those of the app as it is
// when a change is reported, whatever the document the report carries: a
// stale report (concurrent changes finishing out of order) binds the
// current names, and a report that comes after the app was deleted binds
// nothing (its certificates would be renewed for an app that is gone).
func TestAppNamesFollowTheApp(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	m, err := certs.New(certs.Options{DataDir: t.TempDir(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	docs := map[string]app.Doc{}
	n := &appNames{m: m, domain: "apps.test", log: log, bound: map[string][]string{},
		doc: func(name string) (app.Doc, bool) { d, ok := docs[name]; return d, ok }}
	ctx := context.Background()
	served := func(host string) bool { _, ok := m.Serves(host); return ok }

	stale := app.Doc{Name: "tasks"}
	docs["tasks"] = app.Doc{Name: "tasks", Hostnames: []app.Hostname{{Host: "mcp.example.com"}}}
	n.AppChanged(ctx, docs["tasks"])
	n.AppChanged(ctx, stale) // reported last, but older
	if !served("mcp.example.com") || !served("tasks.apps.test") {
		t.Fatalf("after a stale report: bound %v, want tasks.apps.test and mcp.example.com", m.Bound())
	}

	delete(docs, "tasks")
	n.AppDeleted("tasks")
	n.AppChanged(ctx, stale) // a deploy's report arriving after the delete
	n.AppChanged(ctx, app.Doc{Name: "tasks", Hostnames: []app.Hostname{{Host: "late.example.com"}}})
	for _, h := range []string{"tasks.apps.test", "mcp.example.com", "late.example.com"} {
		if served(h) {
			t.Errorf("%s is bound after its app was deleted (bound %v)", h, m.Bound())
		}
	}
}

// TestAppNamesMovedHost: a custom domain moved from one app to another
// (deleted from the first after it was added to the second, the order
// berth apply can take) stays bound.
func TestAppNamesMovedHost(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	m, err := certs.New(certs.Options{DataDir: t.TempDir(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	h := []app.Hostname{{Host: "mcp.example.com"}}
	docs := map[string]app.Doc{"a": {Name: "a", Hostnames: h}, "b": {Name: "b"}}
	n := &appNames{m: m, domain: "apps.test", log: log, bound: map[string][]string{},
		doc: func(name string) (app.Doc, bool) { d, ok := docs[name]; return d, ok }}
	ctx := context.Background()
	n.AppChanged(ctx, docs["a"])
	n.AppChanged(ctx, docs["b"])
	docs["b"] = app.Doc{Name: "b", Hostnames: h}
	n.AppChanged(ctx, docs["b"])
	docs["a"] = app.Doc{Name: "a"}
	n.AppChanged(ctx, docs["a"])
	if _, ok := m.Serves("mcp.example.com"); !ok {
		t.Fatalf("the host moved to b is not bound: %v", m.Bound())
	}
}
