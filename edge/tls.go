package edge

import (
	"net"
	"net/http"
	"strings"
	"time"
)

// RedirectToHTTPS is the plain listener's handler once HTTPS is on (TLS
// termination is then the HTTPS listener's, in front of the Edge): app
// and pool requests get 308 to the same URL over HTTPS (httpsPort: "" for
// 443), with a request id and an access line like any request; the rest
// (unrouted paths) is served by the Edge. The redirect keeps the
// request's host only if the HTTPS listener serves it (served: a bound
// name, returned normalized); any other Host (a name Berth does not
// serve, an attacker's) is redirected to fallback, the public URL's host,
// so that the Location is never a host the client made up (an open
// redirect through Host).
func (e *Edge) RedirectToHTTPS(served func(host string) (string, bool), fallback, httpsPort string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rt := e.Route(r)
		if rt.Kind == KindDataPlane && rt.Name == "" {
			e.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		st := &state{ResponseWriter: w, edge: e, route: rt, id: newID(), status: http.StatusOK}
		defer st.access(r, start)
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host, ok := served(strings.Trim(host, "[]"))
		if !ok {
			host = fallback
		}
		if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		if httpsPort != "" {
			host += ":" + httpsPort
		}
		http.Redirect(st, r, "https://"+host+r.URL.RequestURI(), http.StatusPermanentRedirect)
	})
}
