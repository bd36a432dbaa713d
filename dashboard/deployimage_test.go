package dashboard

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/berth-dev/berth/app"
)

func TestImageConfig(t *testing.T) {
	latest := app.Config{Command: "./server", Source: &app.Source{Archive: "sha256:aa"}, Port: 3000, Env: map[string]string{"A": "1"}, Min: 1, Max: 3}
	tests := []struct {
		name    string
		form    url.Values
		want    func(c *app.Config)
		wantErr string
	}{
		{"image only: the image's command and port", url.Values{"image": {"reg.test/x:1"}}, func(c *app.Config) {
			c.Command, c.Port, c.Source = "", 0, &app.Source{Image: "reg.test/x:1"}
		}, ""},
		{"command, args, env, port, suffix", url.Values{"image": {" reg.test/x:1 "}, "command": {"/bin/server\r\n--flag value\n\n"},
			"args": {"a b\n"}, "env": {"B=2\nA=3=x"}, "port": {"8080"}, "revisionSuffix": {"v2"}}, func(c *app.Config) {
			c.Command, c.Port, c.Source = "", 8080, &app.Source{Image: "reg.test/x:1"}
			c.Entrypoint, c.Args = []string{"/bin/server", "--flag value"}, []string{"a b"}
			c.Env, c.RevisionSuffix = map[string]string{"A": "3=x", "B": "2"}, "v2"
		}, ""},
		{"no image", url.Values{"command": {"x"}}, nil, "image reference"},
		{"bad port", url.Values{"image": {"x"}, "port": {"http"}}, nil, "not a port"},
		{"port out of range", url.Values{"image": {"x"}, "port": {"70000"}}, nil, "not a port"},
		{"bad env line", url.Values{"image": {"x"}, "env": {"NOVALUE"}}, nil, "NAME=VALUE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/", strings.NewReader(tt.form.Encode()))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			got, err := imageConfig(r, latest)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := latest
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got %+v\nwant %+v", got, want)
			}
			if latest.Env["A"] != "1" {
				t.Fatal("the latest revision's env was changed")
			}
		})
	}
}

// stubDeployAPI answers an app's GET, and a streaming deploy: a pull's
// progress, then the result (or an error, for the image "missing").
func stubDeployAPI(t *testing.T, sent *app.Config) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/v1/apps/a/revisions":
			if !strings.Contains(r.Header.Get("Accept"), "application/x-ndjson") {
				t.Errorf("the deploy did not ask for the stream")
			}
			_ = json.NewDecoder(r.Body).Decode(sent)
			w.Header().Set("Content-Type", "application/x-ndjson")
			_, _ = io.WriteString(w, `{"progress":{"layer":"sha256:1","status":"downloading","done":1,"total":2}}`+"\n")
			if sent.Source.Image == "missing" {
				_, _ = io.WriteString(w, `{"error":"image missing not found","code":"InvalidSetting"}`+"\n")
				return
			}
			_, _ = io.WriteString(w, `{"progress":{"layer":"sha256:1","status":"unpacked","done":2,"total":2}}`+"\n"+
				`{"result":{"revision":{"name":"a--r2"}}}`+"\n")
		case r.URL.Path == "/v1/apps/a":
			_, _ = io.WriteString(w, `{"name":"a","revisions":[{"name":"a--r1","config":{"command":"./s","minReplicas":1}}]}`)
		default:
			_, _ = io.WriteString(w, `{"value":[]}`)
		}
	})
}

// TestDeployImage: the page's script gets the control API's stream as it
// is; a form posted without script is sent to the app page (or shown the
// error); without the CSRF token nothing is deployed.
func TestDeployImage(t *testing.T) {
	var sent app.Config
	srv := httptest.NewServer(Handler(Options{API: stubDeployAPI(t, &sent), DataPlane: http.NotFoundHandler()}))
	defer srv.Close()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := noRedirect.PostForm(srv.URL+"/ui/login", url.Values{"token": {"any"}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	cookie := res.Cookies()[0]
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/ui/apps/a", nil)
	req.AddCookie(cookie)
	res, err = noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(res.Body)
	res.Body.Close()
	csrf := regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`).FindSubmatch(page)[1]
	post := func(form url.Values, accept string) (*http.Response, string) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/ui/apps/a/deploy-image", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		req.AddCookie(cookie)
		res, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res, string(b)
	}
	sent = app.Config{}
	if res, _ := post(url.Values{"image": {"reg.test/x:1"}}, "application/x-ndjson"); res.StatusCode != http.StatusForbidden || sent.Source != nil {
		t.Fatalf("without the CSRF token: %d, sent %+v", res.StatusCode, sent)
	}
	res, body := post(url.Values{"csrf": {string(csrf)}, "image": {"reg.test/x:1"}}, "application/x-ndjson")
	if res.Header.Get("Content-Type") != "application/x-ndjson" || strings.Count(body, `"progress"`) != 2 || !strings.HasSuffix(body, `{"result":{"revision":{"name":"a--r2"}}}`+"\n") {
		t.Fatalf("streamed deploy: %d %q\n%s", res.StatusCode, res.Header.Get("Content-Type"), body)
	}
	if sent.Source == nil || sent.Source.Image != "reg.test/x:1" || sent.Command != "" || sent.Min != 1 {
		t.Fatalf("the control API got %+v", sent)
	}
	res, _ = post(url.Values{"csrf": {string(csrf)}, "image": {"reg.test/x:1"}}, "")
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/ui/apps/a?deployed=a--r2" {
		t.Fatalf("deploy without script: %d %q", res.StatusCode, res.Header.Get("Location"))
	}
	res, body = post(url.Values{"csrf": {string(csrf)}, "image": {"missing"}}, "")
	if res.StatusCode != http.StatusBadRequest || !strings.Contains(body, "image missing not found") {
		t.Fatalf("failed deploy without script: %d\n%s", res.StatusCode, body)
	}
}
