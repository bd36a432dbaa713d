package edge

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// corsAllowHeaders are the request headers an MCP client in a browser
// sends; a preflight's own list is echoed besides (for Mcp-Param-*).
var corsAllowHeaders = []string{
	"Content-Type", "Accept", "Authorization", "X-Ms-Apikey",
	"Mcp-Session-Id", "Mcp-Protocol-Version", "Last-Event-Id", "Mcp-Method", "Mcp-Name",
}

var corsAllowList = strings.Join(corsAllowHeaders, ", ")

// corsExposeHeaders are the response headers a browser client must read.
const corsExposeHeaders = "Mcp-Session-Id, Mcp-Protocol-Version, WWW-Authenticate"

// originPolicy validates Origin and Host against DNS rebinding and answers
// CORS for allowed browser origins.
type originPolicy struct {
	any bool
	// appDomain is where the gateway serves apps (NAME.appDomain): a page
	// of an app must not drive a pool, so hosts under it are not loopback
	// ones, even under .localhost.
	appDomain string
	origins   map[string]bool // normalized scheme://host:port
	hosts     map[string]bool // host[:port] accepted in the Host header
}

func newOriginPolicy(allowed []string, publicURL, appDomain string) (*originPolicy, error) {
	if appDomain == "" {
		appDomain = "localhost"
	}
	op := &originPolicy{appDomain: strings.ToLower(strings.Trim(appDomain, ".")), origins: map[string]bool{}, hosts: map[string]bool{}}
	add := func(raw string) error {
		o, err := normalizeOrigin(raw)
		if err != nil {
			return err
		}
		u, _ := url.Parse(o)
		op.origins[o] = true
		op.hosts[strings.ToLower(u.Host)] = true
		op.hosts[strings.ToLower(u.Hostname())] = true
		return nil
	}
	for _, a := range allowed {
		a = strings.TrimSpace(a)
		switch a {
		case "":
		case "*":
			op.any = true
		default:
			if err := add(a); err != nil {
				return nil, fmt.Errorf("allowed origin %q: %w", a, err)
			}
		}
	}
	if publicURL != "" {
		if err := add(publicURL); err != nil {
			return nil, fmt.Errorf("public URL %q: %w", publicURL, err)
		}
	}
	return op, nil
}

// normalizeOrigin turns "https://Example.com:443/x" into
// "https://example.com:443"; the port is made explicit.
func normalizeOrigin(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("not an origin: use scheme://host[:port], for example https://app.example.com")
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return u.Scheme + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port), nil
}

// hostName lowers a host (with or without a port) to its bare name.
func hostName(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	return strings.ToLower(strings.TrimSuffix(host, "."))
}

