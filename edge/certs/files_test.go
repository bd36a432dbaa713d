package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// userCert writes a certificate for names, signed by a CA of the test's
// own (not Berth's), and its key, as a user would bring them.
func userCert(t *testing.T, ca *localCA, dir string, names ...string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: names}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := x509.ParseCertificateRequest(der)
	issued, err := ca.Issue(context.Background(), csr)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	// Write to temporary names and rename, as a deploy tool does.
	for f, b := range map[string][]byte{certFile: issued.Certificate, keyFile: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})} {
		if err := os.WriteFile(f+".new", b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(f+".new", f); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile
}

func TestFilesMode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	userCA, err := loadOrCreateCA(t.TempDir(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := userCert(t, userCA, dir, "*.apps.example.test", "apps.example.test")
	m := newManager(t, Options{DataDir: t.TempDir(), Mode: ModeFiles, CertFile: certFile, KeyFile: keyFile, FileCheckInterval: 50 * time.Millisecond})
	if m.RootPEM() != nil {
		t.Error("mode files has no local CA")
	}
	if err := m.Bind(ctx, "tasks.apps.example.test", "apps.example.test"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"localhost", "a.b.apps.example.test", "example.test"} {
		if err := m.Bind(ctx, n); err == nil || !strings.Contains(err.Error(), "not covered") {
			t.Errorf("Bind(%s) in mode files: %v, want not covered", n, err)
		}
	}
	addr := serveHTTPS(t, m)
	roots := poolOf(t, userCA.rootPEM)
	for _, n := range []string{"tasks.apps.example.test", "apps.example.test"} {
		if _, _, err := httpsGet(ctx, addr, n, roots); err != nil {
			t.Fatalf("GET %s: %v", n, err)
		}
	}
	// Covered by the wildcard, but not bound: no certificate.
	if _, err := handshake(addr, "other.apps.example.test"); err == nil {
		t.Error("an unbound name covered by the file got a certificate")
	}

	// A renewed file is picked up without a restart.
	first, err := handshake(addr, "tasks.apps.example.test")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // a distinct mtime
	userCert(t, userCA, dir, "*.apps.example.test", "apps.example.test")
	deadline := time.Now().Add(10 * time.Second)
	for {
		chain, err := handshake(addr, "tasks.apps.example.test")
		if err != nil {
			t.Fatal(err)
		}
		if chain[0].SerialNumber.Cmp(first[0].SerialNumber) != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the replaced certificate file was not reloaded")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A broken replacement keeps the previous certificate in service.
	if err := os.WriteFile(certFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if _, _, err := httpsGet(ctx, addr, "tasks.apps.example.test", roots); err != nil {
		t.Fatalf("after a broken file: %v", err)
	}
}

func TestFilesBesideInternal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	userCA, err := loadOrCreateCA(t.TempDir(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := userCert(t, userCA, t.TempDir(), "*.apps.example.test")
	m := newManager(t, Options{DataDir: t.TempDir(), CertFile: certFile, KeyFile: keyFile})
	if err := m.Bind(ctx, "tasks.apps.example.test", "localhost"); err != nil {
		t.Fatal(err)
	}
	addr := serveHTTPS(t, m)
	if _, _, err := httpsGet(ctx, addr, "tasks.apps.example.test", poolOf(t, userCA.rootPEM)); err != nil {
		t.Fatalf("name covered by the file: %v", err)
	}
	if _, _, err := httpsGet(ctx, addr, "localhost", poolOf(t, m.RootPEM())); err != nil {
		t.Fatalf("localhost from the local CA: %v", err)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	userCA, err := loadOrCreateCA(t.TempDir(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certFile, _ := userCert(t, userCA, t.TempDir(), "a.example.test")
	_, otherKey := userCert(t, userCA, t.TempDir(), "a.example.test")
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"no data dir", Options{}, "no data directory"},
		{"unknown mode", Options{DataDir: t.TempDir(), Mode: "magic"}, "unknown mode"},
		{"files without files", Options{DataDir: t.TempDir(), Mode: ModeFiles}, "needs a certificate"},
		{"cert without key", Options{DataDir: t.TempDir(), CertFile: certFile}, "key file"},
		{"key of another cert", Options{DataDir: t.TempDir(), Mode: ModeFiles, CertFile: certFile, KeyFile: otherKey}, "private key does not match"},
		{"missing ACME root", Options{DataDir: t.TempDir(), Mode: ModeACME, ACME: ACMEOptions{CA: "https://127.0.0.1:1/dir", Email: "a@b.test", CARootFile: "/nonexistent"}}, "ACME CA root"},
		{"ACME without email", Options{DataDir: t.TempDir(), Mode: ModeACME}, "needs an email"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := New(tc.o)
			if err == nil {
				m.Close()
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want %q", err, tc.want)
			}
		})
	}
}
