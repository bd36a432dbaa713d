package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/modelcontextprotocol/go-sdk/auth/extauth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"

	"github.com/berth-dev/berth/internal/oidctest"
	"github.com/berth-dev/berth/internal/testutil"
)

var (
	echoOnce sync.Once
	echoDir  string
	echoErr  error
)

// echoApp builds testdata/echoapp (static) once and returns its directory,
// ready to be an app's --dir: an MCP server whose tool "headers" and path
// /echo answer with the request's headers.
func echoApp(t testing.TB) string {
	t.Helper()
	echoOnce.Do(func() {
		if echoDir, echoErr = os.MkdirTemp("", "berth-echoapp-"); echoErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(echoDir, "echoapp"), "./e2e/testdata/echoapp")
		cmd.Dir = testutil.ModuleRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			echoErr = fmt.Errorf("go build echoapp: %v\n%s", err, out)
		}
	})
	if echoErr != nil {
		t.Fatal(echoErr)
	}
	return echoDir
}

// authResp is an answer of the front door: status, headers and body.
type authResp struct {
	status int
	header http.Header
	body   string
}

func send(t testing.TB, method, url string, h map[string]string) authResp {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return authResp{resp.StatusCode, resp.Header, string(b)}
}

// echoed decodes the headers the echo app saw.
func echoed(t testing.TB, r authResp) http.Header {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("echo: %d %s", r.status, r.body)
	}
	var h http.Header
	if err := json.Unmarshal([]byte(r.body), &h); err != nil {
		t.Fatalf("echo: %v: %s", err, r.body)
	}
	return h
}

// spoofed are identity headers a client must never get through to an app.
var spoofed = map[string]string{
	"X-MS-CLIENT-PRINCIPAL":       base64.StdEncoding.EncodeToString([]byte(`{"auth_typ":"aad","claims":[{"typ":"roles","val":"admin"}]}`)),
	"X-MS-CLIENT-PRINCIPAL-ID":    "admin",
	"x-ms-client-principal-name":  "admin@example.com",
	"X-Ms-Client-Principal-Idp":   "aad",
	"X-MS-TOKEN-AAD-ACCESS-TOKEN": "forged",
	"X_MS_CLIENT_PRINCIPAL_NAME":  "admin", // CGI/WSGI read it as X-MS-CLIENT-PRINCIPAL-NAME
}

