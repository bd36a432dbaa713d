package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestInternalServesBoundNames(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	m := newManager(t, Options{DataDir: dir})
	t0 := time.Now()
	if err := m.Bind(ctx, "localhost"); err != nil {
		t.Fatal(err)
	}
	t.Logf("internal leaf for localhost issued in %v", time.Since(t0))
	t0 = time.Now()
	if err := m.Bind(ctx, "127.0.0.1", "tasks.LOCALHOST.", "shop.example.test"); err != nil {
		t.Fatal(err)
	}
	t.Logf("3 more internal leaves issued in %v", time.Since(t0))
	if got, want := strings.Join(m.Bound(), ","), "127.0.0.1,localhost,shop.example.test,tasks.localhost"; got != want {
		t.Fatalf("Bound() = %s, want %s", got, want)
	}
	addr := serveHTTPS(t, m)
	roots := poolOf(t, m.RootPEM())
	exported, err := ReadRootPEM(dir)
	if err != nil || string(exported) != string(m.RootPEM()) {
		t.Fatalf("ReadRootPEM = %v, differs from RootPEM: %v", err, string(exported) != string(m.RootPEM()))
	}

	for _, name := range []string{"localhost", "tasks.localhost", "shop.example.test", "127.0.0.1"} {
		t.Run(name, func(t *testing.T) {
			// A real HTTPS GET from a client that trusts only the exported root
			// (for 127.0.0.1 the client sends no SNI: the local address picks the leaf).
			body, st, err := httpsGet(ctx, addr, name, poolOf(t, exported))
			if err != nil {
				t.Fatalf("GET: %v", err)
			}
			if st.NegotiatedProtocol != "h2" || !strings.Contains(body, "proto=HTTP/2.0") {
				t.Errorf("not h2: %q %q", st.NegotiatedProtocol, body)
			}
			leaf := st.PeerCertificates[0]
			if err := verifyChain(st.PeerCertificates, roots, name); err != nil {
				t.Fatalf("x509 verify with the root: %v", err)
			}
			if len(st.PeerCertificates) != 2 || st.PeerCertificates[1].IsCA != true {
				t.Errorf("chain: want leaf + intermediate, got %d certs", len(st.PeerCertificates))
			}
			if life := leaf.NotAfter.Sub(leaf.NotBefore); life > DefaultLeafLifetime+2*time.Minute {
				t.Errorf("leaf lifetime %v, want about %v", life, DefaultLeafLifetime)
			}
			if len(leaf.DNSNames)+len(leaf.IPAddresses) != 1 {
				t.Errorf("leaf names %v %v: want exactly the one name", leaf.DNSNames, leaf.IPAddresses)
			}
		})
	}

	// An unbound name gets no certificate: the handshake fails.
	for _, sni := range []string{"evil.example", "other.localhost", "localhost.evil.example"} {
		if _, err := handshake(addr, sni); err == nil {
			t.Errorf("handshake for unbound %s succeeded", sni)
		}
	}
	// ... and neither does a name once unbound, although its leaf is cached.
	m.Unbind("shop.example.test")
	if _, err := handshake(addr, "shop.example.test"); err == nil {
		t.Error("handshake for an unbound name succeeded")
	}
	if _, err := handshake(addr, "localhost"); err != nil {
		t.Errorf("localhost after unbinding another name: %v", err)
	}
}

func TestInternalWildcardBind(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m := newManager(t, Options{DataDir: t.TempDir()})
	if err := m.Bind(ctx, "*.apps.localhost"); err != nil {
		t.Fatal(err)
	}
	addr := serveHTTPS(t, m)
	roots := poolOf(t, m.RootPEM())
	if _, _, err := httpsGet(ctx, addr, "tasks.apps.localhost", roots); err != nil {
		t.Fatalf("name under a bound wildcard: %v", err)
	}
	for _, sni := range []string{"apps.localhost", "a.b.apps.localhost"} {
		if _, err := handshake(addr, sni); err == nil {
			t.Errorf("%s is not under *.apps.localhost but got a certificate", sni)
		}
	}
}

func TestBindRejectsBadNames(t *testing.T) {
	m := newManager(t, Options{DataDir: t.TempDir()})
	for _, n := range []string{"", "a b", "-", "bad/name", "fe80::1%eth0", "*.*.x", "x.*.y", ".", "..x"} {
		if err := m.BindAsync(n); err == nil {
			t.Errorf("BindAsync(%q) accepted", n)
		}
	}
	if len(m.Bound()) != 0 {
		t.Errorf("bad names were bound: %v", m.Bound())
	}
}

func TestInternalRootCreatedOnce(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadRootPEM(dir); !errors.Is(err, ErrNoCA) {
		t.Fatalf("ReadRootPEM before any CA: %v, want ErrNoCA", err)
	}
	m1 := newManager(t, Options{DataDir: dir})
	root1 := m1.RootPEM()
	ctx := context.Background()
	if err := m1.Bind(ctx, "localhost"); err != nil {
		t.Fatal(err)
	}
	m1.Close()
	for _, f := range []string{rootKeyFile, interKeyFile} {
		st, err := os.Stat(filepath.Join(dir, "tls", "ca", f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", f, err, st.Mode().Perm())
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "tls", "ca")); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("ca dir mode: %v %v", err, st.Mode().Perm())
	}

	// A restart keeps the root and serves a leaf it verifies.
	m2 := newManager(t, Options{DataDir: dir})
	if string(m2.RootPEM()) != string(root1) {
		t.Fatal("the root changed across a restart")
	}
	if err := m2.Bind(ctx, "localhost"); err != nil {
		t.Fatal(err)
	}
	addr := serveHTTPS(t, m2)
	if _, _, err := httpsGet(ctx, addr, "localhost", poolOf(t, root1)); err != nil {
		t.Fatalf("GET after restart, trusting the first root: %v", err)
	}
}

