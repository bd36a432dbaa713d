package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHTTPSFiles serves a certificate the user brings (--tls-cert,
// --tls-key): a wildcard for the app domain signed by the test's own CA.
// An app's host gets that certificate; a name the wildcard covers but no
// app has still gets none; no local CA is created.
func TestHTTPSFiles(t *testing.T) {
	dir := everythingServer(t)
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test Root"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "*.apps.test"},
		DNSNames: []string{"*.apps.test"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	tmp := t.TempDir()
	certFile, keyFile := filepath.Join(tmp, "wild.crt"), filepath.Join(tmp, "wild.key")
	_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}), 0o644)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)

	b := startBerth(t, "", "--https-listen", "127.0.0.1:0", "--app-domain", "apps.test", "--tls-cert", certFile, "--tls-key", keyFile)
	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	f := &httpsFront{b: b, roots: roots}
	f.addr = strings.TrimPrefix(b.info.PublicURL, "https://")
	_, f.port, _ = net.SplitHostPort(f.addr)

	b.cli("app", "deploy", "alpha", "--dir", dir, "--command", "./everything-server", "--transport", "stdio", "--min", "1")
	b.waitReplicas("alpha", 1)
	text, cs := callTool(t, f.client(nil), f.hostURL("alpha.apps.test", "/mcp"), "test_simple_text")
	cs.Close()
	if !strings.Contains(text, "simple text") {
		t.Fatalf("alpha.apps.test: %q", text)
	}
	c, err := tls.Dial("tcp", f.addr, &tls.Config{ServerName: "alpha.apps.test", RootCAs: roots})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.ConnectionState().PeerCertificates[0].Subject.CommonName; got != "*.apps.test" {
		t.Fatalf("served %q, want the user's wildcard", got)
	}
	c.Close()
	// By path on 127.0.0.1 (the public URL's host, which the file covers).
	text, cs = callTool(t, f.client(nil), b.info.PublicURL+"/apps/alpha/mcp", "test_simple_text")
	cs.Close()
	if !strings.Contains(text, "simple text") {
		t.Fatalf("by path: %q", text)
	}
	if _, err := f.handshake("ghost.apps.test"); err == nil {
		t.Fatal("a name the wildcard covers but no app has got a certificate")
	}
	if _, _, code := b.try("ca", "export", "--data-dir", b.dataDir); code == 0 {
		t.Fatal("berth ca export found a local CA in files mode")
	}
}
