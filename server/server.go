// Package server assembles a Berth server: the store in the data
// directory, the sandbox runtimes, the pool manager, the public listener
// (data plane) and the token-protected control listener. "berth up" runs it.
package server

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/berth-dev/berth/app"
	"github.com/berth-dev/berth/controlplane"
	"github.com/berth-dev/berth/dashboard"
	"github.com/berth-dev/berth/dataplane"
	"github.com/berth-dev/berth/edge"
	"github.com/berth-dev/berth/edge/certs"
	"github.com/berth-dev/berth/gateway"
	"github.com/berth-dev/berth/gateway/sessionseal"
	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/internal/bodymem"
	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/listen"
	"github.com/berth-dev/berth/mcpserver"
	"github.com/berth-dev/berth/pool"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/sandbox/admit"
	"github.com/berth-dev/berth/sandbox/agentaddr"
	"github.com/berth-dev/berth/source"
	"github.com/berth-dev/berth/workload"
)

// Options configure a server. The zero value serves ./.berth on
// 127.0.0.1:8080 and 127.0.0.1:8081.
type Options struct {
	DataDir string
	// StateDir holds the sandboxes' state on this host, under a directory
	// per instance (default DefaultStateDir): the local drivers' (see
	// Runtimes), app revisions' files and uploaded sources. Its file
	// system's free space is the disk admission's default capacity.
	StateDir    string
	Listen      string
	AdminListen string
	// PublicURL is how clients reach the public listener (default
	// http://LISTEN).
	PublicURL string
	// Runtimes builds the sandbox runtimes for an instance name derived
	// from the data directory (local drivers keep their state in
	// StateDir/INSTANCE/DRIVER). Required.
	Runtimes func(instance string) (map[string]sandbox.Runtime, error)
	// DefaultPool creates the "default" pool on first start (on unless
	// NoDefaultPool).
	NoDefaultPool bool
	// Egress configures the egress proxy of pools and apps with rules.
	Egress  EgressOptions
	Version string
	Logger  *slog.Logger
	// AccessLog gets the line logged for every request (default Logger).
	// Berth up gives it a batching writer: a write per request is a
	// measurable part of a proxied request's cost.
	AccessLog *slog.Logger
	// Ready, if set, is called once both listeners accept connections.
	Ready func(*Server)
	// AppRuntime is the runtime app replicas run in (default "bwrap").
	AppRuntime string
	// AppDomain serves apps at NAME.AppDomain (default "localhost").
	AppDomain string
	// AllowedOrigins are browser origins allowed on the pools' MCP
	// endpoints besides loopback ones and PublicURL ("*" for any).
	AllowedOrigins []string
	// Admission is what the host admits of sandboxes' memory and disk
	// (zero fields: measured, with the default overcommit ratios).
	Admission admit.Options
	// MaxConnections bounds the public listener's open connections
	// (default: a quarter of the open-file limit, at most 16,384); beyond
	// it, new connections wait. The control listener has a budget of its
	// own, so it stays usable.
	MaxConnections int
	// MaxConnectionsPerClient bounds one client address's open
	// connections to the public listener (default 512); beyond it, a new
	// one is closed at once.
	MaxConnectionsPerClient int
	// IdleTimeout closes keep-alive connections idle this long, on both
	// listeners (default 2 minutes).
	IdleTimeout time.Duration
	// BodyMemory bounds the request bodies held in memory at once, server
	// wide (default bodymem.DefaultBytes); beyond it, requests get 503.
	BodyMemory int64
	// HTTPSListen, if set, serves the front door over HTTPS there too;
	// the plain listener then redirects app and pool requests to it (308)
	// and answers ACME HTTP-01 challenges. PublicURL defaults to
	// https://HTTPS_LISTEN.
	HTTPSListen string
	// TLS configures the HTTPS listener's certificates.
	TLS TLSOptions
	// MaxUploadBytes bounds an uploaded app source archive, compressed
	// (default source.DefaultMaxBytes); beyond it, 413.
	MaxUploadBytes int64
	// InsecureRegistries are registry hosts reached over plain HTTP.
	InsecureRegistries []string
	// BuiltinImages are OCI image layouts loaded into the image store at
	// start, by name: a pool's image "builtin:NAME" is the one loaded from
	// BuiltinImages[NAME].
	BuiltinImages map[string]string
	// Dashboard configures the dashboard's OIDC sign-in and the public one.
	Dashboard DashboardOptions
	// State is where pools, apps, keys and secrets live: "sqlite" (the
	// default: berth.db in DataDir) or "kube" (custom resources and
	// Secrets in the Kubernetes API, shared by replicas; see Kube).
	State string
	Kube  KubeOptions
}

