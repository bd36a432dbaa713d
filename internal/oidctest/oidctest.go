// Package oidctest runs a real OpenID provider in-process for tests:
// zitadel/oidc's op package with its example storage, changed so that a
// client_credentials grant gives an RS256 JWT access token (aud = the
// provider's audience, a "scope" claim) signed with keys a test can rotate.
// It also signs tokens by hand, for the refusals a verifier must make, and
// serves the authorization-code flow (with PKCE) to web clients a test
// registers (AddWebClient): a browser signs in on the example's login form
// as one of Users.
package oidctest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"encoding/json"
	"errors"
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

// Key is a signing key of the provider (or a rogue one).
type Key struct {
	ID      string
	Private *rsa.PrivateKey
}

// NewKey makes a 2048-bit RSA key named id.
func NewKey(t testing.TB, id string) *Key {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return &Key{ID: id, Private: k}
}

// signingKey and publicKey give op the private and the public half.
type signingKey struct{ k *Key }
type publicKey struct{ k *Key }

func (k signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k signingKey) ID() string                                  { return k.k.ID }
func (k signingKey) Key() any                                    { return k.k.Private }
func (k publicKey) Algorithm() jose.SignatureAlgorithm           { return jose.RS256 }
func (k publicKey) ID() string                                   { return k.k.ID }
func (k publicKey) Use() string                                  { return "sig" }
func (k publicKey) Key() any                                     { return &k.k.Private.PublicKey }

type jwtClient struct{ op.Client }

func (jwtClient) AccessTokenType() op.AccessTokenType { return op.AccessTokenTypeJWT }

type opStorage struct {
	*storage.Storage
	audience string

	mu        sync.Mutex
	signing   *Key
	published []*Key
	web       map[string]*webClient
}

// webClient is a client of the authorization-code flow a test registered.
type webClient struct {
	client *storage.Client
	secret string
}

func (s *opStorage) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	s.mu.Lock()
	c := s.web[id]
	s.mu.Unlock()
	if c != nil {
		return storage.RedirectGlobsClient(c.client), nil
	}
	return s.Storage.GetClientByClientID(ctx, id)
}

func (s *opStorage) AuthorizeClientIDSecret(ctx context.Context, id, secret string) error {
	s.mu.Lock()
	c := s.web[id]
	s.mu.Unlock()
	if c != nil {
		if subtle.ConstantTimeCompare([]byte(c.secret), []byte(secret)) != 1 {
			return errors.New("invalid secret")
		}
		return nil
	}
	return s.Storage.AuthorizeClientIDSecret(ctx, id, secret)
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

// Provider is a running provider.
type Provider struct {
	// Issuer is its URL (http on loopback, no trailing slash).
	Issuer string
	// Audience is the aud of the tokens it issues (the default resource:
	// the go-sdk client sends no RFC 8707 resource parameter).
	Audience string
	st       *opStorage
	jwks     atomic.Int32 // JWKS requests served
	srv      *http.Server
}

// Start serves a provider on ln (a free loopback port when nil) until the
// test ends; its client_credentials tokens have aud = audience.
func Start(t testing.TB, ln net.Listener, audience string) *Provider {
	t.Helper()
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	issuer := "http://" + ln.Addr().String()
	k := NewKey(t, "key-1")
	p := &Provider{Issuer: issuer, Audience: audience, st: &opStorage{
		Storage:  storage.NewStorage(storage.NewUserStore(issuer)),
		audience: audience, signing: k, published: []*Key{k},
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

// Users of the provider's login form (password "verysecure" for both):
// Username signs in, Subject is the sub and Email the (verified) email the
// provider gives the client.
var Users = struct{ Admin, Other User }{
	Admin: User{Username: "test-user@127.0.0.1", Password: "verysecure", Subject: "id1", Email: "test-user@zitadel.ch"},
	Other: User{Username: "test-user2", Password: "verysecure", Subject: "id2", Email: "test-user2@zitadel.ch"},
}

// User is a user of the provider.
type User struct{ Username, Password, Subject, Email string }

// AddWebClient registers a confidential client of the authorization-code
// flow (client_secret_basic or _post, PKCE S256 accepted) with exactly these
// redirect URIs.
func (p *Provider) AddWebClient(id, secret string, redirectURIs ...string) {
	p.st.mu.Lock()
	defer p.st.mu.Unlock()
	if p.st.web == nil {
		p.st.web = map[string]*webClient{}
	}
	p.st.web[id] = &webClient{client: storage.WebClient(id, secret, redirectURIs...), secret: secret}
}

// Token gets an access token with client_credentials (client sid1 of the
// example storage).
func (p *Provider) Token(t testing.TB, scopes ...string) string {
	t.Helper()
	cc := clientcredentials.Config{ClientID: "sid1", ClientSecret: "verysecret", TokenURL: p.Issuer + "/oauth/token", Scopes: scopes}
	tok, err := cc.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return tok.AccessToken
}

// JWKSRequests counts the requests for its key set so far.
func (p *Provider) JWKSRequests() int32 { return p.jwks.Load() }

// Rotate publishes a new key, signs with it from now on, and keeps the old
// one published (as providers do during a rotation) unless drop is set.
func (p *Provider) Rotate(t testing.TB, id string, drop bool) {
	k := NewKey(t, id)
	p.st.mu.Lock()
	defer p.st.mu.Unlock()
	if drop {
		p.st.published = nil
	}
	p.st.published = append(p.st.published, k)
	p.st.signing = k
}

// CurrentKey is the key it signs with now.
func (p *Provider) CurrentKey() *Key {
	p.st.mu.Lock()
	defer p.st.mu.Unlock()
	return p.st.signing
}

// Sign makes a JWT with the given header algorithm, key and kid over claims.
func Sign(t testing.TB, alg jose.SignatureAlgorithm, key any, kid string, claims map[string]any) string {
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

// Claims are good claims for p's audience, changed by edits (a nil value
// removes a claim).
func (p *Provider) Claims(edits map[string]any) map[string]any {
	now := time.Now()
	c := map[string]any{
		"iss": p.Issuer, "sub": "sid1", "aud": []string{p.Audience}, "client_id": "sid1",
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
