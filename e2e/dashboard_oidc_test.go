package e2e

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/berth-dev/berth/internal/oidctest"
)

// oidcBerth starts a provider (oidctest, on 127.0.0.1) and a server whose
// dashboard signs in through it, for the provider's admin user only; the
// browser reaches the dashboard as ui.test, another site than the
// provider's, so that SameSite cookies behave as with a real provider.
func oidcBerth(t *testing.T, flags ...string) (*berth, *oidctest.Provider, string) {
	t.Helper()
	p := oidctest.Start(t, nil, "unused")
	secret := filepath.Join(t.TempDir(), "ui-client-secret")
	if err := os.WriteFile(secret, []byte("dashboard-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := startBerth(t, "", append([]string{"--ui-oidc-issuer", p.Issuer, "--ui-oidc-client-id", "berth-ui",
		"--ui-oidc-client-secret-file", secret, "--ui-oidc-allowed-emails", oidctest.Users.Admin.Email}, flags...)...)
	u, err := url.Parse(b.info.AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	ui := "http://ui.test:" + u.Port()
	p.AddWebClient("berth-ui", "dashboard-secret", ui+"/ui/oidc/callback")
	return b, p, ui
}

// idpSignIn starts an OIDC sign-in from the dashboard's login page and
// signs in at the provider's form as u; then waits for sel.
func idpSignIn(t *testing.T, ctx context.Context, ui string, u oidctest.User, sel string) {
	t.Helper()
	run(t, ctx, "sign in at the provider as "+u.Username, network.ClearBrowserCookies(),
		chromedp.Navigate(ui+"/ui/login"), chromedp.WaitVisible("#oidc-login", chromedp.ByQuery),
		chromedp.Click("#oidc-login", chromedp.ByQuery), chromedp.WaitVisible("#username", chromedp.ByQuery),
		chromedp.SendKeys("#username", u.Username, chromedp.ByQuery), chromedp.SendKeys("#password", u.Password, chromedp.ByQuery),
		chromedp.Submit("#password", chromedp.ByQuery), chromedp.WaitVisible(sel+", .alert.error, #token, #pools", chromedp.ByQuery))
	var found bool
	run(t, ctx, "find "+sel, chromedp.Evaluate(`document.querySelector(`+strconv.Quote(sel)+`) !== null`, &found))
	if !found {
		var page string
		run(t, ctx, "page", chromedp.Text("main", &page, chromedp.ByQuery))
		t.Fatalf("signed in at the provider as %s, no %s at %s: %s", u.Username, sel, location(t, ctx), page)
	}
}