func with(h map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range h {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

func noSpoofed(t testing.TB, h http.Header) {
	t.Helper()
	for k, v := range h {
		k := strings.ReplaceAll(strings.ToLower(k), "_", "-")
		if strings.HasPrefix(k, "x-ms-") && strings.Contains(strings.Join(v, ","), "admin") || k == "x-ms-token-aad-access-token" {
			t.Errorf("spoofed header reached the app: %s: %v", k, v)
		}
	}
}

// TestAppAuthAPIKey: an apikey app refuses requests without a valid key
// (401 + WWW-Authenticate), takes x-api-key and Authorization: Bearer,
// refuses a revoked key at once, tells the app the key's name, never
// passes the key on unless --auth-forward-token, and removes spoofed
// principal headers, for an open app too.
func TestAppAuthAPIKey(t *testing.T) {
	dir := echoApp(t)
	b := startBerth(t, "")
	b.cli("app", "deploy", "keyed", "--dir", dir, "--command", "./echoapp", "--min", "1", "--auth", "apikey")
	b.cli("app", "deploy", "open", "--dir", dir, "--command", "./echoapp", "--min", "1")
	b.waitReplicas("keyed", 1)
	b.waitReplicas("open", 1)
	base := strings.TrimSuffix(b.appShow("keyed").URLs.Path, "/mcp")
	echo := base + "/echo"

	// An open app: spoofed identity headers are removed all the same.
	h := echoed(t, send(t, "GET", strings.TrimSuffix(b.appShow("open").URLs.Path, "/mcp")+"/echo", spoofed))
	noSpoofed(t, h)
	if h.Get("X-Ms-Client-Principal-Id") != "" {
		t.Errorf("open app got a principal: %v", h)
	}

	r := send(t, "GET", echo, nil)
	if r.status != 401 || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") || !strings.Contains(r.body, "berth app key create") {
		t.Fatalf("no key: %d %q %s", r.status, r.header.Get("WWW-Authenticate"), r.body)
	}
	k1 := strings.TrimSpace(lastLine(b.cli("app", "key", "create", "keyed", "ci")))
	var k2 struct{ Key string }
	b.cliJSON(&k2, "app", "key", "create", "keyed", "laptop")
	if list := b.cli("app", "key", "list", "keyed"); !strings.Contains(list, "ci") || !strings.Contains(list, "laptop") || strings.Contains(list, k1) {
		t.Fatalf("key list: %s", list)
	}
	show := b.cli("app", "show", "keyed", "-o", "json")
	if strings.Contains(show, k1) || strings.Contains(show, k2.Key) || strings.Contains(show, `"hash"`) {
		t.Fatalf("app show leaks a key: %s", show)
	}
	if s := b.cli("app", "show", "keyed"); !strings.Contains(s, "apikey (2 keys)") {
		t.Fatalf("app show: %s", s)
	}
	if s := b.cli("app", "list"); !strings.Contains(grepLines(s, "keyed"), "apikey") || !strings.Contains(grepLines(s, "open"), "none") {
		t.Fatalf("app list: %s", s)
	}
	// Stored hashed: the database (and its WAL) holds no key.
	sum := sha256.Sum256([]byte(k1))
	hashed := false
	for _, f := range []string{"berth.db", "berth.db-wal"} {
		raw, _ := os.ReadFile(filepath.Join(b.dataDir, f))
		if bytes.Contains(raw, []byte(k1)) || bytes.Contains(raw, []byte(k2.Key)) {
			t.Fatalf("%s holds an app key in clear", f)
		}
		hashed = hashed || bytes.Contains(raw, []byte(hex.EncodeToString(sum[:])))
	}
	if !hashed {
		t.Fatal("the key's SHA-256 is not in the database: looked in the wrong place?")
	}
	if r := send(t, "GET", echo, map[string]string{"x-api-key": "bk_wrong"}); r.status != 401 {
		t.Fatalf("wrong key: %d %s", r.status, r.body)
	}

	h = echoed(t, send(t, "GET", echo, with(spoofed, "x-api-key", k1)))
	noSpoofed(t, h)
	if h.Get("X-Ms-Client-Principal-Name") != "ci" || h.Get("X-Ms-Client-Principal-Idp") != "apikey" || h.Get("X-Api-Key") != "" {
		t.Fatalf("x-api-key: the app saw %v", h)
	}
	// The access line says who called (never the key).
	if line := b.waitLog(`msg="app request"`, "app=keyed", "caller=apikey:ci"); strings.Contains(line, k1) {
		t.Fatalf("the access line holds the key: %s", line)
	}
	h = echoed(t, send(t, "GET", echo, map[string]string{"Authorization": "Bearer " + k2.Key}))
	if h.Get("X-Ms-Client-Principal-Name") != "laptop" || h.Get("Authorization") != "" {
		t.Fatalf("bearer: the app saw %v", h)
	}
	// MCP through the gateway with the key.
	cs := connectMCP(t, base+"/mcp", &http.Client{Transport: headerRT{http.DefaultTransport, http.Header{"X-Api-Key": {k1}}}})
	callHeaders(t, cs)

	b.cli("app", "key", "revoke", "keyed", "ci")
	if r := send(t, "GET", echo, map[string]string{"x-api-key": k1}); r.status != 401 {
		t.Fatalf("revoked key: %d %s", r.status, r.body)
	}
	if r := send(t, "GET", echo, map[string]string{"x-api-key": k2.Key}); r.status != 200 {
		t.Fatalf("other key after a revoke: %d %s", r.status, r.body)
	}
	if _, errOut, code := b.try("app", "key", "revoke", "keyed", "ci"); code == 0 || !strings.Contains(errOut, "no key named") {
		t.Fatalf("revoking twice: %d %s", code, errOut)
	}

	// --auth-forward-token: the app sees the key.
	b.cli("app", "auth", "keyed", "--auth", "apikey", "--auth-forward-token")
	if h := echoed(t, send(t, "GET", echo, map[string]string{"x-api-key": k2.Key})); h.Get("X-Api-Key") != k2.Key {
		t.Fatalf("forward token: the app saw %v", h)
	}
	// Back to none: open at the next request, no new revision.
	revs := len(b.appShow("keyed").Revisions)
	b.cli("app", "auth", "keyed", "--auth", "none")
	if r := send(t, "GET", echo, nil); r.status != 200 || len(b.appShow("keyed").Revisions) != revs {
		t.Fatalf("auth none: %d %s", r.status, r.body)
	}

	// berth apply: auth in the manifest, applied with the first revision;
	// an unchanged template with a new auth makes no revision.
	manifest := filepath.Join(t.TempDir(), "app.yaml")
	write := func(auth string) {
		y := fmt.Sprintf(`name: declared
properties:
  configuration:
    ingress: {targetPort: 8080, transport: http, path: /mcp}
    auth: %s
  template:
    containers:
      - command: ["./echoapp"]
        dir: %s
    scale: {minReplicas: 1}
`, auth, dir)
		if err := os.WriteFile(manifest, []byte(y), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("{mode: apikey}")
	b.cli("apply", "-f", manifest)
	b.waitReplicas("declared", 1)
	decl := strings.TrimSuffix(b.appShow("declared").URLs.Path, "/mcp") + "/echo"
	if r := send(t, "GET", decl, nil); r.status != 401 {
		t.Fatalf("applied apikey app without a key: %d %s", r.status, r.body)
	}
	write("{mode: none}")
	if out := b.cli("apply", "-f", manifest); !strings.Contains(out, "no new revision") {
		t.Fatalf("apply of a new auth only:\n%s", out)
	}
	if r := send(t, "GET", decl, nil); r.status != 200 {
		t.Fatalf("applied auth none: %d %s", r.status, r.body)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func connectMCP(t testing.TB, url string, c *http.Client, oauth ...*extauth.ClientCredentialsHandler) *mcp.ClientSession {
	t.Helper()
	tr := &mcp.StreamableClientTransport{Endpoint: url, HTTPClient: c}
	if len(oauth) > 0 {
		tr.OAuthHandler = oauth[0]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil).Connect(ctx, tr, nil)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// callHeaders calls the echo app's tool and returns the headers it saw.
func callHeaders(t testing.TB, cs *mcp.ClientSession) http.Header {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "headers"})
	if err != nil || res.IsError || len(res.Content) == 0 {
		t.Fatalf("tools/call: %v %+v", err, res)
	}
	var h http.Header
	if err := json.Unmarshal([]byte(res.Content[0].(*mcp.TextContent).Text), &h); err != nil {
		t.Fatal(err)
	}
	return h
}

// TestAppAuthOIDC: an oidc app, with a real OpenID provider on loopback.
// The go-sdk's client_credentials client finds the provider through the
// 401 and the protected resource metadata, gets a token and calls a tool;
// the app learns who called and never sees the token or spoofed identity
// headers. Tokens that are expired, tampered with, for another audience or
// without the scope are refused.
func TestAppAuthOIDC(t *testing.T) {
	dir := echoApp(t)
	b := startBerth(t, "")
	resource := b.info.PublicURL + "/apps/guarded/mcp"
	p := oidctest.Start(t, nil, resource)
	b.cli("app", "deploy", "guarded", "--dir", dir, "--command", "./echoapp", "--min", "1",
		"--auth", "oidc", "--oidc-issuer", p.Issuer, "--oidc-audience", resource, "--oidc-scopes", "mcp:tools")
	b.waitReplicas("guarded", 1)
	if got := b.appShow("guarded").URLs.Path; got != resource {
		t.Fatalf("app URL %s, want %s", got, resource)
	}
	if s := b.cli("app", "show", "guarded"); !strings.Contains(s, "oidc issuer="+p.Issuer) {
		t.Fatalf("app show: %s", s)
	}
	echo := strings.TrimSuffix(resource, "/mcp") + "/echo"

	// No token: 401 and where to find the metadata.
	r := send(t, "POST", resource, nil)
	ch := r.header.Get("WWW-Authenticate")
	prm := b.info.PublicURL + "/.well-known/oauth-protected-resource/apps/guarded/mcp"
	if r.status != 401 || !strings.Contains(ch, `resource_metadata="`+prm+`"`) {
		t.Fatalf("no token: %d %q %s", r.status, ch, r.body)
	}
	m := send(t, "GET", prm, nil)
	var md struct {
		Resource             string   `json:"resource"`
		AuthorizationServers []string `json:"authorization_servers"`
		Scopes               []string `json:"scopes_supported"`
	}
	if err := json.Unmarshal([]byte(m.body), &md); err != nil || m.status != 200 || md.Resource != resource ||
		len(md.AuthorizationServers) != 1 || md.AuthorizationServers[0] != p.Issuer || strings.Join(md.Scopes, " ") != "mcp:tools" {
		t.Fatalf("metadata: %d %s", m.status, m.body)
	}

	// The go-sdk client finds the provider by itself.
	ccH, err := extauth.NewClientCredentialsHandler(&extauth.ClientCredentialsHandlerConfig{
		Credentials: &oauthex.ClientCredentials{ClientID: "sid1", ClientSecretAuth: &oauthex.ClientSecretAuth{ClientSecret: "verysecret"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	cs := connectMCP(t, resource, &http.Client{Transport: spoofRT{}}, ccH)
	h := callHeaders(t, cs)
	noSpoofed(t, h)
	if h.Get("X-Ms-Client-Principal-Id") != "sid1" || h.Get("X-Ms-Client-Principal-Idp") != "oidc" || h.Get("Authorization") != "" {
		t.Fatalf("the app saw %v", h)
	}
	raw, err := base64.StdEncoding.DecodeString(h.Get("X-Ms-Client-Principal"))
	var pr struct {
		AuthTyp string `json:"auth_typ"`
		Claims  []struct{ Typ, Val string }
	}
	if err != nil || json.Unmarshal(raw, &pr) != nil || pr.AuthTyp != "oidc" || !hasClaim(pr.Claims, "aud", resource) {
		t.Fatalf("X-MS-CLIENT-PRINCIPAL: %s", raw)
	}

	// The TypeScript SDK's client_credentials provider too (it sends the
	// RFC 8707 resource, which the provider ignores).
	t.Run("ts-sdk", func(t *testing.T) {
		in := needInterop(t)
		out := in.run(t, in.dir, "ts-oauth-client.mjs", resource, "sid1", "verysecret", "mcp:tools")
		var rep struct {
			Statuses []string
			Seen     http.Header
		}
		if err := json.Unmarshal([]byte(lastLine(out)), &rep); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if rep.Seen.Get("X-Ms-Client-Principal-Id") != "sid1" || rep.Seen.Get("Authorization") != "" ||
			!slices.Contains(rep.Statuses, "POST /apps/guarded/mcp 401") || !slices.Contains(rep.Statuses, "GET /.well-known/oauth-protected-resource/apps/guarded/mcp 200") {
			t.Fatalf("TS client: %s", out)
		}
	})

	good := p.Token(t, "mcp:tools")
	if h := echoed(t, send(t, "GET", echo, with(spoofed, "Authorization", "Bearer "+good))); h.Get("X-Ms-Client-Principal-Id") != "sid1" {
		t.Fatalf("good token: %v", h)
	} else {
		noSpoofed(t, h)
	}
	k := p.CurrentKey()
	tampered := good[:len(good)-4] + flip(good[len(good)-4:])
	der, _ := x509.MarshalPKIXPublicKey(&k.Private.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	claimsJSON, _ := json.Marshal(p.Claims(nil))
	seg := base64.RawURLEncoding.EncodeToString
	// The control: the same claims, signed right, pass; each case below
	// breaks one thing.
	if r := send(t, "GET", echo, map[string]string{"Authorization": "Bearer " + oidctest.Sign(t, jose.RS256, k.Private, k.ID, p.Claims(nil))}); r.status != 200 {
		t.Fatalf("a well-signed token: %d %s", r.status, r.body)
	}
	for name, tok := range map[string]string{
		"alg none":                  seg([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + seg(claimsJSON) + ".",
		"HS256 with the public key": oidctest.Sign(t, jose.HS256, pubPEM, k.ID, p.Claims(nil)),
		"unknown kid":               oidctest.Sign(t, jose.RS256, oidctest.NewKey(t, "rogue").Private, "rogue", p.Claims(nil)),
		"expired":                   oidctest.Sign(t, jose.RS256, k.Private, k.ID, p.Claims(map[string]any{"exp": time.Now().Add(-time.Hour).Unix(), "iat": time.Now().Add(-2 * time.Hour).Unix(), "nbf": time.Now().Add(-2 * time.Hour).Unix()})),
		"wrong audience":            oidctest.Sign(t, jose.RS256, k.Private, k.ID, p.Claims(map[string]any{"aud": []string{b.info.PublicURL + "/apps/other/mcp"}})),
		"wrong issuer":              oidctest.Sign(t, jose.RS256, k.Private, k.ID, p.Claims(map[string]any{"iss": "http://127.0.0.1:1"})),
		"tampered":                  tampered,
		"garbage":                   "not-a-jwt",
	} {
		r := send(t, "POST", resource, map[string]string{"Authorization": "Bearer " + tok})
		if ch := r.header.Get("WWW-Authenticate"); r.status != 401 || !strings.Contains(ch, `error="invalid_token"`) || !strings.Contains(ch, "resource_metadata=") {
			t.Errorf("%s: %d %q %s", name, r.status, ch, r.body)
		}
	}
	noScope := p.Token(t)
	r = send(t, "POST", resource, map[string]string{"Authorization": "Bearer " + noScope})
	if ch := r.header.Get("WWW-Authenticate"); r.status != 403 || !strings.Contains(ch, `error="insufficient_scope"`) || !strings.Contains(ch, `scope="mcp:tools"`) {
		t.Errorf("no scope: %d %q %s", r.status, ch, r.body)
	}
	// A key means nothing to an oidc app.
	if r := send(t, "GET", echo, map[string]string{"x-api-key": "bk_x"}); r.status != 401 {
		t.Errorf("x-api-key on an oidc app: %d", r.status)
	}
}

func hasClaim(cs []struct{ Typ, Val string }, typ, val string) bool {
	for _, c := range cs {
		if c.Typ == typ && c.Val == val {
			return true
		}
	}
	return false
}

func flip(s string) string {
	b := []byte(s)
	for i := range b {
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
	}
	return string(b)
}

// spoofRT sends spoofed identity headers with every request.
type spoofRT struct{}

func (spoofRT) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range spoofed {
		r.Header.Set(k, v)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// TestAppAuthOIDCOverHTTPS: the same flow on the HTTPS front door: the
// resource and its metadata are https URLs, and the go-sdk client (trusting
// only the exported root) finds the provider and calls the tool.
func TestAppAuthOIDCOverHTTPS(t *testing.T) {
	dir := echoApp(t)
	b := startBerth(t, "", "--https-listen", "127.0.0.1:0")
	f := newHTTPSFront(t, b)
	resource := b.info.PublicURL + "/apps/secure/mcp"
	p := oidctest.Start(t, nil, resource)
	b.cli("app", "deploy", "secure", "--dir", dir, "--command", "./echoapp", "--min", "1",
		"--auth", "oidc", "--oidc-issuer", p.Issuer, "--oidc-audience", resource)
	b.waitReplicas("secure", 1)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.roots}}, Timeout: time.Minute}

	resp, err := hc.Post(resource, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	prm := b.info.PublicURL + "/.well-known/oauth-protected-resource/apps/secure/mcp"
	if !strings.HasPrefix(prm, "https://") || resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `resource_metadata="`+prm+`"`) {
		t.Fatalf("no token over HTTPS: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	ccH, err := extauth.NewClientCredentialsHandler(&extauth.ClientCredentialsHandlerConfig{
		Credentials: &oauthex.ClientCredentials{ClientID: "sid1", ClientSecretAuth: &oauthex.ClientSecretAuth{ClientSecret: "verysecret"}},
		HTTPClient:  hc,
	})
	if err != nil {
		t.Fatal(err)
	}
	h := callHeaders(t, connectMCP(t, resource, hc, ccH))
	if h.Get("X-Ms-Client-Principal-Id") != "sid1" || h.Get("Authorization") != "" {
		t.Fatalf("the app saw %v", h)
	}
}
