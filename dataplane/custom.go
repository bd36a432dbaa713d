package dataplane

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"strings"

	"github.com/berth-dev/berth/internal/httpapi"
	"github.com/berth-dev/berth/pool"
)

// Custom serves the requests to custom pools, as Azure's custom container
// sessions: /pools/{pool}/PATH?identifier=ID reaches the container of
// session ID (started, or taken warm, on its first request) at PATH, with
// the rest of the query; every other request goes to next. The response
// streams back as the container writes it.
//
// The pool's credentials (x-ms-apikey, Authorization), which the front
// door has checked, never reach the container, and neither does the
// identifier parameter.
func Custom(o Options, next http.Handler) http.Handler {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	c := &custom{pools: o.Pools, log: o.Logger}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, tail, ok := c.pool(r)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		if err := c.serve(w, r, p, tail); err != nil {
			httpapi.WriteError(w, r, c.log, err)
		}
	})
}

type custom struct {
	pools *pool.Manager
	log   *slog.Logger
}

// pool finds the custom pool a request is for, and the path that follows
// its name.
func (c *custom) pool(r *http.Request) (*pool.Pool, string, bool) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/pools/")
	if !ok {
		return nil, "", false
	}
	name, tail, _ := strings.Cut(rest, "/")
	p, err := c.pools.Get(name)
	if err != nil || p.Config().Type != pool.TypeCustom {
		return nil, "", false
	}
	return p, "/" + tail, true
}

func (c *custom) serve(w http.ResponseWriter, r *http.Request, p *pool.Pool, path string) error {
	q := r.URL.Query()
	id := q.Get("identifier")
	if id == "" {
		return httpapi.Errorf(http.StatusBadRequest, "MissingIdentifier", "the identifier query parameter is required (?identifier=SESSION_ID): each identifier has a container of its own")
	}
	s, err := p.Session(r.Context(), id)
	if err != nil {
		return err
	}
	defer s.Begin()()
	q.Del("identifier")
	var proxyErr error
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", "session"
			pr.Out.URL.Path, pr.Out.URL.RawPath = path, ""
			pr.Out.URL.RawQuery = q.Encode()
			pr.Out.Host = r.Host
			pr.Out.Header.Del("X-Ms-Apikey")
			pr.Out.Header.Del("Authorization")
			pr.SetXForwarded()
		},
		Transport:     s.Transport(),
		FlushInterval: -1, // stream: server-sent events, chunked answers
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			proxyErr = err
		},
	}
	rp.ServeHTTP(w, r)
	if proxyErr == nil {
		return nil
	}
	if errors.Is(proxyErr, r.Context().Err()) && r.Context().Err() != nil {
		return nil // the client left
	}
	if err := s.ProxyError(proxyErr); !errors.Is(err, proxyErr) {
		return err
	}
	c.log.Warn("custom session: the container did not answer", "pool", p.Name(), "session", id, "err", proxyErr)
	return httpapi.Errorf(http.StatusBadGateway, "ContainerUnreachable", fmt.Sprintf("session %s: its container did not answer on port %d", id, p.Config().Container.TargetPort))
}
