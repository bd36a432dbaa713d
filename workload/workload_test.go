package workload

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/edge"
	"github.com/berth-dev/berth/identity"
)

func sub(t *testing.T, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", tok)
	}
	b, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var c struct{ Sub string }
	_ = json.Unmarshal(b, &c)
	return c.Sub
}

// TestHandler: the identity endpoint answers for the tunnel's own app
// only, and everything else goes to the front door marked with the
// tunnel's caller.
func TestHandler(t *testing.T) {
	iss, err := identity.New(identity.Options{Dir: t.TempDir(), Issuer: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	tun := New(Options{})
	tun.SetFront(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, ok := edge.CallerFrom(r.Context())
		seen = append(seen, r.Host+" "+c.String()+" "+map[bool]string{true: "inside", false: "outside"}[ok])
	}), iss)
	app := tun.handler(edge.Caller{Kind: "app", Name: "a"}, "secret")
	pool := tun.handler(edge.Caller{Kind: "pool", Name: "p"}, "")
	q := agent.IdentityPath + "?api-version=" + APIVersion + "&resource=api://b"
	var first string
	for _, c := range []struct {
		name        string
		h           http.Handler
		host, path  string
		header      map[string]string
		status      int
		wantSubject string
	}{
		{"token", app, agent.TunnelAddr, q, map[string]string{"X-Identity-Header": "secret"}, 200, "app:a"},
		{"headers and query do not change the subject", app, agent.TunnelAddr, q + "&sub=app:b",
			map[string]string{"X-Identity-Header": "secret", "X-Ms-Client-Principal-Id": "app:b"}, 200, "app:a"},
		{"wrong header", app, agent.TunnelAddr, q, map[string]string{"X-Identity-Header": "guess"}, 401, ""},
		{"no header", app, agent.TunnelAddr, q, nil, 401, ""},
		{"user-assigned", app, agent.TunnelAddr, q + "&client_id=x", map[string]string{"X-Identity-Header": "secret"}, 400, ""},
		{"no resource", app, agent.TunnelAddr, agent.IdentityPath + "?api-version=" + APIVersion, map[string]string{"X-Identity-Header": "secret"}, 400, ""},
		{"other path", app, agent.TunnelAddr, "/token", map[string]string{"X-Identity-Header": "secret"}, 404, ""},
		{"pool session", pool, agent.TunnelAddr, q, map[string]string{"X-Identity-Header": ""}, 404, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "http://x"+c.path, nil)
			r.Host = c.host
			for k, v := range c.header {
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			c.h.ServeHTTP(w, r)
			if w.Code != c.status {
				t.Fatalf("status %d %s, want %d", w.Code, w.Body, c.status)
			}
			if c.wantSubject == "" {
				return
			}
			var tr struct{ AccessToken, TokenType string }
			var raw map[string]string
			_ = json.Unmarshal(w.Body.Bytes(), &raw)
			tr.AccessToken, tr.TokenType = raw["access_token"], raw["token_type"]
			if s := sub(t, tr.AccessToken); s != c.wantSubject || tr.TokenType != "Bearer" || raw["resource"] != "api://b" {
				t.Fatalf("token for %q (%v)", s, raw)
			}
			if first == "" {
				first = tr.AccessToken
			} else if tr.AccessToken != first {
				t.Fatal("a second request within the reuse period signed a new token")
			}
		})
	}
	for _, h := range []http.Handler{app, pool} {
		r := httptest.NewRequest("GET", "http://b/mcp", nil)
		h.ServeHTTP(httptest.NewRecorder(), r)
	}
	if strings.Join(seen, ",") != "b app:a inside,b pool:p inside" {
		t.Fatalf("the front door saw %q", seen)
	}
}
