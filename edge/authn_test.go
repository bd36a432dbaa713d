package edge_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/berth-dev/berth/edge"
)

// issuer is a minimal OpenID issuer: discovery and a JWKS with one RS256
// key, and a way to sign tokens with it.
type issuer struct {
	url string
	key *rsa.PrivateKey
}

func newIssuer(t testing.TB) *issuer {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	is := &issuer{key: k}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": is.url, "jwks_uri": is.url + "/keys",
			"id_token_signing_alg_values_supported": []string{"RS256"}})
	})
	mux.HandleFunc("/keys", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	is.url = srv.URL
	return is
}

func (is *issuer) token(t testing.TB, aud, scope string) string {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: is.key, KeyID: "k1"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	b, _ := json.Marshal(map[string]any{"iss": is.url, "sub": "agent-7", "client_id": "agent", "aud": aud, "scope": scope,
		"name": "Agent\nSeven", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()})
	obj, err := s.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := obj.CompactSerialize()
	return out
}

const appAud = "http://edge.test/apps/guarded/mcp"

// authApps are apps with authentication: "open", "keyed" (key "good",
// named ci), "guarded" (oidc, scope mcp:tools), "fwd" (keyed, token
// forwarded). ServeApp echoes the headers it got.
type authApps struct {
	issuer string
	quiet  bool // the benchmark's: answer 200 with no body
}

func (authApps) AppKind(name string) (bool, bool) { return false, true }
func (a authApps) ServeApp(w http.ResponseWriter, r *http.Request, _ *edge.AppRequest) {
	if a.quiet {
		w.WriteHeader(200)
		return
	}
	_ = json.NewEncoder(w).Encode(r.Header)
}

func hashHex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func (a authApps) AppAuth(name string) (edge.AppAuth, bool) {
	keys := []edge.AppKey{{Name: "other", Hash: hashHex("other-key")}, {Name: "ci", Hash: hashHex("good")}}
	switch name {
	case "open":
		return edge.AppAuth{Mode: edge.AuthNone, MCPPath: "/mcp"}, true
	case "keyed":
		return edge.AppAuth{Mode: edge.AuthAPIKey, Keys: keys, MCPPath: "/mcp"}, true
	case "fwd":
		return edge.AppAuth{Mode: edge.AuthAPIKey, Keys: keys, ForwardToken: true, MCPPath: "/mcp"}, true
	case "guarded":
		return edge.AppAuth{Mode: edge.AuthOIDC, MCPPath: "/mcp", OIDCSettings: edge.OIDCSettings{
			Issuer: a.issuer, Audience: appAud, Scopes: []string{"mcp:tools"}}}, true
	case "weird":
		return edge.AppAuth{Mode: "something"}, true
	}
	return edge.AppAuth{}, false
}

