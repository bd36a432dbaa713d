package cors_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/berth-dev/berth/edge/cors"
)

func TestAllowOrigin(t *testing.T) {
	p, err := cors.Compile(cors.Spec{AllowedOrigins: []string{"https://a.example", "https://*.example.com", "http://localhost:3000"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		origin string
		want   bool
	}{
		{"https://a.example", true},
		{"https://A.Example:443", true},
		{"http://a.example", false},       // scheme
		{"https://a.example:8443", false}, // port
		{"https://b.example", false},
		{"https://x.example.com", true},
		{"https://x.y.example.com", true}, // any depth, as ASP.NET Core
		{"https://example.com", false},    // not the apex
		{"https://evilexample.com", false},
		{"https://x.example.com.evil.io", false},
		{"http://x.example.com", false},
		{"https://x.example.com:444", false},
		{"http://localhost:3000", true},
		{"http://localhost:3001", false},
		{"null", false},
		{"", false},
		{"https://*.example.com", false},
		{"https://a.example/path", false},
	} {
		if got := p.AllowOrigin(c.origin); got != c.want {
			t.Errorf("AllowOrigin(%q) = %v, want %v", c.origin, got, c.want)
		}
	}
	star, _ := cors.Compile(cors.Spec{AllowedOrigins: []string{"*"}})
	if !star.AllowOrigin("https://anything.io") {
		t.Error("* refuses an origin")
	}
}

func TestNormalize(t *testing.T) {
	for _, c := range []struct {
		spec cors.Spec
		bad  string // part of the error, "" if valid
	}{
		{cors.Spec{AllowedOrigins: []string{"https://a.example"}}, ""},
		{cors.Spec{}, "at least one allowed origin"},
		{cors.Spec{AllowedOrigins: []string{"*"}, AllowCredentials: true}, "cannot go with allow credentials"},
		{cors.Spec{AllowedOrigins: []string{"a.example"}}, "scheme://host"},
		{cors.Spec{AllowedOrigins: []string{"ftp://a.example"}}, "scheme://host"},
		{cors.Spec{AllowedOrigins: []string{"https://a.*.example"}}, "first label"},
		{cors.Spec{AllowedOrigins: []string{"https://*.com"}}, "needs a domain"},
		{cors.Spec{AllowedOrigins: []string{"https://a.example/x"}}, "scheme://host"},
		{cors.Spec{AllowedOrigins: []string{"https://a.example"}, AllowedMethods: []string{"PO ST"}}, "not an HTTP method"},
		{cors.Spec{AllowedOrigins: []string{"https://a.example"}, AllowedHeaders: []string{"X:Y"}}, "not a header name"},
		{cors.Spec{AllowedOrigins: []string{"https://a.example"}, MaxAge: -1}, "max age"},
	} {
		s := c.spec
		err := s.Normalize()
		switch {
		case c.bad == "" && err != nil:
			t.Errorf("%+v: %v", c.spec, err)
		case c.bad != "" && (err == nil || !strings.Contains(err.Error(), c.bad)):
			t.Errorf("%+v: error %v, want one about %q", c.spec, err, c.bad)
		}
	}
}

func preflight(p *cors.Policy, method, headers string) (bool, http.Header) {
	r := httptest.NewRequest(http.MethodOptions, "/mcp", nil)
	r.Header.Set("Origin", "https://a.example")
	r.Header.Set("Access-Control-Request-Method", method)
	if headers != "" {
		r.Header.Set("Access-Control-Request-Headers", headers)
	}
	h := http.Header{}
	ok := p.Preflight(h, r)
	return ok, h
}

func TestPreflight(t *testing.T) {
	plain, _ := cors.Compile(cors.Spec{AllowedOrigins: []string{"https://a.example"}})
	custom, _ := cors.Compile(cors.Spec{AllowedOrigins: []string{"https://a.example"}, AllowedMethods: []string{"post"},
		AllowedHeaders: []string{"X-Trace"}, MaxAge: 3600, AllowCredentials: true})
	anyHeader, _ := cors.Compile(cors.Spec{AllowedOrigins: []string{"https://a.example"}, AllowedHeaders: []string{"*"}, AllowedMethods: []string{"*"}})
	for _, c := range []struct {
		name            string
		p               *cors.Policy
		method, headers string
		ok              bool
		want            map[string]string // header → value ("" absent)
	}{
		{"MCP headers by default", plain, "POST", "content-type, mcp-session-id, mcp-protocol-version, x-ms-apikey, authorization, last-event-id", true, map[string]string{
			"Access-Control-Allow-Origin": "https://a.example", "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
			"Access-Control-Max-Age": "", "Access-Control-Allow-Credentials": ""}},
		{"x-api-key by default", plain, "POST", "x-api-key", true, nil},
		{"Mcp-Param-* headers", plain, "POST", "mcp-param-city", true, nil},
		{"unknown header refused", plain, "POST", "x-secret", false, nil},
		{"unknown method refused", plain, "PUT", "", false, nil},
		{"configured", custom, "POST", "x-trace, content-type", true, map[string]string{
			"Access-Control-Allow-Methods": "POST", "Access-Control-Max-Age": "3600", "Access-Control-Allow-Credentials": "true"}},
		{"method outside the configured list", custom, "GET", "", false, nil},
		{"any header and method", anyHeader, "PATCH", "x-whatever", true, map[string]string{"Access-Control-Allow-Methods": "PATCH"}},
	} {
		ok, h := preflight(c.p, c.method, c.headers)
		if ok != c.ok {
			t.Errorf("%s: allowed = %v, want %v", c.name, ok, c.ok)
			continue
		}
		for k, v := range c.want {
			if got := h.Get(k); got != v {
				t.Errorf("%s: %s = %q, want %q", c.name, k, got, v)
			}
		}
		if ok && c.headers != "" && !strings.Contains(strings.ToLower(h.Get("Access-Control-Allow-Headers")), strings.Split(c.headers, ",")[0]) {
			t.Errorf("%s: Allow-Headers %q lacks %q", c.name, h.Get("Access-Control-Allow-Headers"), c.headers)
		}
	}
}

func TestActual(t *testing.T) {
	p, _ := cors.Compile(cors.Spec{AllowedOrigins: []string{"https://a.example"}, ExposeHeaders: []string{"X-Trace"}})
	h := http.Header{}
	p.Actual(h, "https://a.example")
	if h.Get("Access-Control-Allow-Origin") != "https://a.example" || h.Get("Vary") != "Origin" {
		t.Errorf("headers %v", h)
	}
	if got := h.Get("Access-Control-Expose-Headers"); got != "Mcp-Session-Id, Mcp-Protocol-Version, WWW-Authenticate, X-Trace" {
		t.Errorf("Expose-Headers %q", got)
	}
	if h.Get("Access-Control-Allow-Credentials") != "" {
		t.Error("credentials without allowCredentials")
	}
}

// BenchmarkDecision is the per-request work of a policy: the origin check
// and the actual response's headers.
func BenchmarkDecision(b *testing.B) {
	p, _ := cors.Compile(cors.Spec{AllowedOrigins: []string{"https://a.example", "https://*.b.example"}})
	for _, origin := range []string{"https://a.example", "https://x.b.example", "https://evil.example"} {
		b.Run(origin, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if p.AllowOrigin(origin) {
					p.Actual(http.Header{}, origin)
				}
			}
		})
	}
}
