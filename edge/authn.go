package edge

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/berth-dev/berth/edge/oidcauth"
)

// App authentication modes (AppAuth.Mode).
const (
	AuthNone   = "none"
	AuthAPIKey = "apikey"
	AuthOIDC   = "oidc"
)

// PRMPath is the well-known path of RFC 9728 Protected Resource Metadata.
const PRMPath = "/.well-known/oauth-protected-resource"

// AppAuth is an app's authentication as the edge sees it.
type AppAuth struct {
	// Mode is none (or ""), apikey or oidc.
	Mode string
	// OIDCSettings configure oidc.
	OIDCSettings
	// ForwardToken passes the credential on to the app.
	ForwardToken bool
	// Keys are the app's API keys (apikey).
	Keys []AppKey
	// MCPPath is the app's MCP endpoint path (for the resource's URL).
	MCPPath string
}

// OIDCSettings say whose bearer tokens are accepted.
type OIDCSettings struct {
	Issuer, Audience       string
	Scopes, AllowedClients []string
}

// PoolCredentials is implemented by a Pool that may take OIDC tokens.
type PoolCredentials interface {
	// Credentials says whether the pool's key is accepted, and whose
	// tokens are (nil: none).
	Credentials() (key bool, oidc *OIDCSettings)
}

// authPoolOIDC authenticates a pool's request by its OIDC settings. done
// is false when the pool's key is to be checked instead: the pool takes
// no tokens, or takes keys too and the credential is no JWT.
func (e *Edge) authPoolOIDC(r *http.Request, name string, p Pool, mcp bool) (done bool, _ *Error) {
	pc, ok := p.(PoolCredentials)
	if !ok {
		return false, nil
	}
	keyOK, oidc := pc.Credentials()
	if oidc == nil {
		if !keyOK {
			return true, &Error{Status: http.StatusUnauthorized, Authenticate: bearerChallenge, Message: "the pool accepts no credential (auth oidc without settings)"}
		}
		return false, nil
	}
	tok := oidcauth.BearerToken(r)
	if keyOK && (tok == "" || strings.Count(tok, ".") != 2) {
		// Not a JWT: the pool's key (x-ms-apikey or Bearer) is checked.
		return false, nil
	}
	v, err := e.verifiers.get(oidc)
	if err != nil {
		return true, &Error{Status: http.StatusServiceUnavailable, Message: "the pool's OIDC settings are invalid", Cause: err}
	}
	if _, err := v.Verify(r.Context(), tok); err != nil {
		var oe *oidcauth.Error
		if !errors.As(err, &oe) {
			return true, &Error{Status: http.StatusUnauthorized, Authenticate: bearerChallenge, Message: "invalid token", Cause: err}
		}
		out := &Error{Status: oe.Status(), Message: fmt.Sprintf("pool %s: %s", name, oe.Message), Cause: oe.Err}
		ch := bearerChallenge
		if mcp {
			ch += fmt.Sprintf(`, resource_metadata=%q`, poolMetadataURL(r, name))
		}
		switch oe.Code {
		case oidcauth.CodeInsufficientScope:
			out.Authenticate = ch + fmt.Sprintf(`, error="insufficient_scope", scope=%q`, oe.Scope)
		case oidcauth.CodeUnavailable:
			out.RetryAfter = "5"
		default:
			out.Authenticate = ch
			if !oe.Missing {
				out.Authenticate += `, error="invalid_token"`
			}
			if oe.Missing {
				out.Message = fmt.Sprintf("pool %s takes only OIDC bearer tokens (Authorization: Bearer TOKEN from %s)", name, oidc.Issuer)
			}
		}
		return true, out
	}
	return true, nil
}

func scheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

// poolMetadataURL is where a pool's MCP endpoint's protected resource
// metadata is.
func poolMetadataURL(r *http.Request, name string) string {
	return scheme(r) + "://" + r.Host + PRMPath + "/pools/" + name + "/mcp"
}

