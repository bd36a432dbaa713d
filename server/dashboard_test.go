package server

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestDashboardOn: only the public URL's host under /ui is the dashboard;
// apps' hosts and other paths stay the front door's.
func TestDashboardOn(t *testing.T) {
	h := dashboardOn("berth.example", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(201) }),
		http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(202) }))
	for _, c := range []struct {
		host, path string
		want       int
	}{
		{"berth.example", "/ui/", 201},
		{"BERTH.example:8443", "/ui/apps/x", 201},
		{"berth.example", "/ui", http.StatusMovedPermanently},
		{"berth.example", "/uix", 202},
		{"berth.example", "/pools/default/mcp", 202},
		{"app.berth.example", "/ui/", 202},
		{"custom.example", "/ui/", 202},
	} {
		r := httptest.NewRequest(http.MethodGet, "http://"+c.host+c.path, nil)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != c.want {
			t.Errorf("%s%s: %d, want %d", c.host, c.path, w.Code, c.want)
		}
	}
}
