// Package controlplane serves Berth's admin API on the control listener
// (127.0.0.1:8081 by default), protected by the admin token that "berth up"
// keeps in its data directory. The CLI is its client.
//
//	GET    /v1/healthz                      (no token)
//	GET    /v1/pools
//	POST   /v1/pools
//	GET    /v1/pools/{name}
//	PATCH  /v1/pools/{name}
//	DELETE /v1/pools/{name}
//	POST   /v1/pools/{name}/credentials
//	POST   /v1/pools/{name}/rotate-key
//	GET    /v1/apps/{name}/hostnames
//	PUT    /v1/apps/{name}/hostnames/{host}   ({"label": L}; 409 if another app has it)
//	DELETE /v1/apps/{name}/hostnames/{host}
//	POST   /v1/sources[?digest=sha256:…]   (a gzipped tar: an app's files)
//	GET    /v1/sources/{digest}
//	GET    /v1/images
//	POST   /v1/images/pull                    ({"ref": R}; NDJSON progress, then the image)
//	POST   /v1/images/prune
//	GET    /v1/registries
//	PUT    /v1/registries/{host}              ({"username": U, "password": P})
//	DELETE /v1/registries/{host}
//	GET    /v1/apps/{name}/secrets            (names and dates, never values)
//	PUT    /v1/apps/{name}/secrets/{secret}   ({"value": BASE64})
//	DELETE /v1/apps/{name}/secrets/{secret}
//	POST   /v1/apps/{name}/restart
//	GET    /v1/events, /v1/metrics/apps, /v1/pools/{name}/sessions (see observe.go)
package controlplane

import (
	"crypto/subtle"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-dev/berth/app"
	"github.com/berth-dev/berth/edge/cors"
	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/httpapi"
	"github.com/berth-dev/berth/pool"
	"github.com/berth-dev/berth/source"
)

// Options configure the handler.
type Options struct {
	Pools *pool.Manager
	// Apps, if set, adds the /v1/apps API.
	Apps *app.Manager
	// AppDomain is the domain apps are served under by host name.
	AppDomain string
	// Token is the admin token every request must carry as a bearer token.
	Token string
	// PublicURL is the base URL of the data plane, used in endpoint URLs.
	PublicURL string
	// Names, if set, is told the names each app is served under (the
	// HTTPS front door binds their certificates).
	// Events, if set, is the ring GET /v1/events reads; the API adds what
	// it changes (traffic, key rotations, pools) to it.
	Events *events.Ring
	// Metrics, if set, is the registry the gateway counts requests in,
	// for GET /v1/metrics/apps.
	Metrics prometheus.Gatherer
	Names   Names
	// Sources, if set, adds the /v1/sources API (uploads of apps' files).
	Sources *source.Store
	// Images, if set, adds the /v1/images API; Registries the
	// /v1/registries one.
	Images     *image.Store
	Registries Registries
	// ImageInUse tells prune which images to keep (nil: none).
	ImageInUse func(digest string) bool
	Version    string
	Logger     *slog.Logger
}

// Handler returns the admin API.
func Handler(o Options) http.Handler {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	c := &ctl{o: o, sampler: &sampler{started: time.Now()}}
	mux := http.NewServeMux()
	handle := func(pattern string, h httpapi.HandlerFunc) {
		mux.Handle(pattern, httpapi.Handle(o.Logger, c.auth(h)))
	}
	mux.HandleFunc("GET /v1/healthz", func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{"ok": true, "version": o.Version})
	})
	handle("GET /v1/pools", c.list)
	handle("POST /v1/pools", c.create)
	handle("GET /v1/pools/{name}", c.show)
	handle("PATCH /v1/pools/{name}", c.update)
	handle("DELETE /v1/pools/{name}", c.delete)
	handle("POST /v1/pools/{name}/credentials", c.credentials)
	handle("POST /v1/pools/{name}/rotate-key", c.rotate)
	handle("GET /v1/pools/{name}/secrets", c.listPoolSecrets)
	handle("PUT /v1/pools/{name}/secrets/{secret}", c.setPoolSecret)
	handle("DELETE /v1/pools/{name}/secrets/{secret}", c.deletePoolSecret)
	c.appRoutes(handle)
	c.hostnameRoutes(handle)
	c.observeRoutes(handle)
	c.sourceRoutes(handle)
	c.imageRoutes(handle)
	// Go's profiler, for operators chasing a slow server (token required).
	for _, p := range []struct {
		pattern string
		h       http.HandlerFunc
	}{
		{"GET /debug/pprof/", pprof.Index},
		{"GET /debug/pprof/profile", pprof.Profile},
		{"GET /debug/pprof/trace", pprof.Trace},
	} {
		handle(p.pattern, func(w http.ResponseWriter, r *http.Request) error {
			p.h(w, r)
			return nil
		})
	}
	return mux
}

