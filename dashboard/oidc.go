package dashboard

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// OIDC configures sign-in through an OpenID provider: the authorization
// code flow with PKCE (S256), state and nonce. Signing in at the provider
// is not enough: the user must also pass the admin allow-list (at least
// one rule is required), because whoever passes becomes an administrator.
type OIDC struct {
	// Issuer is the provider's issuer URL (https, or http on loopback).
	Issuer string
	// ClientID and ClientSecret are the dashboard's client at the
	// provider (no secret: a public client, PKCE only). Its redirect URI
	// is DASHBOARD_URL/ui/oidc/callback.
	ClientID     string
	ClientSecret string
	// AllowedSubjects and AllowedEmails (verified emails, any case) are
	// who may sign in; with both empty, anyone who has RequiredClaim.
	AllowedSubjects []string
	AllowedEmails   []string
	// RequiredClaim is NAME=VALUE: the ID token's (or userinfo's) claim
	// NAME must be VALUE or a list that holds it (e.g. groups=berth-admins).
	RequiredClaim string
	// HTTPClient reaches the provider (default: 10 s timeout).
	HTTPClient *http.Client
}

// Check says what is wrong with the configuration, if anything.
func (o *OIDC) Check() error {
	u, err := url.Parse(o.Issuer)
	switch {
	case o.Issuer == "" || err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
		return errors.New("the OIDC issuer must be an https URL")
	case u.Scheme == "http" && !loopbackHost(u.Hostname()):
		return errors.New("the OIDC issuer must be https (http only on loopback)")
	case o.ClientID == "":
		return errors.New("OIDC sign-in needs a client ID")
	case len(o.AllowedSubjects) == 0 && len(o.AllowedEmails) == 0 && o.RequiredClaim == "":
		return errors.New("OIDC sign-in needs an admin allow-list (allowed subjects, allowed emails or a required claim): anyone who can sign in at the provider would otherwise be an administrator")
	}
	if o.RequiredClaim != "" {
		if name, _, ok := strings.Cut(o.RequiredClaim, "="); !ok || name == "" {
			return fmt.Errorf("the required claim %q is not NAME=VALUE", o.RequiredClaim)
		}
	}
	return nil
}

func loopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

const (
	stateCookie       = "berth_ui_oidc"
	callbackPath      = "/ui/oidc/callback"
	flowTTL           = 10 * time.Minute
	maxFlows          = 1000
	discoveryInterval = 5 * time.Second
)

// oidcLogin is sign-in through the provider: discovery (lazy, so that the
// server starts while the provider is down) and the flows under way.
type oidcLogin struct {
	o      OIDC
	claimK string
	claimV string

	mu       sync.Mutex
	provider *oidc.Provider
	failedAt time.Time
	failErr  error
	flows    map[string]*flow // by state
}

// flow is a sign-in under way: what the callback must find again.
type flow struct {
	nonce, verifier, next, redirect string
	expires                         time.Time
}

func newOIDCLogin(o OIDC) *oidcLogin {
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	l := &oidcLogin{o: o, flows: map[string]*flow{}}
	l.claimK, l.claimV, _ = strings.Cut(o.RequiredClaim, "=")
	return l
}

// discover returns the provider, discovering it at most every
// discoveryInterval after a failure.
func (l *oidcLogin) discover(ctx context.Context) (*oidc.Provider, error) {
	l.mu.Lock()
	p, failedAt, failErr := l.provider, l.failedAt, l.failErr
	l.mu.Unlock()
	if p != nil {
		return p, nil
	}
	if time.Since(failedAt) < discoveryInterval {
		return nil, failErr
	}
	p, err := oidc.NewProvider(oidc.ClientContext(ctx, l.o.HTTPClient), l.o.Issuer)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.failedAt, l.failErr = time.Now(), err
		return nil, err
	}
	l.provider = p
	return p, nil
}

func (l *oidcLogin) config(p *oidc.Provider, redirect string) *oauth2.Config {
	return &oauth2.Config{
		ClientID: l.o.ClientID, ClientSecret: l.o.ClientSecret, Endpoint: p.Endpoint(),
		RedirectURL: redirect, Scopes: []string{oidc.ScopeOpenID, "profile", "email"},
	}
}

// start records a flow and returns its state.
func (l *oidcLogin) start(f *flow) string {
	state := randomHex(32)
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if len(l.flows) >= maxFlows {
		for s, old := range l.flows {
			if now.After(old.expires) || len(l.flows) >= maxFlows {
				delete(l.flows, s)
			}
		}
	}
	l.flows[state] = f
	return state
}

