package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"

	"github.com/berth-dev/berth/controlplane"
)

// loopbackDNS answers every A query with 127.0.0.1 (over UDP and TCP), so
// that Pebble's validation authority finds Berth for any name.
func loopbackDNS(t *testing.T) string {
	t.Helper()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		for _, q := range r.Question {
			if q.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: net.IPv4(127, 0, 0, 1)})
			}
		}
		_ = w.WriteMsg(m)
	})
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	udp, err := net.ListenPacket("udp", tcp.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*dns.Server{{Listener: tcp, Handler: h}, {PacketConn: udp, Handler: h}} {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		go func() { _ = s.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { _ = s.Shutdown() })
	}
	return tcp.Addr().String()
}

// TestHTTPSACME runs `berth up --tls acme` against Pebble (Let's Encrypt's
// test CA) in-process: a custom domain added with `app hostname add` gets a
// Pebble-issued certificate, after Pebble's VA validated HTTP-01 against
// Berth's plain listener (Pebble is told its port) or TLS-ALPN-01 against
// its HTTPS listener; the certificate is served by SNI beside the app's
// local-CA name, and requests with that host reach the app.
func TestHTTPSACME(t *testing.T) {
	dir := everythingServer(t)
	plainPort, httpsPort := freePort(t), freePort(t)
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	store := db.NewMemoryStore()
	quiet := log.New(io.Discard, "", 0)
	cai := ca.New(quiet, store, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {Description: "default", ValidityPeriod: 3600}})
	vai := va.New(quiet, plainPort, httpsPort, false, loopbackDNS(t), store)
	w := wfe.New(quiet, store, vai, cai, []string{"pebble.letsencrypt.org"}, false, false, 1, 1)
	pebble := httptest.NewTLSServer(w.Handler())
	defer pebble.Close()
	pebbleRoot := filepath.Join(t.TempDir(), "pebble-tls.pem")
	if err := os.WriteFile(pebbleRoot, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: pebble.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	issued := x509.NewCertPool()
	issued.AddCert(cai.GetRootCert(0).Cert)

	b := startBerth(t, "", "--listen", "127.0.0.1:"+strconv.Itoa(plainPort), "--https-listen", "127.0.0.1:"+strconv.Itoa(httpsPort),
		"--tls", "acme", "--acme-email", "ops@berth.test", "--acme-ca", pebble.URL+"/dir", "--acme-ca-root", pebbleRoot)
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
