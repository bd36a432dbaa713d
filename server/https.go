package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/app"
	"github.com/berth-dev/berth/edge"
	"github.com/berth-dev/berth/edge/certs"
	"github.com/berth-dev/berth/internal/listen"
)

// TLSOptions configure the HTTPS listener's certificates (see edge/certs).
type TLSOptions struct {
	// Mode is internal (default), acme or files.
	Mode certs.Mode
	// ACMEEmail, ACMECA and ACMECARoot configure mode acme.
	ACMEEmail, ACMECA, ACMECARoot string
	// CertFile and KeyFile are a certificate the user brings (required in
	// mode files).
	CertFile, KeyFile string
}

// bindTimeout bounds how long adding a custom domain waits for its
// certificate before leaving it to the background (with retries).
const bindTimeout = 30 * time.Second

// startHTTPS builds the certificate manager and the HTTPS listener; plain
// is the plain listener (its port receives ACME HTTP-01 validations).
func startHTTPS(o Options, dir string, plain net.Listener) (*certs.Manager, net.Listener, error) {
	ln, err := net.Listen("tcp", o.HTTPSListen)
	if err != nil {
		return nil, nil, fmt.Errorf("HTTPS listener: %w", err)
	}
	m, err := certs.New(certs.Options{
		DataDir: dir, Mode: o.TLS.Mode,
		ACME: certs.ACMEOptions{
			Email: o.TLS.ACMEEmail, CA: o.TLS.ACMECA, CARootFile: o.TLS.ACMECARoot,
			HTTPPort: port(plain.Addr()), TLSALPNPort: port(ln.Addr()),
		},
		CertFile: o.TLS.CertFile, KeyFile: o.TLS.KeyFile,
		Logger: o.Logger,
	})
	if err != nil {
		ln.Close()
		return nil, nil, fmt.Errorf("certificates: %w", err)
	}
	// The same limits as the plain listener, each with a budget of its own.
	lim := listen.Limit(ln, listen.Options{MaxConns: o.MaxConnections, MaxConnsPerClient: o.MaxConnectionsPerClient})
	return m, tls.NewListener(lim, m.TLSConfig()), nil
}

func port(a net.Addr) int {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.Port
	}
	return 0
}

// appNames binds the certificates of the names apps are served under:
// NAME.DOMAIN, NAME---LABEL.DOMAIN and the app's custom domains. It is the
// control plane's Names.
type appNames struct {
	m      *certs.Manager
	domain string
	log    *slog.Logger

	mu    sync.Mutex
	bound map[string][]string // app → its names
}

func (n *appNames) names(d app.Doc) []string {
	out := []string{d.Name + "." + n.domain}
	for label := range d.Labels {
		out = append(out, d.Name+"---"+label+"."+n.domain)
	}
	for _, h := range d.Hostnames {
		out = append(out, h.Host)
	}
	return out
}

// update records app's names and returns those added and removed.
func (n *appNames) update(name string, now []string) (added, removed []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	before := n.bound[name]
	for _, x := range now {
		if !slices.Contains(before, x) {
			added = append(added, x)
		}
	}
	for _, x := range before {
		if !slices.Contains(now, x) {
			removed = append(removed, x)
		}
	}
	if now == nil {
		delete(n.bound, name)
	} else {
		n.bound[name] = now
	}
	return added, removed
}

// AppChanged binds the names an app has gained, custom domains waiting for
// their certificate (at most bindTimeout; then, or if the CA fails, they
// are obtained in the background with retries), and unbinds those it lost.
func (n *appNames) AppChanged(ctx context.Context, d app.Doc) {
	n.bind(ctx, d, true)
}

func (n *appNames) bind(ctx context.Context, d app.Doc, wait bool) {
	added, removed := n.update(d.Name, n.names(d))
	n.m.Unbind(removed...)
	for _, name := range added {
		custom := !strings.HasSuffix(name, "."+n.domain)
		if custom && wait {
			bctx, cancel := context.WithTimeout(ctx, bindTimeout)
			err := n.m.Bind(bctx, name)
			cancel()
			if err == nil {
				continue
			}
			n.log.Warn("certificate not obtained yet; retrying in the background", "app", d.Name, "host", name, "err", err)
		}
		if err := n.m.BindAsync(name); err != nil {
			n.log.Warn("host name not served over HTTPS", "app", d.Name, "host", name, "err", err)
		}
	}
}

// AppDeleted unbinds a deleted app's names.
func (n *appNames) AppDeleted(name string) {
	_, removed := n.update(name, nil)
	n.m.Unbind(removed...)
}

// Status is the certificate's state of a name.
func (n *appNames) Status(name string) string { return n.m.Status(name) }

// bindStatic binds the names the server itself is reached by: localhost
// and 127.0.0.1 (not in mode files, whose certificate rarely covers them)
// and the public URL's host.
func bindStatic(m *certs.Manager, mode certs.Mode, publicURL string, log *slog.Logger) {
	var names []string
	if mode != certs.ModeFiles {
		names = append(names, "localhost", "127.0.0.1")
	}
	if u, err := url.Parse(publicURL); err == nil && u.Hostname() != "" && !slices.Contains(names, u.Hostname()) {
		names = append(names, u.Hostname())
	}
	for _, name := range names {
		if err := m.BindAsync(name); err != nil {
			log.Warn("name not served over HTTPS", "name", name, "err", err)
		}
	}
}

// redirectToHTTPS is the plain listener's handler once HTTPS is on: app
// and pool requests get 308 to the same URL over HTTPS (httpsPort: "" for
// 443); the rest is served by front.
func redirectToHTTPS(front *edge.Edge, httpsPort string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rt := front.Route(r)
		if rt.Kind == edge.KindDataPlane && rt.Name == "" {
			front.ServeHTTP(w, r)
			return
		}
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		if httpsPort != "" {
			host += ":" + httpsPort
		}
		http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusPermanentRedirect)
	})
}

// httpsURLPort is the port clients reach HTTPS on: the public URL's if it
// is an https URL, else the listener's ("" for 443).
func httpsURLPort(publicURL string, ln net.Addr) string {
	p := strconv.Itoa(port(ln))
	if u, err := url.Parse(publicURL); err == nil && u.Scheme == "https" {
		p = u.Port()
	}
	if p == "443" {
		return ""
	}
	return p
}
