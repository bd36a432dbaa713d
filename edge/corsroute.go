package edge

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/berth-dev/berth/edge/cors"
)

// AppCORS is implemented by an Apps that knows apps' CORS policies.
type AppCORS interface {
	// AppCORS is the app's policy, nil if it has none (then the server-wide
	// rules apply as before: the apps' domain for stdio apps, the app's own
	// for HTTP apps).
	AppCORS(name string) *cors.Policy
}

// PoolCORS is implemented by a Pool that has a CORS policy of its own.
type PoolCORS interface {
	// CORS is the pool's policy, nil if it has none (then berth up
	// --allow-origin applies).
	CORS() *cors.Policy
}

// appCORS looks an app's policy up.
func (e *Edge) appCORS(name string) *cors.Policy {
	if ac, ok := e.o.Apps.(AppCORS); ok {
		return ac.AppCORS(name)
	}
	return nil
}

// poolCORS looks a pool's policy up.
func (e *Edge) poolCORS(name string) *cors.Policy {
	if e.o.Pools == nil {
		return nil
	}
	p, ok := e.o.Pools.Pool(name)
	if !ok {
		return nil
	}
	if pc, ok := p.(PoolCORS); ok {
		return pc.CORS()
	}
	return nil
}

// checkCORS applies a route's own policy: a request from an origin the
// policy does not allow is refused (403, the MCP spec's DNS rebinding
// rule); a preflight is answered here (204, or 403 if it asks for a method
// or header the policy does not allow) and never reaches the handler; an
// allowed actual request gets its Allow-Origin and Expose-Headers if
// actual is set. done reports that the response has been written.
func checkCORS(p *cors.Policy, w http.ResponseWriter, r *http.Request, what string, actual bool) (done bool, err *Error) {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return false, nil
	}
	if !p.AllowOrigin(origin) {
		return false, &Error{Status: http.StatusForbidden, RPCCode: CodeForbidden, Message: fmt.Sprintf(
			"origin %q is not allowed by the %s's CORS policy (DNS rebinding protection)", origin, what)}
	}
	if cors.IsPreflight(r) {
		if !p.Preflight(w.Header(), r) {
			return false, &Error{Status: http.StatusForbidden, RPCCode: CodeForbidden, Message: fmt.Sprintf(
				"CORS preflight refused: method %q or headers %q are not allowed by the %s's CORS policy",
				r.Header.Get("Access-Control-Request-Method"), r.Header.Get("Access-Control-Request-Headers"), what)}
		}
		w.Header().Set("Allow", "GET, POST, DELETE, OPTIONS")
		w.WriteHeader(http.StatusNoContent)
		return true, nil
	}
	if actual {
		p.Actual(w.Header(), origin)
	}
	return false, nil
}

// corsWriter keeps an app's own Access-Control-* response headers from
// doubling the edge's (a browser refuses two Allow-Origin values): the
// policy set on the route is the one that counts.
type corsWriter struct {
	http.ResponseWriter
	p      *cors.Policy
	origin string
	wrote  bool
}

func (c *corsWriter) WriteHeader(code int) {
	if !c.wrote {
		c.wrote = true
		h := c.ResponseWriter.Header()
		for k := range h {
			if strings.HasPrefix(k, "Access-Control-") {
				delete(h, k)
			}
		}
		vary := h.Values("Vary")
		h.Del("Vary")
		for _, v := range vary {
			if v != "Origin" {
				h.Add("Vary", v)
			}
		}
		c.p.Actual(h, c.origin)
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *corsWriter) Write(b []byte) (int, error) {
	if !c.wrote {
		c.WriteHeader(http.StatusOK)
	}
	return c.ResponseWriter.Write(b)
}

// Flush passes a flush on (SSE streams).
func (c *corsWriter) Flush() {
	if !c.wrote {
		c.WriteHeader(http.StatusOK)
	}
	http.NewResponseController(c.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController and stateOf reach the edge's state.
func (c *corsWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }
