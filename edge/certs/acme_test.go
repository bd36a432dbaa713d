package certs

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/acmetest"
)

// frontDoor is what the front door will do with a Manager: a plain
// listener whose handler answers HTTP-01 challenges and an HTTPS listener
// on the Manager's TLS configuration (which answers TLS-ALPN-01).
type frontDoor struct {
	plain, https      net.Listener
	http01, tlsALPN01 atomic.Int32
}

func listenFrontDoor(t *testing.T) *frontDoor {
	t.Helper()
	p, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(); h.Close() })
	return &frontDoor{plain: p, https: h}
}

func port(l net.Listener) int { return l.Addr().(*net.TCPAddr).Port }

// serve serves the front door's two listeners for m. It counts the
// validation requests that reach them: HTTP-01 requests on the plain
// listener, acme-tls/1 handshakes on the HTTPS one.
func (f *frontDoor) serve(t *testing.T, m *Manager) string {
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "host="+r.Host)
	})
	challenges := m.HTTPChallengeHandler(http.NotFoundHandler())
	counted := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/.well-known/acme-challenge/") {
			f.http01.Add(1)
		}
		challenges.ServeHTTP(w, r)
	})
	tc := m.TLSConfig()
	getCert := tc.GetCertificate
	tc.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		c, err := getCert(hello)
		if err == nil && len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == "acme-tls/1" {
			f.tlsALPN01.Add(1)
		}
		return c, err
	}
	quiet := log.New(io.Discard, "", 0)
	plain := &http.Server{Handler: counted, ReadHeaderTimeout: 10 * time.Second, ErrorLog: quiet}
	secure := &http.Server{Handler: app, ReadHeaderTimeout: 10 * time.Second, ErrorLog: quiet}
	go plain.Serve(f.plain)
	go secure.Serve(tls.NewListener(f.https, tc))
	t.Cleanup(func() { plain.Close(); secure.Close() })
	return f.https.Addr().String()
}

// pebbleLog is where Pebble logs: stderr if CERTS_TEST_LOG is set.
func pebbleLog() io.Writer {
	if os.Getenv("CERTS_TEST_LOG") != "" {
		return os.Stderr
	}
	return nil
}

func TestACMEWithPebble(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dnsAddr := acmetest.DNS(t, acmetest.Loopback)

	for _, tc := range []struct {
		challenge string
		opts      ACMEOptions
	}{
		{"http-01", ACMEOptions{DisableTLSALPNChallenge: true}},
		{"tls-alpn-01", ACMEOptions{DisableHTTPChallenge: true}},
	} {
		t.Run(tc.challenge, func(t *testing.T) {
			fd := listenFrontDoor(t)
			// Pebble validates on the front door's own ports: certmagic finds
			// them taken and leaves the answers to the front door's handlers.
			peb := acmetest.StartPebble(t, dnsAddr, port(fd.plain), port(fd.https), pebbleLog())
			o := tc.opts
			o.CA, o.CARootFile, o.Email = peb.Dir, peb.TLSRootFile, "ops@berth.test"
			o.HTTPPort, o.TLSALPNPort, o.ListenHost = port(fd.plain), port(fd.https), "127.0.0.1"
			m := newManager(t, Options{DataDir: t.TempDir(), Mode: ModeACME, ACME: o})
			addr := fd.serve(t, m)

			t0 := time.Now()
			if err := m.Bind(ctx, "app.berth.test"); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: first order (with account registration) took %v", tc.challenge, time.Since(t0))
			t0 = time.Now()
			if err := m.Bind(ctx, "shop.customer.example"); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: order for a custom domain took %v", tc.challenge, time.Since(t0))
			// A name no public CA signs gets a leaf from the local CA.
			if err := m.Bind(ctx, "localhost"); err != nil {
				t.Fatal(err)
			}

			public := poolOf(t, peb.IssuedPEM())
			for _, name := range []string{"app.berth.test", "shop.customer.example"} {
				body, st, err := httpsGet(ctx, addr, name, public)
				if err != nil {
					t.Fatalf("GET https://%s trusting Pebble's root: %v", name, err)
				}
				leaf := st.PeerCertificates[0]
				if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != name || !strings.Contains(body, "host="+name) {
					t.Errorf("%s: served leaf for %v, body %q", name, leaf.DNSNames, body)
				}
				if !strings.HasPrefix(leaf.Issuer.CommonName, "Pebble Intermediate") {
					t.Errorf("%s: issuer %q", name, leaf.Issuer.CommonName)
				}
			}
			if _, _, err := httpsGet(ctx, addr, "localhost", poolOf(t, m.RootPEM())); err != nil {
				t.Errorf("localhost from the local CA: %v", err)
			}
			for _, sni := range []string{"evil.customer.example", "other.berth.test"} {
				if _, err := handshake(addr, sni); err == nil {
					t.Errorf("unbound %s got a certificate", sni)
				}
			}

			// BindAsync: the first handshake obtains (or waits for) the certificate.
			if err := m.BindAsync("late.customer.example"); err != nil {
				t.Fatal(err)
			}
			t0 = time.Now()
			if _, _, err := httpsGet(ctx, addr, "late.customer.example", public); err != nil {
				t.Fatalf("GET right after BindAsync: %v", err)
			}
			t.Logf("%s: BindAsync + first GET took %v", tc.challenge, time.Since(t0))

			// The validations really went through the front door's listeners.
			h, a := fd.http01.Load(), fd.tlsALPN01.Load()
			t.Logf("validation requests: %d HTTP-01, %d TLS-ALPN-01", h, a)
			if tc.challenge == "http-01" && (h < 3 || a != 0) || tc.challenge == "tls-alpn-01" && (a < 3 || h != 0) {
				t.Errorf("validation requests: %d HTTP-01, %d TLS-ALPN-01 for %s", h, a, tc.challenge)
			}
		})
	}
}

