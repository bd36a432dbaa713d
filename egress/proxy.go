package egress

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/netns"
	"github.com/berth-dev/berth/sandbox"
)

// Secrets resolves the secrets that inject rules name, per scope
// ("pool/NAME", "app/NAME"). The value is read at each request and never
// leaves the host.
type Secrets interface {
	Secret(ctx context.Context, scope, name string) ([]byte, error)
}

// ErrNoSecret is what Secrets returns (wrapped) for a secret that is not
// set: the proxy refuses the request and says how to set it.
var ErrNoSecret = errors.New("secret not set")

// Options configure a Service; the zero value uses the system's resolver
// and roots and keeps CAs nowhere (inject rules then fail).
type Options struct {
	// Dir holds one CA per scope (DIR/SCOPE/ca.key, 0600).
	Dir     string
	Secrets Secrets
	// Resolver resolves the names sandboxes ask for (default: the host's).
	Resolver *net.Resolver
	// UpstreamRoots verify the real hosts behind inject rules (default:
	// the system's roots).
	UpstreamRoots *x509.CertPool
	// SystemBundle is the PEM file of the roots sandboxes trust besides the
	// scope's CA (default /etc/ssl/certs/ca-certificates.crt).
	SystemBundle string
	Logger       *slog.Logger
}

// Service makes proxies for scopes.
type Service struct {
	o       Options
	mu      sync.Mutex
	cas     map[string]*ca
	proxies map[string]*Proxy
}

// New returns a service.
func New(o Options) *Service {
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.SystemBundle == "" {
		o.SystemBundle = "/etc/ssl/certs/ca-certificates.crt"
	}
	return &Service{o: o, cas: map[string]*ca{}, proxies: map[string]*Proxy{}}
}

// Proxy returns the proxy for scope's sandboxes under policy p (the same
// one for the same rules, so that its upstream connections are shared).
func (s *Service) Proxy(scope string, p Policy) (*Proxy, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	key := fmt.Sprintf("%s\x00%q\x00%q", scope, p.Allow, p.Inject)
	s.mu.Lock()
	px, ok := s.proxies[key]
	s.mu.Unlock()
	if ok {
		return px, nil
	}
	px = &Proxy{s: s, scope: scope, p: p}
	if len(p.Inject) > 0 {
		c, err := s.ca(scope)
		if err != nil {
			return nil, err
		}
		px.ca = c
	}
	roots := s.o.UpstreamRoots
	px.tr = &http.Transport{
		DialContext:           px.dialChecked,
		TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       60 * time.Second,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 5 * time.Minute,
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.proxies[key]; ok {
		return old, nil
	}
	s.proxies[key] = px
	return px, nil
}

// Close drops idle upstream connections.
func (s *Service) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, px := range s.proxies {
		px.tr.CloseIdleConnections()
	}
}

// ProxyFor returns the proxy for a pool's or app's stored setting (see
// Setting), or nil if the setting has no allow-list.
func (s *Service) ProxyFor(scope, egress string, inject []string) (sandbox.EgressProxy, error) {
	_, _, p, err := Setting(egress, inject)
	if err != nil || p == nil {
		return nil, err
	}
	px, err := s.Proxy(scope, *p)
	if err != nil {
		return nil, err
	}
	return px, nil
}

// Forget drops what the service keeps for a deleted pool or app: its
// proxies (and their upstream connections) and its CA, in memory and on
// disk, so that a later pool or app of the same name gets a new CA.
func (s *Service) Forget(scope string) error {
	s.mu.Lock()
	for key, px := range s.proxies {
		if px.scope == scope {
			px.tr.CloseIdleConnections()
			delete(s.proxies, key)
		}
	}
	delete(s.cas, scope)
	s.mu.Unlock()
	if s.o.Dir == "" {
		return nil
	}
	return os.RemoveAll(s.caDir(scope))
}

func (s *Service) caDir(scope string) string {
	return filepath.Join(s.o.Dir, strings.ReplaceAll(scope, "/", "_"))
}

func (s *Service) ca(scope string) (*ca, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.cas[scope]; ok {
		return c, nil
	}
	if s.o.Dir == "" {
		return nil, errors.New("egress inject rules need the server's data dir for their CA")
	}
	c, err := loadCA(s.caDir(scope), scope)
	if err != nil {
		return nil, err
	}
	s.cas[scope] = c
	return c, nil
}

// Proxy enforces one scope's policy.
type Proxy struct {
	s     *Service
	scope string
	p     Policy
	ca    *ca
	tr    *http.Transport
}

var _ sandbox.EgressProxy = (*Proxy)(nil)

// Policy returns the proxy's rules.
func (px *Proxy) Policy() Policy { return px.p }

