package dashboard

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/oidctest"
)

// oidcDash serves a dashboard with OIDC sign-in against a real provider
// (oidctest, on loopback) whose client has the dashboard's callback.
func oidcDash(t *testing.T, o OIDC, tokenToo bool) (*httptest.Server, *oidctest.Provider) {
	t.Helper()
	p := oidctest.Start(t, nil, "unused")
	o.Issuer, o.ClientID, o.ClientSecret = p.Issuer, "berth-ui", "ui-secret"
	srv := httptest.NewServer(Handler(Options{API: stubAPI(), DataPlane: http.NotFoundHandler(), OIDC: &o, AdminToken: "good", OIDCOnly: !tokenToo}))
	t.Cleanup(srv.Close)
	p.AddWebClient("berth-ui", "ui-secret", srv.URL+callbackPath)
	return srv, p
}

func newBrowser(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar}
}

func readAll(t *testing.T, res *http.Response) string {
	t.Helper()
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// startAt starts a sign-in and returns the provider's login URL it led to.
func startAt(t *testing.T, c *http.Client, srv *httptest.Server) *url.URL {
	t.Helper()
	res, err := c.Get(srv.URL + "/ui/oidc/login?next=/ui/pools/p1")
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, res)
	if !strings.HasPrefix(res.Request.URL.Path, "/login/username") {
		t.Fatalf("sign-in led to %s (%d)", res.Request.URL, res.StatusCode)
	}
	return res.Request.URL
}

// submit signs in at the provider's form as u and returns where it ends.
func submit(t *testing.T, c *http.Client, login *url.URL, u oidctest.User) (*http.Response, string) {
	t.Helper()
	form := url.Values{"id": {login.Query().Get("authRequestID")}, "username": {u.Username}, "password": {u.Password}}
	res, err := c.PostForm(login.Scheme+"://"+login.Host+"/login/username", form)
	if err != nil {
		t.Fatal(err)
	}
	return res, readAll(t, res)
}

func TestOIDCSignIn(t *testing.T) {
	srv, _ := oidcDash(t, OIDC{AllowedSubjects: []string{oidctest.Users.Admin.Subject}}, false)
	c := newBrowser(t)
	res, body := submit(t, c, startAt(t, c, srv), oidctest.Users.Admin)
	if res.StatusCode != http.StatusOK || res.Request.URL.Path != callbackPath || !strings.Contains(body, `content="0;url=/ui/pools/p1"`) {
		t.Fatalf("callback: %d %s\n%s", res.StatusCode, res.Request.URL, body)
	}
	u, _ := url.Parse(srv.URL + Prefix)
	var sess, state *http.Cookie
	for _, ck := range res.Cookies() {
		switch ck.Name {
		case cookieName:
			sess = ck
		case stateCookie:
			state = ck
		}
	}
	if sess == nil || !sess.HttpOnly || sess.SameSite != http.SameSiteStrictMode || state == nil || state.MaxAge >= 0 {
		t.Fatalf("cookies after the callback: %v", res.Cookies())
	}
	if len(c.Jar.Cookies(u)) != 1 {
		t.Fatalf("jar: %v", c.Jar.Cookies(u))
	}
	res, err := c.Get(srv.URL + "/ui/")
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, res); res.StatusCode != http.StatusOK || !strings.Contains(body, `href="/ui/pools/p1"`) || !strings.Contains(body, oidctest.Users.Admin.Email) {
		t.Fatalf("overview after OIDC sign-in: %d %s\n%s", res.StatusCode, res.Request.URL, body)
	}
	// The token form is off: only OIDC signs in here.
	res, err = c.PostForm(srv.URL+"/ui/login", url.Values{"token": {"good"}})
	if err != nil {
		t.Fatal(err)
	}
	if readAll(t, res); res.StatusCode != http.StatusNotFound {
		t.Errorf("token sign-in with OIDCOnly: %d", res.StatusCode)
	}
}

