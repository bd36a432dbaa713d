// Package certs provides the certificates for Berth's HTTPS front door.
//
// A Manager owns a certmagic cache and serves, through TLSConfig, a
// certificate for every name that Berth has bound and for nothing else: a
// handshake for an unbound name fails before certmagic looks for a
// certificate, so nobody can make Berth ask a CA for names it does not serve
// (the ACME-abuse hole of unrestricted on-demand TLS), and the local CA
// refuses to sign an unbound name as well.
//
// Names are managed when they are bound: Bind obtains the certificates and
// returns the CA's error if there is one (for `berth app hostname add`),
// BindAsync obtains them in the background and retries (for names bound at
// start-up, or whose DNS is not ready yet). certmagic renews them in the
// background (and staples OCSP where the CA offers it). certmagic's
// on-demand issuance is off: a handshake never starts an order. One that
// arrives while a bound name's first certificate is being obtained waits for
// it (at most Options.HandshakeWait). Issuing at bind time keeps slow ACME
// orders, their retries and their failures out of the clients' handshakes,
// and leaves one path that obtains certificates.
//
// The front door uses a Manager like this:
//
//	m, err := certs.New(certs.Options{DataDir: dir, Mode: certs.ModeACME, ACME: …})
//	defer m.Close()
//	m.BindAsync("localhost", "127.0.0.1", "tasks.apps.example.com")
//	https := tls.NewListener(ln, m.TLSConfig())          // h2, http/1.1, acme-tls/1
//	plain := m.HTTPChallengeHandler(redirectToHTTPS)      // ACME HTTP-01
//	m.Bind(ctx, "mcp.customer.example")                   // a custom domain
//	m.Unbind("mcp.customer.example")
//
// A handshake without SNI (https://127.0.0.1) is served the certificate of
// the local address it arrived on, if that address is bound.
//
// Certificates come from one of three sources (Options.Mode):
//
//   - internal (the default): Berth's own local CA, as Caddy's. A root
//     (10 years) and an intermediate (30 days, replaced when a third of its
//     life is left) are created once in DATADIR/tls/ca (keys 0600); leaves
//     live 12 hours by default and certmagic renews them when a third of
//     that is left. Short leaves make revocation unnecessary; the root is
//     what clients trust (RootPEM, ReadRootPEM, `berth ca export|trust`).
//     IP addresses (127.0.0.1) get certificates too.
//   - acme: publicly trusted certificates from an ACME CA (Let's Encrypt by
//     default) over HTTP-01 (wrap the plain listener's handler with
//     HTTPChallengeHandler) and TLS-ALPN-01 (served by TLSConfig on the
//     HTTPS listener). Names no public CA can sign (localhost, *.localhost,
//     loopback and private addresses, .internal, .local) still get leaves
//     from the local CA.
//   - files: only the certificate the user brings (Options.CertFile and
//     KeyFile, e.g. a wildcard for the app domain); binding a name it does
//     not cover is an error. The files are reloaded when they change.
//
// CertFile and KeyFile may also be given in the other modes: names the
// file's certificate covers are served from it, the rest are issued.
//
// Everything lives under DATADIR/tls: ca/ (the local CA) and certmagic/
// (certmagic's FileStorage: leaves, keys, ACME account, locks).
package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
)

// Mode is where certificates come from.
type Mode string

// The modes (see the package documentation).
const (
	ModeInternal Mode = "internal"
	ModeACME     Mode = "acme"
	ModeFiles    Mode = "files"
)

const (
	// DefaultLeafLifetime is how long a local CA leaf is valid (Caddy's
	// choice too); certmagic renews it when a third of it is left.
	DefaultLeafLifetime = 12 * time.Hour
	// DefaultFileCheckInterval is how often CertFile and KeyFile are
	// checked for changes.
	DefaultFileCheckInterval = time.Minute
	// DefaultHandshakeWait is how long a handshake waits for a certificate
	// being obtained.
	DefaultHandshakeWait = 30 * time.Second

	tlsDirName = "tls"
	fileTag    = "berth-file"
)

// ErrNotBound is the handshake error for a name that is not bound.
var ErrNotBound = errors.New("certs: name not bound")

