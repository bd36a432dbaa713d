// Package edge is Berth's front door: every request on the public listener
// passes through one Edge, in this order:
//
//   - TLS termination, on the HTTPS listener in front of the same handler
//     (server/https.go, with certificates from edge/certs); the plain
//     listener then redirects app and pool requests to it
//     (RedirectToHTTPS, only to names it serves);
//   - host routing: for a call from a sandbox (marked with a Caller by the
//     server that serves its tunnel, see internal.go), the app its Host
//     names; otherwise an app by host (NAME.DOMAIN, NAME---LABEL.DOMAIN), by
//     custom domain (Hosts: one map lookup) or by path (/apps/NAME/…), a
//     pool's MCP endpoint (/pools/{pool}/mcp), and the data plane (every
//     other path);
//   - Origin validation (the MCP spec's DNS rebinding rule: 403) and CORS
//     (preflights, Allow- and Expose- headers), by the route's policy: the
//     server-wide allow-list for pools' MCP endpoints, the apps' domain (and
//     the custom domain the request came by) for stdio apps (HTTP apps see
//     the client's Host and Origin themselves); an app's or a pool's own
//     CORS policy (edge/cors, looked up through AppCORS and PoolCORS)
//     replaces these for the Origin (corsroute.go);
//   - authentication, by the route's authenticator: the pool's key
//     (x-ms-apikey or Authorization: Bearer) for the data plane and a pool's
//     MCP endpoint unless the pool's mcpAuth is none; none for apps;
//   - a request id and one access line per request (with the app,
//     revision, JSON-RPC method and tool for app routes);
//   - the handler: the data plane, the pools' MCP server or the gateway.
//
// Errors carry their own status and public message (Error) and are written
// by WriteError, the one place they become responses, in the format of the
// route: JSON for the data plane, a JSON-RPC error body for MCP. Handlers
// return or write *Error; the edge adds the request id and logs the cause.
//
// The edge needs no real app or pool manager: it sees them through the
// small interfaces Apps and Pools.
package edge

import (
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/berth-dev/berth/identity"
)

// Kind is the kind of a route.
type Kind uint8

// Route kinds.
const (
	KindDataPlane Kind = iota // the pools' REST API (and anything unrouted)
	KindPoolMCP               // /pools/{pool}/mcp
	KindApp                   // an app, by host or by /apps/NAME/
)

func (k Kind) String() string {
	return [...]string{"data plane", "pool MCP", "app"}[k]
}

// Route is where a request goes.
type Route struct {
	Kind Kind
	// Name is the app's or the pool's ("" if the path names no pool).
	Name string
	// Label is the app's label (NAME---LABEL).
	Label string
	// Path is the path the app sees (apps only).
	Path string
	// ByPath is set for an app reached by /apps/NAME/…: its pages then
	// share the listener's origin with the pools' endpoints, so the edge
	// sandboxes them (see PathAppCSP).
	ByPath bool
	// PRM is set for /.well-known/oauth-protected-resource/apps/NAME/…
	// and …/pools/NAME/mcp: the protected resource metadata of an app
	// reached by path or of a pool's MCP endpoint (RFC 9728 §3.1 inserts
	// the well-known path before the resource's path).
	PRM bool
	// Host is the custom domain an app was reached by (app hostname add).
	Host string
}

// PathAppCSP is the Content-Security-Policy of every response of an app
// reached by path. Such a page is served from the same origin as
// /pools/…; the policy gives it an opaque origin instead (its scripts
// still run), so that its requests to a pool carry "Origin: null", which
// the pools refuse, and it can read none of their responses. Apps reached
// by their own host (NAME.DOMAIN) have an origin of their own and are not
// touched. MCP clients ignore the header.
const PathAppCSP = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"

