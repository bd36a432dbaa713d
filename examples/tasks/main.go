// Command tasks is an example MCP server for Berth: a task list kept in
// SQLite.
//
// It offers the tools createTask, listTasks, completeTask and deleteTask, the
// resource tasks://schema (the database's CREATE statements) and the prompt
// summarizeOpenTasks, which embeds the open tasks in a request to summarize
// them.
//
// Usage:
//
//	tasks [--transport http|stdio] [--db PATH] [--addr HOST:PORT] [--log-level LEVEL]
//	      [--stateless] [--allow-any-host]
//
// The database is at --db, or $TASKS_DB, or /data/tasks.db (a persistent
// volume in production); its directory, file and table are created when
// missing. It runs in WAL mode with a busy timeout.
//
// With --transport http (the default) the server listens on --addr, by
// default ":$PORT" with PORT defaulting to 8080, and serves MCP over
// streamable HTTP at /mcp (with sessions, unless --stateless) and a
// readiness probe at GET /healthz, which checks the database. With
// --transport stdio it speaks MCP on standard input and output. Logs go to
// standard error. SIGINT and SIGTERM shut it down gracefully.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

const (
	defaultDB   = "/data/tasks.db"
	defaultPort = "8080"
	// shutdownTimeout bounds how long in-flight HTTP requests may take to
	// finish after SIGINT or SIGTERM.
	shutdownTimeout = 10 * time.Second
	// sessionIdleTimeout closes MCP sessions that made no request for this
	// long, so that clients that vanish do not leak sessions.
	sessionIdleTimeout = 30 * time.Minute
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
	case err != nil:
		fmt.Fprintln(os.Stderr, "tasks:", err)
		os.Exit(1)
	}
}

// config is the parsed command line.
type config struct {
	transport          string
	db                 string
	addr               string
	logLevel           slog.Level
	stateless          bool
	allowNonLocalHosts bool
}

func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("tasks", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.transport, "transport", "http", "MCP transport: http (streamable HTTP at /mcp) or stdio")
	fs.StringVar(&c.db, "db", envOr(getenv, "TASKS_DB", defaultDB), "SQLite database file; $TASKS_DB sets the default")
	fs.StringVar(&c.addr, "addr", ":"+envOr(getenv, "PORT", defaultPort), "HTTP listen address; $PORT sets the default port")
	fs.TextVar(&c.logLevel, "log-level", slog.LevelInfo, "log level: debug, info, warn or error")
	fs.BoolVar(&c.stateless, "stateless", false, "serve streamable HTTP without sessions (each request stands alone)")
	fs.BoolVar(&c.allowNonLocalHosts, "allow-any-host", false,
		"accept requests that arrive on a loopback address with a non-loopback Host header (e.g. behind a local reverse proxy); disables the SDK's DNS rebinding protection")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if c.transport != "http" && c.transport != "stdio" {
		return c, fmt.Errorf("--transport must be http or stdio, not %q", c.transport)
	}
	if c.db == "" {
		return c, errors.New("--db must not be empty")
	}
	return c, nil
}

func envOr(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}

// run runs the server until ctx is cancelled (or, for stdio, the client
// hangs up).
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	c, err := parseFlags(args, getenv, stderr)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: c.logLevel}))

	store, err := OpenStore(ctx, c.db)
	if err != nil {
		return err
	}
	defer func() {
		if err := store.Close(); err != nil {
			logger.Error("closing database", "error", err)
		}
	}()
	mode, _ := store.Pragma(ctx, "journal_mode")
	logger.Info("database open", "path", c.db, "journal_mode", mode)

	server := newMCPServer(store, logger)
	switch c.transport {
	case "stdio":
		logger.Info("serving MCP on stdio")
		err := server.Run(ctx, &mcp.StdioTransport{})
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("stdio session: %w", err)
		}
		logger.Info("stdio session ended")
		return nil
	default:
		return serveHTTP(ctx, c, server, store, logger)
	}
}

// httpApp is the HTTP side: the MCP endpoint and the readiness probe.
type httpApp struct {
	server   *mcp.Server
	store    *Store
	log      *slog.Logger
	mcp      http.Handler
	inFlight atomic.Int64 // MCP requests other than GET streams
}

func newHTTPApp(server *mcp.Server, store *Store, logger *slog.Logger, stateless, allowAnyHost bool) *httpApp {
	return &httpApp{
		server: server,
		store:  store,
		log:    logger,
		mcp: mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{
			Stateless:                  stateless,
			SessionTimeout:             sessionIdleTimeout,
			Logger:                     logger.With("component", "streamable"),
			DisableLocalhostProtection: allowAnyHost,
		}),
	}
}

// Handler routes /mcp and /healthz.
func (a *httpApp) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/mcp", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet { // GETs are long-lived notification streams
			a.inFlight.Add(1)
			defer a.inFlight.Add(-1)
		}
		a.mcp.ServeHTTP(w, r)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := a.store.Ping(ctx); err != nil {
			a.log.Warn("health check failed", "error", err)
			http.Error(w, "database unavailable", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	return mux
}

// closeSessions waits (until ctx ends) for in-flight MCP requests to finish
// and then closes every MCP session, which ends their GET streams: without
// that, http.Server.Shutdown would wait for them forever.
func (a *httpApp) closeSessions(ctx context.Context) {
	for a.inFlight.Load() > 0 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	n := 0
	for ss := range a.server.Sessions() {
		ss.Close()
		n++
	}
	a.log.Info("closed MCP sessions", "count", n)
}

func serveHTTP(ctx context.Context, c config, server *mcp.Server, store *Store, logger *slog.Logger) error {
	app := newHTTPApp(server, store, logger, c.stateless, c.allowNonLocalHosts)
	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           app.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	logger.Info("listening", "addr", ln.Addr().String(), "mcp", "/mcp", "health", "/healthz")

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		app.closeSessions(sctx)
	}()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Warn("shutdown incomplete", "error", err)
		srv.Close()
	}
	<-closed
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	logger.Info("stopped")
	return nil
}