// Connection limits of the control listener, apart from the public one's.
const (
	adminMaxConnections          = 1024
	adminMaxConnectionsPerClient = 256
	defaultConnectionsPerClient  = 512
	readHeaderTimeout            = 10 * time.Second
)

// Files in the data directory.
const (
	TokenFile  = "admin.token"
	InfoFile   = "server.json"
	lockFile   = "berth.lock"
	defaultDir = ".berth"
)

// Info is what server.json records for the CLI.
type Info struct {
	PID       int    `json:"pid"`
	AdminURL  string `json:"adminURL"`
	PublicURL string `json:"publicURL"`
	// PlainURL is the plain HTTP listener's URL when HTTPS is on (it
	// redirects app and pool requests to PublicURL's scheme).
	PlainURL string `json:"plainURL,omitempty"`
	Version  string `json:"version"`
}

// Server is a running server.
type Server struct {
	Info     Info
	Pools    *pool.Manager
	Images   *image.Store
	DataDir  string
	Instance string
}

// DefaultStateDir is Options.StateDir's default.
const DefaultStateDir = "/var/lib/berth"

// DefaultDataDir is $BERTH_DATA_DIR or ./.berth.
func DefaultDataDir() string {
	if d := os.Getenv("BERTH_DATA_DIR"); d != "" {
		return d
	}
	return defaultDir
}