func TestOIDCRefusals(t *testing.T) {
	srv, _ := oidcDash(t, OIDC{AllowedEmails: []string{strings.ToUpper(oidctest.Users.Admin.Email)}}, true)
	signedIn := func(c *http.Client) bool {
		u, _ := url.Parse(srv.URL + Prefix)
		for _, ck := range c.Jar.Cookies(u) {
			if ck.Name == cookieName {
				return true
			}
		}
		return false
	}
	t.Run("not on the allow-list", func(t *testing.T) {
		c := newBrowser(t)
		res, body := submit(t, c, startAt(t, c, srv), oidctest.Users.Other)
		if res.StatusCode != http.StatusForbidden || !strings.Contains(body, oidctest.Users.Other.Email) || signedIn(c) {
			t.Fatalf("%d signed in: %v\n%s", res.StatusCode, signedIn(c), body)
		}
	})
	t.Run("allowed by email", func(t *testing.T) {
		c := newBrowser(t)
		if res, body := submit(t, c, startAt(t, c, srv), oidctest.Users.Admin); res.StatusCode != http.StatusOK || !signedIn(c) {
			t.Fatalf("%d\n%s", res.StatusCode, body)
		}
	})
	t.Run("callback used twice", func(t *testing.T) {
		c := newBrowser(t)
		var callback *url.URL
		c.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
			if req.URL.Path == callbackPath {
				callback = req.URL
			}
			return nil
		}
		if res, body := submit(t, c, startAt(t, c, srv), oidctest.Users.Admin); res.StatusCode != http.StatusOK || callback == nil {
			t.Fatalf("%d\n%s", res.StatusCode, body)
		}
		// The same code and state, with the state cookie back.
		again := newBrowser(t)
		again.Jar.SetCookies(callback, []*http.Cookie{{Name: stateCookie, Value: callback.Query().Get("state"), Path: "/ui/oidc/"}})
		res, err := again.Get(callback.String())
		if err != nil {
			t.Fatal(err)
		}
		if body := readAll(t, res); res.StatusCode != http.StatusBadRequest || !strings.Contains(body, "already used") || signedIn(again) {
			t.Fatalf("replayed callback: %d signed in: %v\n%s", res.StatusCode, signedIn(again), body)
		}
	})
	// The callback carries a state its browser did not start with.
	for _, tt := range []struct {
		name   string
		mangle func(c *http.Client, callback *url.URL)
	}{
		{"no state cookie", func(c *http.Client, _ *url.URL) { c.Jar, _ = cookiejar.New(nil) }},
		{"forged state", func(_ *http.Client, cb *url.URL) {
			q := cb.Query()
			q.Set("state", strings.Repeat("ab", 32))
			cb.RawQuery = q.Encode()
		}},
		{"no state", func(_ *http.Client, cb *url.URL) {
			q := cb.Query()
			q.Del("state")
			cb.RawQuery = q.Encode()
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newBrowser(t)
			c.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
				if req.URL.Path == callbackPath {
					return http.ErrUseLastResponse
				}
				return nil
			}
			res, _ := submit(t, c, startAt(t, c, srv), oidctest.Users.Admin)
			cb, err := res.Location()
			if err != nil {
				t.Fatalf("no redirect to the callback: %d %v", res.StatusCode, err)
			}
			tt.mangle(c, cb)
			res, err = c.Get(cb.String())
			if err != nil {
				t.Fatal(err)
			}
			if body := readAll(t, res); res.StatusCode != http.StatusBadRequest || !strings.Contains(body, "sign in again") || signedIn(c) {
				t.Fatalf("%d signed in: %v\n%s", res.StatusCode, signedIn(c), body)
			}
		})
	}
}

func TestOIDCAllowList(t *testing.T) {
	id := func(sub, email string, verified bool, claims map[string]any) *identity {
		return &identity{Subject: sub, Email: email, EmailVerified: verified, Claims: claims}
	}
	tests := []struct {
		name string
		o    OIDC
		id   *identity
		want bool
	}{
		{"subject listed", OIDC{AllowedSubjects: []string{"a"}}, id("a", "", false, nil), true},
		{"subject not listed", OIDC{AllowedSubjects: []string{"a"}}, id("b", "", false, nil), false},
		{"email listed, any case", OIDC{AllowedEmails: []string{"Ann@Example.com"}}, id("x", "ann@example.com", true, nil), true},
		{"email not verified", OIDC{AllowedEmails: []string{"ann@example.com"}}, id("x", "ann@example.com", false, nil), false},
		{"claim in a list", OIDC{RequiredClaim: "groups=admins"}, id("x", "", false, map[string]any{"groups": []any{"dev", "admins"}}), true},
		{"claim string", OIDC{RequiredClaim: "role=admin"}, id("x", "", false, map[string]any{"role": "admin"}), true},
		{"claim other value", OIDC{RequiredClaim: "role=admin"}, id("x", "", false, map[string]any{"role": "admin2"}), false},
		{"claim missing", OIDC{RequiredClaim: "groups=admins"}, id("x", "", false, map[string]any{}), false},
		{"listed but without the claim", OIDC{AllowedSubjects: []string{"a"}, RequiredClaim: "groups=admins"}, id("a", "", false, map[string]any{"groups": []any{"dev"}}), false},
		{"listed and with the claim", OIDC{AllowedSubjects: []string{"a"}, RequiredClaim: "groups=admins"}, id("a", "", false, map[string]any{"groups": []any{"admins"}}), true},
	}
	for _, tt := range tests {
		if got := newOIDCLogin(tt.o).allowed(tt.id); got != tt.want {
			t.Errorf("%s: allowed = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestOIDCCheck(t *testing.T) {
	ok := OIDC{Issuer: "https://idp.example", ClientID: "c", AllowedEmails: []string{"a@b"}}
	tests := []struct {
		name string
		edit func(*OIDC)
		want string
	}{
		{"good", func(*OIDC) {}, ""},
		{"http on loopback", func(o *OIDC) { o.Issuer = "http://127.0.0.1:9000" }, ""},
		{"http elsewhere", func(o *OIDC) { o.Issuer = "http://idp.example" }, "https"},
		{"no client", func(o *OIDC) { o.ClientID = "" }, "client ID"},
		{"no allow-list", func(o *OIDC) { o.AllowedEmails = nil }, "allow-list"},
		{"bad claim", func(o *OIDC) { o.AllowedEmails, o.RequiredClaim = nil, "groups" }, "NAME=VALUE"},
	}
	for _, tt := range tests {
		o := ok
		tt.edit(&o)
		err := o.Check()
		if (err == nil) != (tt.want == "") || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
}