func newAuthEdge(t testing.TB, is *issuer, quiet ...bool) *edge.Edge {
	e, err := edge.New(edge.Options{AppDomain: "apps.test", Apps: authApps{issuer: is.url, quiet: len(quiet) > 0}, Pools: edge.PoolsFunc(pools),
		PoolMCP: http.NotFoundHandler(), DataPlane: http.NotFoundHandler(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestAppAuthn(t *testing.T) {
	is := newIssuer(t)
	e := newAuthEdge(t, is)
	good := is.token(t, appAud, "mcp:tools")
	spoof := map[string]string{"X-MS-CLIENT-PRINCIPAL-ID": "admin", "x-ms-client-principal": "e30=", "X-Ms-Token-Aad-Id-Token": "x", "X_MS_CLIENT_PRINCIPAL_NAME": "admin"}
	for _, c := range []struct {
		name, target string
		h            map[string]string
		status       int
		challenge    string            // part of WWW-Authenticate
		want         map[string]string // headers the app must see ("" = absent)
	}{
		{"open app, spoofed principal removed", "/apps/open/mcp", spoof, 200, "",
			map[string]string{"X-Ms-Client-Principal-Id": "", "X-Ms-Client-Principal": "", "X-Ms-Token-Aad-Id-Token": "", "X_ms_client_principal_name": ""}},
		{"keyed, no key", "/apps/keyed/mcp", nil, 401, "Bearer", nil},
		{"keyed, wrong key", "/apps/keyed/mcp", map[string]string{"X-Api-Key": "bad"}, 401, `error="invalid_token"`, nil},
		{"keyed, x-api-key", "/apps/keyed/mcp", map[string]string{"X-Api-Key": "good", "X-Ms-Client-Principal-Name": "admin"}, 200, "",
			map[string]string{"X-Ms-Client-Principal-Name": "ci", "X-Ms-Client-Principal-Idp": "apikey", "X-Api-Key": ""}},
		{"keyed, bearer", "/apps/keyed/mcp", map[string]string{"Authorization": "Bearer good"}, 200, "",
			map[string]string{"X-Ms-Client-Principal-Name": "ci", "Authorization": ""}},
		{"forwarded", "/apps/fwd/mcp", map[string]string{"X-Api-Key": "good"}, 200, "", map[string]string{"X-Api-Key": "good"}},
		{"oidc, no token", "/apps/guarded/mcp", nil, 401,
			`Bearer resource_metadata="http://edge.test/.well-known/oauth-protected-resource/apps/guarded/mcp"`, nil},
		{"oidc, key", "/apps/guarded/mcp", map[string]string{"Authorization": "Bearer good"}, 401, `error="invalid_token"`, nil},
		{"oidc, wrong audience", "/apps/guarded/mcp", map[string]string{"Authorization": "Bearer " + is.token(t, "http://other/mcp", "mcp:tools")}, 401, `error="invalid_token"`, nil},
		{"oidc, no scope", "/apps/guarded/mcp", map[string]string{"Authorization": "Bearer " + is.token(t, appAud, "")}, 403, `error="insufficient_scope", scope="mcp:tools"`, nil},
		{"oidc, good", "/apps/guarded/mcp", map[string]string{"Authorization": "Bearer " + good, "X-Ms-Client-Principal-Id": "admin"}, 200, "",
			map[string]string{"X-Ms-Client-Principal-Id": "agent-7", "X-Ms-Client-Principal-Name": "AgentSeven", "X-Ms-Client-Principal-Idp": "oidc", "Authorization": ""}},
		{"unknown mode is closed", "/apps/weird/mcp", nil, 403, "", nil},
		{"no metadata for a keyed app", "/.well-known/oauth-protected-resource/apps/keyed/mcp", nil, 404, "", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "http://edge.test"+c.target, strings.NewReader("{}"))
			for k, v := range c.h {
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			e.ServeHTTP(w, r)
			if w.Code != c.status || !strings.Contains(w.Header().Get("WWW-Authenticate"), c.challenge) {
				t.Fatalf("%d %q %s", w.Code, w.Header().Get("WWW-Authenticate"), w.Body)
			}
			if c.status != 200 {
				if strings.Contains(w.Body.String(), "good") {
					t.Fatalf("the body echoes the credential: %s", w.Body)
				}
				return
			}
			var seen http.Header
			_ = json.Unmarshal(w.Body.Bytes(), &seen)
			for k, v := range c.want {
				if seen.Get(k) != v {
					t.Errorf("app saw %s=%q, want %q", k, seen.Get(k), v)
				}
			}
		})
	}
}

func TestProtectedResourceMetadata(t *testing.T) {
	is := newIssuer(t)
	e := newAuthEdge(t, is)
	for _, target := range []string{
		"http://edge.test/.well-known/oauth-protected-resource/apps/guarded/mcp",
		"http://guarded.apps.test/.well-known/oauth-protected-resource/mcp",
		"http://guarded.apps.test/.well-known/oauth-protected-resource",
	} {
		w := httptest.NewRecorder()
		e.ServeHTTP(w, httptest.NewRequest("GET", target, nil))
		var md map[string]any
		_ = json.Unmarshal(w.Body.Bytes(), &md)
		res := "http://edge.test/apps/guarded/mcp"
		if strings.HasPrefix(target, "http://guarded") {
			res = "http://guarded.apps.test/mcp"
		}
		if w.Code != 200 || md["resource"] != res || md["authorization_servers"].([]any)[0] != is.url ||
			md["scopes_supported"].([]any)[0] != "mcp:tools" {
			t.Errorf("%s: %d %s", target, w.Code, w.Body)
		}
	}
}

// BenchmarkAppAuth is the edge's work per request for an app, by auth
// mode, with keys (and a token seen before) cached: what each mode adds
// to "none" is its per-request cost.
func BenchmarkAppAuth(b *testing.B) {
	is := newIssuer(b)
	e := newAuthEdge(b, is, true)
	tok := is.token(b, appAud, "mcp:tools")
	for _, c := range []struct{ name, app, header, value string }{
		{"none", "open", "", ""},
		{"apikey", "keyed", "X-Api-Key", "good"},
		{"oidc", "guarded", "Authorization", "Bearer " + tok},
	} {
		b.Run(c.name, func(b *testing.B) {
			r := httptest.NewRequest("POST", "http://edge.test/apps/"+c.app+"/mcp", nil)
			w := nopWriter{h: http.Header{}}
			set := func() {
				if c.header != "" {
					r.Header.Set(c.header, c.value)
				}
			}
			set()
			rec := httptest.NewRecorder()
			e.ServeHTTP(rec, r)
			if rec.Code != 200 {
				b.Fatalf("%d %s", rec.Code, rec.Body)
			}
			b.ReportAllocs()
			for b.Loop() {
				set()
				e.ServeHTTP(w, r)
			}
		})
	}
}
