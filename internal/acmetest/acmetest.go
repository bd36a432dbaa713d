// Package acmetest runs, for tests, a real ACME CA (Pebble, Let's Encrypt's
// test server, in-process) and the DNS server its validation authority
// resolves names with, both on loopback.
package acmetest

import (
	"crypto/x509"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"
)

// Loopback answers every name with 127.0.0.1.
func Loopback(string) net.IP { return net.IPv4(127, 0, 0, 1) }

// DNS serves, over UDP and TCP on a free loopback port, an A record
// addr(name) for every name (and no AAAA); it returns the address. The
// servers stop when the test ends.
func DNS(t testing.TB, addr func(name string) net.IP) string {
	t.Helper()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		for _, q := range r.Question {
			if q.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5},
					A:   addr(q.Name),
				})
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

// Pebble is a running Pebble.
type Pebble struct {
	// Dir is the ACME directory URL.
	Dir string
	// TLSRootFile is a PEM file of the root of the ACME server's own HTTPS.
	TLSRootFile string
	// Issued is the root of the certificates it issues.
	Issued *x509.Certificate
}

// IssuedPEM is Issued in PEM.
func (p *Pebble) IssuedPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.Issued.Raw})
}

// StartPebble runs Pebble with real validation: its VA resolves names with
// the DNS server at dnsAddr and connects to httpPort (HTTP-01) and tlsPort
// (TLS-ALPN-01) on the address it gets. Leaves live an hour. Its log goes
// nowhere unless logw is set. It stops when the test ends.
func StartPebble(t testing.TB, dnsAddr string, httpPort, tlsPort int, logw io.Writer) *Pebble {
	t.Helper()
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	if logw == nil {
		logw = io.Discard
	}
	logger := log.New(logw, "pebble ", log.LstdFlags)
	store := db.NewMemoryStore()
	cai := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {Description: "default", ValidityPeriod: 3600}})
	vai := va.New(logger, httpPort, tlsPort, false, dnsAddr, store)
	w := wfe.New(logger, store, vai, cai, []string{"pebble.letsencrypt.org"}, false, false, 1, 1)
	srv := httptest.NewTLSServer(w.Handler())
	t.Cleanup(srv.Close)
	rootFile := filepath.Join(t.TempDir(), "pebble-tls.pem")
	if err := os.WriteFile(rootFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return &Pebble{Dir: srv.URL + "/dir", TLSRootFile: rootFile, Issued: cai.GetRootCert(0).Cert}
}