func TestACMERejectsWildcard(t *testing.T) {
	m := newManager(t, Options{DataDir: t.TempDir(), Mode: ModeACME, ACME: ACMEOptions{CA: "https://127.0.0.1:1/dir", Email: "ops@berth.test"}})
	if err := m.BindAsync("*.customer.example"); err == nil || !strings.Contains(err.Error(), "DNS-01") {
		t.Fatalf("wildcard in mode acme: %v", err)
	}
	// *.localhost is the local CA's, which signs wildcards.
	if err := m.BindAsync("*.apps.localhost"); err != nil {
		t.Fatal(err)
	}
}

// TestACMEFailuresAndRetries: a name whose validation fails is not bound by
// Bind (and the names bound before stay bound); BindAsync keeps trying
// until the validation works.
func TestACMEFailuresAndRetries(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var fixed atomic.Bool
	// "late" and "broken" names point at 127.0.0.2, where nothing listens,
	// until fixed.
	dnsAddr := acmetest.DNS(t, func(name string) net.IP {
		if strings.HasPrefix(name, "broken.") || strings.HasPrefix(name, "late.") && !fixed.Load() {
			return net.IPv4(127, 0, 0, 2)
		}
		return net.IPv4(127, 0, 0, 1)
	})
	fd := listenFrontDoor(t)
	peb := acmetest.StartPebble(t, dnsAddr, port(fd.plain), port(fd.https), pebbleLog())
	dataDir := t.TempDir()
	m := newManager(t, Options{DataDir: dataDir, Mode: ModeACME, retryBase: 200 * time.Millisecond, ACME: ACMEOptions{
		CA: peb.Dir, CARootFile: peb.TLSRootFile, Email: "ops@berth.test", HTTPPort: port(fd.plain), TLSALPNPort: port(fd.https), ListenHost: "127.0.0.1",
	}})
	addr := fd.serve(t, m)
	if err := m.Bind(ctx, "app.berth.test"); err != nil {
		t.Fatal(err)
	}
	if err := m.Bind(ctx, "app.berth.test", "broken.customer.example"); err == nil {
		t.Fatal("Bind of a name that fails validation succeeded")
	}
	if got := strings.Join(m.Bound(), ","); got != "app.berth.test" {
		t.Fatalf("bound after the failed Bind: %s", got)
	}
	if _, err := handshake(addr, "broken.customer.example"); err == nil {
		t.Error("the failed name got a certificate")
	}

	if err := m.BindAsync("late.customer.example"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // at least one failed attempt
	stored := filepath.Join(dataDir, "tls", "certmagic", "certificates", "*", "late.customer.example", "late.customer.example.crt")
	if files, _ := filepath.Glob(stored); len(files) != 0 {
		t.Fatal("certificate obtained while the name did not resolve to the front door")
	}
	fixed.Store(true)
	deadline := time.Now().Add(time.Minute)
	for {
		if files, _ := filepath.Glob(stored); len(files) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("BindAsync did not retry")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, _, err := httpsGet(ctx, addr, "late.customer.example", poolOf(t, peb.IssuedPEM())); err != nil {
		t.Fatal(err)
	}
}