// take returns and forgets the flow of state, if it is still on.
func (l *oidcLogin) take(state string) *flow {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.flows[state]
	delete(l.flows, state)
	if f == nil || time.Now().After(f.expires) {
		return nil
	}
	return f
}

// callbackURL is where the provider sends the browser back: this
// dashboard, as the browser reached it.
func callbackURL(r *http.Request) string {
	scheme := "http"
	if isHTTPS(r) {
		scheme = "https"
	}
	return scheme + "://" + r.Host + callbackPath
}

// oidcStart sends the browser to the provider, with a short-lived state
// cookie for the callback only. It is SameSite=Lax, not Strict: the
// callback is a navigation from the provider's site, on which a Strict
// cookie is not sent.
func (d *dash) oidcStart(w http.ResponseWriter, r *http.Request) {
	next := safeNext(r.URL.Query().Get("next"))
	p, err := d.oidc.discover(r.Context())
	if err != nil {
		d.o.Logger.Warn("dashboard: the OIDC provider cannot be reached", "issuer", d.oidc.o.Issuer, "err", err)
		d.loginError(w, r, http.StatusBadGateway, next, "The identity provider cannot be reached: try again in a moment.")
		return
	}
	f := &flow{nonce: randomHex(16), verifier: oauth2.GenerateVerifier(), next: next, redirect: callbackURL(r), expires: time.Now().Add(flowTTL)}
	state := d.oidc.start(f)
	http.SetCookie(w, &http.Cookie{
		Name: stateCookie, Value: state, Path: "/ui/oidc/", HttpOnly: true, Secure: isHTTPS(r),
		SameSite: http.SameSiteLaxMode, MaxAge: int(flowTTL / time.Second),
	})
	u := d.oidc.config(p, f.redirect).AuthCodeURL(state, oidc.Nonce(f.nonce), oauth2.S256ChallengeOption(f.verifier))
	http.Redirect(w, r, u, http.StatusFound)
}

// oidcCallback finishes a sign-in: the state must be the one this browser
// started with (its cookie) and still on, the code is exchanged with the
// PKCE verifier, the ID token verified (issuer, audience, signature,
// expiry, nonce), and the user must pass the allow-list.
func (d *dash) oidcCallback(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: stateCookie, Value: "", Path: "/ui/oidc/", MaxAge: -1, HttpOnly: true, Secure: isHTTPS(r), SameSite: http.SameSiteLaxMode})
	q := r.URL.Query()
	c, _ := r.Cookie(stateCookie)
	state := q.Get("state")
	if c == nil || state == "" || subtle.ConstantTimeCompare([]byte(c.Value), []byte(state)) != 1 {
		d.o.Logger.Info("dashboard OIDC sign-in refused: state mismatch", "remote", r.RemoteAddr, "cookie", c != nil, "state", state != "")
		d.loginError(w, r, http.StatusBadRequest, Prefix, "This sign-in did not start in this browser (its state does not match): sign in again.")
		return
	}
	f := d.oidc.take(state)
	if f == nil {
		d.loginError(w, r, http.StatusBadRequest, Prefix, "This sign-in took too long or was already used: sign in again.")
		return
	}
	if e := q.Get("error"); e != "" {
		d.loginError(w, r, http.StatusUnauthorized, f.next, "The identity provider did not sign you in: "+e+" "+q.Get("error_description"))
		return
	}
	id, err := d.oidc.finish(r.Context(), f, q.Get("code"))
	if err != nil {
		d.o.Logger.Warn("dashboard OIDC sign-in failed", "remote", r.RemoteAddr, "err", err)
		d.loginError(w, r, http.StatusUnauthorized, f.next, "The sign-in could not be completed: "+err.Error())
		return
	}
	if !d.oidc.allowed(id) {
		d.o.Logger.Info("dashboard OIDC sign-in refused: not on the allow-list", "sub", id.Subject, "email", id.Email, "remote", r.RemoteAddr)
		d.render(w, r, http.StatusForbidden, "refused", nil, map[string]any{"Who": id.name(), "Subject": id.Subject, "Email": id.Email})
		return
	}
	d.o.Logger.Info("dashboard OIDC sign-in", "sub", id.Subject, "email", id.Email, "remote", r.RemoteAddr)
	s := d.newSession(w, r, d.o.AdminToken, id.name())
	// A page, not a redirect: after a chain of redirects that came from
	// the provider's site, the browser would not send the SameSite=Strict
	// session cookie; a navigation this page starts is same-site.
	d.render(w, r, http.StatusOK, "continue", s, map[string]any{"Next": f.next, "Who": id.name()})
}

