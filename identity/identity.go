// Package identity makes Berth an OpenID issuer for its apps' workload
// identities, the way Container Apps' managed identity gives an app tokens
// from Entra ID: Berth signs short-lived JWTs whose sub is the app
// ("app:NAME") and whose aud is what the app asked for, and publishes the
// discovery document and the JWKS that verify them at its public URL
// (DiscoveryPath, JWKSPath), so that another Berth app with
// --auth oidc --oidc-issuer <Berth's URL>, or any outside service that
// trusts that JWKS, accepts them.
//
// Keys are ES256 (P-256), kept in Options.Dir (keys.json, 0600). A new key
// is made every Options.RotateEvery and signs from then on; an older key
// stays in the JWKS until every token it signed has expired (TokenTTL
// after it stopped signing, plus a margin for clock skew), then it is
// dropped. Rotation happens lazily, on the first token or JWKS request
// past its time.
package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Well-known paths on the issuer's URL.
const (
	DiscoveryPath = "/.well-known/openid-configuration"
	JWKSPath      = "/.well-known/jwks.json"
)

// Defaults.
const (
	DefaultRotateEvery = 7 * 24 * time.Hour
	DefaultTokenTTL    = time.Hour
	// MaxTokenTTL bounds Options.TokenTTL.
	MaxTokenTTL = time.Hour
	// retireMargin is kept past a retired key's last token's expiry, for
	// verifiers whose clocks run late.
	retireMargin = 5 * time.Minute
	keysFile     = "keys.json"
)

// Options configure an Issuer. Zero fields take the defaults.
type Options struct {
	// Dir holds the signing keys (created 0700).
	Dir string
	// Issuer is the iss of the tokens and the base of the well-known
	// URLs: Berth's public URL, without a trailing slash.
	Issuer string
	// RotateEvery is how long a key signs before a new one replaces it.
	RotateEvery time.Duration
	// TokenTTL is how long a token is valid (at most MaxTokenTTL).
	TokenTTL time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// key is one signing key as stored.
type key struct {
	ID      string          `json:"kid"`
	Created time.Time       `json:"created"`
	JWK     json.RawMessage `json:"jwk"`
	priv    *ecdsa.PrivateKey
}

// keySet is the keys, oldest first; the last one signs.
type keySet struct {
	keys   []key
	signer jose.Signer
}

// Issuer signs workload tokens and serves their keys. It is safe for
// concurrent use.
type Issuer struct {
	o Options
	// rotateMu serializes rotations (they write the keys file); readers
	// use set.
	rotateMu sync.Mutex
	set      atomic.Pointer[keySet]
}

// New loads the keys in o.Dir, making the first one if there is none.
func New(o Options) (*Issuer, error) {
	if o.Issuer == "" || o.Dir == "" {
		return nil, errors.New("identity: an issuer URL and a key directory are required")
	}
	if o.RotateEvery <= 0 {
		o.RotateEvery = DefaultRotateEvery
	}
	if o.TokenTTL <= 0 {
		o.TokenTTL = DefaultTokenTTL
	}
	o.TokenTTL = min(o.TokenTTL, MaxTokenTTL)
	if o.Now == nil {
		o.Now = time.Now
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	i := &Issuer{o: o}
	keys, err := load(filepath.Join(o.Dir, keysFile))
	if err != nil {
		return nil, err
	}
	set, err := newKeySet(keys)
	if err != nil {
		return nil, err
	}
	i.set.Store(set)
	if err := i.rotate(); err != nil {
		return nil, err
	}
	return i, nil
}

// Issuer is the tokens' iss.
func (i *Issuer) Issuer() string { return i.o.Issuer }

// Token signs a token for subject and audience; it returns it with its
// expiry.
func (i *Issuer) Token(subject, audience string) (string, time.Time, error) {
	if err := i.rotate(); err != nil {
		return "", time.Time{}, err
	}
	now := i.o.Now()
	exp := now.Add(i.o.TokenTTL)
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	claims := jwt.Claims{
		Issuer: i.o.Issuer, Subject: subject, Audience: jwt.Audience{audience},
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)),
		Expiry: jwt.NewNumericDate(exp), ID: hex.EncodeToString(b),
	}
	tok, err := jwt.Signed(i.set.Load().signer).Claims(claims).Serialize()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("identity: sign: %w", err)
	}
	return tok, exp, nil
}

