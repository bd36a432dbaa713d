// Package cors is a CORS policy as Azure Container Apps' ingress.corsPolicy
// has it (allowed origins, methods, headers, expose headers, max age, allow
// credentials), checked and compiled once, so that the edge answers a
// request with a map lookup and a few header writes.
//
// Origins are exact ("https://app.example.com", the port made explicit) or
// wildcards ("https://*.example.com"), which match any subdomain at any
// depth (a.example.com, a.b.example.com) with the same scheme and port,
// but not example.com itself: ASP.NET Core's
// SetIsOriginAllowedToAllowWildcardSubdomains. "*" allows any origin (not
// together with allowCredentials, which the CORS protocol forbids).
//
// MCP works without configuration: the headers an MCP client sends are
// always allowed (DefaultAllowHeaders) and those it reads always exposed
// (DefaultExposeHeaders).
package cors

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Spec is a CORS policy (Container Apps' corsPolicy).
type Spec struct {
	AllowedOrigins   []string `json:"allowedOrigins" yaml:"allowedOrigins"`
	AllowedMethods   []string `json:"allowedMethods,omitempty" yaml:"allowedMethods"`
	AllowedHeaders   []string `json:"allowedHeaders,omitempty" yaml:"allowedHeaders"`
	ExposeHeaders    []string `json:"exposeHeaders,omitempty" yaml:"exposeHeaders"`
	MaxAge           int      `json:"maxAge,omitempty" yaml:"maxAge"`
	AllowCredentials bool     `json:"allowCredentials,omitempty" yaml:"allowCredentials"`
}

// DefaultMethods are allowed when a policy names none: those of MCP's
// Streamable HTTP transport.
var DefaultMethods = []string{"GET", "POST", "DELETE", "OPTIONS"}

// DefaultAllowHeaders are always allowed: what MCP clients send (and the
// keys of pools and apps).
var DefaultAllowHeaders = []string{
	"Content-Type", "Accept", "Authorization", "Mcp-Session-Id", "Mcp-Protocol-Version",
	"Last-Event-ID", "Mcp-Method", "Mcp-Name", "X-Ms-Apikey", "X-Api-Key",
}

// DefaultExposeHeaders are always exposed: what MCP clients read.
var DefaultExposeHeaders = []string{"Mcp-Session-Id", "Mcp-Protocol-Version", "WWW-Authenticate"}

// Error is an invalid policy; its message is for the user.
type Error struct{ Message string }

func (e *Error) Error() string { return e.Message }

func invalid(format string, a ...any) error { return &Error{fmt.Sprintf(format, a...)} }

// Normalize trims and validates a policy (nil is no policy).
func (s *Spec) Normalize() error {
	if s == nil {
		return nil
	}
	clean := func(v []string) []string {
		out := v[:0]
		for _, x := range v {
			if x = strings.TrimSpace(x); x != "" && !slices.Contains(out, x) {
				out = append(out, x)
			}
		}
		return out
	}
	s.AllowedOrigins, s.AllowedMethods = clean(s.AllowedOrigins), clean(s.AllowedMethods)
	s.AllowedHeaders, s.ExposeHeaders = clean(s.AllowedHeaders), clean(s.ExposeHeaders)
	if len(s.AllowedOrigins) == 0 {
		return invalid("a CORS policy needs at least one allowed origin (--cors-allowed-origins)")
	}
	for i, m := range s.AllowedMethods {
		if m != "*" && !isToken(m) {
			return invalid("CORS: %q is not an HTTP method", m)
		}
		if m != "*" {
			s.AllowedMethods[i] = strings.ToUpper(m)
		}
	}
	for _, h := range append(slices.Clone(s.AllowedHeaders), s.ExposeHeaders...) {
		if h != "*" && !isToken(h) {
			return invalid("CORS: %q is not a header name", h)
		}
	}
	if s.MaxAge < 0 || s.MaxAge > 86400 {
		return invalid("CORS: max age must be 0-86400 seconds, not %d", s.MaxAge)
	}
	for i, o := range s.AllowedOrigins {
		if o == "*" {
			if s.AllowCredentials {
				return invalid("CORS: allowed origin * cannot go with allow credentials (browsers refuse it): list the origins")
			}
			continue
		}
		n, _, err := parseOrigin(o)
		if err != nil {
			return invalid("CORS: allowed origin %q: %v", o, err)
		}
		s.AllowedOrigins[i] = n
	}
	return nil
}

func isToken(s string) bool {
	for _, c := range s {
		if c > 0x7e || c <= ' ' || strings.ContainsRune("\"(),/:;<=>?@[\\]{}", c) {
			return false
		}
	}
	return s != ""
}

// parseOrigin normalizes scheme://host[:port] (port made explicit) and
// says whether the host is a wildcard "*.domain" (returned without "*").
func parseOrigin(raw string) (norm string, wildcard bool, err error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	scheme = strings.ToLower(scheme)
	if !ok || (scheme != "http" && scheme != "https") || rest == "" || strings.ContainsAny(rest, "/?#@") {
		return "", false, fmt.Errorf("use scheme://host[:port], for example https://app.example.com or https://*.example.com")
	}
	host, port := rest, ""
	if h, p, err := net.SplitHostPort(rest); err == nil {
		host, port = h, p
	}
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[scheme]
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", false, fmt.Errorf("bad port %q", port)
	}
	host = strings.ToLower(host)
	if d, ok := strings.CutPrefix(host, "*."); ok {
		if d == "" || strings.Contains(d, "*") || !strings.Contains(d, ".") && d != "localhost" && d != "test" {
			return "", false, fmt.Errorf("a wildcard needs a domain, like https://*.example.com")
		}
		wildcard = true
	} else if strings.Contains(host, "*") {
		return "", false, fmt.Errorf("a wildcard is only allowed as the first label (https://*.example.com)")
	}
	if _, err := url.Parse(scheme + "://" + host); err != nil || host == "" {
		return "", false, fmt.Errorf("bad host %q", host)
	}
	return scheme + "://" + net.JoinHostPort(host, port), wildcard, nil
}