// ACMEOptions configures mode acme.
type ACMEOptions struct {
	// Email is the ACME account's contact (required: without one, certmagic
	// would prompt on the terminal).
	Email string
	// CA is the ACME directory URL (default: Let's Encrypt production).
	CA string
	// CARootFile is a PEM file of roots to trust for the ACME server's own
	// HTTPS (a private or test CA such as Pebble); default: system roots.
	CARootFile string
	// HTTPPort and TLSALPNPort are the local ports on which the CA's
	// validation requests (sent to public ports 80 and 443) arrive: those
	// of the plain and HTTPS listeners (default 80 and 443). When the front
	// door already listens there (the usual case), the challenges are
	// answered by HTTPChallengeHandler and TLSConfig; otherwise certmagic
	// briefly listens on them itself.
	HTTPPort, TLSALPNPort int
	// ListenHost is the interface certmagic's own challenge listeners use
	// (default: all).
	ListenHost string
	// DisableHTTPChallenge and DisableTLSALPNChallenge turn one challenge
	// type off (both are on by default).
	DisableHTTPChallenge, DisableTLSALPNChallenge bool
}

// Options configure a Manager. The zero value (with DataDir) is internal
// mode with the defaults.
type Options struct {
	// DataDir is Berth's data directory (required); state goes to DataDir/tls.
	DataDir string
	// Mode is internal (default), acme or files.
	Mode Mode
	// LeafLifetime is the local CA's leaf lifetime (default DefaultLeafLifetime).
	LeafLifetime time.Duration
	// ACME configures mode acme.
	ACME ACMEOptions
	// CertFile and KeyFile are a PEM certificate chain and key the user
	// brings: required in mode files, optional otherwise.
	CertFile, KeyFile string
	// FileCheckInterval is how often the files are checked for changes
	// (default DefaultFileCheckInterval; negative: never).
	FileCheckInterval time.Duration
	// RenewCheckInterval is how often certmagic looks for certificates to
	// renew (default certmagic's, 10 minutes). It must stay well below a
	// third of the leaf lifetime.
	RenewCheckInterval time.Duration
	// HandshakeWait is how long a handshake waits for a bound name's first
	// certificate while it is being obtained (default DefaultHandshakeWait).
	HandshakeWait time.Duration
	// Logger receives certmagic's log (obtain, renew, errors); default slog.Default().
	Logger *slog.Logger

	retryBase time.Duration // BindAsync's first retry delay (tests shorten it)
}

// Manager serves certificates for the bound names. Its methods are safe for
// concurrent use.
type Manager struct {
	opts   Options
	log    *slog.Logger
	cache  *certmagic.Cache
	local  *certmagic.Config // local CA; nil in mode files
	public *certmagic.Config // ACME; nil unless mode acme
	base   *certmagic.Config // the user's file (and lookup only, in mode files)
	acme   *certmagic.ACMEIssuer
	ca     *localCA
	files  *fileCert
	bound  nameSet

	pmu     sync.Mutex               // guards pending (no I/O under it)
	pending map[string]chan struct{} // names whose first certificate is on its way

	ctx    context.Context // background issuance and the file watcher
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// New builds a Manager: it creates or loads the local CA (modes internal
// and acme), and loads CertFile/KeyFile. No name is bound yet.
func New(opts Options) (*Manager, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	m := &Manager{opts: opts, log: opts.Logger}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	zl := zapToSlog(opts.Logger)
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   m.configForCert,
		RenewCheckInterval: opts.RenewCheckInterval,
		Logger:             zl,
	})
	tlsDir := filepath.Join(opts.DataDir, tlsDirName)
	tmpl := certmagic.Config{
		Storage: &certmagic.FileStorage{Path: filepath.Join(tlsDir, "certmagic")},
		Logger:  zl,
	}
	if err := m.configure(tmpl, filepath.Join(tlsDir, caDirName)); err != nil {
		m.Close()
		return nil, err
	}
	if opts.CertFile != "" {
		m.files = &fileCert{certFile: opts.CertFile, keyFile: opts.KeyFile, cfg: m.base, cache: m.cache}
		if _, err := m.files.load(m.ctx); err != nil {
			m.Close()
			return nil, err
		}
		if opts.FileCheckInterval > 0 {
			m.wg.Add(1)
			go m.watchFiles()
		}
	}
	return m, nil
}

