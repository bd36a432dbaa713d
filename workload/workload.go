// Package workload is the host's side of the app-to-app tunnel and of
// workload identity: what code inside a sandbox reaches at
// http://NAME, http://NAME.internal and $IDENTITY_ENDPOINT.
//
// Runtime wraps a sandbox runtime: when a sandbox that runs for an app or
// a pool (sandbox.Spec.Owner) has started, it opens the tunnel through the
// sandbox's agent (agent.Client.Tunnel) and serves HTTP/2 on it for as long
// as the sandbox lives. Who is calling is known by the connection a request
// arrives on, which the host opened through that sandbox's own socket:
// nothing a request carries (Host, headers, path, query) can change it.
//
// A request for an app name is passed to the front door's handler with its
// context marked (edge.WithCaller): the edge routes it by its Host, and
// authentication, affinity, metrics and access lines apply as for any
// caller; apps with internal ingress answer it. A request for the
// agent's own listener (agent.TunnelAddr) is for the identity endpoint,
// served here: an app's replicas get tokens for their app (sub
// "app:NAME"), with the IDENTITY_HEADER the host gave that sandbox's
// agent; pool sessions get no identity (their code is whoever holds the
// pool's key, not a workload of the platform's).
package workload

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/edge"
	"github.com/berth-dev/berth/identity"
	"github.com/berth-dev/berth/sandbox"
)

// APIVersion is the identity endpoint's api-version (Container Apps').
const APIVersion = "2019-08-01"

// Options configure Tunnels.
type Options struct {
	Logger *slog.Logger
}

// Tunnels serves the tunnels of every sandbox of the runtimes it wraps.
type Tunnels struct {
	o    Options
	ends atomic.Pointer[ends]
	// tokens remembers recent tokens by subject and audience: a sandbox
	// that asks in a loop costs the host a map lookup, not a signature.
	tokensMu sync.Mutex
	tokens   map[string]issued
}

// issued is a token handed out, with its expiry and when it was signed.
type issued struct {
	tok       string
	exp, when time.Time
}

// Token reuse: a token is handed out again for tokenReuse after it was
// signed (it stays valid far longer); at most maxTokens are remembered.
const (
	tokenReuse = 5 * time.Minute
	maxTokens  = 10_000
)

// ends are where tunnelled requests go.
type ends struct {
	front  http.Handler
	issuer *identity.Issuer
}

// New makes Tunnels; SetFront gives it the front door's handler.
func New(o Options) *Tunnels {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Tunnels{o: o}
}

// SetFront sets the handler app calls go to (the edge) and the issuer of
// app tokens (nil: none). Until then, both get 503.
func (t *Tunnels) SetFront(h http.Handler, iss *identity.Issuer) {
	t.ends.Store(&ends{front: h, issuer: iss})
}

// Runtime wraps rt: its sandboxes with an owner get a tunnel.
func (t *Tunnels) Runtime(rt sandbox.Runtime) sandbox.Runtime { return &runtime{Runtime: rt, t: t} }

type runtime struct {
	sandbox.Runtime
	t *Tunnels
}

// Unwrap returns the wrapped runtime (see sandbox.Unwrap).
func (r *runtime) Unwrap() sandbox.Runtime { return r.Runtime }

// Start starts the sandbox and opens its tunnel before anything runs in
// it, so that what the agent starts has the identity variables.
func (r *runtime) Start(ctx context.Context, spec sandbox.Spec) (sandbox.Sandbox, error) {
	sb, err := r.Runtime.Start(ctx, spec)
	if err != nil || spec.Owner.Kind == "" {
		return sb, err
	}
	c := edge.Caller{Kind: spec.Owner.Kind, Name: spec.Owner.Name}
	var header string
	if c.Kind == "app" {
		b := make([]byte, 24)
		_, _ = rand.Read(b)
		header = hex.EncodeToString(b)
	}
	conn, err := sb.Agent().Tunnel(ctx, header)
	if err != nil {
		_ = sb.Destroy(context.Background())
		return nil, fmt.Errorf("open the sandbox's app-to-app tunnel: %w", err)
	}
	go r.t.serve(sb, conn, r.t.handler(c, header), header)
	return sb, nil
}

// serve serves the tunnel until the sandbox is gone, opening it again if
// the connection drops while the sandbox lives.
func (t *Tunnels) serve(sb sandbox.Sandbox, conn net.Conn, h http.Handler, header string) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-sb.Done()
		cancel()
	}()
	for {
		serveConn(ctx, conn, h)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		var err error
		if conn, err = sb.Agent().Tunnel(ctx, header); err != nil {
			t.o.Logger.Debug("reopen a sandbox's tunnel", "sandbox", sb.ID(), "err", err)
			return
		}
	}
}