// wildcardOrigin is an allowed "scheme://*.domain:port".
type wildcardOrigin struct{ scheme, suffix, port string }

// Policy is a compiled Spec; its methods are safe for concurrent use.
type Policy struct {
	spec      Spec
	any       bool
	exact     map[string]bool
	wildcards []wildcardOrigin
	anyMethod bool
	methods   map[string]bool
	anyHeader bool
	headers   map[string]bool // lower case
	// Precomputed header values.
	allowMethods, allowHeaders, expose, maxAge string
}

// Compile checks and compiles a policy.
func Compile(s Spec) (*Policy, error) {
	s = Spec{
		AllowedOrigins: slices.Clone(s.AllowedOrigins), AllowedMethods: slices.Clone(s.AllowedMethods),
		AllowedHeaders: slices.Clone(s.AllowedHeaders), ExposeHeaders: slices.Clone(s.ExposeHeaders),
		MaxAge: s.MaxAge, AllowCredentials: s.AllowCredentials,
	}
	if err := s.Normalize(); err != nil {
		return nil, err
	}
	p := &Policy{spec: s, exact: map[string]bool{}, methods: map[string]bool{}, headers: map[string]bool{}}
	for _, o := range s.AllowedOrigins {
		if o == "*" {
			p.any = true
			continue
		}
		n, wild, _ := parseOrigin(o)
		if !wild {
			p.exact[n] = true
			// And as browsers send it (default port left out): a request
			// from an exact origin is then one map lookup.
			scheme, hp, _ := strings.Cut(n, "://")
			h, port, _ := net.SplitHostPort(hp)
			if scheme == "https" && port == "443" || scheme == "http" && port == "80" {
				if strings.Contains(h, ":") {
					h = "[" + h + "]"
				}
				p.exact[scheme+"://"+h] = true
			}
			continue
		}
		scheme, hp, _ := strings.Cut(n, "://")
		h, port, _ := net.SplitHostPort(hp)
		p.wildcards = append(p.wildcards, wildcardOrigin{scheme: scheme, suffix: h[1:], port: port})
	}
	methods := s.AllowedMethods
	if len(methods) == 0 {
		methods = DefaultMethods
	}
	for _, m := range methods {
		p.anyMethod = p.anyMethod || m == "*"
		p.methods[m] = true
	}
	p.allowMethods = strings.Join(methods, ", ")
	allow := slices.Clone(DefaultAllowHeaders)
	for _, h := range s.AllowedHeaders {
		if h == "*" {
			p.anyHeader = true
		} else if !slices.ContainsFunc(allow, func(x string) bool { return strings.EqualFold(x, h) }) {
			allow = append(allow, h)
		}
	}
	for _, h := range allow {
		p.headers[strings.ToLower(h)] = true
	}
	p.allowHeaders = strings.Join(allow, ", ")
	expose := slices.Clone(DefaultExposeHeaders)
	for _, h := range s.ExposeHeaders {
		if !slices.ContainsFunc(expose, func(x string) bool { return strings.EqualFold(x, h) }) {
			expose = append(expose, h)
		}
	}
	p.expose = strings.Join(expose, ", ")
	if s.MaxAge > 0 {
		p.maxAge = strconv.Itoa(s.MaxAge)
	}
	return p, nil
}

// Spec returns the policy as configured (normalized).
func (p *Policy) Spec() Spec { return p.spec }

