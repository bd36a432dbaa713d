package oidcauth

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/berth-dev/berth/internal/oidctest"
)

func newVerifier(t testing.TB, o Options) *Verifier {
	t.Helper()
	v, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestAcceptsProviderToken(t *testing.T) {
	p := startProvider(t, nil)
	v := newVerifier(t, Options{Issuer: p.Issuer, Audience: p.Audience, Scopes: []string{"mcp:tools"}, AllowedClients: []string{"sid1"}})
	raw := p.Token(t, "mcp:tools", "mcp:read")
	pr, err := v.Verify(context.Background(), raw)
	if err != nil {
		t.Fatal(err)
	}
	if pr.Subject != "sid1" || pr.ClientID != "sid1" || pr.Issuer != p.Issuer {
		t.Errorf("principal %+v", pr)
	}
	if !slices.Contains(pr.Scopes, "mcp:tools") || !slices.Contains(pr.Scopes, "mcp:read") {
		t.Errorf("scopes %v", pr.Scopes)
	}
	if time.Until(pr.Expiry) <= 0 || pr.Claims["client_id"] != "sid1" {
		t.Errorf("expiry %v, claims %v", pr.Expiry, pr.Claims)
	}
}

// TestRefused: every token below is refused with the right code, status
// and public message, and the public message never carries the cause.
func TestRefused(t *testing.T) {
	ctx := context.Background()
	p := startProvider(t, nil)
	good := p.Token(t, "mcp:tools")
	k := p.CurrentKey()
	ghost := oidctest.NewKey(t, "ghost")
	pubPEM := func() []byte {
		der, _ := x509.MarshalPKIXPublicKey(&k.Private.PublicKey)
		return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}()
	parts := strings.Split(good, ".")
	seg := base64.RawURLEncoding.EncodeToString
	var payload map[string]any
	b, _ := base64.RawURLEncoding.DecodeString(parts[1])
	_ = jsonUnmarshal(b, &payload)
	payload["sub"] = "admin"
	tamperedPayload := parts[0] + "." + seg(jsonMarshal(payload)) + "." + parts[2]
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sig[10] ^= 0x01
	tamperedSig := parts[0] + "." + parts[1] + "." + seg(sig)
	none := seg([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + seg(jsonMarshal(p.Claims(nil))) + "."
	hs256 := oidctest.Sign(t, jose.HS256, pubPEM, k.ID, p.Claims(nil))
	hour := time.Hour

	base := Options{Issuer: p.Issuer, Audience: p.Audience}
	for _, tc := range []struct {
		name   string
		opts   Options
		token  string
		shift  time.Duration // the verifier's clock
		code   Code
		status int
		msg    string
	}{
		{"no token", base, "", 0, CodeInvalidToken, 401, "no access token"},
		{"garbage", base, "not-a-jwt", 0, CodeInvalidToken, 401, "malformed"},
		{"expired (provider token, 2h later)", base, good, 2 * hour, CodeInvalidToken, 401, "expired"},
		{"expired (signed by the provider key)", base, oidctest.Sign(t, jose.RS256, k.Private, k.ID, p.Claims(map[string]any{"exp": time.Now().Add(-2 * time.Minute).Unix(), "nbf": nil})), 0, CodeInvalidToken, 401, "expired"},
		{"not yet valid", base, oidctest.Sign(t, jose.RS256, k.Private, k.ID, p.Claims(map[string]any{"nbf": time.Now().Add(2 * time.Minute).Unix()})), 0, CodeInvalidToken, 401, "not valid yet"},
		{"wrong audience", Options{Issuer: p.Issuer, Audience: "https://other.example.test/mcp"}, good, 0, CodeInvalidToken, 401, "another audience"},
		{"wrong issuer", base, oidctest.Sign(t, jose.RS256, k.Private, k.ID, p.Claims(map[string]any{"iss": "https://evil.example.test"})), 0, CodeInvalidToken, 401, "another issuer"},
		{"tampered payload", base, tamperedPayload, 0, CodeInvalidToken, 401, "signature"},
		{"tampered signature", base, tamperedSig, 0, CodeInvalidToken, 401, "signature"},
		{"alg none", base, none, 0, CodeInvalidToken, 401, "refused algorithm"},
		{"HS256 signed with the public key", base, hs256, 0, CodeInvalidToken, 401, "refused algorithm"},
		{"unknown kid", base, oidctest.Sign(t, jose.RS256, ghost.Private, ghost.ID, p.Claims(nil)), 0, CodeInvalidToken, 401, "signature"},
		{"no kid, unknown key", base, oidctest.Sign(t, jose.RS256, ghost.Private, "", p.Claims(nil)), 0, CodeInvalidToken, 401, "signature"},
		{"client not allowed", Options{Issuer: p.Issuer, Audience: p.Audience, AllowedClients: []string{"berth-cli"}}, good, 0, CodeInvalidToken, 401, "client is not allowed"},
		{"scope missing", Options{Issuer: p.Issuer, Audience: p.Audience, Scopes: []string{"mcp:tools", "mcp:admin"}}, good, 0, CodeInsufficientScope, 403, "lacks a required scope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newVerifier(t, tc.opts)
			if tc.shift != 0 {
				v.now = func() time.Time { return time.Now().Add(tc.shift) }
			}
			_, err := v.Verify(ctx, tc.token)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("want *Error, got %v", err)
			}
			if e.Code != tc.code || e.Status() != tc.status || !strings.Contains(e.Message, tc.msg) {
				t.Fatalf("got %s %d %q (cause %v), want %s %d %q", e.Code, e.Status(), e.Message, e.Err, tc.code, tc.status, tc.msg)
			}
			if e.Err == nil || strings.Contains(e.Message, "oidc:") || strings.Contains(e.Message, "go-jose") {
				t.Errorf("message %q / cause %v: the cause belongs in Err only", e.Message, e.Err)
			}
			if tc.code == CodeInsufficientScope && e.Scope != "mcp:tools mcp:admin" {
				t.Errorf("scope %q", e.Scope)
			}
			if (tc.token == "") != e.Missing {
				t.Errorf("Missing = %v", e.Missing)
			}
		})
	}
}

func TestKeyRotationWithoutRestart(t *testing.T) {
	ctx := context.Background()
	p := startProvider(t, nil)
	v := newVerifier(t, Options{Issuer: p.Issuer, Audience: p.Audience, KeyRefreshInterval: 50 * time.Millisecond, CacheTTL: 200 * time.Millisecond})
	old := p.Token(t, "mcp:tools")
	if _, err := v.Verify(ctx, old); err != nil {
		t.Fatal(err)
	}
	p.Rotate(t, "key-2", false)
	time.Sleep(60 * time.Millisecond)
	fresh := p.Token(t, "mcp:tools")
	if _, err := v.Verify(ctx, fresh); err != nil {
		t.Fatalf("token signed with the new key: %v", err)
	}
	if _, err := v.Verify(ctx, old); err != nil {
		t.Fatalf("token signed with the old key, still published: %v", err)
	}
	// Once the old key is withdrawn, its tokens are refused (after the
	// token cache's TTL).
	p.Rotate(t, "key-3", true)
	time.Sleep(250 * time.Millisecond)
	if _, err := v.Verify(ctx, p.Token(t, "mcp:tools")); err != nil {
		t.Fatalf("after the second rotation: %v", err)
	}
	// On a loaded machine the cache and the key refresh may lag the sleep
	// above: the old key's tokens must be refused soon, without a restart.
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := v.Verify(ctx, old)
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a token of a withdrawn key was still accepted 5 s after the key was withdrawn")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestCachedTokenStillExpires(t *testing.T) {
	ctx := context.Background()
	p := startProvider(t, nil)
	v := newVerifier(t, Options{Issuer: p.Issuer, Audience: p.Audience, Scopes: []string{"mcp:tools"}})
	k := p.CurrentKey()
	tok := oidctest.Sign(t, jose.RS256, k.Private, k.ID, p.Claims(map[string]any{"exp": time.Now().Add(5 * time.Second).Unix()}))
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatalf("second (cached) verification: %v", err)
	}
	// The policy applies to cached tokens too.
	strict := newVerifier(t, Options{Issuer: p.Issuer, Audience: p.Audience, Scopes: []string{"mcp:admin"}})
	for range 2 {
		if _, err := strict.Verify(ctx, tok); err == nil {
			t.Fatal("missing scope accepted")
		}
	}
	v.now = func() time.Time { return time.Now().Add(5*time.Second + DefaultLeeway + time.Second) }
	if _, err := v.Verify(ctx, tok); err == nil {
		t.Fatal("a cached token was accepted after its exp")
	}
}

