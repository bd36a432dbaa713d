package edge

import (
	"fmt"
	"net"
	"net/http"
	"sync"
)

// bearerChallenge is the WWW-Authenticate header of a refused key.
const bearerChallenge = `Bearer realm="berth"`

// APIKey extracts a key from x-ms-apikey or Authorization: Bearer.
func APIKey(r *http.Request) string {
	if k := r.Header.Get("x-ms-apikey"); k != "" {
		return k
	}
	const prefix = "Bearer "
	if a := r.Header.Get("Authorization"); len(a) > len(prefix) && (a[:len(prefix)] == prefix || a[:len(prefix)] == "bearer ") {
		return a[len(prefix):]
	}
	return ""
}

// authDataPlane checks the pool key of a data plane request. A path that
// names no pool, or a pool that does not exist, passes: the data plane
// answers it (404).
func (e *Edge) authDataPlane(r *http.Request, name string) *Error {
	if name == "" || e.o.Pools == nil {
		return nil
	}
	p, ok := e.o.Pools.Pool(name)
	if !ok {
		return nil
	}
	if done, err := e.authPoolOIDC(r, name, p, false); done {
		if err != nil {
			err.Code = "Unauthorized"
		}
		return err
	}
	key := APIKey(r)
	if key == "" {
		return &Error{Status: http.StatusUnauthorized, Code: "Unauthorized", Message: fmt.Sprintf(
			"invalid or missing API key: send the pool's key in the x-ms-apikey header or as Authorization: Bearer KEY (berth pool credentials %s)", name)}
	}
	if !p.Authenticate(key) {
		return &Error{Status: http.StatusUnauthorized, Code: "Unauthorized", Message: fmt.Sprintf(
			"invalid or missing API key: the key is not valid for pool %q (was it rotated?)", name)}
	}
	return nil
}

// authMCP checks the pool key of a request for a pool's MCP endpoint,
// unless the pool's mcpAuth is none. A pool that does not exist or has
// its endpoint off passes: the MCP handler answers it (404).
func (e *Edge) authMCP(r *http.Request, name string) *Error {
	if e.o.Pools == nil {
		return nil
	}
	p, ok := e.o.Pools.Pool(name)
	if !ok {
		return nil
	}
	enabled, keyed := p.MCPEndpoint()
	if !enabled {
		return nil
	}
	if !keyed {
		e.noAuthW.warn(e, r, name)
		return nil
	}
	if done, err := e.authPoolOIDC(r, name, p, true); done {
		if err != nil {
			err.RPCCode = rpcCode(err.Status)
		}
		return err
	}
	challenge := poolChallenge(r, name, p)
	key := APIKey(r)
	if key == "" {
		return &Error{Status: http.StatusUnauthorized, RPCCode: CodeUnauthorized, Authenticate: challenge,
			Message: "missing API key: send x-ms-apikey: KEY or Authorization: Bearer KEY (the key is shown by: berth pool credentials " + name + ")"}
	}
	if !p.Authenticate(key) {
		return &Error{Status: http.StatusUnauthorized, RPCCode: CodeUnauthorized, Authenticate: challenge, Message: fmt.Sprintf(
			"invalid API key for pool %q (was it rotated? berth pool credentials %s shows the current one)", name, name)}
	}
	return nil
}

// warnOnce warns once per pool when an unauthenticated MCP endpoint is
// reached on an address beyond loopback.
type warnOnce struct {
	mu     sync.Mutex
	warned map[string]bool
}

func (o *warnOnce) warn(e *Edge, r *http.Request, name string) {
	a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok || isLoopbackAddr(a.String()) {
		return
	}
	o.mu.Lock()
	if o.warned == nil {
		o.warned = map[string]bool{}
	}
	first := !o.warned[name]
	o.warned[name] = true
	o.mu.Unlock()
	if first {
		e.log.Warn("pool's MCP endpoint has no authentication (mcpAuth none) and is served beyond loopback",
			"pool", name, "addr", a.String())
	}
}
