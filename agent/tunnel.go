package agent

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
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
// sandbox's own network rights, or through the sandbox's egress proxy if
// it has egress rules (see proxyEnv), so plain-HTTP egress works as
// before. HTTPS never comes here (https_proxy is the egress proxy's, or
// unset). Requests that name the listener
// itself (origin-form, as the identity endpoint's are) go to the host's
// identity endpoint, unless their Host names an app (for clients that
// ignore http_proxy: curl -H 'Host: NAME' http://127.0.0.1:42356/…).

// TunnelAddr is the agent's loopback listener inside every sandbox.
// 42356 is the port of Container Apps' identity endpoint.
const TunnelAddr = "127.0.0.1:42356"

// IdentityPath is the identity endpoint's path on TunnelAddr.
const IdentityPath = "/msi/token"

// loopbackNoProxy is what no client sends through a proxy.
var loopbackNoProxy = []string{"localhost", "127.0.0.1", "::1"}

// proxyEnv is the proxy environment of every process the agent starts,
// given the one the sandbox's driver set for the agent (its egress proxy,
// if the sandbox has egress rules). Two proxies meet here:
//
//   - plain HTTP (http_proxy, HTTP_PROXY) always goes to TunnelAddr: app
//     names go to the host, any other host to the egress proxy if there is
//     one (which applies the allow-list), else direct;
//   - HTTPS (https_proxy, HTTPS_PROXY) goes to the egress proxy if there is
//     one, else direct (app names are plain HTTP);
//   - no_proxy, NO_PROXY: loopback and the driver's list, merged.
//
// Each variable appears once, in both cases, with one value.
func proxyEnv(driver []string) []string {
	var httpsProxy string
	noProxy := slices.Clone(loopbackNoProxy)
	for _, kv := range driver {
		k, v, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		case "HTTPS_PROXY":
			if httpsProxy == "" || k == "HTTPS_PROXY" {
				httpsProxy = v
			}
		case "NO_PROXY":
			for _, h := range strings.Split(v, ",") {
				if h = strings.TrimSpace(h); h != "" && !slices.Contains(noProxy, h) {
					noProxy = append(noProxy, h)
				}
			}
		}
	}
	np := strings.Join(noProxy, ",")
	env := []string{
		"http_proxy=http://" + TunnelAddr, "HTTP_PROXY=http://" + TunnelAddr,
		"no_proxy=" + np, "NO_PROXY=" + np,
		"NODE_USE_ENV_PROXY=1",
	}
	if httpsProxy != "" {
		env = append(env, "https_proxy="+httpsProxy, "HTTPS_PROXY="+httpsProxy)
	}
	return env
}

// egressProxy is the driver's egress proxy for plain HTTP, if any: where
// TunnelAddr sends the hosts that are not apps.
func egressProxy(driver []string) *url.URL {
	var v string
	for _, kv := range driver {
		k, val, _ := strings.Cut(kv, "=")
		if strings.ToUpper(k) == "HTTP_PROXY" && (v == "" || k == "HTTP_PROXY") {
			v = val
		}
	}
	if v == "" {
		return nil
	}
	u, err := url.Parse(v)
	if err != nil || u.Host == "" {
		return nil
	}
	return u
}

// tunnel is the agent's side: the host's current connection, if any.
type tunnel struct {
	mu sync.Mutex
	cc *http.ClientConn
	// direct serves proxied requests for hosts that are not app names.
	direct http.RoundTripper
}

// newTunnel returns the tunnel; hosts that are not apps go through the
// egress proxy the driver set in env, if any, else direct.
func newTunnel(env []string) *tunnel {
	tr := &http.Transport{ResponseHeaderTimeout: 5 * time.Minute, MaxIdleConnsPerHost: 4}
	if u := egressProxy(env); u != nil {
		tr.Proxy = http.ProxyURL(u)
	}
	return &tunnel{direct: tr}
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