// Run serves until ctx is done, then drains and removes every sandbox.
func Run(ctx context.Context, o Options) error {
	files := o.setDefaults()
	log := o.Logger
	if err := o.Dashboard.check(o.HTTPSListen); err != nil {
		return err
	}
	dir, err := filepath.Abs(o.DataDir)
	if err != nil {
		return err
	}
	if c := o.Dashboard.OIDC; c != nil && c.HTTPClient == nil {
		oc := *c
		oc.HTTPClient = oidcClient(dir)
		o.Dashboard.OIDC = &oc
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	unlock, err := lock(filepath.Join(dir, lockFile))
	if err != nil {
		return err
	}
	defer unlock()

	instance := Instance(dir)
	state := filepath.Join(cmp.Or(o.StateDir, DefaultStateDir), instance)
	runtimes, err := o.Runtimes(instance)
	if err != nil {
		return err
	}
	// Whatever an earlier run left behind goes before anything starts.
	for name, rt := range runtimes {
		if err := rt.Cleanup(ctx); err != nil {
			return fmt.Errorf("clean up after earlier runs (%s): %w", name, err)
		}
	}

	// Measured once the cleanup has freed what an earlier run held.
	budget, err := admitAll(o.Admission, state, runtimes, log)
	if err != nil {
		return err
	}
	poolCapacity, appCapacity := capacities(budget)
	// App-to-app calls and workload identity, through each sandbox's agent.
	tunnels := workload.New(workload.Options{Logger: log})
	for name, rt := range runtimes {
		runtimes[name] = tunnels.Runtime(rt)
	}

	st, ks, err := openState(ctx, o, dir, log)
	if err != nil {
		return err
	}
	defer st.Close()
	useLogins(runtimes, st)
	token, err := adminToken(filepath.Join(dir, TokenFile))
	if err != nil {
		return err
	}
	if token, err = sharedAdminToken(ctx, ks, token, filepath.Join(dir, TokenFile)); err != nil {
		return err
	}

	// Not root, no local sandbox runs the images' roots (berth up
	// --runtime kube): they keep Berth's own user.
	images, err := image.Open(filepath.Join(dir, "images"), image.Options{IDShift: sandbox.ImageIDShift, Insecure: o.InsecureRegistries,
		Credentials: st, Logger: log, KeepOwner: os.Geteuid() != 0})
	if err != nil {
		return err
	}

	egr, err := newEgress(o.Egress, dir, st, log)
	if err != nil {
		return err
	}
	defer egr.Close()
	evs := events.New(0)
	// Of several Berth replicas (in Pods), one at a time expires idle
	// sessions and scales apps down; on one machine, this one. (This
	// assumes the replicas share their sandboxes, as with the kube
	// driver: a replica with sandboxes of its own must reap its own.)
	leadCtx, stopLeading := context.WithCancel(ctx)
	cluster := poolCluster(runtimes, o.State)
	lead, leadDone, err := elect(leadCtx, o, cluster != nil, instance, log)
	defer func() { stopLeading(); <-leadDone }() // a leader releases the Lease
	if err != nil {
		return err
	}
	pools := pool.NewManager(pool.Options{Store: st, Runtimes: runtimes, Logger: log, Capacity: poolCapacity, Events: evs, Egress: egr,
		Images: images, Resolve: builtinImages(images, o.BuiltinImages), Leader: lead, Cluster: cluster})
	if err := pools.Load(ctx); err != nil {
		return err
	}
	defer pools.Close()

	pubLn, admLn, err := listeners(o)
	if err != nil {
		return err
	}
	// Shutdown closes them; this is for the returns before it.
	defer pubLn.Close()
	defer admLn.Close()
	var cm *certs.Manager
	var httpsLn net.Listener
	if o.HTTPSListen != "" {
		if cm, httpsLn, err = startHTTPS(o, dir, pubLn); err != nil {
			return err
		}
		defer cm.Close()
		defer httpsLn.Close()
	}
	publicURL := o.PublicURL
	switch {
	case publicURL != "":
	case httpsLn != nil:
		publicURL = "https://" + httpsLn.Addr().String()
	default:
		publicURL = "http://" + pubLn.Addr().String()
	}
	bodies := bodymem.New(o.BodyMemory)
	issuer, err := newIssuer(dir, publicURL)
	if err != nil {
		return err
	}
	info := Info{PID: os.Getpid(), AdminURL: "http://" + admLn.Addr().String(), PublicURL: publicURL, Version: o.Version}
	if httpsLn != nil {
		info.PlainURL = "http://" + pubLn.Addr().String()
	}

	if !o.NoDefaultPool {
		var ce *pool.ConfigError
		if err := ensureDefaultPool(ctx, st, pools, o.BuiltinImages); errors.As(err, &ce) {
			// The host cannot back it (too little memory or disk): serve
			// without it, and try again at the next start.
			log.Error("the default pool was not created", "err", err)
		} else if err != nil {
			return err
		}
	}

	mcpHandler, err := mcpserver.New(mcpserver.Options{Pools: pools, Logger: log, Version: o.Version, Bodies: bodies})
	if err != nil {
		return err
	}

	appRuntime := runtimes[o.AppRuntime]
	if appRuntime == nil {
		return fmt.Errorf("app runtime %q is not available", o.AppRuntime)
	}
	sources, err := source.New(source.Options{Dir: filepath.Join(state, "sources"), MaxBytes: o.MaxUploadBytes})
	if err != nil {
		return err
	}
	shared, noBusyMarks, stopShared, err := sharedApps(ctx, o, appRuntime)
	if err != nil {
		return err
	}
	defer stopShared()
	apps, err := app.NewManager(ctx, app.Options{Store: st, Runtime: appRuntime, StateDir: filepath.Join(state, "apps"), Logger: log, Capacity: appCapacity, Sources: sources, Events: evs, Egress: egr, Images: images, RegistryLogins: st, Leader: lead,
		Shared: shared, NoBusyMarks: noBusyMarks})
	if err != nil {
		return err
	}
	defer apps.Close()
	watchCtx, stopWatch := context.WithCancel(ctx)
	waitWatch := watchState(watchCtx, ks, pools, apps, log)
	defer waitWatch()
	defer stopWatch()
	metrics := prometheus.NewRegistry()
	// Every Berth replica with this master key opens the MCP session ids
	// any of them sealed, and reaches the replica behind them.
	sealKey, err := sessionSealKey(ctx, st, ks)
	if err != nil {
		return err
	}
	sessions, err := sessionseal.New(sealKey)
	if err != nil {
		return err
	}
	gw := gateway.New(gateway.Options{Apps: apps, Bodies: bodies, Registerer: metrics, Logger: log,
		Sessions: sessions, Remote: agentaddr.DialPort})
	defer gw.Close()
	front, err := edge.New(edge.Options{
		AppDomain: o.AppDomain, PublicURL: publicURL, AllowedOrigins: o.AllowedOrigins,
		Apps: gw, Hosts: apps, Pools: edgePools(pools),
		PoolMCP:   mcpHandler,
		DataPlane: dataplane.Custom(dataplane.Options{Pools: pools, Logger: log}, dataplane.Handler(dataplane.Options{Pools: pools, Logger: log, Bodies: bodies, Context: ctx})),
		Logger:    log, AccessLog: o.AccessLog,
		Issuer: issuer.Handler(), OIDCClient: oidcClient(dir),
	})
	if err != nil {
		return err
	}
	tunnels.SetFront(front, issuer)
	srvs, lns := []*http.Server{newHTTPServer(front, o.IdleTimeout, log)}, []net.Listener{pubLn}
	var names controlplane.Names
	if cm != nil {
		srvs[0].Handler = listen.Guard(cm.HTTPChallengeHandler(front.RedirectToHTTPS(cm.Serves, publicHost(publicURL), httpsURLPort(o.PublicURL, httpsLn.Addr()))))
		srvs, lns = append(srvs, newHTTPServer(front, o.IdleTimeout, log)), append(lns, httpsLn)
		names = bindNames(ctx, cm, o, publicURL, apps)
	}
	admin := http.NewServeMux()
	admin.Handle("GET /metrics", promhttp.HandlerFor(metrics, promhttp.HandlerOpts{}))
	api := controlplane.Handler(controlplane.Options{
		Pools: pools, Apps: apps, Token: token, PublicURL: publicURL, AppDomain: o.AppDomain, Version: o.Version, Logger: log, Names: names,
		Sources: sources, Images: images, Registries: st,
		Events: evs, Metrics: metrics,
		// Images a revision or a pool runs are kept.
		ImageInUse: func(d string) bool { return apps.ImageInUse(d) || pools.ImageDigests()[d] },
	})
	admin.Handle("/", api)
	// The dashboard: a client of the control API and of the front door.
	admin.Handle(dashboard.Prefix, dashboard.Handler(dashboard.Options{API: api, DataPlane: front, PublicURL: publicURL, Logger: log,
		OIDC: o.Dashboard.OIDC, AdminToken: token}))
	if o.Dashboard.Public && cm != nil {
		// On the HTTPS listener too, at the public URL's host, OIDC only.
		srvs[1].Handler = listen.Guard(dashboardOn(publicHost(publicURL), accessLog(o.AccessLog, dashboard.Handler(dashboard.Options{API: api, DataPlane: front,
			PublicURL: publicURL, Logger: log, OIDC: o.Dashboard.OIDC, AdminToken: token, OIDCOnly: true})), front))
	}
	admin.Handle("GET /ui", http.RedirectHandler(dashboard.Prefix, http.StatusMovedPermanently))
	adm := newHTTPServer(accessLog(o.AccessLog, admin), o.IdleTimeout, log)
	if !isLoopback(pubLn.Addr()) {
		log.Warn("the public listener is reachable beyond this machine; pools are protected by their API keys", "addr", pubLn.Addr().String())
	}
	for _, p := range pools.List() {
		if c := p.Config(); c.MCP && c.MCPAuth == pool.MCPAuthNone && !isLoopback(pubLn.Addr()) {
			log.Warn("pool's MCP endpoint has no authentication and the server listens beyond loopback", "pool", c.Name)
		}
	}

	b, _ := json.MarshalIndent(info, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, InfoFile), b, 0o600); err != nil {
		return err
	}
	defer os.Remove(filepath.Join(dir, InfoFile))

	serveErr := serve(ctx, log, append(srvs, adm), append(lns, admLn), func() {
		log.Info("berth is up", "public", publicURL, "plain", pubLn.Addr().String(), "admin", info.AdminURL, "dataDir", dir, "runtimes", pools.RuntimeNames(),
			"openFiles", files, "maxConnections", o.MaxConnections, "maxConnectionsPerClient", o.MaxConnectionsPerClient)
		if o.Ready != nil {
			o.Ready(&Server{Info: info, Pools: pools, Images: images, DataDir: dir, Instance: instance})
		}
	})
	stopWatch()
	waitWatch()
	log.Info("removing sandboxes")
	gw.Close()
	apps.Close()
	pools.Close()
	for _, rt := range runtimes {
		_ = rt.Cleanup(context.Background())
	}
	log.Info("stopped")
	return serveErr
}