// AppRequest is what the edge tells the gateway about a request for an
// app, and what the gateway tells the access line back.
type AppRequest struct {
	Name, Label, Path string
	// Caller is who the edge authenticated (X-MS-CLIENT-PRINCIPAL-ID),
	// for the access line; "" for an app without authentication.
	Caller string
	// Set by the gateway for the access line.
	Revision, MCPMethod, Tool string
	// Status, if set, is logged when no response was written (499: the
	// client left first).
	Status int
}

// Apps is the gateway as the edge sees it.
type Apps interface {
	// AppKind says whether an app exists and whether it is a stdio app.
	AppKind(name string) (stdio, found bool)
	// ServeApp serves a request routed to an app.
	ServeApp(w http.ResponseWriter, r *http.Request, a *AppRequest)
}

// Hosts finds the app a custom domain is bound to (app hostname add).
// Lookups must be O(1): one is made per request whose host is not under
// the app domain.
type Hosts interface {
	// Host takes a lowercase host without port.
	Host(host string) (name, label string, ok bool)
}

// Pools finds the pools the data plane and MCP routes name.
type Pools interface {
	Pool(name string) (Pool, bool)
}

// Pool is what the edge needs of a pool to authenticate a request.
type Pool interface {
	// Authenticate checks an API key.
	Authenticate(key string) bool
	// MCPEndpoint says whether the pool's MCP endpoint is on, and whether
	// it needs the key (mcpAuth other than none).
	MCPEndpoint() (enabled, keyed bool)
}

// CustomPool is implemented by pools whose every path belongs to their
// sessions' containers (custom container pools): the edge routes their
// /mcp to the data plane, never to the pools' MCP server.
type CustomPool interface {
	Custom() bool
}

func (e *Edge) customPool(name string) bool {
	if e.o.Pools == nil {
		return false
	}
	p, ok := e.o.Pools.Pool(name)
	c, isCustom := p.(CustomPool)
	return ok && isCustom && c.Custom()
}

// Options configure an Edge.
type Options struct {
	// AppDomain serves apps at NAME.AppDomain (default "localhost").
	AppDomain string
	// PublicURL is how clients reach the listener; its origin is allowed.
	PublicURL string
	// AllowedOrigins are browser origins allowed on the pools' MCP
	// endpoints besides loopback ones and PublicURL ("*" for any).
	AllowedOrigins []string

	Apps Apps
	// Hosts, if set, routes custom domains to their apps.
	Hosts   Hosts
	Pools   Pools
	PoolMCP http.Handler
	// DataPlane serves the pools' REST API, and every path no other route
	// takes.
	DataPlane http.Handler

	// Issuer, if set, serves Berth's workload identity issuer's discovery
	// document and JWKS (identity.DiscoveryPath, JWKSPath) on every host
	// that is not an app's.
	Issuer http.Handler
	// OIDCClient, if set, fetches OIDC issuers' discovery documents and
	// keys (one that trusts Berth's own CA, for its own issuer on HTTPS).
	OIDCClient *http.Client

	Logger *slog.Logger
	// AccessLog gets the access line of every request (default Logger).
	AccessLog *slog.Logger
}

// Edge is the front door; it is an http.Handler.
type Edge struct {
	o      Options
	log    *slog.Logger
	access *slog.Logger
	domain string
	// publicHost is the public URL's host name, lowercase ("" if none).
	publicHost string
	pools      *originPolicy // pools' MCP endpoints
	stdio      appHostPolicy // stdio apps
	noAuthW    warnOnce
	// appAuths gives the apps' authentication (nil: apps are open).
	appAuths  AppAuths
	verifiers verifiers
}

