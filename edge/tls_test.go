package edge_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/berth-dev/berth/edge"
	"github.com/berth-dev/berth/edge/certs"
)

// TestRedirectToHTTPSOnlyToServedHosts: the plain listener's 308 keeps the
// request's host only if the HTTPS listener serves it; a Host the client
// made up is redirected to the public URL's host, never to itself (an
// open redirect through Host). Each redirect has its access line.
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
	var lines bytes.Buffer
	front, err := edge.New(edge.Options{
		AppDomain: "apps.test", PublicURL: "https://berth.example.com:8443",
		Apps: &fakeApps{}, Hosts: hostMap{"mcp.example.org": {"web", ""}}, Pools: edge.PoolsFunc(pools),
		PoolMCP: http.NotFoundHandler(), DataPlane: http.NotFoundHandler(),
		Logger: log, AccessLog: slog.New(slog.NewJSONHandler(&lines, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	h := front.RedirectToHTTPS(m.Serves, "berth.example.com", "8443")
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
		lines.Reset()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusPermanentRedirect || w.Header().Get("Location") != c.want {
			t.Errorf("Host %s %s: %d %q, want 308 %s", c.host, c.path, w.Code, w.Header().Get("Location"), c.want)
		}
		var l struct {
			Status    int
			RequestID string
		}
		if err := json.Unmarshal(lines.Bytes(), &l); err != nil || l.Status != http.StatusPermanentRedirect || l.RequestID == "" {
			t.Errorf("Host %s %s: access line %q (%v)", c.host, c.path, lines.String(), err)
		}
	}
	// Unrouted paths are served, not redirected.
	r := httptest.NewRequest("GET", "/healthz", nil)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusNotFound {
		t.Errorf("unrouted path: %d, want the data plane's 404", w.Code)
	}
}
