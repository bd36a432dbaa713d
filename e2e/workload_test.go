package e2e

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/berth-dev/berth/edge/oidcauth"
	"github.com/berth-dev/berth/internal/testutil"
)

var (
	callOnce sync.Once
	callDir  string
	callErr  error
)

// callApp builds testdata/callapp (static) once and returns its directory:
// an MCP server whose tools make HTTP and MCP calls from inside its
// sandbox and ask its identity endpoint for tokens.
func callApp(t testing.TB) string {
	t.Helper()
	callOnce.Do(func() {
		if callDir, callErr = os.MkdirTemp("", "berth-callapp-"); callErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(callDir, "callapp"), "./e2e/testdata/callapp")
		cmd.Dir = testutil.ModuleRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			callErr = fmt.Errorf("go build callapp: %v\n%s", err, out)
		}
	})
	if callErr != nil {
		t.Fatal(callErr)
	}
	return callDir
}

// tool calls one of callapp's tools and returns its text; isErr says
// whether the tool failed (its text is then the error).
func tool(t testing.TB, cs *mcp.ClientSession, name string, args map[string]any) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("tools/call %s: %v", name, err)
	}
	if len(res.Content) == 0 {
		t.Fatalf("tools/call %s: empty result", name)
	}
	return res.Content[0].(*mcp.TextContent).Text, res.IsError
}

// mustTool is tool that must succeed.
func mustTool(t testing.TB, cs *mcp.ClientSession, name string, args map[string]any) string {
	t.Helper()
	out, isErr := tool(t, cs, name, args)
	if isErr {
		t.Fatalf("tool %s %v failed: %s", name, args, out)
	}
	return out
}

// deployCall deploys callapp as name, with one replica up.
func deployCall(t testing.TB, b *berth, name string, flags ...string) {
	t.Helper()
	b.cli(append([]string{"app", "deploy", name, "--dir", callApp(t), "--command", "./callapp", "--min", "1"}, flags...)...)
	b.waitReplicas(name, 1)
}

// stripRequestID removes the request id from an error body, so that two
// bodies can be compared.
func stripRequestID(s string) string {
	return regexp.MustCompile(`"requestId":"[^"]*"`).ReplaceAllString(s, "")
}