// Attach implements sandbox.EgressProxy: it listens on gw's proxy ports
// until the returned Close.
func (px *Proxy) Attach(ctx context.Context, gw, peer netip.Addr) (*sandbox.EgressAttachment, error) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	var closers []io.Closer
	stop := func() {
		cancel()
		for _, c := range closers {
			_ = c.Close()
		}
		wg.Wait()
	}
	serve := func(port int, h func(context.Context, net.Conn)) error {
		ln, err := net.Listen("tcp4", netip.AddrPortFrom(gw, uint16(port)).String())
		if err != nil {
			return err
		}
		closers = append(closers, ln)
		wg.Go(func() { px.accept(ctx, ln, peer, h) })
		return nil
	}
	for port, h := range map[int]func(context.Context, net.Conn){
		netns.ProxyPort: px.serveExplicit, netns.HTTPPort: px.serveTransparentHTTP, netns.TLSPort: px.serveTransparentTLS,
	} {
		if err := serve(port, h); err != nil {
			stop()
			return nil, fmt.Errorf("egress proxy: %w", err)
		}
	}
	dnsClose, err := px.serveDNS(gw, peer)
	if err != nil {
		stop()
		return nil, fmt.Errorf("egress proxy: %w", err)
	}
	closers = append(closers, dnsClose)
	url := "http://" + netip.AddrPortFrom(gw, netns.ProxyPort).String()
	a := &sandbox.EgressAttachment{Close: stop, Env: []string{
		"HTTP_PROXY=" + url, "HTTPS_PROXY=" + url, "http_proxy=" + url, "https_proxy=" + url,
		"NO_PROXY=localhost,127.0.0.1,::1", "no_proxy=localhost,127.0.0.1,::1",
	}}
	if px.ca != nil {
		system, _ := os.ReadFile(px.s.o.SystemBundle)
		a.CABundle = append(append(system, '\n'), px.ca.certPEM...)
		for _, k := range []string{"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "PIP_CERT", "GIT_SSL_CAINFO"} {
			a.Env = append(a.Env, k+"="+sandbox.EgressCAPath)
		}
	}
	return a, nil
}

// MaxConns bounds the connections one sandbox has open through its proxy
// on each port; beyond it, new ones are closed at once.
const MaxConns = 256

// accept serves ln's connections from peer until ctx ends.
func (px *Proxy) accept(ctx context.Context, ln net.Listener, peer netip.Addr, h func(context.Context, net.Conn)) {
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, MaxConns)
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err != nil || ap.Addr().Unmap() != peer {
			c.Close() // only the sandbox on this veth is served here
			continue
		}
		select {
		case slots <- struct{}{}:
		default:
			px.s.o.Logger.Warn("egress: too many connections from one sandbox", "scope", px.scope, "max", MaxConns)
			reset(c)
			continue
		}
		wg.Go(func() {
			defer func() { <-slots }()
			defer c.Close()
			stop := context.AfterFunc(ctx, func() { c.Close() })
			defer stop()
			h(ctx, c)
		})
	}
}

// refusal is a request the rules refuse; its message is for the sandbox.
type refusal struct{ msg string }

func (r *refusal) Error() string { return r.msg }

func (px *Proxy) refuse(host, format string, a ...any) error {
	msg := fmt.Sprintf("berth egress: "+format, a...)
	px.s.o.Logger.Warn("egress refused", "scope", px.scope, "host", host, "reason", msg)
	return &refusal{msg}
}

// check refuses a destination the rules do not allow by name or address.
func (px *Proxy) check(host string, port int) error {
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		if !px.p.allowsAddr(a) {
			return px.refuse(host, "%s is an IP address; only host names in the allow-list (or addresses it names) may be reached", host)
		}
		return nil
	}
	if !px.p.allowsName(host, port) {
		return px.refuse(host, "%s:%d is not in this sandbox's egress allow-list", host, port)
	}
	return nil
}

// dialChecked connects to an allowed host:port, resolving the name itself
// and refusing forbidden addresses.
func (px *Proxy) dialChecked(ctx context.Context, _, hostport string) (net.Conn, error) {
	host, ps, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, err
	}
	port, _ := strconv.Atoi(ps)
	if err := px.check(host, port); err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		addrs, err = px.s.o.Resolver.LookupNetIP(rctx, "ip", host)
		cancel()
		// IPv4 first: hosts often have no IPv6 route out.
		slices.SortStableFunc(addrs, func(a, b netip.Addr) int { return cmp.Compare(family(a), family(b)) })
		if err != nil || len(addrs) == 0 {
			return nil, px.refuse(host, "cannot resolve %s: %v", host, err)
		}
	}
	for _, a := range addrs {
		if why := px.p.why(a, hostAddrs); why != "" {
			return nil, px.refuse(host, "%s resolves to %s, %s, which sandboxes may not reach", host, a, why)
		}
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	var last error
	for _, a := range addrs {
		c, err := d.DialContext(ctx, "tcp", netip.AddrPortFrom(a, uint16(port)).String())
		if err == nil {
			return c, nil
		}
		last = err
	}
	return nil, fmt.Errorf("berth egress: connect to %s: %w", hostport, last)
}