// serveConn serves HTTP/2 (prior knowledge: the agent is the client) on
// conn until it closes or ctx is done.
func serveConn(ctx context.Context, conn net.Conn, h http.Handler) {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	closed := make(chan struct{})
	var once sync.Once
	srv := &http.Server{
		Handler: h, Protocols: &p, // no idle timeout: the tunnel lives with its sandbox
		HTTP2:       &http.HTTP2Config{MaxConcurrentStreams: 256},
		BaseContext: func(net.Listener) context.Context { return ctx },
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateClosed || s == http.StateHijacked {
				once.Do(func() { close(closed) })
			}
		},
	}
	ln := &oneConn{conn: conn, done: make(chan struct{})}
	go func() { _ = srv.Serve(ln) }()
	select {
	case <-closed:
	case <-ctx.Done():
	}
	_ = srv.Close()
}

// oneConn is a listener that accepts conn, then nothing until closed.
type oneConn struct {
	mu   sync.Mutex
	conn net.Conn
	done chan struct{}
	once sync.Once
}

func (l *oneConn) Accept() (net.Conn, error) {
	l.mu.Lock()
	c := l.conn
	l.conn = nil
	l.mu.Unlock()
	if c != nil {
		return c, nil
	}
	<-l.done
	return nil, net.ErrClosed
}

func (l *oneConn) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *oneConn) Addr() net.Addr { return tunnelAddr{} }

type tunnelAddr struct{}

func (tunnelAddr) Network() string { return "tunnel" }
func (tunnelAddr) String() string  { return "tunnel" }

// handler serves one sandbox's tunnel; c is who it runs for.
func (t *Tunnels) handler(c edge.Caller, header string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if host := strings.ToLower(r.Host); host == agent.TunnelAddr || strings.HasPrefix(host, "localhost:") {
			t.serveIdentity(w, r, c, header)
			return
		}
		e := t.ends.Load()
		if e == nil {
			http.Error(w, "berth is starting", http.StatusServiceUnavailable)
			return
		}
		r = r.WithContext(edge.WithCaller(r.Context(), c))
		r.RemoteAddr = c.String()
		e.front.ServeHTTP(w, r)
	})
}

// token signs a token for sub and aud, or hands out the one signed for
// them less than tokenReuse ago.
func (t *Tunnels) token(iss *identity.Issuer, sub, aud string) (string, time.Time, error) {
	key := sub + "\x00" + aud
	now := time.Now()
	t.tokensMu.Lock()
	it, ok := t.tokens[key]
	t.tokensMu.Unlock()
	if ok && now.Sub(it.when) < tokenReuse {
		return it.tok, it.exp, nil
	}
	tok, exp, err := iss.Token(sub, aud)
	if err != nil {
		return "", time.Time{}, err
	}
	t.tokensMu.Lock()
	if t.tokens == nil || len(t.tokens) >= maxTokens {
		t.tokens = map[string]issued{}
	}
	t.tokens[key] = issued{tok: tok, exp: exp, when: now}
	t.tokensMu.Unlock()
	return tok, exp, nil
}

// tokenResponse is the identity endpoint's answer (Container Apps').
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	ExpiresOn   string `json:"expires_on"`
	Resource    string `json:"resource"`
	TokenType   string `json:"token_type"`
	ClientID    string `json:"client_id"`
}

// serveIdentity answers GET /msi/token?resource=AUD&api-version=2019-08-01
// with X-IDENTITY-HEADER, for the app c alone.
func (t *Tunnels) serveIdentity(w http.ResponseWriter, r *http.Request, c edge.Caller, header string) {
	fail := func(status int, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]any{"statusCode": status, "message": msg})
	}
	switch {
	case r.URL.Path != agent.IdentityPath:
		fail(http.StatusNotFound, "the identity endpoint is "+agent.IdentityPath)
		return
	case r.Method != http.MethodGet:
		fail(http.StatusMethodNotAllowed, "use GET")
		return
	case header == "":
		fail(http.StatusNotFound, fmt.Sprintf("%s has no workload identity (apps have one; pool sessions do not)", c))
		return
	case t.ends.Load() == nil || t.ends.Load().issuer == nil:
		fail(http.StatusServiceUnavailable, "the identity issuer is not ready")
		return
	case subtle.ConstantTimeCompare([]byte(r.Header.Get("X-Identity-Header")), []byte(header)) != 1:
		fail(http.StatusUnauthorized, "missing or wrong X-IDENTITY-HEADER: send $IDENTITY_HEADER")
		return
	}
	q := r.URL.Query()
	res := q.Get("resource")
	switch {
	case q.Get("api-version") != APIVersion:
		fail(http.StatusBadRequest, "api-version must be "+APIVersion)
		return
	case res == "" || len(res) > 512:
		fail(http.StatusBadRequest, "resource (the audience of the token, 1-512 characters) is required")
		return
	case q.Has("client_id") || q.Has("principal_id") || q.Has("mi_res_id") || q.Has("object_id"):
		fail(http.StatusBadRequest, "user-assigned identities are not supported: an app has its own identity only")
		return
	}
	sub := c.String()
	tok, exp, err := t.token(t.ends.Load().issuer, sub, res)
	if err != nil {
		t.o.Logger.Error("sign a workload token", "caller", sub, "err", err)
		fail(http.StatusInternalServerError, "the token could not be signed")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(tokenResponse{
		AccessToken: tok, ExpiresOn: strconv.FormatInt(exp.Unix(), 10), Resource: res, TokenType: "Bearer", ClientID: sub,
	})
}