// foreignCallback runs a sign-in as u in another browser (a Go client
// that resolves ui.test to 127.0.0.1) up to the provider's redirect to the
// callback, and returns that callback URL: a real code and a real state,
// of a flow this browser did not start.
func foreignCallback(t *testing.T, ui string, u oidctest.User) string {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	dialer := &net.Dialer{}
	c := &http.Client{Jar: jar, Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		if host, port, _ := net.SplitHostPort(addr); host == "ui.test" {
			addr = net.JoinHostPort("127.0.0.1", port)
		}
		return dialer.DialContext(ctx, network, addr)
	}}, CheckRedirect: func(req *http.Request, _ []*http.Request) error {
		if req.URL.Path == "/ui/oidc/callback" {
			return http.ErrUseLastResponse
		}
		return nil
	}}
	res, err := c.Get(ui + "/ui/oidc/login")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	login := res.Request.URL
	res, err = c.PostForm(login.Scheme+"://"+login.Host+"/login/username", url.Values{
		"id": {login.Query().Get("authRequestID")}, "username": {u.Username}, "password": {u.Password}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	cb, err := res.Location()
	if err != nil || !strings.HasPrefix(cb.String(), ui+"/ui/oidc/callback?") {
		t.Fatalf("the other browser's sign-in: %d %v %v", res.StatusCode, cb, err)
	}
	return cb.String()
}

func uiCookies(t *testing.T, ctx context.Context, ui string) []*network.Cookie {
	t.Helper()
	var cookies []*network.Cookie
	run(t, ctx, "cookies", chromedp.ActionFunc(func(ctx context.Context) (err error) {
		cookies, err = network.GetCookies().WithURLs([]string{ui + "/ui/"}).Do(ctx)
		return err
	}))
	return cookies
}

// TestDashboardOIDCInBrowser signs in to the dashboard in headless
// Chromium through a real OpenID provider (authorization code + PKCE):
// a user the allow-list does not name is refused with a page that says
// why; the admin lands on the overview; a callback with a forged or no
// state is refused; sign-out ends the session on the server; the admin
// token still signs in. Screenshots go to $BERTH_ARTIFACTS/dashboard.
func TestDashboardOIDCInBrowser(t *testing.T) {
	ctx := browser(t, 4*time.Minute)
	b, _, ui := oidcBerth(t)
	token, err := os.ReadFile(filepath.Join(b.dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}

	t.Run("not on the allow-list", func(t *testing.T) {
		run(t, ctx, "login page", chromedp.Navigate(ui+"/ui/"), chromedp.WaitVisible("#oidc-login", chromedp.ByQuery))
		screenshots(t, ctx, "oidc-login")
		idpSignIn(t, ctx, ui, oidctest.Users.Other, "#refused")
		if got := text(t, ctx, "#refused"); !strings.Contains(got, oidctest.Users.Other.Email) || !strings.Contains(got, "--ui-oidc-allowed-emails") {
			t.Fatalf("refused page: %q", got)
		}
		screenshots(t, ctx, "oidc-refused")
		for _, c := range uiCookies(t, ctx, ui) {
			if c.Name == "berth_ui" {
				t.Fatalf("a refused user got a session cookie: %+v", c)
			}
		}
		run(t, ctx, "overview", chromedp.Navigate(ui+"/ui/"), chromedp.WaitVisible("#oidc-login", chromedp.ByQuery))
	})

	t.Run("forged or missing state", func(t *testing.T) {
		// Login CSRF: another browser's code and state (of a user the
		// allow-list lets in), a forged state, no state.
		for _, cb := range []string{foreignCallback(t, ui, oidctest.Users.Admin),
			ui + "/ui/oidc/callback?code=abc&state=" + strings.Repeat("ab", 32), ui + "/ui/oidc/callback?code=abc"} {
			// A sign-in under way (its state cookie set), then a callback
			// that is not its own.
			run(t, ctx, "start a sign-in", network.ClearBrowserCookies(), chromedp.Navigate(ui+"/ui/login"), chromedp.Click("#oidc-login", chromedp.ByQuery),
				chromedp.WaitVisible("#username", chromedp.ByQuery))
			run(t, ctx, "callback "+cb, chromedp.Navigate(cb), chromedp.WaitVisible(".alert.error, #pools", chromedp.ByQuery))
			if got := text(t, ctx, "main"); !strings.Contains(got, "does not match") {
				t.Fatalf("callback %s: %q", cb, got)
			}
			for _, c := range uiCookies(t, ctx, ui) {
				if c.Name == "berth_ui" {
					t.Fatalf("callback %s signed the browser in", cb)
				}
			}
		}
		screenshots(t, ctx, "oidc-bad-state")
		res, err := http.Get(b.info.AdminURL + "/ui/oidc/callback?code=abc&state=x")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusBadRequest || len(res.Cookies()) != 1 || res.Cookies()[0].Name != "berth_ui_oidc" {
			t.Errorf("callback without a state cookie: %d %v", res.StatusCode, res.Cookies())
		}
	})

	var session string
	t.Run("sign in through the provider", func(t *testing.T) {
		idpSignIn(t, ctx, ui, oidctest.Users.Admin, "#pools")
		if u := location(t, ctx); u != ui+"/ui/" {
			t.Fatalf("signed in at %s", u)
		}
		if who := text(t, ctx, "#who"); who != oidctest.Users.Admin.Email {
			t.Errorf("signed in as %q", who)
		}
		if pools := text(t, ctx, "#pools"); !strings.Contains(pools, "default") {
			t.Errorf("overview pools: %s", pools)
		}
		cookies := uiCookies(t, ctx, ui)
		if len(cookies) != 1 || cookies[0].Name != "berth_ui" || !cookies[0].HTTPOnly || cookies[0].SameSite != network.CookieSameSiteStrict {
			t.Fatalf("cookies: %+v", cookies)
		}
		session = cookies[0].Value
		screenshots(t, ctx, "oidc-overview")
	})

	t.Run("sign out", func(t *testing.T) {
		if session == "" {
			t.Skip("not signed in")
		}
		run(t, ctx, "sign out", chromedp.Click(".signout button", chromedp.ByQuery), chromedp.WaitVisible("#flash", chromedp.ByQuery))
		if got := text(t, ctx, "#flash"); !strings.Contains(got, "signed out of the dashboard") {
			t.Errorf("after sign-out: %q", got)
		}
		if len(uiCookies(t, ctx, ui)) != 0 {
			t.Errorf("the session cookie outlived the sign-out")
		}
		// The session is gone on the server, not only in the browser.
		req, _ := http.NewRequest(http.MethodGet, b.info.AdminURL+"/ui/", nil)
		req.AddCookie(&http.Cookie{Name: "berth_ui", Value: session})
		res, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusSeeOther || !strings.HasPrefix(res.Header.Get("Location"), "/ui/login") {
			t.Fatalf("the signed-out session's cookie: %d %s", res.StatusCode, res.Header.Get("Location"))
		}
		screenshots(t, ctx, "oidc-signed-out")
	})

	t.Run("token sign-in", func(t *testing.T) {
		signIn(t, ctx, ui, strings.TrimSpace(string(token)))
		if n := len(uiCookies(t, ctx, ui)); n != 1 {
			t.Fatalf("%d cookies after token sign-in", n)
		}
	})
}

// TestDashboardPublicOIDC serves the dashboard on the HTTPS listener too
// (--ui-public): at the public URL's host, OIDC sign-in only (the admin
// token is not taken there), with a Secure session cookie; the plain
// listener does not serve it.
func TestDashboardPublicOIDC(t *testing.T) {
	b, p, ui := oidcBerth(t, "--https-listen", "127.0.0.1:0", "--ui-public")
	f := newHTTPSFront(t, b)
	pub := b.info.PublicURL
	p.AddWebClient("berth-ui", "dashboard-secret", ui+"/ui/oidc/callback", pub+"/ui/oidc/callback")
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.roots}}}
	get := func(u string) (*http.Response, string) {
		t.Helper()
		res, err := c.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res, string(body)
	}

	res, body := get(pub + "/ui/")
	if res.StatusCode != http.StatusOK || res.Request.URL.Path != "/ui/login" || !strings.Contains(body, `id="oidc-login"`) || strings.Contains(body, `id="token"`) {
		t.Fatalf("public /ui/: %d at %s\n%s", res.StatusCode, res.Request.URL, body)
	}
	token, err := os.ReadFile(filepath.Join(b.dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	res, err = c.PostForm(pub+"/ui/login", url.Values{"token": {strings.TrimSpace(string(token))}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound || len(res.Cookies()) != 0 {
		t.Fatalf("the admin token on the public dashboard: %d %v", res.StatusCode, res.Cookies())
	}

	res, _ = get(pub + "/ui/oidc/login")
	login := res.Request.URL
	res, err = c.PostForm(login.Scheme+"://"+login.Host+"/login/username", url.Values{
		"id": {login.Query().Get("authRequestID")}, "username": {oidctest.Users.Admin.Username}, "password": {oidctest.Users.Admin.Password}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Request.URL.String(), pub+"/ui/oidc/callback?") {
		t.Fatalf("sign-in ended at %d %s", res.StatusCode, res.Request.URL)
	}
	var session *http.Cookie
	for _, ck := range res.Cookies() {
		if ck.Name == "berth_ui" {
			session = ck
		}
	}
	if session == nil || !session.Secure || !session.HttpOnly || session.SameSite != http.SameSiteStrictMode {
		t.Fatalf("session cookie on HTTPS: %+v", res.Cookies())
	}
	if res, body := get(pub + "/ui/"); res.StatusCode != http.StatusOK || !strings.Contains(body, `id="pools"`) {
		t.Fatalf("public overview: %d\n%s", res.StatusCode, body)
	}
	// Only the public URL's host over HTTPS: not the plain listener.
	if res, body := get(b.info.PlainURL + "/ui/login"); res.StatusCode == http.StatusOK || strings.Contains(body, "oidc-login") {
		t.Fatalf("the plain listener served the dashboard: %d", res.StatusCode)
	}
}
