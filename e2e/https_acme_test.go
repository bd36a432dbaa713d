package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/controlplane"
	"github.com/berth-dev/berth/internal/acmetest"
)

// TestHTTPSACME runs `berth up --tls acme` against Pebble (Let's Encrypt's
// test CA) in-process: a custom domain added with `app hostname add` gets a
// Pebble-issued certificate, after Pebble's VA validated HTTP-01 against
// Berth's plain listener (Pebble is told its port) or TLS-ALPN-01 against
// its HTTPS listener; the certificate is served by SNI beside the app's
// local-CA name, and requests with that host reach the app.
func TestHTTPSACME(t *testing.T) {
	dir := everythingServer(t)
	plainPort, httpsPort := freePort(t), freePort(t)
	pebble := acmetest.StartPebble(t, acmetest.DNS(t, acmetest.Loopback), plainPort, httpsPort, nil)
	issued := x509.NewCertPool()
	issued.AddCert(pebble.Issued)

	b := startBerth(t, "", "--listen", "127.0.0.1:"+strconv.Itoa(plainPort), "--https-listen", "127.0.0.1:"+strconv.Itoa(httpsPort),
		"--tls", "acme", "--acme-email", "ops@berth.test", "--acme-ca", pebble.Dir, "--acme-ca-root", pebble.TLSRootFile)
	f := newHTTPSFront(t, b) // the local CA still signs localhost names
	b.cli("app", "deploy", "alpha", "--dir", dir, "--command", "./everything-server", "--transport", "stdio", "--min", "1")
	b.waitReplicas("alpha", 1)

	t0 := time.Now()
	var hv controlplane.HostnameView
	b.cliJSON(&hv, "app", "hostname", "add", "alpha", "mcp.customer.example")
	t.Logf("app hostname add with an ACME order took %v; certificate: %s", time.Since(t0), hv.Certificate)
	if !strings.Contains(hv.Certificate, "Pebble") {
		t.Fatalf("hostname add: certificate %q, want one issued by Pebble", hv.Certificate)
	}
	c, err := tls.Dial("tcp", f.addr, &tls.Config{ServerName: "mcp.customer.example", RootCAs: issued})
	if err != nil {
		t.Fatalf("handshake for the custom domain, trusting Pebble's root: %v", err)
	}
	leaf := c.ConnectionState().PeerCertificates[0]
	c.Close()
	if !slices.Equal(leaf.DNSNames, []string{"mcp.customer.example"}) || !strings.HasPrefix(leaf.Issuer.CommonName, "Pebble Intermediate") {
		t.Fatalf("custom domain's leaf: %v from %q", leaf.DNSNames, leaf.Issuer.CommonName)
	}
	// Beside it, the app's own name from the local CA.
	if l, err := f.handshake("alpha.localhost"); err != nil || strings.Contains(l.Issuer.CommonName, "Pebble") {
		t.Fatalf("alpha.localhost: %v", err)
	}
	// (Pebble validated against Berth's own ports: nothing else listens
	// there, so the issuance itself shows the challenges were answered.)
	// A request with that host reaches the app over a Pebble-trusted HTTPS.
	f.roots = issued
	text, cs := callTool(t, f.client(nil), f.hostURL("mcp.customer.example", "/mcp"), "test_simple_text")
	cs.Close()
	if !strings.Contains(text, "simple text") {
		t.Fatalf("tool call at the custom domain: %q", text)
	}
	if _, err := f.handshake("other.customer.example"); err == nil {
		t.Fatal("an unbound name got a certificate")
	}
}