func TestInternalIntermediateRotates(t *testing.T) {
	dir := t.TempDir()
	ca, err := loadOrCreateCA(filepath.Join(dir, "ca"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	first := ca.inter.Load().cert
	// Twenty-five days later, less than a third of its life is left.
	ca.now = func() time.Time { return time.Now().Add(25 * 24 * time.Hour) }
	second, err := ca.intermediate()
	if err != nil {
		t.Fatal(err)
	}
	if second.cert.Equal(first) {
		t.Fatal("the intermediate was not replaced")
	}
	if err := second.cert.CheckSignatureFrom(ca.root.cert); err != nil {
		t.Fatal(err)
	}
	// Rotations racing each other leave a matching key and certificate.
	ca.now = func() time.Time { return time.Now().Add(50 * 24 * time.Hour) }
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := ca.intermediate(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	second = ca.inter.Load()
	// The replacement is stored: a reload uses it.
	again, err := loadOrCreateCA(filepath.Join(dir, "ca"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !again.inter.Load().cert.Equal(second.cert) {
		t.Fatal("the replaced intermediate was not stored")
	}
	// A damaged intermediate is replaced; the root stays.
	if err := os.WriteFile(filepath.Join(dir, "ca", interKeyFile), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	third, err := loadOrCreateCA(filepath.Join(dir, "ca"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if third.inter.Load().cert.Equal(second.cert) || !third.root.cert.Equal(ca.root.cert) {
		t.Fatal("damaged intermediate not replaced, or root changed")
	}
}

func TestLocalCASignsOnlyBoundNames(t *testing.T) {
	m := newManager(t, Options{DataDir: t.TempDir()})
	if err := m.BindAsync("localhost"); err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, tc := range []struct {
		names []string
		ok    bool
	}{{[]string{"localhost"}, true}, {[]string{"localhost", "evil.example"}, false}, {[]string{"evil.example"}, false}} {
		der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: tc.names}, key)
		csr, _ := x509.ParseCertificateRequest(der)
		_, err := m.ca.Issue(context.Background(), csr)
		if (err == nil) != tc.ok {
			t.Errorf("Issue(%v): %v", tc.names, err)
		}
	}
}

func TestInternalRenewsShortLivedLeaf(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m := newManager(t, Options{DataDir: t.TempDir(), LeafLifetime: 6 * time.Second, RenewCheckInterval: 250 * time.Millisecond})
	if err := m.Bind(ctx, "localhost", "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	addr := serveHTTPS(t, m)
	roots := poolOf(t, m.RootPEM())
	first, err := handshake(addr, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		chain, err := handshake(addr, "localhost")
		if err != nil {
			t.Fatal(err)
		}
		if chain[0].SerialNumber.Cmp(first[0].SerialNumber) != 0 {
			if !chain[0].NotAfter.After(first[0].NotAfter) {
				t.Fatalf("renewed leaf expires %v, not after %v", chain[0].NotAfter, first[0].NotAfter)
			}
			if err := verifyChain(chain, roots, "localhost"); err != nil {
				t.Fatal(err)
			}
			t.Logf("renewed %v after the first leaf's NotBefore (lifetime 6s)", time.Since(first[0].NotBefore).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("leaf not renewed: still serial %v at %v (expires %v)", first[0].SerialNumber, time.Now(), first[0].NotAfter)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The IP leaf was renewed too and still verifies.
	chain, err := handshake(addr, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyChain(chain, roots, "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if ips := chain[0].IPAddresses; len(ips) != 1 || !ips[0].Equal(net.ParseIP("127.0.0.1")) {
		t.Errorf("no-SNI handshake got %v", ips)
	}
}

// BenchmarkInternalLeaf is Bind of a new name in internal mode: key
// generation, the CSR, the local CA's signature, storage and caching.
func BenchmarkInternalLeaf(b *testing.B) {
	m, err := New(Options{DataDir: b.TempDir(), Logger: testLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	i := 0
	for b.Loop() {
		i++
		if err := m.Bind(ctx, fmt.Sprintf("app-%d.localhost", i)); err != nil {
			b.Fatal(err)
		}
	}
}

// TestKeyFileModes: every private key under DATADIR/tls (the local CA's
// and the leaves' in certmagic's storage) is readable by its owner only,
// and so is every directory.
func TestKeyFileModes(t *testing.T) {
	dir := t.TempDir()
	m := newManager(t, Options{DataDir: dir})
	if err := m.Bind(context.Background(), "localhost", "127.0.0.1", "mcp.example.com"); err != nil {
		t.Fatal(err)
	}
	keys := 0
	err := filepath.WalkDir(filepath.Join(dir, "tls"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		st, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir() && st.Mode().Perm() != 0o700:
			t.Errorf("%s: mode %v, want 0700", p, st.Mode().Perm())
		case strings.HasSuffix(p, ".key"):
			keys++
			if st.Mode().Perm() != 0o600 {
				t.Errorf("%s: mode %v, want 0600", p, st.Mode().Perm())
			}
		}
		return nil
	})
	if err != nil || keys < 5 { // root, intermediate, three leaves
		t.Fatalf("walk: %v; %d keys", err, keys)
	}
}
