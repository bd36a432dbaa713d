package e2e

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	zoidc "github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/oauth2/clientcredentials"
)

// A real OpenID provider in-process (as in edge/oidcauth's tests): zitadel/oidc's op package with its
// example storage, changed so that client_credentials gives an RS256 JWT
// access token (aud = the resource, a "scope" claim) signed with keys the
// test can rotate.

type opKey struct {
	id  string
	key *rsa.PrivateKey
}

func newOPKey(t testing.TB, id string) *opKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return &opKey{id: id, key: k}
}

func (k *opKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k *opKey) Algorithm() jose.SignatureAlgorithm          { return jose.RS256 }
func (k *opKey) ID() string                                  { return k.id }
func (k *opKey) Use() string                                 { return "sig" }

// signingKey and publicKey give op the private and the public half.
type signingKey struct{ *opKey }
type publicKey struct{ *opKey }

func (k signingKey) Key() any { return k.key }
func (k publicKey) Key() any  { return &k.key.PublicKey }

type jwtClient struct{ op.Client }

func (jwtClient) AccessTokenType() op.AccessTokenType { return op.AccessTokenTypeJWT }

type opStorage struct {
	*storage.Storage
	audience string

	mu        sync.Mutex
	signing   *opKey
	published []*opKey
}

func (s *opStorage) SigningKey(context.Context) (op.SigningKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return signingKey{s.signing}, nil
}

func (s *opStorage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}

func (s *opStorage) KeySet(context.Context) ([]op.Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var keys []op.Key
	for _, k := range s.published {
		keys = append(keys, publicKey{k})
	}
	return keys, nil
}

func (s *opStorage) ClientCredentials(ctx context.Context, id, secret string) (op.Client, error) {
	c, err := s.Storage.ClientCredentials(ctx, id, secret)
	if err != nil {
		return nil, err
	}
	return jwtClient{c}, nil
}

func (s *opStorage) ClientCredentialsTokenRequest(_ context.Context, id string, scopes []string) (op.TokenRequest, error) {
	return &zoidc.JWTTokenRequest{Subject: id, Audience: []string{s.audience}, Scopes: scopes}, nil
}

func (s *opStorage) GetPrivateClaimsFromScopes(ctx context.Context, userID, clientID string, scopes []string) (map[string]any, error) {
	claims, err := s.Storage.GetPrivateClaimsFromScopes(ctx, userID, clientID, scopes)
	if err != nil {
		return nil, err
	}
	if claims == nil {
		claims = map[string]any{}
	}
	if len(scopes) > 0 {
		claims["scope"] = strings.Join(scopes, " ")
	}
	return claims, nil
}

type provider struct {
	issuer   string
	audience string
	st       *opStorage
	jwks     atomic.Int32 // JWKS requests served
	srv      *http.Server
}

// startProvider serves the provider on a free loopback port; its
// client_credentials tokens have aud = audience (the default resource: the
// go-sdk client sends no RFC 8707 resource parameter).
func startProvider(t testing.TB, audience string) *provider {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	issuer := "http://" + ln.Addr().String()
	k := newOPKey(t, "key-1")
	p := &provider{issuer: issuer, audience: audience, st: &opStorage{
		Storage:  storage.NewStorage(storage.NewUserStore(issuer)),
		audience: audience, signing: k, published: []*opKey{k},
	}}
	router := exampleop.SetupServer(issuer, p.st, slog.New(slog.NewTextHandler(io.Discard, nil)), false)
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/keys") {
			p.jwks.Add(1)
		}
		router.ServeHTTP(w, r)
	}), ReadHeaderTimeout: 10 * time.Second}
	go p.srv.Serve(ln)
	t.Cleanup(func() { p.srv.Close() })
	return p
}

// token gets an access token with client_credentials (client sid1 of the
// example storage).
func (p *provider) token(t testing.TB, scopes ...string) string {
	t.Helper()
	cc := clientcredentials.Config{ClientID: "sid1", ClientSecret: "verysecret", TokenURL: p.issuer + "/oauth/token", Scopes: scopes}
	tok, err := cc.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return tok.AccessToken
}

func (p *provider) currentKey() *opKey {
	p.st.mu.Lock()
	defer p.st.mu.Unlock()
	return p.st.signing
}

// sign makes a JWT with the given header algorithm, key and kid over claims.
func sign(t testing.TB, alg jose.SignatureAlgorithm, key any, kid string, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(claims)
	obj, err := s.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	out, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// claimsFor are good claims for p's audience, changed by edits.
func (p *provider) claims(edits map[string]any) map[string]any {
	now := time.Now()
	c := map[string]any{
		"iss": p.issuer, "sub": "sid1", "aud": []string{p.audience}, "client_id": "sid1",
		"scope": "mcp:tools", "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}
	for k, v := range edits {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}