// TestAppToAppByName: app a (egress disabled: no network interface) calls
// app b by name with Go's HTTP client and the go-sdk's MCP client, at
// http://callee and http://callee.internal; a pool session does with curl and
// Python. b has internal ingress: the public listener answers 404 for it
// with the body of an unknown app's, by path and by host.
func TestAppToAppByName(t *testing.T) {
	b := startBerth(t, "")
	deployCall(t, b, "callee", "--ingress", "internal")
	deployCall(t, b, "caller")
	a := connectMCP(t, b.info.PublicURL+"/apps/caller/mcp", nil)

	for _, u := range []string{"http://callee/mcp", "http://callee.internal/mcp", "http://Callee.internal:80/mcp"} {
		out := mustTool(t, a, "call", map[string]any{"url": u})
		var h http.Header
		if err := json.Unmarshal([]byte(out), &h); err != nil || h.Get("Mcp-Session-Id") == "" {
			t.Fatalf("%s: b saw %s (%v)", u, out, err)
		}
	}
	// The gateway served it: an access line names the caller, and the
	// metrics count it.
	b.waitLog(`msg="app request"`, "app=callee", "caller=app:caller")
	metrics := get(t, b.info.AdminURL+"/metrics")
	if !regexp.MustCompile(`berth_app_requests_total\{app="callee",[^}]*method="tools/call",[^}]*tool="headers"`).MatchString(metrics) {
		t.Fatalf("no metrics for b's tools/call:\n%s", grepLines(metrics, `app="callee"`))
	}
	// A stdio app, by name.
	b.cli("app", "deploy", "stdio-callee", "--dir", callApp(t), "--command", "./callapp -stdio", "--transport", "stdio", "--ingress", "internal")
	if out := mustTool(t, a, "call", map[string]any{"url": "http://stdio-callee/mcp"}); out != "{}" {
		t.Fatalf("stdio-callee: %s", out)
	}
	out := mustTool(t, a, "fetch", map[string]any{"url": "http://callee/echo"})
	if !strings.HasPrefix(out, "200 ") || !strings.Contains(out, `"host":"callee"`) {
		t.Fatalf("a fetched http://callee/echo: %s", out)
	}
	// Unknown names and the public listener's paths are not reachable
	// as apps; a has no network for anything else.
	if out := mustTool(t, a, "fetch", map[string]any{"url": "http://nosuch/mcp"}); !strings.HasPrefix(out, "404 ") {
		t.Fatalf("http://nosuch: %s", out)
	}
	if out, isErr := tool(t, a, "fetch", map[string]any{"url": "http://example.com/"}); !isErr && !strings.HasPrefix(out, "502 ") {
		t.Fatalf("a reached http://example.com without egress: %s", out)
	}

	// A pool session: curl and Python's urllib, by plain name.
	key := strings.TrimSpace(b.cli("pool", "credentials", "default"))
	r := b.execute("default", key, "names-curl", `curl -s -w ' %{http_code}' http://callee/echo; echo; curl -s -w ' %{http_code}' http://callee.internal/echo`)
	if strings.Count(r.Stdout, `"host":"callee`) != 2 || strings.Count(r.Stdout, " 200") != 2 {
		t.Fatalf("curl from a session: %+v", r)
	}
	// A client that ignores http_proxy names the app in Host.
	r = b.execute("default", key, "names-curl", `curl -s --noproxy '*' -w ' %{http_code}' -H 'Host: callee' http://127.0.0.1:42356/echo`)
	if !strings.Contains(r.Stdout, `"host":"callee"`) || !strings.HasSuffix(r.Stdout, " 200") {
		t.Fatalf("curl with Host: callee: %+v", r)
	}
	r = b.execute("default", key, "names-py", `python3 -c 'import urllib.request as u; print(u.urlopen("http://callee/echo").status)'`)
	if strings.TrimSpace(r.Stdout) != "200" {
		t.Fatalf("python from a session: %+v", r)
	}
	b.waitLog(`msg="app request"`, "app=callee", "caller=pool:default")

	// The public listener does not reveal b.
	for _, pair := range [][2]string{
		{"/apps/callee/mcp", "/apps/nosuchapp/mcp"},
		{"/apps/callee/echo", "/apps/nosuchapp/echo"},
		{"/.well-known/oauth-protected-resource/apps/callee/mcp", "/.well-known/oauth-protected-resource/apps/nosuchapp/mcp"},
	} {
		hidden, unknown := b.do("GET", pair[0], nil, nil), b.do("GET", pair[1], nil, nil)
		want := strings.ReplaceAll(stripRequestID(string(unknown.Body)), "nosuchapp", "callee")
		if hidden.Status != 404 || unknown.Status != 404 || stripRequestID(string(hidden.Body)) != want {
			t.Fatalf("GET %s: %d %s; unknown app: %d %s", pair[0], hidden.Status, hidden.Body, unknown.Status, unknown.Body)
		}
	}
	// By host, and with a request that says it is internal.
	for _, host := range []string{"callee.localhost", "callee.internal", "callee"} {
		for _, p := range []string{"/echo", "/apps/callee/echo"} {
			if st := statusWithHost(t, b.info.PublicURL+p, host); st != 404 {
				t.Fatalf("public GET %s with Host %s: %d", p, host, st)
			}
		}
	}
	if r := send(t, "GET", b.info.PublicURL+"/apps/callee/echo", map[string]string{"X-Berth-Caller": "app:caller", "X-Ms-Client-Principal-Id": "app:caller"}); r.status != 404 {
		t.Fatalf("public request posing as app a: %d", r.status)
	}

	// berth apply: ingress.external false makes an app internal; the
	// same manifest again changes nothing; true makes it public.
	manifest := filepath.Join(t.TempDir(), "app.yaml")
	writeManifest := func(external bool) {
		y := fmt.Sprintf(`name: declared
properties:
  configuration:
    ingress: {external: %v, targetPort: 8080}
  template:
    containers:
      - command: ["./callapp"]
        dir: %s
    scale: {minReplicas: 1}
`, external, callApp(t))
		if err := os.WriteFile(manifest, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeManifest(false)
	b.cli("apply", "-f", manifest)
	b.waitReplicas("declared", 1)
	if out := mustTool(t, a, "fetch", map[string]any{"url": "http://declared/echo"}); !strings.HasPrefix(out, "200 ") {
		t.Fatalf("http://declared from caller: %s", out)
	}
	if st := statusWithHost(t, b.info.PublicURL+"/apps/declared/echo", ""); st != 404 {
		t.Fatalf("internal declared app on the public listener: %d", st)
	}
	if out := b.cli("apply", "-f", manifest); !strings.Contains(out, "no new revision") {
		t.Fatalf("same manifest again:\n%s", out)
	}
	writeManifest(true)
	b.cli("apply", "-f", manifest)
	waitStatus(t, b.info.PublicURL+"/apps/declared/echo", 200)

	// A deploy without --ingress keeps the app internal.
	b.cli("app", "deploy", "callee", "--dir", callApp(t), "--command", "./callapp", "--min", "1", "--revision-suffix", "again")
	if st := statusWithHost(t, b.info.PublicURL+"/apps/callee/echo", ""); st != 404 {
		t.Fatalf("callee after a deploy without --ingress: %d", st)
	}

	// Made external again, b answers the public listener.
	b.cli("app", "deploy", "callee", "--dir", callApp(t), "--command", "./callapp", "--min", "1", "--ingress", "external")
	waitStatus(t, b.info.PublicURL+"/apps/callee/echo", 200)
}

// statusWithHost is the status of GET u sent with Host host.
func statusWithHost(t testing.TB, u, host string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	req.Host = host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// get fetches a URL and returns its body.
func get(t testing.TB, u string) string {
	t.Helper()
	r := send(t, "GET", u, nil)
	if r.status != 200 {
		t.Fatalf("GET %s: %d %s", u, r.status, r.body)
	}
	return r.body
}

// waitStatus waits until GET u answers status.
func waitStatus(t testing.TB, u string, status int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		r := send(t, "GET", u, nil)
		if r.status == status {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %d %s, want %d", u, r.status, r.body, status)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// tokenOf asks app's identity endpoint (through its callapp tool) for a
// token for resource.
func tokenOf(t testing.TB, cs *mcp.ClientSession, resource string) string {
	t.Helper()
	out := mustTool(t, cs, "token", map[string]any{"resource": resource})
	status, body, _ := strings.Cut(out, " ")
	var tr struct {
		AccessToken string `json:"access_token"`
		ExpiresOn   string `json:"expires_on"`
		Resource    string `json:"resource"`
		TokenType   string `json:"token_type"`
	}
	if err := json.Unmarshal([]byte(body), &tr); status != "200" || err != nil || tr.AccessToken == "" || tr.Resource != resource || tr.TokenType != "Bearer" || tr.ExpiresOn == "" {
		t.Fatalf("identity endpoint: %s", out)
	}
	return tr.AccessToken
}

// claims decodes a JWT's payload (unverified).
func claims(t testing.TB, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", tok)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestWorkloadIdentity: app a gets a token for api://b from its identity
// endpoint and calls app b (--auth oidc on Berth's own issuer) with it;
// b learns it is app:caller. A token for another audience, one from another
// Berth's issuer, and a missing one are refused. a cannot obtain a token
// for anyone but itself, whatever it sends; a pool session gets none. An
// outside verifier that trusts Berth's JWKS accepts a's token.
func TestWorkloadIdentity(t *testing.T) {
	b := startBerth(t, "")
	iss := b.info.PublicURL
	deployCall(t, b, "callee", "--auth", "oidc", "--oidc-issuer", iss, "--oidc-audience", "api://callee")
	deployCall(t, b, "caller")
	a := connectMCP(t, b.info.PublicURL+"/apps/caller/mcp", nil)

	tok := tokenOf(t, a, "api://callee")
	c := claims(t, tok)
	exp, iat := c["exp"].(float64), c["iat"].(float64)
	if c["iss"] != iss || c["sub"] != "app:caller" || c["aud"] != "api://callee" || exp-iat > 3600 || exp < float64(time.Now().Unix()) {
		t.Fatalf("claims %v", c)
	}
	out := mustTool(t, a, "call", map[string]any{"url": "http://callee/mcp", "bearer": tok})
	var h http.Header
	if err := json.Unmarshal([]byte(out), &h); err != nil || h.Get("X-Ms-Client-Principal-Id") != "app:caller" || h.Get("X-Ms-Client-Principal-Idp") != "oidc" || h.Get("Authorization") != "" {
		t.Fatalf("b saw %s (%v)", out, err)
	}
	// The same token works from outside too (b is external): Berth's
	// issuer is an ordinary one.
	if cs := connectMCP(t, b.info.PublicURL+"/apps/callee/mcp", &http.Client{Transport: bearerRT(tok)}); cs == nil {
		t.Fatal("no session")
	}
	// Any service that trusts Berth's JWKS can verify it.
	v, err := oidcauth.New(oidcauth.Options{Issuer: iss, Audience: "api://callee"})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := v.Verify(context.Background(), tok); err != nil || p.Subject != "app:caller" {
		t.Fatalf("outside verifier: %+v %v", p, err)
	}

	// Refused: no token, another audience, another Berth's token.
	if _, isErr := tool(t, a, "call", map[string]any{"url": "http://callee/mcp"}); !isErr {
		t.Fatal("b accepted a call without a token")
	}
	other := tokenOf(t, a, "api://other")
	if out, isErr := tool(t, a, "call", map[string]any{"url": "http://callee/mcp", "bearer": other}); !isErr {
		t.Fatalf("b accepted a token for api://other: %s", out)
	}
	b2 := startBerth(t, "")
	deployCall(t, b2, "caller")
	a2 := connectMCP(t, b2.info.PublicURL+"/apps/caller/mcp", nil)
	foreign := tokenOf(t, a2, "api://callee")
	if claims(t, foreign)["sub"] != "app:caller" {
		t.Fatal("the other Berth's app a has another subject")
	}
	if out, isErr := tool(t, a, "call", map[string]any{"url": "http://callee/mcp", "bearer": foreign}); !isErr {
		t.Fatalf("b accepted another Berth's token: %s", out)
	}
	if r := send(t, "POST", b.info.PublicURL+"/apps/callee/mcp", map[string]string{"Authorization": "Bearer " + foreign}); r.status != 401 {
		t.Fatalf("another Berth's token from outside: %d", r.status)
	}

	// a cannot get a token for b (or anyone): the subject comes from the
	// tunnel, not the request.
	var env map[string]string
	_ = json.Unmarshal([]byte(mustTool(t, a, "env", nil)), &env)
	ep, hdr := env["IDENTITY_ENDPOINT"], env["IDENTITY_HEADER"]
	if ep != "http://127.0.0.1:42356/msi/token" || len(hdr) < 32 {
		t.Fatalf("identity variables %v", env)
	}
	q := "?api-version=2019-08-01&resource=api://callee"
	for _, f := range []struct {
		url     string
		headers map[string]string
		want    string
	}{
		{ep + q, map[string]string{"X-IDENTITY-HEADER": hdr, "X-Ms-Client-Principal-Id": "app:callee", "X-Berth-Caller": "app:callee"}, "200"},
		// Host: callee sends it to callee itself (which wants a token).
		{ep + q, map[string]string{"X-IDENTITY-HEADER": hdr, "Host": "callee"}, "401"},
		{ep + q + "&sub=app:callee&subject=app:callee", map[string]string{"X-IDENTITY-HEADER": hdr}, "200"},
		{ep + q + "&client_id=app:callee", map[string]string{"X-IDENTITY-HEADER": hdr}, "400"},
		{ep + q, map[string]string{"X-IDENTITY-HEADER": "wrong"}, "401"},
		{ep + q, nil, "401"},
		{"http://127.0.0.1:42356/apps/callee/msi/token" + q, map[string]string{"X-IDENTITY-HEADER": hdr}, "404"},
		{ep + "?resource=api://callee", map[string]string{"X-IDENTITY-HEADER": hdr}, "400"},
	} {
		args := map[string]any{"url": f.url}
		if f.headers != nil {
			args["headers"] = f.headers
		}
		out := mustTool(t, a, "fetch", args)
		status, body, _ := strings.Cut(out, " ")
		if status != f.want {
			t.Fatalf("GET %s %v: %s, want %s", f.url, f.headers, out, f.want)
		}
		if status == "200" {
			var tr struct {
				AccessToken string `json:"access_token"`
			}
			_ = json.Unmarshal([]byte(body), &tr)
			if sub := claims(t, tr.AccessToken)["sub"]; sub != "app:caller" {
				t.Fatalf("GET %s %v got a token for %v", f.url, f.headers, sub)
			}
		}
	}
	// http://callee/msi/token is b's own path, not anyone's identity endpoint.
	if out := mustTool(t, a, "fetch", map[string]any{"url": "http://callee/msi/token" + q}); strings.Contains(out, "access_token") {
		t.Fatalf("http://callee/msi/token gave a token: %s", out)
	}

	// A pool session has no identity.
	key := strings.TrimSpace(b.cli("pool", "credentials", "default"))
	r := b.execute("default", key, "names-id", `echo "[$IDENTITY_ENDPOINT]"; curl -s -w ' %{http_code}' "http://127.0.0.1:42356/msi/token`+q+`"`)
	if !strings.HasPrefix(r.Stdout, "[]") || !strings.HasSuffix(strings.TrimSpace(r.Stdout), " 404") || strings.Contains(r.Stdout, "access_token") {
		t.Fatalf("pool session identity: %+v", r)
	}
}

// bearerRT adds a bearer token to every request.
type bearerRT string

func (b bearerRT) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+string(b))
	return http.DefaultTransport.RoundTrip(r)
}

// TestWorkloadIdentityOverHTTPS: Berth's issuer is its HTTPS public URL
// (a local-CA certificate that is not in the system's store); an app
// with --auth oidc on it fetches discovery and keys from Berth itself and
// accepts another app's token.
func TestWorkloadIdentityOverHTTPS(t *testing.T) {
	b := startBerth(t, "", "--https-listen", "127.0.0.1:0")
	f := newHTTPSFront(t, b)
	iss := b.info.PublicURL
	if !strings.HasPrefix(iss, "https://") {
		t.Fatalf("public URL %s", iss)
	}
	deployCall(t, b, "callee", "--auth", "oidc", "--oidc-issuer", iss, "--oidc-audience", "api://callee")
	deployCall(t, b, "caller")
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.roots}}, Timeout: time.Minute}
	a := connectMCP(t, iss+"/apps/caller/mcp", hc)
	tok := tokenOf(t, a, "api://callee")
	if c := claims(t, tok); c["iss"] != iss {
		t.Fatalf("iss %v, want %s", c["iss"], iss)
	}
	out := mustTool(t, a, "call", map[string]any{"url": "http://callee/mcp", "bearer": tok})
	if !strings.Contains(out, `"X-Ms-Client-Principal-Id":["app:caller"]`) {
		t.Fatalf("b saw %s", out)
	}
}

// TestAppToAppGVisor: the tunnel under gVisor (its own network stack,
// the agent's socket through --host-uds).
func TestAppToAppGVisor(t *testing.T) {
	b := startBerth(t, "", "--app-runtime", "gvisor")
	deployCall(t, b, "callee", "--auth", "oidc", "--oidc-issuer", b.info.PublicURL, "--oidc-audience", "api://callee")
	deployCall(t, b, "caller")
	a := connectMCP(t, b.info.PublicURL+"/apps/caller/mcp", nil)
	tok := tokenOf(t, a, "api://callee")
	out := mustTool(t, a, "call", map[string]any{"url": "http://callee/mcp", "bearer": tok})
	if !strings.Contains(out, `"X-Ms-Client-Principal-Id":["app:caller"]`) {
		t.Fatalf("callee saw %s", out)
	}
}