// New builds an edge; it fails if an allowed origin or the public URL is
// malformed.
func New(o Options) (*Edge, error) {
	if o.AppDomain == "" {
		o.AppDomain = "localhost"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.AccessLog == nil {
		o.AccessLog = o.Logger
	}
	op, err := newOriginPolicy(o.AllowedOrigins, o.PublicURL, o.AppDomain)
	if err != nil {
		return nil, err
	}
	d := strings.ToLower(strings.Trim(o.AppDomain, "."))
	var ph string
	if u, err := url.Parse(o.PublicURL); err == nil {
		ph = strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	}
	e := &Edge{o: o, log: o.Logger, access: o.AccessLog, domain: d, publicHost: ph, pools: op, stdio: appHostPolicy{domain: d}}
	e.appAuths, _ = o.Apps.(AppAuths)
	e.verifiers.client = o.OIDCClient
	return e, nil
}

// Route says where a request goes. The public URL's host is the data
// plane's and the pools': no app takes it by host, whether its name is
// one label under the app domain or a custom domain (bound before
// --public-url named it).
func (e *Edge) Route(r *http.Request) Route {
	if _, ok := CallerFrom(r.Context()); ok {
		return internalRoute(r)
	}
	if host := stripPort(r.Host); e.publicHost == "" || !strings.EqualFold(host, e.publicHost) {
		if name, label, ok := e.appHost(host); ok {
			return Route{Kind: KindApp, Name: name, Label: label, Path: r.URL.Path}
		}
		if e.o.Hosts != nil {
			host = strings.ToLower(host)
			if name, label, ok := e.o.Hosts.Host(host); ok {
				return Route{Kind: KindApp, Name: name, Label: label, Path: r.URL.Path, Host: host}
			}
		}
	}
	p := r.URL.Path
	if rest, ok := strings.CutPrefix(p, PRMPath+"/pools/"); ok {
		if name, tail, _ := strings.Cut(rest, "/"); name != "" && tail == "mcp" {
			return Route{Kind: KindPoolMCP, Name: name, PRM: true}
		}
	}
	if rest, ok := strings.CutPrefix(p, PRMPath+"/apps/"); ok {
		seg, _, _ := strings.Cut(rest, "/")
		name, label, _ := strings.Cut(seg, "---")
		if name != "" {
			return Route{Kind: KindApp, Name: name, Label: label, Path: PRMPath, ByPath: true, PRM: true}
		}
	}
	if rest, ok := strings.CutPrefix(p, "/apps/"); ok {
		seg, tail, _ := strings.Cut(rest, "/")
		name, label, _ := strings.Cut(seg, "---")
		if name != "" {
			return Route{Kind: KindApp, Name: name, Label: label, Path: "/" + tail, ByPath: true}
		}
	}
	if rest, ok := strings.CutPrefix(p, "/pools/"); ok {
		name, tail, _ := strings.Cut(rest, "/")
		if tail == "mcp" && name != "" {
			return Route{Kind: KindPoolMCP, Name: name}
		}
		return Route{Kind: KindDataPlane, Name: name}
	}
	return Route{Kind: KindDataPlane}
}

// stripPort removes a :PORT and the trailing dot of a fully qualified name
// ("tasks.example.com.", which names the same host and gets the same
// certificate) from a Host header.
func stripPort(host string) string {
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		host = host[:i]
	}
	return strings.TrimSuffix(host, ".")
}

// appHost reads NAME[---LABEL] from a host (without port) under the
// apps' domain.
func (e *Edge) appHost(host string) (name, label string, ok bool) {
	if len(host) <= len(e.domain)+1 || host[len(host)-len(e.domain)-1] != '.' ||
		!strings.EqualFold(host[len(host)-len(e.domain):], e.domain) {
		return "", "", false
	}
	sub := strings.ToLower(host[:len(host)-len(e.domain)-1])
	if strings.Contains(sub, ".") {
		return "", "", false
	}
	name, label, _ = strings.Cut(sub, "---")
	return name, label, true
}

// ServeHTTP passes a request through the edge to its handler.
func (e *Edge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	st := &state{ResponseWriter: w, edge: e, route: e.Route(r), id: newID(), status: http.StatusOK}
	defer st.access(r, start)
	if err := e.serve(st, r); err != nil {
		WriteError(st, r, err)
	}
}

