// Package registrytest runs the distribution registry (the code of the
// "registry" image people run) in-process on a loopback port, for tests
// that pull real images over real HTTP.
package registrytest

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/distribution/distribution/v3/configuration"
	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd" // basic auth
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"github.com/sirupsen/logrus"
	"golang.org/x/crypto/bcrypt"
)

// Options configure a registry; the zero value is an anonymous plain-HTTP
// registry.
type Options struct {
	// User and Password, if set, protect the registry with basic auth.
	User, Password string
	// TLS serves HTTPS with a test certificate (see Registry.Certs).
	TLS bool
	// Wrap, if set, wraps the registry's handler (count or alter requests).
	Wrap func(http.Handler) http.Handler
}

// Registry is a running registry.
type Registry struct {
	// Host is 127.0.0.1:PORT, as image references name it.
	Host string
	// URL is the base URL (http:// or https://).
	URL string
	srv *httptest.Server
}

// Start starts a registry with the filesystem driver in a temp dir; it
// stops when the test ends.
func Start(t testing.TB, o Options) *Registry {
	t.Helper()
	logrus.SetOutput(io.Discard)
	dir := t.TempDir()
	cfg := &configuration.Configuration{}
	cfg.Log.Level = "error"
	cfg.Log.AccessLog.Disabled = true
	cfg.HTTP.Secret = "registrytest"
	cfg.Storage = configuration.Storage{
		"filesystem": configuration.Parameters{"rootdirectory": filepath.Join(dir, "data")},
		"delete":     configuration.Parameters{"enabled": true},
	}
	if o.User != "" {
		hash, err := bcrypt.GenerateFromPassword([]byte(o.Password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		pw := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(pw, []byte(o.User+":"+string(hash)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg.Auth = configuration.Auth{"htpasswd": configuration.Parameters{"realm": "registrytest", "path": pw}}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var h http.Handler = handlers.NewApp(ctx, cfg)
	if o.Wrap != nil {
		h = o.Wrap(h)
	}
	srv := httptest.NewUnstartedServer(h)
	if o.TLS {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(func() {
		srv.Close()
		cancel()
	})
	u := srv.URL
	return &Registry{Host: strings.TrimPrefix(strings.TrimPrefix(u, "http://"), "https://"), URL: u, srv: srv}
}

// Ref is a reference to repo:tag (or repo@digest) in this registry.
func (r *Registry) Ref(repoTag string) string { return fmt.Sprintf("%s/%s", r.Host, repoTag) }

// Certs are the roots that verify a TLS registry.
func (r *Registry) Certs() *x509.CertPool {
	p := x509.NewCertPool()
	if c := r.srv.Certificate(); c != nil {
		p.AddCert(c)
	}
	return p
}

// Client is an HTTP client that trusts the registry.
func (r *Registry) Client() *http.Client { return r.srv.Client() }

// CountBlobGets wraps a handler and counts GETs of blobs, by digest.
type CountBlobGets struct {
	mu     chan struct{}
	counts map[string]int
}

// NewCountBlobGets returns an empty counter.
func NewCountBlobGets() *CountBlobGets {
	c := &CountBlobGets{mu: make(chan struct{}, 1), counts: map[string]int{}}
	return c
}

// Wrap is an Options.Wrap.
func (c *CountBlobGets) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodGet {
			if i := strings.Index(req.URL.Path, "/blobs/"); i >= 0 {
				c.mu <- struct{}{}
				c.counts[req.URL.Path[i+len("/blobs/"):]]++
				<-c.mu
			}
		}
		next.ServeHTTP(w, req)
	})
}

// Get is how many times the blob with this digest was fetched.
func (c *CountBlobGets) Get(digest string) int {
	c.mu <- struct{}{}
	defer func() { <-c.mu }()
	return c.counts[digest]
}