// Instance names the server that uses an (absolute) data directory, so that
// servers on one host keep their sandboxes, cgroups and namespaces apart.
func Instance(absDataDir string) string {
	sum := sha256.Sum256([]byte(absDataDir))
	return hex.EncodeToString(sum[:4])
}

// ensureDefaultPool creates the "default" pool on first start: a shell
// pool, on the built-in shell image if the server has one.
func ensureDefaultPool(ctx context.Context, st state, pools *pool.Manager, builtins map[string]string) error {
	done, err := st.Meta(ctx, "defaultPoolCreated")
	if err != nil || done != "" {
		return err
	}
	if _, err := pools.Get("default"); err != nil {
		cfg := pool.Config{Name: "default", Type: pool.TypeShell, MCP: true}
		if builtins["shell"] != "" {
			cfg.Image = pool.BuiltinPrefix + "shell"
		}
		if _, _, err := pools.Create(ctx, cfg); err != nil && !errors.Is(err, pool.ErrPoolExists) {
			return fmt.Errorf("create the default pool: %w", err)
		}
	}
	return st.SetMeta(ctx, "defaultPoolCreated", time.Now().UTC().Format(time.RFC3339))
}

func adminToken(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	tok := "berth_admin_" + hex.EncodeToString(b)
	return tok, os.WriteFile(path, []byte(tok+"\n"), 0o600)
}

