package edge

import (
	"context"
	"net/http"
	"strings"
)

// Caller is a workload calling an app from inside a sandbox (an app's
// replica or a pool's session), through its agent's tunnel: the server
// that serves the tunnel marks each request with the sandbox it came from
// (WithCaller), and nothing a client sends can set it. Such a request is
// routed by its Host (NAME or NAME.internal) and passes the same checks,
// authentication and gateway as any other; it alone may reach an app with
// internal ingress.
type Caller struct {
	// Kind is "app" or "pool".
	Kind string
	// Name is the app's or the pool's.
	Name string
}

func (c Caller) String() string { return c.Kind + ":" + c.Name }

type callerKey struct{}

// WithCaller marks a request's context as coming from c's sandbox.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom is the workload a request comes from, if it came through a
// sandbox's tunnel.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// InternalApps is implemented by an Apps whose apps may have internal
// ingress.
type InternalApps interface {
	// InternalApp says whether the app is reachable only from other apps
	// and sessions.
	InternalApp(name string) bool
}

// hiddenApp says whether a request must find the app as if it did not
// exist: the app is internal and the request came from a public listener.
func (e *Edge) hiddenApp(r *http.Request, name string) bool {
	if _, ok := CallerFrom(r.Context()); ok {
		return false
	}
	ia, ok := e.o.Apps.(InternalApps)
	return ok && ia.InternalApp(name)
}

// internalRoute routes a request from a sandbox: its host, without port
// and ".internal", names the app (NAME[---LABEL]).
func internalRoute(r *http.Request) Route {
	host := strings.TrimSuffix(strings.ToLower(stripPort(r.Host)), ".internal")
	name, label, _ := strings.Cut(host, "---")
	return Route{Kind: KindApp, Name: name, Label: label, Path: r.URL.Path}
}
