package dashboard

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// stubAPI answers the few control API calls the overview makes, for the
// token "good" only. (The real API is driven in e2e/dashboard_browser_test.go.)
func stubAPI() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer good" {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"error":{"code":"Unauthorized","message":"no"}}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/pools":
			_, _ = io.WriteString(w, `{"value":[{"name":"p1","type":"shell","status":{"sessions":3}}]}`)
		case "/v1/pools/p1/rotate-key":
			_, _ = io.WriteString(w, `{"apiKey":"new"}`)
		default:
			_, _ = io.WriteString(w, `{"value":[]}`)
		}
	})
}

func TestSignInAndCSRF(t *testing.T) {
	srv := httptest.NewServer(Handler(Options{API: stubAPI(), DataPlane: http.NotFoundHandler()}))
	defer srv.Close()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	login := func(token string) *http.Response {
		res, err := noRedirect.PostForm(srv.URL+"/ui/login", url.Values{"token": {token}, "next": {"//evil.example/"}})
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res
	}
	if res := login("bad"); res.StatusCode != http.StatusUnauthorized || len(res.Cookies()) != 0 {
		t.Fatalf("bad token: %d %v", res.StatusCode, res.Cookies())
	}
	res := login("good")
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/ui/" || len(res.Cookies()) != 1 {
		t.Fatalf("good token: %d %q %v", res.StatusCode, res.Header.Get("Location"), res.Cookies())
	}
	c := res.Cookies()[0]
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/ui/" {
		t.Fatalf("cookie %+v", c)
	}
	get := func(path string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		req.AddCookie(c)
		res, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	code, body := get("/ui/")
	if code != http.StatusOK || !strings.Contains(body, `href="/ui/pools/p1"`) {
		t.Fatalf("overview: %d\n%s", code, body)
	}
	csrf := regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`).FindStringSubmatch(body)[1]
	post := func(token string, header http.Header) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/ui/pools/p1/rotate-key", strings.NewReader(url.Values{"csrf": {token}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range header {
			req.Header[k] = v
		}
		req.AddCookie(c)
		res, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	tests := []struct {
		name   string
		token  string
		header http.Header
		want   int
	}{
		{"no token", "", nil, http.StatusForbidden},
		{"wrong token", "beef", nil, http.StatusForbidden},
		{"cross-site fetch", csrf, http.Header{"Sec-Fetch-Site": {"cross-site"}}, http.StatusForbidden},
		{"foreign origin", csrf, http.Header{"Origin": {"http://evil.example"}}, http.StatusForbidden},
		{"same origin", csrf, http.Header{"Origin": {srv.URL}, "Sec-Fetch-Site": {"same-origin"}}, http.StatusOK},
	}
	for _, tt := range tests {
		if got := post(tt.token, tt.header); got != tt.want {
			t.Errorf("%s: %d, want %d", tt.name, got, tt.want)
		}
	}
	if code, _ := get("/ui/nope"); code != http.StatusNotFound {
		t.Errorf("unknown page: %d", code)
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"/ui/apps/x": "/ui/apps/x", "": "/ui/", "//evil/": "/ui/", "https://evil/ui/": "/ui/", "/ui/\\evil": "/ui/", "/v1/pools": "/ui/",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}
