// Package dashboard serves Berth's web dashboard at /ui/ on the control
// listener: server-rendered pages (html/template, embedded CSS and a little
// JavaScript; no CDN, no build step) to see and operate apps, revisions,
// pools and sessions. It is a client of the public control API and of the
// pools' public data plane, in process: everything it shows is what
// "berth … -o json" shows. Sign-in is with the admin token, checked by the
// control API, or through an OpenID provider (oidc.go) for users on an
// admin allow-list; the browser gets a session cookie (HttpOnly,
// SameSite=Strict, Secure over HTTPS) and every form carries the session's
// CSRF token.
package dashboard

import (
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Options configure the dashboard.
type Options struct {
	// API is the control API handler (controlplane.Handler). Required.
	API http.Handler
	// DataPlane is the public front door, for the pool console (code
	// execution and files, with the pool's key).
	DataPlane http.Handler
	// PublicURL is the data plane's base URL (its host routes requests).
	PublicURL string
	// SessionTTL is how long a sign-in lasts (default 12 hours).
	SessionTTL time.Duration
	Logger     *slog.Logger
	// OIDC, if set, offers sign-in through an OpenID provider; a session
	// signed in that way calls the control API with AdminToken.
	OIDC       *OIDC
	AdminToken string
	// OIDCOnly turns the admin token's sign-in off (the dashboard on the
	// public listener).
	OIDCOnly bool
}

// Prefix is where the dashboard is served.
const Prefix = "/ui/"

const (
	cookieName  = "berth_ui"
	maxSessions = 1000
)

// Handler returns the dashboard, to serve at Prefix.
func Handler(o Options) http.Handler {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.SessionTTL <= 0 {
		o.SessionTTL = 12 * time.Hour
	}
	host := "localhost"
	if u, err := url.Parse(o.PublicURL); err == nil && u.Host != "" {
		host = u.Host
	}
	d := &dash{
		o:        o,
		api:      &client{api: &http.Client{Transport: handlerTransport{o.API}}, plane: &http.Client{Transport: handlerTransport{o.DataPlane}}, publicHost: host},
		tpl:      parseTemplates(),
		sessions: map[string]*session{},
	}
	static, _ := fs.Sub(staticFS, "static")
	mux := http.NewServeMux()
	mux.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", cacheStatic(http.FileServerFS(static))))
	mux.HandleFunc("GET /ui/login", d.loginPage)
	if !o.OIDCOnly {
		mux.HandleFunc("POST /ui/login", d.login)
	}
	if o.OIDC != nil {
		d.oidc = newOIDCLogin(*o.OIDC)
		mux.HandleFunc("GET /ui/oidc/login", d.oidcStart)
		mux.HandleFunc("GET "+callbackPath, d.oidcCallback)
	}
	mux.HandleFunc("POST /ui/logout", d.signedIn(d.logout))
	mux.HandleFunc("GET /ui/{$}", d.signedIn(d.overview))
	mux.HandleFunc("GET /ui/apps/{name}", d.signedIn(d.appPage))
	mux.HandleFunc("POST /ui/apps/{name}/traffic", d.signedIn(d.setTraffic))
	mux.HandleFunc("GET /ui/apps/{name}/logs", d.signedIn(d.appLogs))
	mux.HandleFunc("POST /ui/apps/{name}/deploy", d.signedIn(d.deploy))
	mux.HandleFunc("POST /ui/apps/{name}/deploy-image", d.signedIn(d.deployImage))
	mux.HandleFunc("GET /ui/pools/{name}", d.signedIn(d.poolPage))
	mux.HandleFunc("POST /ui/pools/{name}/settings", d.signedIn(d.poolSettings))
	mux.HandleFunc("POST /ui/pools/{name}/rotate-key", d.signedIn(d.rotateKey))
	mux.HandleFunc("POST /ui/pools/{name}/sessions/{id}/end", d.signedIn(d.endSession))
	mux.HandleFunc("POST /ui/pools/{name}/console", d.signedIn(d.console))
	mux.HandleFunc("POST /ui/pools/{name}/upload", d.signedIn(d.upload))
	mux.HandleFunc("GET /ui/pools/{name}/download", d.signedIn(d.download))
	mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		d.fail(w, r, nil, http.StatusNotFound, "There is no such page.")
	})
	// Cross-origin POSTs (by Sec-Fetch-Site or Origin) are refused before
	// anything else; the per-session token in every form is the second
	// line.
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.fail(w, r, nil, http.StatusForbidden, "This request came from another site and was refused (cross-site request forgery protection).")
	}))
	return securityHeaders(cop.Handler(mux))
}

type dash struct {
	o   Options
	api *client
	tpl map[string]*template.Template
	// oidc is sign-in through an OpenID provider (nil: off).
	oidc *oidcLogin

	mu       sync.Mutex
	sessions map[string]*session
}

// session is a signed-in browser.
type session struct {
	id      string
	token   string // the admin token it signed in with (or AdminToken)
	user    string // who signed in through OIDC
	csrf    string
	expires time.Time
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// securityHeaders keeps the pages out of frames and other origins' scripts.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("X-Frame-Options", "DENY")
		h.ServeHTTP(w, r)
	})
}