type ctl struct {
	o       Options
	sampler *sampler
}

func (c *ctl) auth(h httpapi.HandlerFunc) httpapi.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		got := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		if subtle.ConstantTimeCompare([]byte(got), []byte(c.o.Token)) != 1 {
			return httpapi.Errorf(http.StatusUnauthorized, "Unauthorized", "this API needs the admin token as Authorization: Bearer TOKEN (it is in DATA_DIR/admin.token)")
		}
		return h(w, r)
	}
}

// PoolView is a pool as the API shows it.
type PoolView struct {
	pool.Config
	Memory    string     `json:"memory"`
	Disk      string     `json:"disk"`
	CreatedAt time.Time  `json:"createdAt"`
	Endpoints Endpoints  `json:"endpoints"`
	Status    pool.Stats `json:"status"`
}

// Endpoints are a pool's URLs.
type Endpoints struct {
	Pool        string `json:"pool"`
	CodeExecute string `json:"codeExecute"`
	Files       string `json:"files"`
	Sessions    string `json:"sessions"`
	MCP         string `json:"mcp,omitempty"`
}

// View renders a pool.
func View(p *pool.Pool, publicURL string) PoolView {
	cfg := p.Config()
	base := strings.TrimRight(publicURL, "/") + "/pools/" + cfg.Name
	v := PoolView{
		Config: cfg, Memory: pool.FormatBytes(cfg.MemoryBytes), Disk: pool.FormatBytes(cfg.DiskBytes), CreatedAt: p.Created().UTC(),
		Endpoints: Endpoints{Pool: base, CodeExecute: base + "/code/execute", Files: base + "/files", Sessions: base + "/sessions"},
		Status:    p.Stats(),
	}
	if cfg.MCP {
		v.Endpoints.MCP = base + "/mcp"
	}
	return v
}

func (c *ctl) list(w http.ResponseWriter, r *http.Request) error {
	pools := c.o.Pools.List()
	out := make([]PoolView, 0, len(pools))
	for _, p := range pools {
		out = append(out, View(p, c.o.PublicURL))
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"value": out})
	return nil
}

func (c *ctl) create(w http.ResponseWriter, r *http.Request) error {
	var cfg pool.Config
	if err := httpapi.DecodeJSON(w, r, 64<<10, &cfg); err != nil {
		return err
	}
	p, key, err := c.o.Pools.Create(r.Context(), cfg)
	if err != nil {
		return err
	}
	c.event(events.Event{Kind: "pool-created", Pool: cfg.Name, Message: "pool created"})
	httpapi.WriteJSON(w, http.StatusCreated, struct {
		PoolView
		APIKey string `json:"apiKey"`
	}{View(p, c.o.PublicURL), key})
	return nil
}

func (c *ctl) show(w http.ResponseWriter, r *http.Request) error {
	p, err := c.o.Pools.Get(r.PathValue("name"))
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, View(p, c.o.PublicURL))
	return nil
}

