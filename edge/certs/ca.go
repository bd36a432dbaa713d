package certs

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
)

// Lifetimes of the local CA. The root is made once and kept; the
// intermediate is replaced when a third of its life is left (checked at
// every issuance), so a server that runs for months never signs with an
// expired one. Leaves default to DefaultLeafLifetime (Options).
const (
	rootLifetime         = 10 * 365 * 24 * time.Hour
	intermediateLifetime = 30 * 24 * time.Hour
	caDirName            = "ca"
	rootCertFile         = "root.crt"
	rootKeyFile          = "root.key"
	interCertFile        = "intermediate.crt"
	interKeyFile         = "intermediate.key"
)

// ErrNoCA is returned by ReadRootPEM when the data directory has no local CA
// yet.
var ErrNoCA = errors.New("no local CA")

// RootCertPath is where the local CA's root certificate lives in a data
// directory.
func RootCertPath(dataDir string) string {
	return filepath.Join(dataDir, tlsDirName, caDirName, rootCertFile)
}

// ReadRootPEM returns the PEM of the local CA's root in dataDir, without
// creating anything (for `berth ca export`). It wraps ErrNoCA when the CA
// has not been created yet.
func ReadRootPEM(dataDir string) ([]byte, error) {
	p := RootCertPath(dataDir)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w in %s (it is created when berth first serves HTTPS with --tls internal)", ErrNoCA, filepath.Dir(p))
	}
	if err != nil {
		return nil, err
	}
	if _, err := parseCertPEM(b); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return b, nil
}

// keyPair is a CA certificate and its key.
type keyPair struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// localCA is Berth's own certificate authority: a long-lived root and an
// intermediate, both stored in dir; leaves are signed by the intermediate.
// It is a certmagic.Issuer.
type localCA struct {
	dir          string
	root         keyPair
	rootPEM      []byte
	inter        atomic.Pointer[keyPair]
	leafLifetime time.Duration
	now          func() time.Time
	// allow, when set, says which names the CA may sign (the bound ones).
	allow func(name string) bool

	mu       sync.Mutex    // guards rotating (no I/O under it)
	rotating chan struct{} // closed when the running rotation ends
}

var _ certmagic.Issuer = (*localCA)(nil)

// loadOrCreateCA loads the CA from dir, creating the root and intermediate
// the first time (keys 0600, directory 0700).
func loadOrCreateCA(dir string, leafLifetime time.Duration) (*localCA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ca := &localCA{dir: dir, leafLifetime: leafLifetime, now: time.Now}
	root, err := loadKeyPair(dir, rootCertFile, rootKeyFile)
	if errors.Is(err, fs.ErrNotExist) {
		root, err = ca.createRoot()
	}
	if err != nil {
		return nil, fmt.Errorf("local CA root: %w", err)
	}
	ca.root = *root
	ca.rootPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.cert.Raw})
	// A missing, unreadable or foreign intermediate is simply replaced:
	// clients trust the root only.
	if inter, err := loadKeyPair(dir, interCertFile, interKeyFile); err == nil && inter.cert.CheckSignatureFrom(root.cert) == nil {
		ca.inter.Store(inter)
	}
	if _, err := ca.intermediate(); err != nil {
		return nil, err
	}
	return ca, nil
}

// createRoot makes a root and stores it unless another process stored one
// first (then that one is used: the root is created exactly once).
func (ca *localCA) createRoot() (*keyPair, error) {
	now := ca.now()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "Berth Local Authority - " + now.UTC().Format("2006") + " ECC Root", Organization: []string{"Berth"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(rootLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
	}
	kp, err := newCACert(tmpl, nil)
	if err != nil {
		return nil, err
	}
	if err := storeKeyPair(ca.dir, rootCertFile, rootKeyFile, kp, false); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return loadKeyPair(ca.dir, rootCertFile, rootKeyFile)
		}
		return nil, err
	}
	return kp, nil
}

// intermediate returns the current intermediate, replacing it first when
// it is missing or has less than a third of its life left. One rotation
// runs at a time (the others wait for it), so the stored key and
// certificate always belong together.
func (ca *localCA) intermediate() (*keyPair, error) {
	for {
		if cur := ca.inter.Load(); cur != nil && ca.now().Before(cur.cert.NotAfter.Add(-intermediateLifetime/3)) {
			return cur, nil
		}
		ca.mu.Lock()
		if ch := ca.rotating; ch != nil {
			ca.mu.Unlock()
			<-ch
			continue
		}
		ch := make(chan struct{})
		ca.rotating = ch
		ca.mu.Unlock()
		kp, err := ca.rotate()
		ca.mu.Lock()
		ca.rotating = nil
		ca.mu.Unlock()
		close(ch)
		return kp, err
	}
}