func cacheStatic(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=300")
		h.ServeHTTP(w, r)
	})
}

// current returns the request's signed-in session, if any.
func (d *dash) current(r *http.Request) *session {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.sessions[c.Value]
	if s == nil || time.Now().After(s.expires) {
		delete(d.sessions, c.Value)
		return nil
	}
	return s
}

type pageHandler func(w http.ResponseWriter, r *http.Request, s *session)

// signedIn sends the browser to sign in if it has no session, and checks
// the CSRF token of every POST.
func (d *dash) signedIn(h pageHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s := d.current(r)
		if s == nil {
			if r.Method != http.MethodGet {
				d.fail(w, r, nil, http.StatusForbidden, "You are not signed in (or your session ended): sign in again.")
				return
			}
			http.Redirect(w, r, "/ui/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		if r.Method == http.MethodPost {
			got := r.Header.Get("X-CSRF-Token")
			if got == "" {
				got = formValue(r, "csrf")
			}
			if subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf)) != 1 {
				d.fail(w, r, s, http.StatusForbidden, "This form is out of date or did not come from the dashboard (CSRF token mismatch): reload the page and try again.")
				return
			}
		}
		h(w, r, s)
	}
}

// formValue reads a form field of a urlencoded or multipart body.
func formValue(r *http.Request, name string) string {
	if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/") {
		if err := r.ParseMultipartForm(32 << 20); err != nil {
			return ""
		}
	}
	return r.FormValue(name)
}

func (d *dash) loginPage(w http.ResponseWriter, r *http.Request) {
	if d.current(r) != nil {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	data := d.loginData(safeNext(r.URL.Query().Get("next")), "")
	switch r.URL.Query().Get("out") {
	case "":
	case "oidc":
		data["Flash"] = "You are signed out of the dashboard (not of your identity provider)."
	default:
		data["Flash"] = "You are signed out."
	}
	d.render(w, r, http.StatusOK, "login", nil, data)
}

// loginData is the sign-in page: the token form unless OIDCOnly, the
// provider's button if OIDC is on.
func (d *dash) loginData(next, msg string) map[string]any {
	m := map[string]any{"Next": next, "Token": !d.o.OIDCOnly, "OIDC": d.oidc != nil}
	if msg != "" {
		m["Error"] = msg
	}
	if d.oidc != nil {
		if u, err := url.Parse(d.oidc.o.Issuer); err == nil {
			m["Provider"] = u.Host
		}
	}
	return m
}

// login checks the token against the control API itself: a token the API
// refuses signs nobody in.
func (d *dash) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	token := strings.TrimSpace(r.FormValue("token"))
	next := safeNext(r.FormValue("next"))
	err := errors.New("empty token")
	if token != "" {
		err = d.api.call(r.Context(), token, http.MethodGet, "/v1/events?limit=1", nil, nil)
	}
	if err != nil {
		d.o.Logger.Info("dashboard sign-in refused", "remote", r.RemoteAddr)
		d.loginError(w, r, http.StatusUnauthorized, next, "That token was refused. The admin token is in DATA_DIR/admin.token.")
		return
	}
	d.newSession(w, r, token, "")
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// newSession signs the browser in: a session that calls the API with
// token, and its cookie.
func (d *dash) newSession(w http.ResponseWriter, r *http.Request, token, user string) *session {
	s := &session{id: randomHex(32), token: token, user: user, csrf: randomHex(32), expires: time.Now().Add(d.o.SessionTTL)}
	d.mu.Lock()
	if len(d.sessions) >= maxSessions {
		d.evictLocked()
	}
	d.sessions[s.id] = s
	d.mu.Unlock()
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: s.id, Path: Prefix, HttpOnly: true, Secure: isHTTPS(r),
		SameSite: http.SameSiteStrictMode, Expires: s.expires,
	})
	return s
}

// evictLocked drops expired sessions, or else the one closest to expiry.
func (d *dash) evictLocked() {
	var oldest *session
	for id, s := range d.sessions {
		if time.Now().After(s.expires) {
			delete(d.sessions, id)
			continue
		}
		if oldest == nil || s.expires.Before(oldest.expires) {
			oldest = s
		}
	}
	if oldest != nil && len(d.sessions) >= maxSessions {
		delete(d.sessions, oldest.id)
	}
}

func (d *dash) logout(w http.ResponseWriter, r *http.Request, s *session) {
	d.mu.Lock()
	delete(d.sessions, s.id)
	d.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: Prefix, MaxAge: -1, HttpOnly: true, Secure: isHTTPS(r), SameSite: http.SameSiteStrictMode})
	out := "token"
	if s.user != "" {
		out = "oidc"
	}
	http.Redirect(w, r, "/ui/login?out="+out, http.StatusSeeOther)
}

func isHTTPS(r *http.Request) bool { return r.TLS != nil }

// safeNext keeps redirects after sign-in on the dashboard.
func safeNext(next string) string {
	if !strings.HasPrefix(next, Prefix) || strings.HasPrefix(next, "//") || strings.Contains(next, "\\") {
		return Prefix
	}
	return next
}
