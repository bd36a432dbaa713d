package edge_test

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/berth-dev/berth/edge"
	"github.com/berth-dev/berth/edge/cors"
)

// corsApps is fakeApps whose "web" (HTTP) and "tasks" (stdio) have a CORS
// policy allowing https://a.example; the app itself answers with CORS
// headers of its own, which the policy must replace.
type corsApps struct {
	fakeApps
	p *cors.Policy
}

func (c *corsApps) AppCORS(name string) *cors.Policy {
	if name == "web" || name == "tasks" {
		return c.p
	}
	return nil
}

func (c *corsApps) ServeApp(w http.ResponseWriter, r *http.Request, a *edge.AppRequest) {
	w.Header().Set("Access-Control-Allow-Origin", "*")
	c.fakeApps.ServeApp(w, r, a)
}

// corsPool is a keyed pool with a policy.
type corsPool struct {
	fakePool
	p *cors.Policy
}

func (c corsPool) CORS() *cors.Policy { return c.p }

func TestCORSPolicyEnforced(t *testing.T) {
	pol, err := cors.Compile(cors.Spec{AllowedOrigins: []string{"https://a.example", "https://*.b.example"}, MaxAge: 60, AllowCredentials: true})
	if err != nil {
		t.Fatal(err)
	}
	apps := &corsApps{p: pol}
	e, err := edge.New(edge.Options{
		AppDomain: "apps.test", Apps: apps,
		Pools: edge.PoolsFunc(func(name string) (edge.Pool, bool) {
			if name == "cp" {
				return corsPool{fakePool{"cp"}, pol}, true
			}
			return pools(name)
		}),
		PoolMCP:   http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "mcp") }),
		DataPlane: http.NotFoundHandler(),
		Logger:    slog.New(slog.NewJSONHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	v := &env{e: e}
	pre := func(origin string) map[string]string {
		return map[string]string{"Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type, x-ms-apikey, mcp-session-id"}
	}
	for _, c := range []struct {
		name, method, target string
		h                    map[string]string
		status               int
		allowOrigin          string
		served               bool // reached the app
	}{
		{"HTTP app, allowed origin", "POST", "/apps/web/mcp", map[string]string{"Origin": "https://a.example"}, 200, "https://a.example", true},
		{"HTTP app, wildcard origin", "POST", "/apps/web/mcp", map[string]string{"Origin": "https://x.y.b.example"}, 200, "https://x.y.b.example", true},
		{"HTTP app, refused origin", "POST", "/apps/web/mcp", map[string]string{"Origin": "https://evil.example"}, 403, "", false},
		{"HTTP app, no origin", "POST", "/apps/web/mcp", nil, 200, "*", true},
		{"HTTP app, preflight answered at the edge", "OPTIONS", "/apps/web/mcp", pre("https://a.example"), 204, "https://a.example", false},
		{"HTTP app, preflight from a refused origin", "OPTIONS", "/apps/web/mcp", pre("https://evil.example"), 403, "", false},
		{"HTTP app on its host, refused origin", "POST", "/mcp", map[string]string{"Host": "web.apps.test", "Origin": "http://localhost:3000"}, 403, "", false},
		{"stdio app, allowed origin (not the apps' domain)", "POST", "/apps/tasks/mcp", map[string]string{"Origin": "https://a.example"}, 200, "https://a.example", true},
		{"stdio app, refused origin", "POST", "/apps/tasks/mcp", map[string]string{"Origin": "http://web.apps.test"}, 403, "", false},
		{"pool, allowed origin", "POST", "/pools/cp/mcp", map[string]string{"Origin": "https://a.example", "X-Ms-Apikey": "k"}, 200, "https://a.example", false},
		{"pool, refused origin", "POST", "/pools/cp/mcp", map[string]string{"Origin": "http://127.0.0.1:9", "X-Ms-Apikey": "k"}, 403, "", false},
		{"pool, preflight before the key", "OPTIONS", "/pools/cp/mcp", pre("https://a.example"), 204, "https://a.example", false},
		{"pool, preflight asking for a header not allowed", "OPTIONS", "/pools/cp/mcp", map[string]string{"Origin": "https://a.example", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-secret"}, 403, "", false},
		{"pool without a policy keeps --allow-origin", "POST", "/pools/p/mcp", map[string]string{"Origin": "https://a.example", "X-Ms-Apikey": "k"}, 403, "", false},
	} {
		apps.served = nil
		w := v.do(c.method, c.target, c.h, "{}")
		if w.Code != c.status {
			t.Errorf("%s: status %d, want %d (%s)", c.name, w.Code, c.status, w.Body)
			continue
		}
		if got := w.Header().Values("Access-Control-Allow-Origin"); strings.Join(got, ",") != c.allowOrigin {
			t.Errorf("%s: Allow-Origin %q, want %q", c.name, got, c.allowOrigin)
		}
		if (len(apps.served) > 0) != c.served {
			t.Errorf("%s: reached the app = %v, want %v", c.name, len(apps.served) > 0, c.served)
		}
		if c.status == 204 {
			if w.Header().Get("Access-Control-Max-Age") != "60" || w.Header().Get("Access-Control-Allow-Credentials") != "true" ||
				!strings.Contains(w.Header().Get("Access-Control-Allow-Headers"), "X-Ms-Apikey") {
				t.Errorf("%s: preflight headers %v", c.name, w.Header())
			}
		}
		if c.status == 200 && c.allowOrigin != "*" && !strings.Contains(w.Header().Get("Access-Control-Expose-Headers"), "Mcp-Session-Id") {
			t.Errorf("%s: Expose-Headers %q", c.name, w.Header().Get("Access-Control-Expose-Headers"))
		}
	}
}

// BenchmarkCORS is a request from a browser origin to an HTTP app through
// the edge, with and without the app's CORS policy.
func BenchmarkCORS(b *testing.B) {
	pol, _ := cors.Compile(cors.Spec{AllowedOrigins: []string{"https://a.example", "https://*.b.example"}})
	for _, c := range []struct {
		name   string
		policy *cors.Policy
		origin string
	}{{"no policy", nil, "https://a.example"}, {"exact origin", pol, "https://a.example"}, {"wildcard origin", pol, "https://x.b.example"}} {
		b.Run(c.name, func(b *testing.B) {
			e, _ := edge.New(edge.Options{AppDomain: "apps.test", Apps: &corsApps{p: c.policy}, Pools: edge.PoolsFunc(pools),
				DataPlane: http.NotFoundHandler(), Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
			r, _ := http.NewRequest(http.MethodPost, "http://web.apps.test/mcp", nil)
			r.Header.Set("Origin", c.origin)
			b.ReportAllocs()
			for b.Loop() {
				w := &discardWriter{h: http.Header{}}
				e.ServeHTTP(w, r)
			}
		})
	}
}

type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}