// isLoopbackHost reports whether host (with or without a port) is
// localhost or a loopback address.
func isLoopbackHost(host string) bool {
	host = hostName(host)
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// isAppHost reports whether host is one the gateway serves apps at.
func (op *originPolicy) isAppHost(host string) bool {
	return strings.HasSuffix(hostName(host), "."+op.appDomain)
}

// trustedLoopback reports whether host is a loopback one that is no app's.
func (op *originPolicy) trustedLoopback(host string) bool {
	return isLoopbackHost(host) && !op.isAppHost(host)
}

func isLoopbackAddr(addr string) bool { return isLoopbackHost(addr) }

// originAllowed reports whether a browser origin may call the endpoint.
func (op *originPolicy) originAllowed(origin string) bool {
	if op.any {
		return true
	}
	o, err := normalizeOrigin(origin)
	if err != nil {
		return false // includes "null" (sandboxed frames, file:)
	}
	u, _ := url.Parse(o)
	return op.origins[o] || op.trustedLoopback(u.Hostname())
}

// hostAllowed applies the DNS rebinding rule to the Host header: on a
// loopback listener, a request naming a host that is neither loopback nor
// known (public URL, allowed origins) is refused, since only a rebound DNS
// name would lead a browser there.
func (op *originPolicy) hostAllowed(r *http.Request) bool {
	if op.any || op.trustedLoopback(r.Host) {
		return true
	}
	local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok || !isLoopbackAddr(local.String()) {
		return true
	}
	h := strings.ToLower(r.Host)
	if op.hosts[h] {
		return true
	}
	if hn, _, err := net.SplitHostPort(h); err == nil && op.hosts[hn] {
		return true
	}
	return false
}

// check validates the request and sets CORS headers for an allowed
// origin; a refusal is a 403 error.
func (op *originPolicy) check(w http.ResponseWriter, r *http.Request) *Error {
	origin := r.Header.Get("Origin")
	if origin != "" && !op.originAllowed(origin) {
		return &Error{Status: http.StatusForbidden, RPCCode: CodeForbidden, Message: fmt.Sprintf(
			"origin %q is not allowed (DNS rebinding protection): allow it with berth up --allow-origin %s", origin, origin)}
	}
	if err := op.checkHost(r); err != nil {
		return err
	}
	if origin == "" {
		return nil
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Add("Vary", "Origin")
	h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
	if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		allow := corsAllowList
		if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
			allow += ", " + req
		}
		h.Set("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
		h.Set("Access-Control-Allow-Headers", allow)
		h.Set("Access-Control-Max-Age", "600")
	}
	return nil
}

// checkHost applies the Host half of check (a pool with a CORS policy of
// its own has its Origin judged by it).
func (op *originPolicy) checkHost(r *http.Request) *Error {
	if !op.hostAllowed(r) {
		return &Error{Status: http.StatusForbidden, RPCCode: CodeForbidden, Message: fmt.Sprintf(
			"host %q is not allowed on a loopback listener (DNS rebinding protection): set berth up --public-url or --allow-origin to accept it", r.Host)}
	}
	return nil
}

// appHostPolicy is the DNS rebinding rule for apps that cannot apply it
// themselves (stdio apps, which have no HTTP side): the Host must be
// loopback, localhost or a name under the apps' domain, and a browser
// Origin must be one of those hosts'.
type appHostPolicy struct{ domain string }

// check refuses a request whose Host or Origin is neither loopback nor under
// the apps' domain; custom, if set, is the app's custom domain the request
// came by, which is allowed too.
func (p appHostPolicy) check(_ http.ResponseWriter, r *http.Request, custom string) *Error {
	if custom != "" {
		if o := r.Header.Get("Origin"); o == "" || p.allowedOrigin(o) || originHost(o) == custom {
			return nil
		}
		return &Error{Status: http.StatusForbidden, RPCCode: CodeForbidden, Message: "forbidden Origin header"}
	}
	if !p.allowedHost(r.Host) || !p.allowedOrigin(r.Header.Get("Origin")) {
		return &Error{Status: http.StatusForbidden, RPCCode: CodeForbidden, Message: "forbidden Host or Origin header"}
	}
	return nil
}

// checkHost applies the Host half of check only (an app with a CORS policy
// has its Origin judged by it).
func (p appHostPolicy) checkHost(_ http.ResponseWriter, r *http.Request, custom string) *Error {
	if custom == "" && !p.allowedHost(r.Host) {
		return &Error{Status: http.StatusForbidden, RPCCode: CodeForbidden, Message: "forbidden Host header"}
	}
	return nil
}

func (p appHostPolicy) allowedHost(hostport string) bool {
	host := hostName(hostport)
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback()
	}
	return host == "localhost" || host == p.domain || strings.HasSuffix(host, "."+p.domain)
}

func originHost(origin string) string {
	u, err := url.Parse(origin)
	if err != nil {
		return ""
	}
	return strings.ToLower(u.Hostname())
}

func (p appHostPolicy) allowedOrigin(origin string) bool {
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	return err == nil && u.Host != "" && p.allowedHost(u.Host)
}
