package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/modelcontextprotocol/go-sdk/auth/extauth"
	"github.com/modelcontextprotocol/go-sdk/oauthex"

	"github.com/berth-dev/berth/internal/oidctest"
)

// TestPoolAuthOIDC: a pool with --auth oidc takes bearer tokens from the
// issuer on the data plane and its MCP endpoint and refuses its key;
// key,oidc takes both; back to key, tokens are refused. Tokens for another
// audience or that are expired are refused.
func TestPoolAuthOIDC(t *testing.T) {
	b := startBerth(t, "")
	aud := b.info.PublicURL + "/pools/ops/mcp"
	p := oidctest.Start(t, nil, aud)
	key := b.createPool("ops", "--ready", "1", "--mcp", "--auth", "oidc", "--oidc-issuer", p.Issuer, "--oidc-audience", aud)
	if s := b.cli("pool", "show", "ops"); !strings.Contains(s, "oidc (issuer "+p.Issuer) {
		t.Fatalf("pool show: %s", s)
	}
	tok := p.Token(t)
	exec := func(h http.Header) resp {
		t.Helper()
		body, _ := json.Marshal(map[string]any{"properties": map[string]any{"codeInputType": "inline", "executionType": "synchronous", "code": "echo via-oidc"}})
		h.Set("Content-Type", "application/json")
		return b.do(http.MethodPost, "/pools/ops/code/execute?identifier=sess1", h, bytes.NewReader(body))
	}
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

	if r := exec(bearer(tok)); r.Status != 200 || !strings.Contains(string(r.Body), "via-oidc") {
		t.Fatalf("token on the data plane: %d %s", r.Status, r.Body)
	}
	if r := exec(http.Header{"X-Ms-Apikey": {key}}); r.Status != 401 {
		t.Fatalf("key on an oidc pool: %d %s", r.Status, r.Body)
	}
	if r := exec(bearer(key)); r.Status != 401 {
		t.Fatalf("key as bearer on an oidc pool: %d %s", r.Status, r.Body)
	}
	k := p.CurrentKey()
	for name, bad := range map[string]string{
		"wrong audience": oidctest.Sign(t, jose.RS256, k.Private, k.ID, p.Claims(map[string]any{"aud": []string{"https://other.example/"}})),
		"expired":        oidctest.Sign(t, jose.RS256, k.Private, k.ID, p.Claims(map[string]any{"exp": time.Now().Add(-time.Hour).Unix(), "nbf": time.Now().Add(-2 * time.Hour).Unix(), "iat": time.Now().Add(-2 * time.Hour).Unix()})),
	} {
		if r := exec(bearer(bad)); r.Status != 401 || !strings.Contains(r.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
			t.Errorf("%s: %d %q %s", name, r.Status, r.Header.Get("WWW-Authenticate"), r.Body)
		}
	}
	mcpURL := b.info.PublicURL + "/pools/ops/mcp"
	c, err := dialMCP(t, mcpURL, tok, true, "2025-11-25")
	if err != nil {
		t.Fatalf("MCP with a token: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.ListTools(ctx, nil); err != nil {
		t.Fatalf("tools/list with a token: %v", err)
	}
	if _, err := dialMCP(t, mcpURL, key, false, "2025-11-25"); err == nil {
		t.Fatal("MCP with the key on an oidc pool: connected")
	}
	// An MCP client that knows only the endpoint finds the provider
	// through the 401 and the metadata (RFC 9728).
	r := b.do("POST", "/pools/ops/mcp", http.Header{"Content-Type": {"application/json"}}, strings.NewReader("{}"))
	prm := b.info.PublicURL + "/.well-known/oauth-protected-resource/pools/ops/mcp"
	if r.Status != 401 || !strings.Contains(r.Header.Get("WWW-Authenticate"), `resource_metadata="`+prm+`"`) {
		t.Fatalf("MCP without a token: %d %q", r.Status, r.Header.Get("WWW-Authenticate"))
	}
	md := b.do("GET", "/.well-known/oauth-protected-resource/pools/ops/mcp", nil, nil)
	if md.Status != 200 || !strings.Contains(string(md.Body), `"resource":"`+mcpURL+`"`) || !strings.Contains(string(md.Body), p.Issuer) {
		t.Fatalf("pool metadata: %d %s", md.Status, md.Body)
	}
	ccH, err := extauth.NewClientCredentialsHandler(&extauth.ClientCredentialsHandlerConfig{
		Credentials: &oauthex.ClientCredentials{ClientID: "sid1", ClientSecretAuth: &oauthex.ClientSecretAuth{ClientSecret: "verysecret"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	cs := connectMCP(t, mcpURL, nil, ccH)
	if _, err := cs.ListTools(ctx, nil); err != nil {
		t.Fatalf("tools/list through the go-sdk OAuth client: %v", err)
	}

	b.cli("pool", "update", "ops", "--auth", "key,oidc")
	if r := exec(bearer(tok)); r.Status != 200 {
		t.Fatalf("token on key,oidc: %d %s", r.Status, r.Body)
	}
	if r := exec(http.Header{"X-Ms-Apikey": {key}}); r.Status != 200 {
		t.Fatalf("key on key,oidc: %d %s", r.Status, r.Body)
	}
	if r := exec(bearer(key)); r.Status != 200 {
		t.Fatalf("key as bearer on key,oidc: %d %s", r.Status, r.Body)
	}
	if _, err := dialMCP(t, mcpURL, key, false, "2025-11-25"); err != nil {
		t.Fatalf("MCP with the key on key,oidc: %v", err)
	}
	if r := b.do("POST", "/pools/ops/mcp", http.Header{"Content-Type": {"application/json"}}, strings.NewReader("{}")); r.Status != 401 ||
		!strings.Contains(r.Header.Get("WWW-Authenticate"), `resource_metadata="`+prm+`"`) {
		t.Fatalf("MCP without a credential on key,oidc: %d %q", r.Status, r.Header.Get("WWW-Authenticate"))
	}

	b.cli("pool", "update", "ops", "--auth", "key")
	if r := exec(bearer(tok)); r.Status != 401 {
		t.Fatalf("token on a key pool: %d %s", r.Status, r.Body)
	}
	if md := b.do("GET", "/.well-known/oauth-protected-resource/pools/ops/mcp", nil, nil); md.Status != 404 {
		t.Fatalf("metadata of a key pool: %d %s", md.Status, md.Body)
	}
	if _, errOut, code := b.try("pool", "update", "ops", "--auth", "oidc", "--oidc-issuer", "http://example.com"); code == 0 || !strings.Contains(errOut, "https") {
		t.Fatalf("http issuer beyond loopback: %d %s", code, errOut)
	}
}