func (o *Options) defaults() error {
	if o.DataDir == "" {
		return errors.New("certs: no data directory")
	}
	if o.Mode == "" {
		o.Mode = ModeInternal
	}
	if o.LeafLifetime <= 0 {
		o.LeafLifetime = DefaultLeafLifetime
	}
	if o.HandshakeWait <= 0 {
		o.HandshakeWait = DefaultHandshakeWait
	}
	if o.FileCheckInterval == 0 {
		o.FileCheckInterval = DefaultFileCheckInterval
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.retryBase <= 0 {
		o.retryBase = time.Minute
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return errors.New("certs: a certificate file needs its key file and the other way round")
	}
	switch o.Mode {
	case ModeInternal:
	case ModeACME:
		if o.ACME.Email == "" {
			return errors.New("certs: mode acme needs an email address (the ACME account's contact)")
		}
	case ModeFiles:
		if o.CertFile == "" {
			return errors.New("certs: mode files needs a certificate and key file")
		}
	default:
		return fmt.Errorf("certs: unknown mode %q (internal, acme or files)", o.Mode)
	}
	if o.ACME.HTTPPort == 0 {
		o.ACME.HTTPPort = 80
	}
	if o.ACME.TLSALPNPort == 0 {
		o.ACME.TLSALPNPort = 443
	}
	return nil
}

// configure makes the certmagic configurations of the mode.
func (m *Manager) configure(tmpl certmagic.Config, caDir string) error {
	if m.opts.Mode == ModeFiles {
		tmpl.Issuers = []certmagic.Issuer{noIssuer{}}
		m.base = certmagic.New(m.cache, tmpl)
		return nil
	}
	ca, err := loadOrCreateCA(caDir, m.opts.LeafLifetime)
	if err != nil {
		return err
	}
	ca.allow = m.bound.has
	m.ca = ca
	local := tmpl
	local.Issuers = []certmagic.Issuer{ca}
	m.local = certmagic.New(m.cache, local)
	m.base = m.local
	if m.opts.Mode == ModeACME {
		return m.configureACME(tmpl)
	}
	return nil
}

func (m *Manager) configureACME(tmpl certmagic.Config) error {
	o := m.opts.ACME
	m.public = certmagic.New(m.cache, tmpl)
	iss := certmagic.ACMEIssuer{
		CA: o.CA, Email: o.Email, Agreed: true,
		ListenHost: o.ListenHost, AltHTTPPort: o.HTTPPort, AltTLSALPNPort: o.TLSALPNPort,
		DisableHTTPChallenge: o.DisableHTTPChallenge, DisableTLSALPNChallenge: o.DisableTLSALPNChallenge,
		Logger: tmpl.Logger,
	}
	if iss.CA == "" {
		iss.CA = certmagic.LetsEncryptProductionCA
	} else {
		iss.TestCA = iss.CA // retries go to the same CA, not Let's Encrypt staging
	}
	if o.CARootFile != "" {
		b, err := os.ReadFile(o.CARootFile)
		if err != nil {
			return fmt.Errorf("certs: ACME CA root: %w", err)
		}
		iss.TrustedRoots = x509.NewCertPool()
		if !iss.TrustedRoots.AppendCertsFromPEM(b) {
			return fmt.Errorf("certs: ACME CA root %s: no PEM certificate", o.CARootFile)
		}
	}
	m.acme = certmagic.NewACMEIssuer(m.public, iss)
	m.public.Issuers = []certmagic.Issuer{m.acme}
	return nil
}

// noIssuer refuses to issue (mode files issues nothing).
type noIssuer struct{}

func (noIssuer) IssuerKey() string { return "berth-none" }
func (noIssuer) Issue(context.Context, *x509.CertificateRequest) (*certmagic.IssuedCertificate, error) {
	return nil, errors.New("certs: mode files issues no certificates")
}

// configFor returns the configuration that serves name: the user's file
// when it covers name, ACME for public names in mode acme, the local CA
// otherwise; nil when nothing can serve it.
func (m *Manager) configFor(name string) *certmagic.Config {
	switch {
	case m.files.covers(name):
		return m.base
	case m.public != nil && certmagic.SubjectQualifiesForPublicCert(name):
		return m.public
	default:
		return m.local
	}
}

// configForCert is certmagic's GetConfigForCert (renewal, OCSP).
func (m *Manager) configForCert(c certmagic.Certificate) (*certmagic.Config, error) {
	if m.public != nil && !c.HasTag(fileTag) && len(c.Names) > 0 &&
		!slices.ContainsFunc(c.Names, func(n string) bool { return !certmagic.SubjectQualifiesForPublicCert(n) }) {
		return m.public, nil
	}
	return m.base, nil
}

// prepare normalizes names and checks that each can be served, grouping
// them by the configuration that obtains their certificates (names the
// user's file covers need none).
func (m *Manager) prepare(names []string) (all []string, byCfg map[*certmagic.Config][]string, err error) {
	byCfg = make(map[*certmagic.Config][]string)
	for _, raw := range names {
		n, err := normalizeName(raw)
		if err != nil {
			return nil, nil, err
		}
		cfg := m.configFor(n)
		switch {
		case m.files.covers(n):
		case cfg == nil || m.opts.Mode == ModeFiles:
			return nil, nil, fmt.Errorf("certs: %q is not covered by %s", n, m.opts.CertFile)
		case cfg == m.public && n[0] == '*':
			return nil, nil, fmt.Errorf("certs: %q: wildcard certificates need the DNS-01 challenge, which Berth does not do (bring the certificate with a certificate file)", n)
		default:
			byCfg[cfg] = append(byCfg[cfg], n)
		}
		all = append(all, n)
	}
	return all, byCfg, nil
}

// Bind serves names from now on and obtains their certificates, waiting
// for them (or for ctx). If a certificate cannot be obtained, the names this
// call bound are unbound again and the error is returned.
func (m *Manager) Bind(ctx context.Context, names ...string) error {
	all, byCfg, err := m.prepare(names)
	if err != nil {
		return err
	}
	added := m.bound.add(all)
	for cfg, ns := range byCfg {
		m.markPending(ns)
		err := cfg.ManageSync(ctx, ns)
		m.donePending(ns)
		if err != nil {
			m.Unbind(added...)
			return fmt.Errorf("certs: obtain a certificate for %v: %w", ns, err)
		}
		m.dropUnbound(ns)
	}
	return nil
}

// markPending records that names' certificates are on their way, so that
// handshakes for them wait.
func (m *Manager) markPending(names []string) {
	m.pmu.Lock()
	defer m.pmu.Unlock()
	if m.pending == nil {
		m.pending = make(map[string]chan struct{})
	}
	for _, n := range names {
		if _, ok := m.pending[n]; !ok {
			m.pending[n] = make(chan struct{})
		}
	}
}

// donePending wakes the handshakes waiting for names.
func (m *Manager) donePending(names []string) {
	m.pmu.Lock()
	defer m.pmu.Unlock()
	for _, n := range names {
		if ch, ok := m.pending[n]; ok {
			close(ch)
			delete(m.pending, n)
		}
	}
}

// pendingFor returns the channel closed when name's certificate (or that
// of the wildcard that covers it) has been obtained, or nil.
func (m *Manager) pendingFor(name string) <-chan struct{} {
	m.pmu.Lock()
	defer m.pmu.Unlock()
	if ch, ok := m.pending[name]; ok {
		return ch
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		return m.pending["*"+name[i:]]
	}
	return nil
}

// dropUnbound stops managing those of names that were unbound while their
// certificates were being obtained.
func (m *Manager) dropUnbound(names []string) {
	var gone []certmagic.SubjectIssuer
	for _, n := range names {
		if !m.bound.has(n) {
			gone = append(gone, certmagic.SubjectIssuer{Subject: n})
		}
	}
	if len(gone) > 0 {
		m.cache.RemoveManaged(gone)
	}
}

// BindAsync serves names from now on and obtains their certificates in the
// background, retrying with backoff (1 minute doubling to an hour) while the
// names stay bound, until Close; a handshake that comes first waits for the
// certificate (at most Options.HandshakeWait). Only invalid names are errors.
func (m *Manager) BindAsync(names ...string) error {
	all, byCfg, err := m.prepare(names)
	if err != nil {
		return err
	}
	m.bound.add(all)
	for cfg, ns := range byCfg {
		m.markPending(ns)
		m.wg.Add(1)
		go m.manageInBackground(cfg, ns)
	}
	return nil
}

// manageInBackground obtains (or loads) the certificates of names until it
// succeeds, the names are unbound, or the Manager is closed.
func (m *Manager) manageInBackground(cfg *certmagic.Config, names []string) {
	defer m.wg.Done()
	defer m.donePending(names)
	wait := m.opts.retryBase
	for {
		todo := slices.DeleteFunc(slices.Clone(names), func(n string) bool { return !m.bound.has(n) })
		if len(todo) == 0 {
			return
		}
		err := cfg.ManageSync(m.ctx, todo)
		if err == nil {
			m.dropUnbound(todo)
			return
		}
		if m.ctx.Err() != nil {
			return
		}
		m.log.Error("cannot obtain a certificate; will retry", "names", todo, "retry_in", wait, "err", err)
		select {
		case <-m.ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Hour)
	}
}

// Unbind stops serving names: handshakes for them fail from now on, and
// their certificates are no longer renewed (they stay in storage).
func (m *Manager) Unbind(names ...string) {
	var ns []string
	var subj []certmagic.SubjectIssuer
	for _, raw := range names {
		if n, err := normalizeName(raw); err == nil {
			ns = append(ns, n)
			subj = append(subj, certmagic.SubjectIssuer{Subject: n})
		}
	}
	m.bound.remove(ns)
	m.donePending(ns)
	m.cache.RemoveManaged(subj)
}

// Bound lists the bound names, sorted.
func (m *Manager) Bound() []string {
	l := m.bound.list()
	slices.Sort(l)
	return l
}

// TLSConfig is the configuration of an HTTPS listener: certificates by SNI
// (by local address when the client sends none, as for https://127.0.0.1),
// ALPN h2, http/1.1 and acme-tls/1 (the TLS-ALPN-01 challenge), TLS 1.2 or
// later. Each call returns a new *tls.Config.
func (m *Manager) TLSConfig() *tls.Config {
	return &tls.Config{
		GetCertificate: m.getCertificate,
		NextProtos:     []string{"h2", "http/1.1", "acme-tls/1"},
		MinVersion:     tls.VersionTLS12,
	}
}

func (m *Manager) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := handshakeName(hello)
	if name == "" || !m.bound.has(name) {
		return nil, fmt.Errorf("%w: %q", ErrNotBound, name)
	}
	cfg := m.configFor(name)
	if cfg == nil {
		return nil, fmt.Errorf("%w: %q", ErrNotBound, name)
	}
	cert, err := cfg.GetCertificate(hello)
	if err == nil {
		return cert, nil
	}
	// The first certificate may be on its way: wait for it.
	ch := m.pendingFor(name)
	if ch == nil {
		return nil, err
	}
	t := time.NewTimer(m.opts.HandshakeWait)
	defer t.Stop()
	select {
	case <-ch:
		return cfg.GetCertificate(hello)
	case <-t.C:
	case <-hello.Context().Done():
	case <-m.ctx.Done():
	}
	return nil, err
}