// AllowOrigin reports whether a browser origin may call ("null" and
// malformed origins never may, unless the policy allows "*").
func (p *Policy) AllowOrigin(origin string) bool {
	if p.any || p.exact[origin] {
		return true
	}
	scheme, host, port, ok := splitOrigin(origin)
	if !ok {
		return false // includes "null" (sandboxed frames, file:)
	}
	if p.exact[scheme+"://"+net.JoinHostPort(host, port)] {
		return true
	}
	for _, w := range p.wildcards {
		if w.scheme == scheme && w.port == port && len(host) > len(w.suffix) && strings.HasSuffix(host, w.suffix) {
			return true
		}
	}
	return false
}

// splitOrigin cuts a request's Origin into its lower-case scheme and host
// and its port (made explicit), without url.Parse: it runs per request.
func splitOrigin(o string) (scheme, host, port string, ok bool) {
	scheme, rest, ok := strings.Cut(o, "://")
	if !ok || rest == "" || strings.ContainsAny(rest, "/?#@*") {
		return "", "", "", false
	}
	scheme = strings.ToLower(scheme)
	host = rest
	if i := strings.LastIndexByte(rest, ':'); i >= 0 && !strings.Contains(rest[i:], "]") {
		host, port = rest[:i], rest[i+1:]
	}
	switch {
	case port != "":
	case scheme == "https":
		port = "443"
	case scheme == "http":
		port = "80"
	default:
		return "", "", "", false
	}
	host = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	return scheme, host, port, host != ""
}

// IsPreflight reports whether r is a CORS preflight.
func IsPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.Header.Get("Origin") != "" && r.Header.Get("Access-Control-Request-Method") != ""
}

// Preflight answers a preflight from an allowed origin: it reports whether
// the requested method and headers are allowed and, if so, sets the
// response's headers.
func (p *Policy) Preflight(w http.Header, r *http.Request) bool {
	m := r.Header.Get("Access-Control-Request-Method")
	if !p.anyMethod && !p.methods[m] {
		return false
	}
	reqHeaders := r.Header.Values("Access-Control-Request-Headers")
	if !p.anyHeader {
		for _, v := range reqHeaders {
			for _, h := range strings.Split(v, ",") {
				h = strings.ToLower(strings.TrimSpace(h))
				if h != "" && !p.headers[h] && !strings.HasPrefix(h, "mcp-param-") {
					return false
				}
			}
		}
	}
	p.common(w, r.Header.Get("Origin"))
	methods := p.allowMethods
	if p.anyMethod {
		methods = m
	}
	headers := p.allowHeaders
	if extra := strings.Join(reqHeaders, ", "); extra != "" && (p.anyHeader || strings.Contains(strings.ToLower(extra), "mcp-param-")) {
		headers += ", " + extra
	}
	w.Set("Access-Control-Allow-Methods", methods)
	w.Set("Access-Control-Allow-Headers", headers)
	if p.maxAge != "" {
		w.Set("Access-Control-Max-Age", p.maxAge)
	}
	w.Add("Vary", "Access-Control-Request-Method")
	w.Add("Vary", "Access-Control-Request-Headers")
	return true
}

// Actual sets the headers of an actual response to an allowed origin.
func (p *Policy) Actual(w http.Header, origin string) {
	p.common(w, origin)
	w.Set("Access-Control-Expose-Headers", p.expose)
}

func (p *Policy) common(w http.Header, origin string) {
	w.Set("Access-Control-Allow-Origin", origin)
	w.Add("Vary", "Origin")
	if p.spec.AllowCredentials {
		w.Set("Access-Control-Allow-Credentials", "true")
	}
}

// String is the policy in a line, for berth app show and pool show.
func (s *Spec) String() string {
	if s == nil {
		return "none"
	}
	out := "origins " + strings.Join(s.AllowedOrigins, " ")
	if len(s.AllowedMethods) > 0 {
		out += "; methods " + strings.Join(s.AllowedMethods, " ")
	}
	if len(s.AllowedHeaders) > 0 {
		out += "; headers " + strings.Join(s.AllowedHeaders, " ")
	}
	if len(s.ExposeHeaders) > 0 {
		out += "; expose " + strings.Join(s.ExposeHeaders, " ")
	}
	if s.MaxAge > 0 {
		out += "; max age " + strconv.Itoa(s.MaxAge) + "s"
	}
	if s.AllowCredentials {
		out += "; credentials"
	}
	return out
}

// CompileStored compiles a stored policy (nil for none). One that no
// longer compiles (accepted by an older version) allows no origin, and
// says so in the log, rather than failing the app or pool that holds it.
func CompileStored(s *Spec, log *slog.Logger) *Policy {
	if s == nil {
		return nil
	}
	pol, err := Compile(*s)
	if err != nil {
		log.Warn("CORS policy refused: no browser origin is allowed", "error", err)
		pol, _ = Compile(Spec{AllowedOrigins: []string{"https://invalid.invalid"}})
	}
	return pol
}
