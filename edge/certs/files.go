package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"slices"
	"sync"

	"github.com/caddyserver/certmagic"
)

// fileCert is a certificate the user brings (Options.CertFile/KeyFile),
// kept in certmagic's cache as an unmanaged certificate (OCSP stapled, never
// renewed) and reloaded when either file changes.
type fileCert struct {
	certFile, keyFile string
	cfg               *certmagic.Config
	cache             *certmagic.Cache

	mu    sync.Mutex // guards leaf, hash, stamp (no I/O under it)
	leaf  *x509.Certificate
	hash  string
	stamp string
}

// stampOf identifies the files' current contents cheaply (size and mtime).
func stampOf(paths ...string) (string, error) {
	var s string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return "", err
		}
		s += fmt.Sprintf("%d.%d;", st.Size(), st.ModTime().UnixNano())
	}
	return s, nil
}

// load (re)loads the files if they changed since the last load. A bad pair
// leaves the previous certificate in service. It reports whether a new
// certificate was loaded.
func (f *fileCert) load(ctx context.Context) (bool, error) {
	stamp, err := stampOf(f.certFile, f.keyFile)
	if err != nil {
		return false, err
	}
	f.mu.Lock()
	same := stamp == f.stamp
	f.mu.Unlock()
	if same {
		return false, nil
	}
	certPEM, err := os.ReadFile(f.certFile)
	if err != nil {
		return false, err
	}
	keyPEM, err := os.ReadFile(f.keyFile)
	if err != nil {
		return false, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return false, fmt.Errorf("certs: %s and %s: %w", f.certFile, f.keyFile, err)
	}
	hash, err := f.cfg.CacheUnmanagedCertificatePEMBytes(ctx, certPEM, keyPEM, []string{fileTag})
	if err != nil {
		return false, fmt.Errorf("certs: %s: %w", f.certFile, err)
	}
	f.mu.Lock()
	old := f.hash
	f.leaf, f.hash, f.stamp = pair.Leaf, hash, stamp
	f.mu.Unlock()
	if old != "" && old != hash {
		f.cache.Remove([]string{old})
	}
	return true, nil
}

// covers reports whether the file certificate is valid for name (a host
// name, an IP address or a *.wildcard that the certificate lists).
func (f *fileCert) covers(name string) bool {
	if f == nil {
		return false
	}
	f.mu.Lock()
	leaf := f.leaf
	f.mu.Unlock()
	if leaf == nil {
		return false
	}
	if len(name) > 2 && name[:2] == "*." {
		return slices.Contains(leaf.DNSNames, name)
	}
	return leaf.VerifyHostname(name) == nil
}