// JWKS is the public keys that verify the tokens still valid.
func (i *Issuer) JWKS() (jose.JSONWebKeySet, error) {
	if err := i.rotate(); err != nil {
		return jose.JSONWebKeySet{}, err
	}
	var out jose.JSONWebKeySet
	for _, k := range i.set.Load().keys {
		out.Keys = append(out.Keys, jose.JSONWebKey{Key: k.priv.Public(), KeyID: k.ID, Algorithm: string(jose.ES256), Use: "sig"})
	}
	return out, nil
}

// rotate makes a new key when the newest is RotateEvery old, and drops
// keys whose tokens have all expired.
func (i *Issuer) rotate() error {
	now := i.o.Now()
	if !i.due(i.set.Load(), now) {
		return nil
	}
	i.rotateMu.Lock()
	defer i.rotateMu.Unlock()
	cur := i.set.Load()
	if !i.due(cur, now) {
		return nil
	}
	keys := cur.keys
	if n := len(keys); n == 0 || now.Sub(keys[n-1].Created) >= i.o.RotateEvery {
		k, err := newKey(now)
		if err != nil {
			return err
		}
		keys = append(keys[:n:n], k)
	}
	keys = i.live(keys, now)
	set, err := newKeySet(keys)
	if err != nil {
		return err
	}
	if err := save(filepath.Join(i.o.Dir, keysFile), keys); err != nil {
		return err
	}
	i.set.Store(set)
	return nil
}

// due says whether set needs a new key or holds one past its time.
func (i *Issuer) due(set *keySet, now time.Time) bool {
	n := len(set.keys)
	return n == 0 || now.Sub(set.keys[n-1].Created) >= i.o.RotateEvery || len(i.live(set.keys, now)) != n
}

// live drops the keys that stopped signing (when the next one was made)
// more than TokenTTL plus a margin ago.
func (i *Issuer) live(keys []key, now time.Time) []key {
	var out []key
	for j, k := range keys {
		if j+1 < len(keys) && now.Sub(keys[j+1].Created) > i.o.TokenTTL+retireMargin {
			continue
		}
		out = append(out, k)
	}
	return out
}

func newKey(now time.Time) (key, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return key{}, err
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	k := key{ID: hex.EncodeToString(b), Created: now.UTC(), priv: priv}
	k.JWK, err = json.Marshal(jose.JSONWebKey{Key: priv, KeyID: k.ID, Algorithm: string(jose.ES256), Use: "sig"})
	return k, err
}

func newKeySet(keys []key) (*keySet, error) {
	s := &keySet{keys: keys}
	if len(keys) == 0 {
		return s, nil
	}
	k := keys[len(keys)-1]
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: k.priv, KeyID: k.ID}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	s.signer = signer
	return s, nil
}

func load(path string) ([]key, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	var keys []key
	if err := json.Unmarshal(b, &keys); err != nil {
		return nil, fmt.Errorf("identity: %s: %w", path, err)
	}
	for j := range keys {
		var jwk jose.JSONWebKey
		if err := json.Unmarshal(keys[j].JWK, &jwk); err != nil {
			return nil, fmt.Errorf("identity: %s: key %s: %w", path, keys[j].ID, err)
		}
		priv, ok := jwk.Key.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("identity: %s: key %s is not an ECDSA private key", path, keys[j].ID)
		}
		keys[j].priv = priv
	}
	return keys, nil
}

// save writes the keys whole or not at all.
func save(path string, keys []key) error {
	b, err := json.MarshalIndent(keys, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	return nil
}

// Handler serves the discovery document (DiscoveryPath) and the JWKS
// (JWKSPath); other paths get 404.
func (i *Issuer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+DiscoveryPath, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{
			"issuer":                                i.o.Issuer,
			"jwks_uri":                              i.o.Issuer + JWKSPath,
			"response_types_supported":              []string{"id_token"},
			"subject_types_supported":               []string{"public"},
			"id_token_signing_alg_values_supported": []string{string(jose.ES256)},
			"claims_supported":                      []string{"iss", "sub", "aud", "exp", "iat", "nbf", "jti"},
		})
	})
	mux.HandleFunc("GET "+JWKSPath, func(w http.ResponseWriter, r *http.Request) {
		set, err := i.JWKS()
		if err != nil {
			http.Error(w, "the issuer's keys are unavailable", http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, set)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "max-age=300")
	_ = json.NewEncoder(w).Encode(v)
}
