package identity

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// verify checks tok against the JWKS the issuer serves and returns its
// claims.
func verify(t *testing.T, iss *Issuer, tok string) (jwt.Claims, error) {
	t.Helper()
	set, err := iss.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var c jwt.Claims
	keys := set.Key(parsed.Headers[0].KeyID)
	if len(keys) == 0 {
		return c, errNoKey
	}
	return c, parsed.Claims(keys[0].Key, &c)
}

var errNoKey = &json.UnsupportedValueError{Str: "kid not in JWKS"}

func kids(t *testing.T, iss *Issuer) []string {
	set, err := iss.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range set.Keys {
		if !k.IsPublic() || k.Algorithm != "ES256" || k.Use != "sig" {
			t.Fatalf("JWKS key %s: public %v, alg %s, use %s", k.KeyID, k.IsPublic(), k.Algorithm, k.Use)
		}
		out = append(out, k.KeyID)
	}
	return out
}

func TestTokenClaims(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	iss, err := New(Options{Dir: t.TempDir(), Issuer: "https://berth.test", Now: c.now, TokenTTL: 3 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	tok, exp, err := iss.Token("app:a", "api://b")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := verify(t, iss, tok)
	if err != nil {
		t.Fatal(err)
	}
	if cl.Issuer != "https://berth.test" || cl.Subject != "app:a" || len(cl.Audience) != 1 || cl.Audience[0] != "api://b" {
		t.Fatalf("claims %+v", cl)
	}
	// TokenTTL is capped at an hour.
	if got := exp.Sub(c.now()); got != time.Hour || !cl.Expiry.Time().Equal(exp) {
		t.Fatalf("exp in %v (claim %v), want 1h", got, cl.Expiry.Time())
	}
}

func TestRotation(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	dir := t.TempDir()
	o := Options{Dir: dir, Issuer: "http://127.0.0.1:1", Now: c.now, RotateEvery: 2 * time.Hour, TokenTTL: time.Hour}
	iss, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	first := kids(t, iss)
	if len(first) != 1 {
		t.Fatalf("JWKS %v, want one key", first)
	}
	old, _, _ := iss.Token("app:a", "x")

	c.add(2 * time.Hour) // the first key has signed for its period
	now := kids(t, iss)
	if len(now) != 2 || now[0] != first[0] {
		t.Fatalf("after rotation JWKS %v, want the old key and a new one", now)
	}
	tok, _, _ := iss.Token("app:a", "x")
	if _, err := verify(t, iss, tok); err != nil {
		t.Fatal(err)
	}
	parsed, _ := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
	if parsed.Headers[0].KeyID != now[1] {
		t.Fatalf("signed with %s, want the new key %s", parsed.Headers[0].KeyID, now[1])
	}
	// The old key's tokens still verify while they may be valid.
	if _, err := verify(t, iss, old); err != nil {
		t.Fatalf("old token: %v", err)
	}

	// A restart keeps the keys.
	again, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if got := kids(t, again); len(got) != 2 || got[0] != now[0] || got[1] != now[1] {
		t.Fatalf("after restart JWKS %v, want %v", got, now)
	}
	if fi, err := os.Stat(filepath.Join(dir, keysFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("keys file: %v %v", fi, err)
	}

	// Past TokenTTL + margin after the rotation, the old key goes.
	c.add(time.Hour + retireMargin + time.Second)
	if got := kids(t, iss); len(got) != 1 || got[0] != now[1] {
		t.Fatalf("JWKS %v, want only %s", got, now[1])
	}
	if _, err := verify(t, iss, old); err != errNoKey {
		t.Fatalf("old token after its key retired: %v", err)
	}
}

func TestHandler(t *testing.T) {
	iss, err := New(Options{Dir: t.TempDir(), Issuer: "https://berth.test:8443"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(iss.Handler())
	defer srv.Close()
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
		Algs    []string
	}
	resp, err := http.Get(srv.URL + DiscoveryPath)
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&doc)
	resp.Body.Close()
	if doc.Issuer != "https://berth.test:8443" || doc.JWKSURI != "https://berth.test:8443"+JWKSPath {
		t.Fatalf("discovery %+v", doc)
	}
	resp, err = http.Get(srv.URL + JWKSPath)
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	_ = json.NewDecoder(resp.Body).Decode(&set)
	resp.Body.Close()
	if len(set.Keys) != 1 || !set.Keys[0].IsPublic() {
		t.Fatalf("JWKS %+v: want one public key", set)
	}
	b, _ := json.Marshal(set)
	if json.Valid(b) && containsD(b) {
		t.Fatalf("JWKS carries private material: %s", b)
	}
}

// containsD reports whether a JWK set has an EC private scalar.
func containsD(b []byte) bool {
	var raw struct{ Keys []map[string]any }
	_ = json.Unmarshal(b, &raw)
	for _, k := range raw.Keys {
		if _, ok := k["d"]; ok {
			return true
		}
	}
	return false
}
