package dashboard

import (
	"net/http/httptest"
	"net/url"
	"reflect"
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