func TestForgedTokensDoNotHammerTheIssuer(t *testing.T) {
	ctx := context.Background()
	p := startProvider(t, nil)
	v := newVerifier(t, Options{Issuer: p.Issuer, Audience: p.Audience})
	if _, err := v.Verify(ctx, p.Token(t, "mcp:tools")); err != nil {
		t.Fatal(err)
	}
	ghost := oidctest.NewKey(t, "ghost")
	forged := make([]string, 50)
	for i := range forged {
		forged[i] = oidctest.Sign(t, jose.RS256, ghost.Private, fmt.Sprintf("ghost-%d", i), p.Claims(nil))
	}
	before, t0 := p.JWKSRequests(), time.Now()
	for _, tok := range forged {
		if _, err := v.Verify(ctx, tok); err == nil {
			t.Fatal("forged token accepted")
		}
	}
	if n := p.JWKSRequests() - before; n > 1+int32(time.Since(t0)/DefaultKeyRefreshInterval) {
		t.Fatalf("50 forged tokens cost %d JWKS fetches, want at most 1 per %v", n, DefaultKeyRefreshInterval)
	}
	if _, err := v.Verify(ctx, p.Token(t, "mcp:tools")); err != nil {
		t.Fatalf("a good token after the forged ones: %v", err)
	}
}