// lock takes an exclusive lock on the data directory, so two servers never
// share (and clean up) the same state.
func lock(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("another berth server is using %s", filepath.Dir(path))
	}
	return func() { f.Close() }, nil
}

// admitAll makes one budget for every sandbox, of pools and apps alike,
// and wraps each runtime so that its sandboxes hold their share of it; it
// returns nil if no runtime runs sandboxes on this host.
func admitAll(ao admit.Options, state string, runtimes map[string]sandbox.Runtime, log *slog.Logger) (*admit.Budget, error) {
	if ao.DiskPath == "" {
		ao.DiskPath = state
	}
	budget, err := admit.New(ao)
	if err != nil {
		return nil, fmt.Errorf("sandbox admission: %w", err)
	}
	local := false
	for name, rt := range runtimes {
		if c, ok := rt.(clusterAdmitted); ok && c.AdmitsItself() {
			continue
		}
		local = true
		runtimes[name] = budget.Runtime(rt, sandbox.Limits{MemoryBytes: pool.DefaultMemory, DiskBytes: pool.DefaultDisk})
	}
	if !local {
		log.Info("sandboxes are admitted by the cluster (its scheduler and the namespace's ResourceQuota), not within this host's capacity")
		return nil, nil
	}
	log.Info("sandboxes are admitted within the host's capacity", "budget", budget.String())
	return budget, nil
}

// clusterAdmitted is a runtime whose sandboxes run elsewhere (Pods on a
// cluster, package sandbox/kube), which decides itself what fits: the
// host's budget does not apply to them.
type clusterAdmitted interface{ AdmitsItself() bool }

// capacities are the budget as pools and apps take it (nil interfaces
// when the cluster admits the sandboxes).
func capacities(b *admit.Budget) (pool.Capacity, app.Capacity) {
	if b == nil {
		return nil, nil
	}
	return b, b
}