// Patch is the body of PATCH /v1/pools/{name}: fields left out keep their
// value.
type Patch struct {
	Ready           *int    `json:"readySessions"`
	Max             *int    `json:"maxSessions"`
	CooldownSeconds *int    `json:"cooldownSeconds"`
	Egress          *string `json:"egress"`
	// EgressInject, if set, replaces the pool's inject rules.
	EgressInject   *[]string `json:"egressInject"`
	MemoryBytes    *int64    `json:"memoryBytes"`
	DiskBytes      *int64    `json:"diskBytes"`
	CPU            *float64  `json:"cpu"`
	TimeoutSeconds *int      `json:"timeoutSeconds"`
	MCP            *bool     `json:"mcp"`
	MCPAuth        *string   `json:"mcpAuth"`
	Auth           *string   `json:"auth"`
	// OIDC, if set, replaces the pool's OIDC settings as a whole.
	OIDC *pool.OIDC `json:"oidc"`
	// CORS replaces the pool's CORS policy; ClearCORS removes it.
	CORS      *cors.Spec `json:"corsPolicy,omitempty"`
	ClearCORS bool       `json:"clearCorsPolicy,omitempty"`
	// Image, if set, is the pool's new image (pulled, and the warm
	// sandboxes replaced); ImageDigest, if set, what the client already
	// resolved it to. Container replaces a custom pool's container.
	Image       *string         `json:"image,omitempty"`
	ImageDigest *string         `json:"imageDigest,omitempty"`
	Container   *pool.Container `json:"container,omitempty"`
}

// Apply changes cfg.
func (pt Patch) Apply(cfg *pool.Config) {
	set(&cfg.Ready, pt.Ready)
	set(&cfg.Max, pt.Max)
	set(&cfg.CooldownSeconds, pt.CooldownSeconds)
	set(&cfg.Egress, pt.Egress)
	set(&cfg.EgressInject, pt.EgressInject)
	set(&cfg.MemoryBytes, pt.MemoryBytes)
	set(&cfg.DiskBytes, pt.DiskBytes)
	set(&cfg.CPU, pt.CPU)
	set(&cfg.TimeoutSeconds, pt.TimeoutSeconds)
	set(&cfg.MCP, pt.MCP)
	set(&cfg.MCPAuth, pt.MCPAuth)
	set(&cfg.Auth, pt.Auth)
	if pt.OIDC != nil {
		cfg.OIDC = pt.OIDC
	}
	if pt.CORS != nil {
		cfg.CORS = pt.CORS
	}
	if pt.ClearCORS {
		cfg.CORS = nil
	}
	if pt.Image != nil {
		cfg.Image, cfg.ImageDigest = *pt.Image, ""
		set(&cfg.ImageDigest, pt.ImageDigest)
	}
	if pt.Container != nil {
		cfg.Container = pt.Container
	}
}

func set[T any](dst *T, v *T) {
	if v != nil {
		*dst = *v
	}
}

func (c *ctl) update(w http.ResponseWriter, r *http.Request) error {
	var pt Patch
	if err := httpapi.DecodeJSON(w, r, 64<<10, &pt); err != nil {
		return err
	}
	p, err := c.o.Pools.Update(r.Context(), r.PathValue("name"), pt.Apply)
	if err != nil {
		return err
	}
	c.event(events.Event{Kind: "pool-updated", Pool: p.Name(), Message: "pool settings changed"})
	httpapi.WriteJSON(w, http.StatusOK, View(p, c.o.PublicURL))
	return nil
}

func (c *ctl) delete(w http.ResponseWriter, r *http.Request) error {
	if err := c.o.Pools.Delete(r.Context(), r.PathValue("name")); err != nil {
		return err
	}
	c.event(events.Event{Kind: "pool-deleted", Pool: r.PathValue("name"), Message: "pool deleted"})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (c *ctl) credentials(w http.ResponseWriter, r *http.Request) error {
	key, err := c.o.Pools.Key(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"apiKey": key})
	return nil
}

func (c *ctl) rotate(w http.ResponseWriter, r *http.Request) error {
	key, err := c.o.Pools.RotateKey(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	c.event(events.Event{Kind: "key-rotated", Pool: r.PathValue("name"), Message: "pool key rotated; the old key is refused"})
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"apiKey": key})
	return nil
}
