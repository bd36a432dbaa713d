package agent

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"time"
)

// The app-to-app tunnel.
//
// Code in a sandbox reaches other apps by name (http://NAME,
// http://NAME.internal) and gets workload identity tokens without any
// network interface: the agent listens on TunnelAddr, a loopback address
// inside the sandbox, and forwards what it receives to the host over a
// connection the host opened (GET /tunnel, upgraded): on it the agent is
// an HTTP/2 client and the host the server, so one connection carries
// any number of concurrent requests and streams. The host knows which
// sandbox a request comes from by the connection it arrives on (it opened
// it through that sandbox's socket); nothing the sandbox sends says who it
// is.
//
// Ordinary clients find the listener through the proxy variables the
// agent sets for everything it runs (http_proxy, HTTP_PROXY: curl, Go,
// Python, and Node with NODE_USE_ENV_PROXY honour them), rather than
// through /etc/hosts: names come and go with apps, the sandbox's /etc is
// read-only and shared, and port 80 needs a privilege the sandbox's user
// does not have (its network namespace's ip_unprivileged_port_start is
// not ours to lower under bubblewrap). The proxy forwards single-label
// names and NAME.internal to the host; any other host (a dotted name, an
// address) it connects to itself, from inside the sandbox, with the
// sandbox's own network rights, so plain-HTTP egress works as before.
// HTTPS goes direct (no https_proxy). Requests that name the listener
// itself (origin-form, as the identity endpoint's are) go to the host's
// identity endpoint, unless their Host names an app (for clients that
// ignore http_proxy: curl -H 'Host: NAME' http://127.0.0.1:42356/…).

// TunnelAddr is the agent's loopback listener inside every sandbox.
// 42356 is the port of Container Apps' identity endpoint.
const TunnelAddr = "127.0.0.1:42356"

// IdentityPath is the identity endpoint's path on TunnelAddr.
const IdentityPath = "/msi/token"

// proxyEnv is what every process the agent starts gets, to find
// TunnelAddr.
var proxyEnv = []string{
	"http_proxy=http://" + TunnelAddr,
	"HTTP_PROXY=http://" + TunnelAddr,
	"no_proxy=localhost,127.0.0.1,::1",
	"NO_PROXY=localhost,127.0.0.1,::1",
	"NODE_USE_ENV_PROXY=1",
}

// tunnel is the agent's side: the host's current connection, if any.
type tunnel struct {
	mu sync.Mutex
	cc *http.ClientConn
	// direct serves proxied requests for hosts that are not app names.
	direct http.RoundTripper
}

func newTunnel() *tunnel {
	return &tunnel{direct: &http.Transport{Proxy: nil, ResponseHeaderTimeout: 5 * time.Minute, MaxIdleConnsPerHost: 4}}
}

// attach makes conn, upgraded by the host, the tunnel's connection.
func (t *tunnel) attach(conn net.Conn) error {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true) // prior knowledge: the host expects it
	tr := &http.Transport{
		Protocols: &p,
		HTTP2:     &http.HTTP2Config{SendPingTimeout: 30 * time.Second},
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			return conn, nil
		},
	}
	cc, err := tr.NewClientConn(context.Background(), "http", TunnelAddr)
	if err != nil {
		conn.Close()
		return err
	}
	t.mu.Lock()
	old := t.cc
	t.cc = cc
	t.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	return nil
}

// RoundTrip sends a request to the host.
func (t *tunnel) RoundTrip(r *http.Request) (*http.Response, error) {
	t.mu.Lock()
	cc := t.cc
	t.mu.Unlock()
	if cc == nil || cc.Err() != nil {
		return nil, errors.New("berth: the sandbox is not connected to the platform (no app-to-app tunnel)")
	}
	return cc.RoundTrip(r)
}

// appHost says whether a proxied request's host names an app: one label,
// or NAME.internal.
func appHost(host string) bool {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	if hh, port, err := net.SplitHostPort(h); err == nil {
		if port != "80" {
			return false
		}
		h = hh
	}
	h = strings.TrimSuffix(h, ".internal")
	return h != "" && !strings.Contains(h, ".") && !strings.Contains(h, ":") && h != "localhost"
}

// handler serves TunnelAddr.
func (t *tunnel) handler() http.Handler {
	toHost := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			switch {
			case pr.In.URL.IsAbs(): // through the proxy
				pr.Out.Host = pr.In.URL.Host
			case appHost(pr.In.Host): // sent here with Host: NAME
				pr.Out.URL.Host = TunnelAddr
				pr.Out.Host = pr.In.Host
			default: // addressed to the listener: the identity endpoint
				pr.Out.URL.Host = TunnelAddr
				pr.Out.Host = TunnelAddr
			}
		},
		Transport:     t,
		FlushInterval: -1,
		ErrorHandler:  proxyError,
	}
	direct := &httputil.ReverseProxy{
		Rewrite:       func(pr *httputil.ProxyRequest) { pr.Out.Host = pr.In.Host },
		Transport:     t.direct,
		FlushInterval: -1,
		ErrorHandler:  proxyError,
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodConnect:
			http.Error(w, "berth: this proxy serves http://NAME only (CONNECT is not supported)", http.StatusMethodNotAllowed)
		case r.URL.IsAbs() && r.URL.Scheme == "http" && appHost(r.URL.Host):
			toHost.ServeHTTP(w, r)
		case r.URL.IsAbs():
			direct.ServeHTTP(w, r)
		default:
			toHost.ServeHTTP(w, r)
		}
	})
}

func proxyError(w http.ResponseWriter, _ *http.Request, err error) {
	http.Error(w, err.Error(), http.StatusBadGateway)
}

// serveLoopback serves TunnelAddr until ctx is done. A sandbox without
// loopback (none of Berth's) just goes without.
func (t *tunnel) serveLoopback(ctx context.Context) {
	ln, err := net.Listen("tcp", TunnelAddr)
	if err != nil {
		return
	}
	srv := &http.Server{Handler: t.handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	_ = srv.Serve(ln)
}

// tunnelRoute serves GET /tunnel: the host's connection, upgraded. Its
// query may carry identity=HEADER: the agent then gives what it starts
// from now on IDENTITY_ENDPOINT and IDENTITY_HEADER.
func (t *tunnel) tunnelRoute(x *executor) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if h := r.URL.Query().Get("identity"); h != "" {
			x.addEnv("IDENTITY_ENDPOINT=http://"+TunnelAddr+IdentityPath, "IDENTITY_HEADER="+h)
		}
		conn, err := upgrade(w)
		if err != nil {
			return
		}
		_ = t.attach(conn)
	}
}