// identity is who signed in, from the ID token and, for what it lacks,
// the userinfo endpoint.
type identity struct {
	Subject       string
	Email         string
	EmailVerified bool
	Claims        map[string]any
}

func (id *identity) name() string {
	if id.Email != "" {
		return id.Email
	}
	return id.Subject
}

// finish exchanges the code and verifies the ID token.
func (l *oidcLogin) finish(ctx context.Context, f *flow, code string) (*identity, error) {
	if code == "" {
		return nil, errors.New("the provider sent no code")
	}
	p, err := l.discover(ctx)
	if err != nil {
		return nil, err
	}
	ctx = oidc.ClientContext(ctx, l.o.HTTPClient)
	tok, err := l.config(p, f.redirect).Exchange(ctx, code, oauth2.VerifierOption(f.verifier))
	if err != nil {
		return nil, fmt.Errorf("the code was not accepted: %w", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return nil, errors.New("the provider sent no ID token")
	}
	idt, err := p.Verifier(&oidc.Config{ClientID: l.o.ClientID}).Verify(ctx, raw)
	if err != nil {
		return nil, fmt.Errorf("the ID token is not valid: %w", err)
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(f.nonce)) != 1 {
		return nil, errors.New("the ID token's nonce is not this sign-in's")
	}
	id := &identity{Subject: idt.Subject, Claims: map[string]any{}}
	if err := idt.Claims(&id.Claims); err != nil {
		return nil, err
	}
	// The email is shown and logged even when the allow-list does not
	// need it; a provider without userinfo only fails a sign-in that does.
	if _, hasEmail := id.Claims["email"]; !hasEmail || l.needsUserinfo(id.Claims) {
		if err := l.userinfo(ctx, p, tok, id); err != nil && l.needsUserinfo(id.Claims) {
			return nil, err
		}
	}
	id.Email, _ = id.Claims["email"].(string)
	id.EmailVerified = claimTrue(id.Claims["email_verified"])
	return id, nil
}

// needsUserinfo is whether the allow-list needs a claim the ID token lacks.
func (l *oidcLogin) needsUserinfo(c map[string]any) bool {
	_, hasEmail := c["email"]
	_, hasClaim := c[l.claimK]
	return (len(l.o.AllowedEmails) > 0 && !hasEmail) || (l.claimK != "" && !hasClaim)
}

// userinfo adds the claims of the userinfo endpoint the ID token lacks;
// its subject must be the ID token's.
func (l *oidcLogin) userinfo(ctx context.Context, p *oidc.Provider, tok *oauth2.Token, id *identity) error {
	ui, err := p.UserInfo(ctx, oauth2.StaticTokenSource(tok))
	if err != nil {
		return fmt.Errorf("userinfo: %w", err)
	}
	if ui.Subject != id.Subject {
		return errors.New("userinfo is about another subject than the ID token")
	}
	var extra map[string]any
	if err := ui.Claims(&extra); err != nil {
		return err
	}
	for k, v := range extra {
		if _, ok := id.Claims[k]; !ok {
			id.Claims[k] = v
		}
	}
	return nil
}

func claimTrue(v any) bool {
	switch v := v.(type) {
	case bool:
		return v
	case string:
		return v == "true"
	}
	return false
}

// allowed applies the allow-list: on the subjects or (verified) emails
// when either list is set, and holding the required claim when one is.
func (l *oidcLogin) allowed(id *identity) bool {
	if len(l.o.AllowedSubjects) > 0 || len(l.o.AllowedEmails) > 0 {
		bySub := id.Subject != "" && slices.Contains(l.o.AllowedSubjects, id.Subject)
		byEmail := id.Email != "" && id.EmailVerified && slices.ContainsFunc(l.o.AllowedEmails, func(e string) bool { return strings.EqualFold(e, id.Email) })
		if !bySub && !byEmail {
			return false
		}
	}
	if l.claimK == "" {
		return true
	}
	switch v := id.Claims[l.claimK].(type) {
	case string:
		return v == l.claimV
	case []any:
		return slices.Contains(v, any(l.claimV))
	case bool:
		return fmt.Sprint(v) == l.claimV
	}
	return false
}

// loginError shows the sign-in page with an error.
func (d *dash) loginError(w http.ResponseWriter, r *http.Request, status int, next, msg string) {
	d.render(w, r, status, "login", nil, d.loginData(next, msg))
}
