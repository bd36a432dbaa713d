package controlplane

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestTokenAndProfiler(t *testing.T) {
	srv := httptest.NewServer(Handler(Options{Token: "s3cret", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	defer srv.Close()
	for _, tc := range []struct {
		path, token string
		status      int
		body        string
	}{
		{"/v1/healthz", "", http.StatusOK, `"ok":true`},
		{"/debug/pprof/", "", http.StatusUnauthorized, "admin token"},
		{"/debug/pprof/", "wrong", http.StatusUnauthorized, "admin token"},
		{"/debug/pprof/", "s3cret", http.StatusOK, "goroutine"},
		{"/debug/pprof/goroutine?debug=1", "s3cret", http.StatusOK, "goroutine profile"},
	} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+tc.path, nil)
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || !strings.Contains(string(b), tc.body) {
			t.Errorf("GET %s (token %q) = %d %.200s; want %d with %q", tc.path, tc.token, resp.StatusCode, b, tc.status, tc.body)
		}
	}
}

// TestHostnameNotPublicHost: the public URL's host cannot be bound to an
// app as a custom domain (400, before anything else is looked at).
func TestHostnameNotPublicHost(t *testing.T) {
	srv := httptest.NewServer(Handler(Options{Token: "s3cret", PublicURL: "https://Berth.Example.com:8443",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodPut, srv.URL+"/v1/apps/tasks/hostnames/berth.example.com", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "public URL") {
		t.Fatalf("PUT the public URL's host: %d %s, want 400", resp.StatusCode, b)
	}
}