func TestIssuerDownAtStart(t *testing.T) {
	ctx := context.Background()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: the issuer is down
	v := newVerifier(t, Options{Issuer: "http://" + addr, Audience: testAudience, DiscoveryRetry: 100 * time.Millisecond})
	_, err = v.Verify(ctx, "x.y.z")
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeUnavailable || e.Status() != http.StatusServiceUnavailable {
		t.Fatalf("issuer down: %v", err)
	}
	// The issuer comes up; after the retry delay the verifier discovers it.
	if ln, err = net.Listen("tcp", addr); err != nil {
		t.Skipf("port %s taken meanwhile: %v", addr, err)
	}
	p := startProvider(t, ln)
	tok := p.Token(t, "mcp:tools")
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := v.Verify(ctx, tok)
		if err == nil {
			break
		}
		if !errors.As(err, &e) || e.Code != CodeUnavailable || time.Now().After(deadline) {
			t.Fatalf("after the issuer came up: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestNewChecksOptions(t *testing.T) {
	for _, o := range []Options{
		{Issuer: "", Audience: "a"},
		{Issuer: "ftp://idp.example.test", Audience: "a"},
		{Issuer: "http://idp.example.test", Audience: "a"}, // http off loopback
		{Issuer: "https://idp.example.test"},               // no audience
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
	for _, o := range []Options{
		{Issuer: "https://idp.example.test", Audience: "a"},
		{Issuer: "http://127.0.0.1:9000", Audience: "a"},
		{Issuer: "http://localhost:9000/realms/x", Audience: "a"},
	} {
		if _, err := New(o); err != nil {
			t.Errorf("New(%+v): %v", o, err)
		}
	}
}

func TestBearerToken(t *testing.T) {
	for h, want := range map[string]string{
		"Bearer abc": "abc", "bearer abc": "abc", "BEARER  abc ": "abc",
		"": "", "Basic abc": "", "Bearer": "", "Bearerabc": "",
	} {
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		if h != "" {
			r.Header.Set("Authorization", h)
		}
		if got := BearerToken(r); got != want {
			t.Errorf("BearerToken(%q) = %q, want %q", h, got, want)
		}
	}
}

// BenchmarkVerify is one verification of a provider's RS256 token with the
// keys cached (discovery and the JWKS fetch happen before the timer): "cached"
// is a token seen before (what a client sends on every call), "full" checks
// the signature every time.
func BenchmarkVerify(b *testing.B) {
	p := startProvider(b, nil)
	for _, bc := range []struct {
		name string
		ttl  time.Duration
	}{{"cached", 0}, {"full", -1}} {
		b.Run(bc.name, func(b *testing.B) { benchVerify(b, p, bc.ttl) })
	}
}

func benchVerify(b *testing.B, p *oidctest.Provider, ttl time.Duration) {
	v := newVerifier(b, Options{Issuer: p.Issuer, Audience: p.Audience, Scopes: []string{"mcp:tools"}, CacheTTL: ttl})
	tok := p.Token(b, "mcp:tools")
	ctx := context.Background()
	if _, err := v.Verify(ctx, tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := v.Verify(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}