// serve serves each server on its listener, calls up once all are
// serving, and when ctx is done (or a server fails) drains them (15 s) and
// returns the error of the server that failed, if any.
func serve(ctx context.Context, log *slog.Logger, srvs []*http.Server, lns []net.Listener, up func()) error {
	errc := make(chan error, len(srvs))
	var wg sync.WaitGroup
	for i, srv := range srvs {
		wg.Go(func() {
			if err := srv.Serve(lns[i]); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		})
	}
	up()
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	log.Info("shutting down: draining requests")
	shutCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for _, srv := range srvs {
		_ = srv.Shutdown(shutCtx)
	}
	wg.Wait()
	return serveErr
}

// listeners opens the public and control listeners, each with its own
// connection budget, so that idle connections cannot take every file
// descriptor, and one client address only a share of the public one.
func listeners(o Options) (pub, adm net.Listener, err error) {
	pub, err = net.Listen("tcp", o.Listen)
	if err != nil {
		return nil, nil, fmt.Errorf("public listener: %w", err)
	}
	adm, err = net.Listen("tcp", o.AdminListen)
	if err != nil {
		pub.Close()
		return nil, nil, fmt.Errorf("control listener: %w", err)
	}
	pub = listen.Limit(pub, listen.Options{MaxConns: o.MaxConnections, MaxConnsPerClient: o.MaxConnectionsPerClient})
	adm = listen.Limit(adm, listen.Options{MaxConns: adminMaxConnections, MaxConnsPerClient: adminMaxConnectionsPerClient})
	return pub, adm, nil
}

// newHTTPServer serves h with the guards both listeners share: request
// smuggling (listen.Guard), header and idle timeouts.
func newHTTPServer(h http.Handler, idle time.Duration, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           listen.Guard(h),
		ConnContext:       listen.ConnContext,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idle,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// setDefaults fills the options left zero. It raises the soft limit of
// open files, from which the public listener's connection budget follows,
// and returns that limit.
func (o *Options) setDefaults() (files uint64) {
	if o.DataDir == "" {
		o.DataDir = DefaultDataDir()
	}
	if o.Listen == "" {
		o.Listen = "127.0.0.1:8080"
	}
	if o.AdminListen == "" {
		o.AdminListen = "127.0.0.1:8081"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.AccessLog == nil {
		o.AccessLog = o.Logger
	}
	if o.AppRuntime == "" {
		o.AppRuntime = "bwrap"
	}
	if o.AppDomain == "" {
		o.AppDomain = "localhost"
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 2 * time.Minute
	}
	if o.MaxConnectionsPerClient <= 0 {
		o.MaxConnectionsPerClient = defaultConnectionsPerClient
	}
	files = raiseFileLimit()
	if o.MaxConnections <= 0 {
		o.MaxConnections = int(min(max(files/4, 64), 16384))
	}
	return files
}

// raiseFileLimit raises the soft limit of open files to the hard one (the
// Go runtime does so too, since 1.19; this keeps it explicit) and returns
// the limit in force.
func raiseFileLimit() uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 1024
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l)
	}
	return l.Cur
}

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// edgePools is the pool manager as the front door sees it.
func edgePools(pools *pool.Manager) edge.Pools {
	return edge.PoolsFunc(func(name string) (edge.Pool, bool) {
		if p, err := pools.Get(name); err == nil {
			return edgePool{p}, true
		}
		return nil, false
	})
}

// edgePool is a pool as the front door sees it.
type edgePool struct{ *pool.Pool }

// Credentials says what the pool accepts: its key, and OIDC tokens.
func (p edgePool) Credentials() (bool, *edge.OIDCSettings) {
	key, o := p.Pool.Credentials()
	if o == nil {
		return key, nil
	}
	return key, &edge.OIDCSettings{Issuer: o.Issuer, Audience: o.Audience, Scopes: o.Scopes, AllowedClients: o.AllowedClients}
}

// accessLog logs one line per request of the control listener (the
// public listener's come from its edge).
func accessLog(log *slog.Logger, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(rec, r)
		log.Info("request", "method", r.Method, "path", r.URL.Path, "status", rec.status,
			"bytes", rec.bytes, "duration", time.Since(start).Round(time.Microsecond), "remote", r.RemoteAddr)
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(p []byte) (int, error) {
	n, err := s.ResponseWriter.Write(p)
	s.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer (Flush).
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