// poolChallenge is the WWW-Authenticate of a refused key on a pool's MCP
// endpoint: it says where the metadata is when the pool takes tokens too.
func poolChallenge(r *http.Request, name string, p Pool) string {
	if pc, ok := p.(PoolCredentials); ok {
		if _, o := pc.Credentials(); o != nil {
			return bearerChallenge + fmt.Sprintf(`, resource_metadata=%q`, poolMetadataURL(r, name))
		}
	}
	return bearerChallenge
}

// servePoolPRM serves the protected resource metadata of a pool's MCP
// endpoint when the pool takes OIDC tokens.
func (e *Edge) servePoolPRM(w http.ResponseWriter, r *http.Request, name string) *Error {
	var o *OIDCSettings
	if e.o.Pools != nil {
		if p, ok := e.o.Pools.Pool(name); ok {
			if pc, ok := p.(PoolCredentials); ok {
				_, o = pc.Credentials()
			}
		}
	}
	if o == nil {
		return &Error{Status: http.StatusNotFound, Message: "no protected resource metadata: the pool does not take OIDC tokens"}
	}
	return writePRM(w, r, scheme(r)+"://"+r.Host+"/pools/"+name+"/mcp", o)
}

// AppKey is a named API key, by its hex SHA-256.
type AppKey struct {
	Name, Hash string
}

// AppAuths is implemented by an Apps whose apps may require
// authentication.
type AppAuths interface {
	AppAuth(name string) (AppAuth, bool)
}

// principalPrefix starts every header that tells an app who called
// (X-MS-CLIENT-PRINCIPAL, -ID, -NAME, -IDP) and tokenPrefix the provider
// token headers (X-MS-TOKEN-…): the edge alone may set them.
const (
	principalPrefix = "X-Ms-Client-Principal"
	tokenPrefix     = "X-Ms-Token-"
)

// stripPrincipal removes identity headers a client sent, also when
// spelled with underscores (X_MS_CLIENT_PRINCIPAL): CGI, WSGI, PHP and
// others give both spellings to the app as the same variable.
func stripPrincipal(h http.Header) {
	for k := range h {
		ck := http.CanonicalHeaderKey(strings.ReplaceAll(k, "_", "-"))
		if strings.HasPrefix(ck, principalPrefix) || strings.HasPrefix(ck, tokenPrefix) {
			delete(h, k)
		}
	}
}

// verifiers caches one oidcauth.Verifier per OIDC configuration.
type verifiers struct {
	client *http.Client // nil: oidcauth's default
	mu     sync.Mutex
	m      map[string]*oidcauth.Verifier
}

// maxVerifiers bounds the cache; past it, it starts anew.
const maxVerifiers = 1024

func (c *verifiers) get(a *OIDCSettings) (*oidcauth.Verifier, error) {
	key := a.Issuer + "\x00" + a.Audience + "\x00" + strings.Join(a.Scopes, " ") + "\x00" + strings.Join(a.AllowedClients, " ")
	c.mu.Lock()
	defer c.mu.Unlock()
	if v := c.m[key]; v != nil {
		return v, nil
	}
	v, err := oidcauth.New(oidcauth.Options{Issuer: a.Issuer, Audience: a.Audience, Scopes: a.Scopes, AllowedClients: a.AllowedClients, HTTPClient: c.client})
	if err != nil {
		return nil, err
	}
	if c.m == nil || len(c.m) >= maxVerifiers {
		c.m = map[string]*oidcauth.Verifier{}
	}
	c.m[key] = v
	return v, nil
}

// isPRM says whether an app path asks for its protected resource metadata.
func isPRM(path string) bool {
	return path == PRMPath || strings.HasPrefix(path, PRMPath+"/")
}

// appBase is the URL of an app's root as the client reached it.
func appBase(r *http.Request, rt Route) string {
	base := scheme(r) + "://" + r.Host
	if rt.ByPath {
		base += "/apps/" + rt.Name
		if rt.Label != "" {
			base += "---" + rt.Label
		}
	}
	return base
}

// resourceURL is the app's MCP endpoint: the resource of RFC 9728/8707.
func resourceURL(r *http.Request, rt Route, a *AppAuth) string {
	return appBase(r, rt) + a.MCPPath
}