// handshakeName is the name a handshake asks for: the SNI, or the local IP
// address when there is none.
func handshakeName(hello *tls.ClientHelloInfo) string {
	if hello.ServerName != "" {
		n, err := normalizeName(hello.ServerName)
		if err != nil {
			return ""
		}
		return n
	}
	if hello.Conn == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(hello.Conn.LocalAddr().String())
	if err != nil {
		return ""
	}
	n, _ := normalizeName(host)
	return n
}

// HTTPChallengeHandler wraps the plain listener's handler so that it
// answers ACME HTTP-01 challenges (in mode acme; otherwise it returns h).
func (m *Manager) HTTPChallengeHandler(h http.Handler) http.Handler {
	if m.acme == nil {
		return h
	}
	return m.acme.HTTPChallengeHandler(h)
}

// RootPEM is the local CA's root certificate (PEM), which clients trust;
// nil in mode files.
func (m *Manager) RootPEM() []byte {
	if m.ca == nil {
		return nil
	}
	return slices.Clone(m.ca.rootPEM)
}

// Close stops background issuance, renewal and the file watcher, and waits
// for them. The Manager must not be used afterwards.
func (m *Manager) Close() {
	m.once.Do(func() {
		m.cancel()
		m.wg.Wait()
		m.cache.Stop()
	})
}

func (m *Manager) watchFiles() {
	defer m.wg.Done()
	t := time.NewTicker(m.opts.FileCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
			changed, err := m.files.load(m.ctx)
			switch {
			case err != nil:
				m.log.Error("certificate file reload failed; serving the previous one", "file", m.opts.CertFile, "err", err)
			case changed:
				m.log.Info("certificate file reloaded", "file", m.opts.CertFile)
			}
		}
	}
}