// rotate makes, stores and installs a new intermediate.
func (ca *localCA) rotate() (*keyPair, error) {
	now := ca.now()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "Berth Local Authority - ECC Intermediate", Organization: []string{"Berth"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              minTime(now.Add(intermediateLifetime), ca.root.cert.NotAfter),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	kp, err := newCACert(tmpl, &ca.root)
	if err != nil {
		return nil, err
	}
	if err := storeKeyPair(ca.dir, interCertFile, interKeyFile, kp, true); err != nil {
		return nil, fmt.Errorf("local CA intermediate: %w", err)
	}
	ca.inter.Store(kp)
	return kp, nil
}

// IssuerKey names the CA in certmagic's storage; it includes the root's
// fingerprint so that leaves of an earlier (deleted) root are never loaded.
func (ca *localCA) IssuerKey() string {
	sum := sha256.Sum256(ca.root.cert.Raw)
	return "berth-local-" + hex.EncodeToString(sum[:8])
}

// Issue signs a leaf for the CSR's names (DNS names and IP addresses only),
// valid for the leaf lifetime but never beyond the intermediate.
func (ca *localCA) Issue(_ context.Context, csr *x509.CertificateRequest) (*certmagic.IssuedCertificate, error) {
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("local CA: bad CSR: %w", err)
	}
	if len(csr.DNSNames)+len(csr.IPAddresses) == 0 {
		return nil, errors.New("local CA: CSR has no names")
	}
	if ca.allow != nil {
		for _, n := range csrNames(csr) {
			if !ca.allow(n) {
				return nil, fmt.Errorf("local CA: %q is not bound", n)
			}
		}
	}
	inter, err := ca.intermediate()
	if err != nil {
		return nil, err
	}
	now := ca.now()
	serial, err := randSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: firstName(csr)},
		DNSNames:     csr.DNSNames,
		IPAddresses:  csr.IPAddresses,
		NotBefore:    now.Add(-backdate(ca.leafLifetime)),
		NotAfter:     minTime(now.Add(ca.leafLifetime), inter.cert.NotAfter),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if _, ok := csr.PublicKey.(*ecdsa.PublicKey); !ok {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment // RSA key exchange
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, inter.cert, csr.PublicKey, inter.key)
	if err != nil {
		return nil, fmt.Errorf("local CA: sign leaf: %w", err)
	}
	var chain bytes.Buffer
	_ = pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	_ = pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: inter.cert.Raw})
	return &certmagic.IssuedCertificate{Certificate: chain.Bytes()}, nil
}

// backdate is how far before now a leaf starts (clock skew between hosts):
// a minute, less for very short test lifetimes.
func backdate(lifetime time.Duration) time.Duration {
	return min(time.Minute, lifetime/10)
}

func csrNames(csr *x509.CertificateRequest) []string {
	names := slices.Clone(csr.DNSNames)
	for _, ip := range csr.IPAddresses {
		names = append(names, ip.String())
	}
	return names
}

func firstName(csr *x509.CertificateRequest) string {
	if len(csr.DNSNames) > 0 {
		return csr.DNSNames[0]
	}
	return csr.IPAddresses[0].String()
}

func newCACert(tmpl *x509.Certificate, parent *keyPair) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	if tmpl.SerialNumber, err = randSerial(); err != nil {
		return nil, err
	}
	signerCert, signerKey := tmpl, crypto.Signer(key)
	if parent != nil {
		signerCert, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, key.Public(), signerKey)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &keyPair{cert: cert, key: key}, nil
}

func randSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func loadKeyPair(dir, certFile, keyFile string) (*keyPair, error) {
	cb, err := os.ReadFile(filepath.Join(dir, certFile))
	if err != nil {
		return nil, err
	}
	kb, err := os.ReadFile(filepath.Join(dir, keyFile))
	if err != nil {
		return nil, err
	}
	cert, err := parseCertPEM(cb)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certFile, err)
	}
	block, _ := pem.Decode(kb)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM block", keyFile)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok || !publicKeysEqual(signer.Public(), cert.PublicKey) {
		return nil, fmt.Errorf("%s does not match %s", keyFile, certFile)
	}
	return &keyPair{cert: cert, key: signer}, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

func parseCertPEM(b []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

// storeKeyPair writes the key (0600) and then the certificate. With replace
// false it fails with fs.ErrExist if the certificate exists already; the
// certificate is linked into place last, so a reader never sees a
// certificate without its key.
func storeKeyPair(dir, certFile, keyFile string, kp *keyPair, replace bool) error {
	kder, err := x509.MarshalPKCS8PrivateKey(kp.key)
	if err != nil {
		return err
	}
	certPath := filepath.Join(dir, certFile)
	if !replace {
		if _, err := os.Stat(certPath); err == nil {
			return fs.ErrExist
		}
	}
	if err := writeFileAtomic(filepath.Join(dir, keyFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600, true); err != nil {
		return err
	}
	return writeFileAtomic(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: kp.cert.Raw}), 0o644, replace)
}

// writeFileAtomic writes data to a temporary file and renames it into place
// (or, with replace false, links it, failing with fs.ErrExist).
func writeFileAtomic(path string, data []byte, perm os.FileMode, replace bool) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if replace {
		return os.Rename(tmp, path)
	}
	return os.Link(tmp, path)
}