// family orders IPv4 before IPv6.
func family(a netip.Addr) int {
	if a.Unmap().Is4() {
		return 4
	}
	return 6
}

// serveExplicit serves HTTP_PROXY/HTTPS_PROXY clients: CONNECT, or a
// plain-HTTP request with an absolute URL.
func (px *Proxy) serveExplicit(ctx context.Context, c net.Conn) {
	br := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	if req.Method != http.MethodConnect {
		if req.URL.Scheme != "http" || req.URL.Host == "" {
			writeError(c, http.StatusBadRequest, "berth egress: a proxy request needs an absolute http:// URL or CONNECT")
			return
		}
		req.Close = true // one request per connection
		px.forward(ctx, c, req, "http", nil)
		return
	}
	host, ps, err := net.SplitHostPort(req.Host)
	if err != nil {
		writeError(c, http.StatusBadRequest, "berth egress: CONNECT needs host:port")
		return
	}
	port, _ := strconv.Atoi(ps)
	if err := px.check(host, port); err != nil {
		writeError(c, http.StatusForbidden, err.Error())
		return
	}
	in := &bufConn{Conn: c, r: br}
	if port == 443 && px.ca != nil && len(px.p.injections(host)) > 0 {
		_, _ = io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
		px.intercept(ctx, in, host)
		return
	}
	up, err := px.dialChecked(ctx, "tcp", req.Host)
	if err != nil {
		writeError(c, statusOf(err), err.Error())
		return
	}
	defer up.Close()
	_, _ = io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	splice(in, up)
}

// serveTransparentHTTP serves port 80 redirected from the sandbox: the
// Host header names the destination.
func (px *Proxy) serveTransparentHTTP(ctx context.Context, c net.Conn) {
	br := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	// The sandbox connected to port 80: a port in Host does not change
	// where this goes.
	host := req.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	req.URL.Scheme, req.URL.Host = "http", host
	req.Close = true // one request per connection
	px.forward(ctx, c, req, "http", nil)
}

// serveTransparentTLS serves port 443 redirected from the sandbox: the
// ClientHello's server name names the destination.
func (px *Proxy) serveTransparentTLS(ctx context.Context, c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	hello, buf := peekHello(c)
	_ = c.SetReadDeadline(time.Time{})
	in := &bufConn{Conn: c, r: io.MultiReader(bytes.NewReader(buf), c)}
	if hello == nil || hello.ServerName == "" {
		_ = px.refuse("", "a TLS connection without a server name (SNI) from the sandbox")
		reset(c)
		return
	}
	host := hello.ServerName
	if err := px.check(host, 443); err != nil {
		denyTLS(c)
		return
	}
	if px.ca != nil && len(px.p.injections(host)) > 0 {
		px.intercept(ctx, in, host)
		return
	}
	up, err := px.dialChecked(ctx, "tcp", net.JoinHostPort(host, "443"))
	if err != nil {
		denyTLS(c)
		return
	}
	defer up.Close()
	splice(in, up)
}

// intercept terminates the sandbox's TLS to host with a certificate from
// the scope's CA, and forwards each request over a new TLS connection to
// the real host, with the inject rules' headers added.
func (px *Proxy) intercept(ctx context.Context, c net.Conn, host string) {
	leaf, err := px.ca.leaf(host)
	if err != nil {
		px.s.o.Logger.Error("egress CA", "scope", px.scope, "err", err)
		return
	}
	tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{*leaf}, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12})
	hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		return
	}
	if sni := tc.ConnectionState().ServerName; sni != "" && !strings.EqualFold(sni, host) {
		_ = px.refuse(sni, "TLS server name %s inside a tunnel to %s", sni, host)
		return
	}
	br := bufio.NewReader(tc)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if h, _, err := net.SplitHostPort(req.Host); err == nil {
			req.Host = h
		}
		if !strings.EqualFold(req.Host, host) {
			writeError(tc, http.StatusForbidden, px.refuse(req.Host, "Host %s inside a connection to %s", req.Host, host).Error())
			return
		}
		req.URL.Scheme, req.URL.Host = "https", host
		if !px.forward(ctx, tc, req, "https", px.p.injections(host)) {
			return
		}
	}
}