// metadataURL is where the app's protected resource metadata is: the
// well-known path inserted before the resource's path (RFC 9728 §3.1).
func metadataURL(r *http.Request, rt Route, a *AppAuth) string {
	res := resourceURL(r, rt, a)
	scheme, rest, _ := strings.Cut(res, "://")
	host, path, _ := strings.Cut(rest, "/")
	return scheme + "://" + host + PRMPath + "/" + path
}

// servePRM answers a request for the app's protected resource metadata.
func servePRM(w http.ResponseWriter, r *http.Request, rt Route, a *AppAuth) *Error {
	return writePRM(w, r, resourceURL(r, rt, a), &a.OIDCSettings)
}

// writePRM writes RFC 9728 metadata for a resource protected by o.
func writePRM(w http.ResponseWriter, r *http.Request, resource string, o *OIDCSettings) *Error {
	if r.Method == http.MethodOptions {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("Access-Control-Allow-Methods", "GET, OPTIONS")
		w.Header().Set("Access-Control-Allow-Headers", "Mcp-Protocol-Version")
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return &Error{Status: http.StatusMethodNotAllowed, Message: "protected resource metadata: use GET"}
	}
	doc := map[string]any{
		"resource":                 resource,
		"authorization_servers":    []string{o.Issuer},
		"bearer_methods_supported": []string{"header"},
	}
	if len(o.Scopes) > 0 {
		doc["scopes_supported"] = o.Scopes
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Access-Control-Allow-Origin", "*")
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, doc)
}

func writeJSON(w http.ResponseWriter, v any) *Error {
	b, err := json.Marshal(v)
	if err != nil {
		return &Error{Status: http.StatusInternalServerError, Message: "internal error", Cause: err}
	}
	_, _ = w.Write(b)
	return nil
}

// authApp authenticates a request for an app, by its mode. It returns
// true when the edge answered the request itself (the metadata).
func (e *Edge) authApp(w http.ResponseWriter, r *http.Request, rt Route, hidden bool) (bool, *Error) {
	stripPrincipal(r.Header)
	if e.appAuths == nil {
		return false, nil
	}
	a, found := e.appAuths.AppAuth(rt.Name)
	if hidden {
		a, found = AppAuth{}, false
	}
	if rt.PRM && (!found || a.Mode != AuthOIDC) {
		return true, &Error{Status: http.StatusNotFound, Message: "no protected resource metadata: the app does not use --auth oidc"}
	}
	if !found || a.Mode == "" || a.Mode == AuthNone {
		return false, nil
	}
	if a.Mode == AuthOIDC && isPRM(rt.Path) {
		return true, servePRM(w, r, rt, &a)
	}
	if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		// A CORS preflight carries no credentials.
		return false, nil
	}
	var err *Error
	switch a.Mode {
	case AuthAPIKey:
		err = e.authAppKey(r, rt, &a)
	case AuthOIDC:
		err = e.authAppOIDC(r, rt, &a)
	default:
		// An unknown mode never means open.
		err = &Error{Status: http.StatusForbidden, Message: "the app's authentication is misconfigured", Cause: fmt.Errorf("unknown auth mode %q", a.Mode)}
	}
	if err != nil {
		err.RPCCode = rpcCode(err.Status)
		return false, err
	}
	if !a.ForwardToken {
		r.Header.Del("Authorization")
		r.Header.Del("X-Api-Key")
	}
	return false, nil
}

// appKey reads an app's API key from x-api-key or Authorization: Bearer.
func appKey(r *http.Request) string {
	if k := r.Header.Get("X-Api-Key"); k != "" {
		return k
	}
	return oidcauth.BearerToken(r)
}

