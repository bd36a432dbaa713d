package egress_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// The fake internet: a network namespace of the test's own, routed from the
// host through a veth pair, with an HTTPS (443), HTTP (80) and raw TCP
// (8443) server at upstreamIP, run by this test binary re-executed inside.
const (
	upstreamIP = "198.18.1.2" // a benchmarking range, not one Berth forbids
	hostSideIP = "198.18.1.1" // the host's own address on that veth
	upNS       = "berth-egt-up"
	upIf       = "begtup"
)

func TestMain(m *testing.M) {
	if os.Getenv("BERTH_EGRESS_UPSTREAM") != "" {
		serveUpstream()
		return
	}
	os.Exit(m.Run())
}

// serveUpstream runs inside the namespace: every request it gets is
// reported on stdout as "SEEN host authorization", and answered with
// UPSTREAM-OK (never echoing headers back to the sandbox).
func serveUpstream() {
	var mu sync.Mutex
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		fmt.Printf("SEEN %s %q\n", r.Host, r.Header.Get("Authorization"))
		mu.Unlock()
		fmt.Fprintf(w, "UPSTREAM-OK host=%s tls=%v\n", r.Host, r.TLS != nil)
	})
	cert, err := tls.LoadX509KeyPair(os.Getenv("UP_CERT"), os.Getenv("UP_KEY"))
	if err != nil {
		panic(err)
	}
	tl, err := tls.Listen("tcp", upstreamIP+":443", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		panic(err)
	}
	go func() { _ = http.Serve(tl, h) }()
	pl, err := net.Listen("tcp", upstreamIP+":80")
	if err != nil {
		panic(err)
	}
	go func() { _ = http.Serve(pl, h) }()
	raw, err := net.Listen("tcp", upstreamIP+":8443")
	if err != nil {
		panic(err)
	}
	go func() {
		for {
			c, err := raw.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("RAW-UPSTREAM\n"))
			c.Close()
		}
	}()
	fmt.Println("READY")
	select {}
}

// upstream is the running fake internet.
type upstream struct {
	caPEM []byte
	roots *x509.CertPool
	mu    sync.Mutex
	seen  []string
}

func (u *upstream) Seen() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return strings.Join(u.seen, "\n")
}

func sh(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func startUpstream(t testing.TB) *upstream {
	t.Helper()
	caPEM, certPEM, keyPEM := testCA(t, "up.test", "inject.test", "notallowed.test", "trick.test", "hosttrick.test")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "up.crt"), filepath.Join(dir, "up.key")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	_ = exec.Command("ip", "netns", "del", upNS).Run()
	_ = exec.Command("ip", "link", "del", upIf).Run()
	sh(t, "ip", "netns", "add", upNS)
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", upIf).Run()
		_ = exec.Command("ip", "netns", "del", upNS).Run()
	})
	sh(t, "ip", "link", "add", upIf, "type", "veth", "peer", "name", upIf+"p")
	sh(t, "ip", "link", "set", upIf+"p", "netns", upNS)
	sh(t, "ip", "addr", "add", hostSideIP+"/30", "dev", upIf)
	sh(t, "ip", "link", "set", upIf, "up")
	sh(t, "ip", "-n", upNS, "addr", "add", upstreamIP+"/30", "dev", upIf+"p")
	sh(t, "ip", "-n", upNS, "link", "set", upIf+"p", "up")
	sh(t, "ip", "-n", upNS, "link", "set", "lo", "up")
	sh(t, "ip", "-n", upNS, "route", "add", "default", "via", hostSideIP)

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", upNS, exe)
	cmd.Env = append(os.Environ(), "BERTH_EGRESS_UPSTREAM=1", "UP_CERT="+certFile, "UP_KEY="+keyFile)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	u := &upstream{caPEM: caPEM, roots: x509.NewCertPool()}
	u.roots.AppendCertsFromPEM(caPEM)
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "READY" {
				close(ready)
				continue
			}
			u.mu.Lock()
			u.seen = append(u.seen, sc.Text())
			u.mu.Unlock()
		}
	}()
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		t.Fatal("upstream did not start")
	}
	return u
}

// testDNS answers on loopback as a resolver that the proxy is pointed at:
// allowed names to the upstream, and two allowed names to forbidden
// addresses (the DNS trick).
func testDNS(t testing.TB) string {
	t.Helper()
	answers := map[string]string{
		"up.test.":         upstreamIP,
		"inject.test.":     upstreamIP,
		"notallowed.test.": upstreamIP,
		"trick.test.":      "127.0.0.1",
		"hosttrick.test.":  hostSideIP,
		"meta.test.":       "169.254.169.254",
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		for _, qq := range q.Question {
			if a, ok := answers[strings.ToLower(qq.Name)]; ok && qq.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1}, A: net.ParseIP(a)})
			} else if !ok {
				m.Rcode = dns.RcodeNameError
			}
		}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}

func resolverAt(addr string) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr)
	}}
}

// testCA returns a CA and a server certificate it signed for names.
func testCA(t testing.TB, names ...string) (caPEM, certPEM, keyPEM []byte) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "egress test upstream CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caT, caT, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	lt := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		IPAddresses: []net.IP{net.ParseIP(upstreamIP)},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, lt, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
}
