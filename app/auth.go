package app

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Authentication modes of an app.
const (
	AuthNone   = "none"
	AuthAPIKey = "apikey"
	AuthOIDC   = "oidc"
)

// Auth is how an app's callers authenticate. It is the app's, not a
// revision's: a change applies to every revision at the next request.
type Auth struct {
	// Mode is none (the default), apikey or oidc.
	Mode string `json:"mode"`
	// Issuer, Audience, Scopes and AllowedClients configure oidc.
	Issuer         string   `json:"issuer,omitempty"`
	Audience       string   `json:"audience,omitempty"`
	Scopes         []string `json:"scopes,omitempty"`
	AllowedClients []string `json:"allowedClients,omitempty"`
	// ForwardToken passes the Authorization (or x-api-key) header on to
	// the app; by default the edge removes it.
	ForwardToken bool `json:"forwardToken,omitempty"`
}

// APIKey is a named key of an app; only its SHA-256 is stored.
type APIKey struct {
	Name      string    `json:"name"`
	Hash      string    `json:"hash"` // hex SHA-256 of the key
	CreatedAt time.Time `json:"createdAt"`
}

// Normalize checks an Auth and fills in defaults.
func (a *Auth) Normalize() error {
	if a.Mode == "" {
		a.Mode = AuthNone
	}
	switch a.Mode {
	case AuthNone, AuthAPIKey:
		if a.Issuer != "" || a.Audience != "" || len(a.Scopes) > 0 || len(a.AllowedClients) > 0 {
			return invalid("--oidc-* settings need --auth oidc")
		}
	case AuthOIDC:
		u, err := url.Parse(a.Issuer)
		if a.Issuer == "" || err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
			return invalid("--auth oidc needs --oidc-issuer, an http(s) URL (exactly the tokens' iss), not %q", a.Issuer)
		}
		if u.Scheme == "http" && !loopbackHost(u.Hostname()) {
			return invalid("--oidc-issuer must be https (http only on loopback): %q", a.Issuer)
		}
		if strings.TrimSpace(a.Audience) == "" {
			return invalid("--auth oidc needs --oidc-audience: the value the tokens' aud must hold (the app's URL, say)")
		}
	default:
		return invalid("--auth must be none, apikey or oidc, not %q", a.Mode)
	}
	if a.Mode == AuthNone && a.ForwardToken {
		return invalid("--auth-forward-token needs --auth apikey or oidc")
	}
	a.Scopes = slices.DeleteFunc(a.Scopes, func(s string) bool { return strings.TrimSpace(s) == "" })
	a.AllowedClients = slices.DeleteFunc(a.AllowedClients, func(s string) bool { return strings.TrimSpace(s) == "" })
	return nil
}

func loopbackHost(h string) bool {
	return h == "localhost" || h == "127.0.0.1" || h == "::1" || strings.HasPrefix(h, "127.")
}

// SetAuth replaces an app's authentication; it applies to every revision
// from the next request on.
func (m *Manager) SetAuth(ctx context.Context, name string, auth Auth) (Doc, error) {
	if err := auth.Normalize(); err != nil {
		return Doc{}, err
	}
	a, err := m.Get(name)
	if err != nil {
		return Doc{}, err
	}
	return a.update(ctx, func(d *Doc) error {
		d.Auth = &auth
		return nil
	})
}

// CreateKey adds a named API key to an app and returns its value, which
// is not stored (only its hash is) and cannot be shown again.
func (m *Manager) CreateKey(ctx context.Context, name, keyName string) (string, error) {
	if !nameRE().MatchString(keyName) {
		return "", invalid("%q is not a valid key name: use lowercase letters, digits and dashes, starting with a letter", keyName)
	}
	a, err := m.Get(name)
	if err != nil {
		return "", err
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	key := "bk_" + base64.RawURLEncoding.EncodeToString(b[:])
	sum := sha256.Sum256([]byte(key))
	_, err = a.update(ctx, func(d *Doc) error {
		for _, k := range d.APIKeys {
			if k.Name == keyName {
				return invalid("app %s has a key named %q already: revoke it first or choose another name", name, keyName)
			}
		}
		// A new slice: readers may hold the old one.
		d.APIKeys = append(slices.Clip(d.APIKeys), APIKey{Name: keyName, Hash: hex.EncodeToString(sum[:]), CreatedAt: time.Now().UTC()})
		return nil
	})
	if err != nil {
		return "", err
	}
	return key, nil
}

// RevokeKey removes a named API key; requests with it are refused at once.
func (m *Manager) RevokeKey(ctx context.Context, name, keyName string) error {
	a, err := m.Get(name)
	if err != nil {
		return err
	}
	_, err = a.update(ctx, func(d *Doc) error {
		i := slices.IndexFunc(d.APIKeys, func(k APIKey) bool { return k.Name == keyName })
		if i < 0 {
			return &ConfigError{Message: fmt.Sprintf("app %s has no key named %q", name, keyName), NotFound: true}
		}
		d.APIKeys = slices.Delete(slices.Clone(d.APIKeys), i, i+1)
		return nil
	})
	return err
}

// AuthInfo is what the front door needs to authenticate a request.
type AuthInfo struct {
	Auth    Auth
	Keys    []APIKey // shared: never modify
	MCPPath string   // the newest revision's MCP path
}

// AuthInfo returns the app's current authentication, without copying
// its revisions (it is read on every request).
func (a *App) AuthInfo() AuthInfo {
	a.mu.Lock()
	defer a.mu.Unlock()
	ai := AuthInfo{Auth: Auth{Mode: AuthNone}, Keys: a.doc.APIKeys, MCPPath: "/mcp"}
	if a.doc.Auth != nil {
		ai.Auth = *a.doc.Auth
	}
	if n := len(a.doc.Revisions); n > 0 {
		ai.MCPPath = a.doc.Revisions[n-1].Config.Path
	}
	return ai
}