// forward sends req upstream and its response back to c; it reports
// whether c may carry another request.
func (px *Proxy) forward(ctx context.Context, c net.Conn, req *http.Request, scheme string, inject []Inject) bool {
	req.RequestURI = ""
	req = req.WithContext(ctx)
	for _, h := range []string{"Proxy-Connection", "Proxy-Authorization", "Connection", "Keep-Alive", "Te", "Trailer", "Upgrade"} {
		req.Header.Del(h)
	}
	for _, in := range inject {
		v, err := px.s.secret(ctx, px.scope, in.Secret)
		if err != nil {
			px.s.o.Logger.Error("egress inject: secret", "scope", px.scope, "secret", in.Secret, "err", err)
			if errors.Is(err, ErrNoSecret) {
				writeError(c, http.StatusForbidden, fmt.Sprintf("berth egress: refused: the inject rule for %s names secret %s, which %s does not have (set it with: %s)", in.Host, in.Secret, px.scope, setSecretHint(px.scope, in.Secret)))
				return false
			}
			writeError(c, http.StatusBadGateway, fmt.Sprintf("berth egress: secret %s for %s is not available", in.Secret, in.Host))
			return false
		}
		req.Header.Set(in.Header, string(v))
	}
	port := 80
	if scheme == "https" {
		port = 443
	}
	if p := req.URL.Port(); p != "" {
		port, _ = strconv.Atoi(p)
	}
	if err := px.check(req.URL.Hostname(), port); err != nil {
		writeError(c, http.StatusForbidden, err.Error())
		return false
	}
	resp, err := px.tr.RoundTrip(req)
	if err != nil {
		writeError(c, statusOf(err), errMessage(err))
		return false
	}
	defer resp.Body.Close()
	resp.Header.Del("Connection")
	resp.Close = req.Close
	if resp.ProtoMajor != 1 {
		resp.Proto, resp.ProtoMajor, resp.ProtoMinor = "HTTP/1.1", 1, 1
	}
	return resp.Write(c) == nil && !req.Close
}

// setSecretHint is the command that sets scope's secret name.
func setSecretHint(scope, name string) string {
	if p, ok := strings.CutPrefix(scope, "pool/"); ok {
		return "berth secret set --pool " + p + " " + name
	}
	return "berth secret set " + strings.TrimPrefix(scope, "app/") + " " + name
}

func (s *Service) secret(ctx context.Context, scope, name string) ([]byte, error) {
	if s.o.Secrets == nil {
		return nil, errors.New("no secret store")
	}
	return s.o.Secrets.Secret(ctx, scope, name)
}

func statusOf(err error) int {
	var r *refusal
	if errors.As(err, &r) {
		return http.StatusForbidden
	}
	return http.StatusBadGateway
}

func errMessage(err error) string {
	var r *refusal
	if errors.As(err, &r) {
		return r.msg
	}
	return "berth egress: " + err.Error()
}

func writeError(w io.Writer, code int, msg string) {
	fmt.Fprintf(w, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s\n",
		code, http.StatusText(code), len(msg)+1, msg)
}

// denyTLS answers a ClientHello with a fatal access_denied alert, which
// TLS clients report as such ("tlsv1 alert access denied"), and closes c.
func denyTLS(c net.Conn) {
	_, _ = c.Write([]byte{21, 3, 3, 0, 2, 2, 49})
	_ = c.Close()
}

// reset closes c with a TCP reset.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// bufConn is a connection whose first bytes come from r.
type bufConn struct {
	net.Conn
	r io.Reader
}

func (b *bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// CloseWrite half-closes the underlying connection.
func (b *bufConn) CloseWrite() error {
	if cw, ok := b.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return b.Conn.Close()
}

// peekHello reads a TLS ClientHello from c and returns it with the bytes
// read, which the caller replays.
func peekHello(c net.Conn) (*tls.ClientHelloInfo, []byte) {
	rec := &recorder{Conn: c, r: c}
	var hello *tls.ClientHelloInfo
	_ = tls.Server(rec, &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		hello = &tls.ClientHelloInfo{ServerName: h.ServerName}
		return nil, errPeeked
	}}).Handshake()
	return hello, rec.buf.Bytes()
}

var errPeeked = errors.New("peeked")

// recorder reads from r, keeping what it read; writes go nowhere.
type recorder struct {
	net.Conn
	r   io.Reader
	buf bytes.Buffer
}

func (r *recorder) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.buf.Write(p[:n])
	return n, err
}
func (r *recorder) Write(p []byte) (int, error) { return 0, errPeeked }

// splice copies both ways until both sides are done.
func splice(a, b net.Conn) {
	var wg sync.WaitGroup
	half := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			_ = dst.Close()
		}
	}
	wg.Go(func() { half(b, a) })
	half(a, b)
	wg.Wait()
}
