package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Options configures the agent. The zero value serves /mnt/data.
type Options struct {
	// Workspace is the directory the file API and executions use
	// (default /mnt/data).
	Workspace string
	// Private is the agent's own scratch directory (default /tmp/.berth).
	Private string
	// MaxProcs, if positive, is the RLIMIT_NPROC of everything the agent
	// runs. It must be below the sandbox's pids limit, so that the agent
	// can still act (and kill) when user code has used up its share.
	MaxProcs int
	// Token, if set, is required of every request (see requireToken): for
	// an agent that serves TCP rather than a socket only the host reaches.
	Token string
}

// Serve serves the agent API on ln until ctx is done. ready, if not nil, is
// called once the server accepts connections.
func Serve(ctx context.Context, ln net.Listener, opts Options, ready func()) error {
	if opts.Workspace == "" {
		opts.Workspace = "/mnt/data"
	}
	if opts.Private == "" {
		opts.Private = "/tmp/.berth"
	}
	if err := os.MkdirAll(opts.Private, 0o700); err != nil {
		return err
	}
	if err := os.MkdirAll(opts.Workspace, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	root, err := os.OpenRoot(opts.Workspace)
	if err != nil {
		return err
	}
	defer root.Close()

	p := newProcs()
	stop := make(chan struct{})
	defer close(stop)
	go p.reap(stop)

	x := newExecutor(p, opts.Workspace, opts.Private, opts.MaxProcs)
	defer x.close()
	x.reserve()
	ws := &workspace{root: root}
	svc := &services{x: x, m: map[string]*service{}}
	defer func() {
		for id := range svc.m {
			_ = svc.stop(id, time.Second)
		}
	}()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"ok": true, "pid": os.Getpid()})
	})
	mux.HandleFunc("POST /exec", func(w http.ResponseWriter, r *http.Request) {
		var req ExecRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeError(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		rc := http.NewResponseController(w)
		send := func(e Event) {
			_ = enc.Encode(e)
			_ = rc.Flush()
		}
		res := x.run(r.Context(), req, send)
		send(Event{Result: &res})
	})
	svc.routes(mux)
	tun := newTunnel(os.Environ())
	mux.HandleFunc("GET /tunnel", tun.tunnelRoute(x))
	go tun.serveLoopback(ctx)
	mux.HandleFunc("POST /reset", func(w http.ResponseWriter, r *http.Request) {
		x.reset()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /files", func(w http.ResponseWriter, r *http.Request) {
		list, err := ws.list(r.URL.Query().Get("path"))
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, list)
	})
	mux.HandleFunc("GET /files/content", func(w http.ResponseWriter, r *http.Request) {
		f, info, err := ws.open(r.URL.Query().Get("name"))
		if err != nil {
			writeError(w, err)
			return
		}
		defer f.Close()
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(info.Size(), 10))
		w.Header().Set("Last-Modified", info.ModTime().UTC().Format(http.TimeFormat))
		_, _ = io.Copy(w, f)
	})
	mux.HandleFunc("PUT /files/content", func(w http.ResponseWriter, r *http.Request) {
		info, err := ws.write(r.URL.Query().Get("name"), r.Body)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, info)
	})
	mux.HandleFunc("DELETE /files/content", func(w http.ResponseWriter, r *http.Request) {
		if err := ws.remove(r.URL.Query().Get("name")); err != nil {
			writeError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})

	var h http.Handler = mux
	if opts.Token != "" {
		h = requireToken(opts.Token, mux)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if ready != nil {
		ready()
	}
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Listen creates the agent's Unix socket at path, replacing a stale one.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	_ = os.Remove(path)
	return net.Listen("unix", path)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	status, code := http.StatusInternalServerError, CodeInternal
	var syntax *json.SyntaxError
	switch {
	case IsBadName(err), errors.As(err, &syntax), strings.Contains(err.Error(), "path escapes from parent"):
		// os.Root reports a symlink or ".." that leaves the workspace only as text.
		status, code = http.StatusBadRequest, CodeBadRequest
	case errors.Is(err, fs.ErrNotExist):
		status, code = http.StatusNotFound, CodeNotFound
	case errors.Is(err, fs.ErrPermission):
		status, code = http.StatusForbidden, CodeBadRequest
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		status, code = http.StatusInsufficientStorage, CodeDiskFull
	}
	msg := err.Error()
	var pe *fs.PathError
	if errors.As(err, &pe) {
		// Say what failed without echoing internal paths.
		msg = fmt.Sprintf("%s %s: %v", pe.Op, filepath.Base(pe.Path), pe.Err)
	}
	writeJSON(w, status, ErrorBody{Code: code, Message: msg})
}