func (e *Edge) serve(st *state, r *http.Request) *Error {
	if st.route.Kind == KindPoolMCP && !st.route.PRM && e.customPool(st.route.Name) {
		// A custom pool has no MCP endpoint of its own: /mcp, like any
		// path, is its sessions' (behind the data plane's key check).
		st.route.Kind = KindDataPlane
	}
	switch st.route.Kind {
	case KindApp:
		return e.serveApp(st, r)
	case KindPoolMCP:
		if st.route.PRM {
			return e.servePoolPRM(st, r, st.route.Name)
		}
		if p := e.poolCORS(st.route.Name); p != nil {
			// The pool's own policy replaces --allow-origin; the Host
			// rule stays.
			if err := e.pools.checkHost(r); err != nil {
				return err
			}
			if done, err := checkCORS(p, st, r, "pool", true); done || err != nil {
				return err
			}
		} else if err := e.pools.check(st, r); err != nil {
			return err
		}
		if r.Method == http.MethodOptions {
			// A CORS preflight carries no credentials: it is answered
			// before the key check (check has set the CORS headers).
			st.Header().Set("Allow", "GET, POST, DELETE, OPTIONS")
			st.WriteHeader(http.StatusNoContent)
			return nil
		}
		if err := e.authMCP(r, st.route.Name); err != nil {
			return err
		}
		e.o.PoolMCP.ServeHTTP(st, r)
	default:
		if e.o.Issuer != nil && (r.URL.Path == identity.DiscoveryPath || r.URL.Path == identity.JWKSPath) {
			e.o.Issuer.ServeHTTP(st, r)
			return nil
		}
		if err := e.authDataPlane(r, st.route.Name); err != nil {
			return err
		}
		e.o.DataPlane.ServeHTTP(st, r)
	}
	return nil
}

func (e *Edge) serveApp(st *state, r *http.Request) *Error {
	stdio, found := e.o.Apps.AppKind(st.route.Name)
	var w http.ResponseWriter = st
	policy := e.appCORS(st.route.Name)
	// An internal app is, to the public listeners, one that does not
	// exist: the gateway answers as for an unknown app.
	hidden := e.hiddenApp(r, st.route.Name)
	if hidden {
		found, policy = false, nil
	}
	if _, inside := CallerFrom(r.Context()); found && stdio && !inside {
		// A stdio server has no HTTP side to defend itself against
		// DNS rebinding: the edge does it for it. (A call from a
		// sandbox names the app, not a DNS name: nothing to rebind.)
		check := e.stdio.check
		if policy != nil {
			check = e.stdio.checkHost // the app's policy judges the Origin
		}
		if err := check(st, r, st.route.Host); err != nil {
			return err
		}
	}
	if policy != nil {
		// corsWriter sets the actual response's headers.
		done, err := checkCORS(policy, st, r, "app", false)
		if done || err != nil {
			return err
		}
		if o := r.Header.Get("Origin"); o != "" {
			w = &corsWriter{ResponseWriter: st, p: policy, origin: o}
		}
	}
	if st.route.ByPath {
		// Added to whatever policy the app sets: browsers enforce both.
		st.Header().Set("Content-Security-Policy", PathAppCSP)
	}
	if done, err := e.authApp(st, r, st.route, hidden); err != nil || done {
		return err
	}
	st.app = AppRequest{Name: st.route.Name, Label: st.route.Label, Path: st.route.Path,
		Caller: r.Header.Get("X-Ms-Client-Principal-Id")}
	if c, ok := CallerFrom(r.Context()); ok && st.app.Caller == "" {
		st.app.Caller = c.String()
	}
	e.o.Apps.ServeApp(w, r, &st.app)
	return nil
}

// PoolsFunc adapts a function to Pools.
type PoolsFunc func(name string) (Pool, bool)

// Pool calls f.
func (f PoolsFunc) Pool(name string) (Pool, bool) { return f(name) }