func (e *Edge) authAppKey(r *http.Request, rt Route, a *AppAuth) *Error {
	key := appKey(r)
	challenge := `Bearer realm="berth"`
	if key == "" {
		return &Error{Status: http.StatusUnauthorized, Authenticate: challenge, Message: fmt.Sprintf(
			"missing API key: app %s needs one, sent as x-api-key: KEY or Authorization: Bearer KEY (berth app key create %s NAME)", rt.Name, rt.Name)}
	}
	sum := sha256.Sum256([]byte(key))
	var h [64]byte
	hex.Encode(h[:], sum[:])
	name := ""
	for _, k := range a.Keys {
		if len(k.Hash) == len(h) && subtle.ConstantTimeCompare(h[:], []byte(k.Hash)) == 1 {
			name = k.Name
		}
	}
	if name == "" {
		return &Error{Status: http.StatusUnauthorized, Authenticate: challenge + `, error="invalid_token"`, Message: fmt.Sprintf(
			"invalid API key for app %s (was it revoked? berth app key list %s)", rt.Name, rt.Name)}
	}
	setPrincipal(r.Header, "apikey", "apikey:"+name, name, []claim{{"key", name}})
	return nil
}

func (e *Edge) authAppOIDC(r *http.Request, rt Route, a *AppAuth) *Error {
	v, err := e.verifiers.get(&a.OIDCSettings)
	if err != nil {
		return &Error{Status: http.StatusServiceUnavailable, Message: "the app's OIDC settings are invalid", Cause: err}
	}
	p, err := v.Verify(r.Context(), oidcauth.BearerToken(r))
	if err != nil {
		var oe *oidcauth.Error
		if !errors.As(err, &oe) {
			return &Error{Status: http.StatusUnauthorized, Message: "invalid token", Cause: err}
		}
		ch := fmt.Sprintf(`Bearer resource_metadata=%q`, metadataURL(r, rt, a))
		switch {
		case oe.Code == oidcauth.CodeInsufficientScope:
			ch += fmt.Sprintf(`, error="insufficient_scope", scope=%q`, oe.Scope)
		case oe.Code == oidcauth.CodeInvalidToken && !oe.Missing:
			ch += `, error="invalid_token"`
		case oe.Missing:
			if len(a.Scopes) > 0 {
				ch += fmt.Sprintf(`, scope=%q`, strings.Join(a.Scopes, " "))
			}
		}
		out := &Error{Status: oe.Status(), Message: oe.Message, Cause: oe.Err}
		if oe.Code != oidcauth.CodeUnavailable {
			out.Authenticate = ch
		} else {
			out.RetryAfter = "5"
		}
		return out
	}
	name := p.Name
	if name == "" {
		name = p.ClientID
	}
	id := p.Subject
	if id == "" {
		id = p.ClientID
	}
	claims := make([]claim, 0, len(p.Claims))
	for k, v := range p.Claims {
		// A list is one claim per value, as Azure gives them.
		if l, ok := v.([]any); ok {
			for _, e := range l {
				claims = append(claims, claim{k, claimString(e)})
			}
			continue
		}
		claims = append(claims, claim{k, claimString(v)})
	}
	slices.SortStableFunc(claims, func(x, y claim) int { return strings.Compare(x.Typ, y.Typ) })
	setPrincipal(r.Header, "oidc", id, name, claims)
	return nil
}

// claim is one claim of X-MS-CLIENT-PRINCIPAL.
type claim struct {
	Typ string `json:"typ"`
	Val string `json:"val"`
}

func claimString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// setPrincipal tells the app who called, as Azure's built-in
// authentication does: X-MS-CLIENT-PRINCIPAL is base64 JSON {auth_typ,
// claims: [{typ, val}], name_typ, role_typ}.
func setPrincipal(h http.Header, idp, id, name string, claims []claim) {
	doc, _ := json.Marshal(struct {
		AuthTyp string  `json:"auth_typ"`
		Claims  []claim `json:"claims"`
		NameTyp string  `json:"name_typ"`
		RoleTyp string  `json:"role_typ"`
	}{idp, claims, "name", "roles"})
	h.Set("X-Ms-Client-Principal", base64.StdEncoding.EncodeToString(doc))
	h.Set("X-Ms-Client-Principal-Id", headerSafe(id))
	h.Set("X-Ms-Client-Principal-Name", headerSafe(name))
	h.Set("X-Ms-Client-Principal-Idp", idp)
}

// headerSafe drops the control characters a header value cannot carry.
func headerSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
}
