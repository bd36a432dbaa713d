package pool

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/edge/cors"
	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/store"
)

// identifierRE is Azure's rule for session identifiers (the data-plane
// API reference, 2024-10-02-preview on): 4 to 128 of letters, digits and
// the ASCII punctuation it lists. Identifiers only key the session map and
// appear in messages (quoted); sandbox IDs are the pool's name and random
// hex, never derived from them. (Compiled on first use: the berth binary
// is also the sandbox agent, whose start-up time counts.)
var identifierRE = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile("^[a-zA-Z0-9_|}{\\[\\]:\";'<>?/.,@#$%^&*()\\-+=!~`]{4,128}$")
})

// ValidIdentifier reports whether id is an acceptable session identifier.
func ValidIdentifier(id string) error {
	if !identifierRE().MatchString(id) {
		return fmt.Errorf("%w: identifiers are 4-128 characters of letters, digits and _ | { } [ ] : \" ; ' < > ? / . , @ # $ %% ^ & * ( ) - + = ! ~ `", ErrBadIdentifier)
	}
	return nil
}

// Pool keeps warm sandboxes and maps session identifiers to sandboxes.
type Pool struct {
	rt     sandbox.Runtime
	log    *slog.Logger
	events *events.Ring
	// egress makes the proxies of pools with egress rules (nil: such
	// pools cannot start sandboxes).
	egress EgressProxies

	cfg atomic.Pointer[Config]
	// img is the image of cfg.ImageDigest (nil: the host's /usr).
	img     atomic.Pointer[image.Image]
	keyHash atomic.Pointer[[32]byte]
	cors    atomic.Pointer[cors.Policy]
	// unusable, if set, says why the pool's settings cannot run on this
	// host: it starts no sandbox until an update clears it.
	unusable atomic.Pointer[error]
	// freed, if set, signals that the host's capacity has room again.
	freed   func() <-chan struct{}
	created time.Time

	// leader, if set, says whether this replica expires idle sessions.
	leader Leader
	// cluster, if set, holds the pool's sandboxes, shared by the Berth
	// replicas (cluster.go); claims are the pool's claims in it.
	cluster Cluster
	claims  Claims

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the pool's goroutines and background destroys
	refill chan struct{}

	mu       sync.Mutex
	sessions map[string]*Session
	warm     []warmSandbox
	starting int
	closed   bool
}

func newPool(cfg Config, img *image.Image, keyHash [32]byte, created time.Time, rt sandbox.Runtime, log *slog.Logger, freed func() <-chan struct{}, egr EgressProxies, lead Leader, cl Cluster) *Pool {
	ctx, cancel := context.WithCancel(context.Background())
	p := &Pool{
		rt: rt, log: log.With("pool", cfg.Name), created: created, freed: freed, egress: egr, leader: lead,
		ctx: ctx, cancel: cancel, refill: make(chan struct{}, 1),
		sessions: map[string]*Session{},
	}
	p.cfg.Store(&cfg)
	p.img.Store(img)
	p.cors.Store(cors.CompileStored(cfg.CORS, p.log))
	p.keyHash.Store(&keyHash)
	p.wg.Add(2)
	if cl != nil {
		p.cluster, p.claims = cl, cl.Claims(cfg.Name)
		go p.keepWarmCluster()
		go p.reapCluster()
		return p
	}
	go p.keepWarm()
	go p.reap()
	return p
}

// Config returns the pool's settings.
func (p *Pool) Config() Config { return *p.cfg.Load() }

// Name is the pool's name.
func (p *Pool) Name() string { return p.Config().Name }

// Created is when the pool was created.
func (p *Pool) Created() time.Time { return p.created }

func (p *Pool) setConfig(c Config, img *image.Image) {
	p.cors.Store(cors.CompileStored(c.CORS, p.log))
	p.img.Store(img) // before the config: a sandbox of the new shape finds its image
	p.cfg.Store(&c)
	p.poke()
}

// Authenticate checks an API key in constant time.
func (p *Pool) Authenticate(key string) bool {
	if key == "" {
		return false
	}
	h := store.HashKey(key)
	return subtle.ConstantTimeCompare(h[:], p.keyHash.Load()[:]) == 1
}

func (p *Pool) setKeyHash(h [32]byte) { p.keyHash.Store(&h) }

func (p *Pool) setUnusable(err error) {
	if err == nil {
		p.unusable.Store(nil)
		return
	}
	p.unusable.Store(&err)
}

// Unusable says why the pool cannot run on this host (nil if it can).
func (p *Pool) Unusable() error {
	if e := p.unusable.Load(); e != nil {
		return fmt.Errorf("%w: %w", ErrPoolUnusable, *e)
	}
	return nil
}

func (p *Pool) poke() {
	select {
	case p.refill <- struct{}{}:
	default:
	}
}

// Session returns the session for id, creating it (from a warm sandbox if
// one is ready) if it does not exist.
func (p *Pool) Session(ctx context.Context, id string) (*Session, error) {
	if err := ValidIdentifier(id); err != nil {
		return nil, err
	}
	if p.cluster != nil {
		return p.clusterSession(ctx, id, true)
	}
	for {
		s, created, err := p.session(id)
		if err != nil {
			return nil, err
		}
		if created {
			p.start(s)
		}
		select {
		case <-s.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if s.err != nil {
			return nil, s.err
		}
		select {
		case <-s.sb.Done():
			// Its sandbox died: forget it and make a new one.
			p.remove(s, "sandbox stopped")
			if created {
				return nil, fmt.Errorf("%w: it exited right after starting", ErrSessionLost)
			}
			continue
		default:
		}
		return s, nil
	}
}

// Lookup returns an existing session without creating one.
func (p *Pool) Lookup(id string) (*Session, error) {
	if p.cluster != nil {
		ctx, cancel := context.WithTimeout(p.ctx, 2*time.Minute)
		defer cancel()
		return p.clusterSession(ctx, id, false)
	}
	p.mu.Lock()
	s := p.sessions[id]
	p.mu.Unlock()
	if s == nil {
		return nil, fmt.Errorf("%w: %q (it may have expired after %ds idle)", ErrSessionNotFound, id, p.Config().CooldownSeconds)
	}
	<-s.ready
	if s.err != nil {
		return nil, s.err
	}
	select {
	case <-s.sb.Done():
		p.remove(s, "sandbox stopped")
		return nil, fmt.Errorf("%w: %q (its state is gone; start a new session)", ErrSessionLost, id)
	default:
	}
	return s, nil
}

// session finds or registers the session for id.
func (p *Pool) session(id string) (s *Session, created bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, false, ErrClosed
	}
	if s := p.sessions[id]; s != nil {
		s.touch()
		return s, false, nil
	}
	if err := p.Unusable(); err != nil {
		return nil, false, err
	}
	cfg := p.Config()
	if len(p.sessions) >= cfg.Max {
		return nil, false, fmt.Errorf("%w: %d of %d sessions are in use; wait for idle sessions to expire (cooldown %ds) or delete some", ErrPoolFull, len(p.sessions), cfg.Max, cfg.CooldownSeconds)
	}
	s = &Session{ID: id, pool: p, ready: make(chan struct{}), created: time.Now(), shape: cfg.shape(), port: cfg.Container.port()}
	s.touch()
	p.sessions[id] = s
	// Take a warm sandbox, dropping any that died while waiting or that
	// were made before an update changed the sandbox shape.
	for len(p.warm) > 0 {
		w := p.warm[len(p.warm)-1]
		p.warm = p.warm[:len(p.warm)-1]
		select {
		case <-w.sb.Done():
			p.destroyLater(w.sb)
			continue
		default:
		}
		if w.shape != cfg.shape() {
			p.destroyLater(w.sb)
			continue
		}
		s.sb = w.sb
		break
	}
	p.poke()
	return s, true, nil
}

// start readies a newly registered session: with its warm sandbox, or by
// starting one now.
func (p *Pool) start(s *Session) {
	if s.sb == nil {
		// Start on the pool's context, not the request's: another request
		// for the same identifier may be waiting on it too.
		sb, err := p.startSandbox(p.ctx, s.shape)
		if err != nil {
			s.err = fmt.Errorf("start sandbox: %w", err)
			p.mu.Lock()
			delete(p.sessions, s.ID)
			p.mu.Unlock()
			p.log.Error("start session sandbox", "session", s.ID, "err", err)
			close(s.ready)
			return
		}
		s.sb = sb
	}
	if s.shape.Type == TypeCustom {
		s.transport = newTransport(s.sb, s.port)
	}
	p.log.Debug("session started", "session", s.ID, "sandbox", s.sb.ID())
	close(s.ready)
}

// startSandbox starts a sandbox of the given shape (the pool's current one,
// read by the caller, which keeps it to compare later).
func (p *Pool) startSandbox(ctx context.Context, sh shape) (sandbox.Sandbox, error) {
	return startSandbox(ctx, p.rt, p.Config(), sh, p.img.Load(), p.egress, &p.wg, p.log)
}

// startSandbox starts a sandbox of shape sh for the pool of cfg on im
// (nil: the host's /usr) and readies it: the interpreter of a shell or
// python pool runs, a custom pool's container listens. egr makes the
// egress proxy of a pool with egress rules; wg counts the goroutine that
// watches a custom container; log gets what it says when it ends.
func startSandbox(ctx context.Context, rt sandbox.Runtime, cfg Config, sh shape, im *image.Image, egr EgressProxies, wg *sync.WaitGroup, log *slog.Logger) (sandbox.Sandbox, error) {
	if im != nil && im.Digest != sh.Image || im == nil && sh.Image != "" {
		// An update changed the image while this one started: the next
		// round starts one of the new shape.
		return nil, fmt.Errorf("the pool's image changed to %s", sh.Image)
	}
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	spec := sandbox.Spec{
		ID:     cfg.Name + "-" + hex.EncodeToString(b),
		Limits: sh.Limits,
		Egress: sh.Egress,
		Owner:  sandbox.Owner{Kind: "pool", Name: cfg.Name},
		Root:   rootOf(im),
		Image:  im.PullRef(),
	}
	if sh.EgressRules != "" {
		if egr == nil {
			return nil, errors.New("egress rules need the server's egress proxy")
		}
		px, err := egr.ProxyFor("pool/"+cfg.Name, cfg.Egress, cfg.EgressInject)
		if err != nil {
			return nil, err
		}
		spec.EgressProxy = px
	}
	sb, err := rt.Start(ctx, spec)
	if err != nil {
		return nil, err
	}
	if sh.Type == TypeCustom {
		if err := startContainer(ctx, sb, sh, im, wg, log); err != nil {
			_ = sb.Destroy(context.Background())
			return nil, err
		}
		return sb, nil
	}
	// Start the pool's interpreter now, so the first execution of a session
	// does not pay for it.
	lang, code := agent.Shell, ":"
	if sh.Type == TypePython {
		lang, code = agent.Python, "None"
	}
	out, err := sb.Agent().Exec(ctx, agent.ExecRequest{Language: lang, Code: code, TimeoutMillis: 30000}, nil)
	if err == nil && out.Status != agent.StatusSuccess {
		err = fmt.Errorf("%s", cmp.Or(out.Error, out.Stderr, string(out.Status)))
	}
	if err != nil {
		_ = sb.Destroy(context.Background())
		return nil, fmt.Errorf("warm up interpreter: %w", err)
	}
	return sb, nil
}

// keepWarm keeps min(Ready, Max-sessions) sandboxes of the current shape
// warm. Warm sandboxes of an older shape (made before an update) are
// destroyed and replaced.
func (p *Pool) keepWarm() {
	defer p.wg.Done()
	backoff := time.Duration(0)
	var full <-chan struct{} // set while the host is at capacity
	for {
		p.mu.Lock()
		cfg := p.Config()
		sh := cfg.shape()
		p.drainLocked(sh)
		target := min(cfg.Ready, cfg.Max-len(p.sessions))
		if p.Unusable() != nil {
			target = 0
		}
		need := target - len(p.warm) - p.starting
		// Too many warm (the pool shrank): destroy the surplus.
		for len(p.warm) > max(target, 0) {
			p.destroyLater(p.warm[len(p.warm)-1].sb)
			p.warm = p.warm[:len(p.warm)-1]
		}
		if need > 0 && !p.closed && backoff == 0 && full == nil {
			var freed <-chan struct{}
			if p.freed != nil {
				freed = p.freed() // before the start, so no release is missed
			}
			p.starting++
			p.mu.Unlock()
			sb, err := p.startSandbox(p.ctx, sh)
			p.mu.Lock()
			p.starting--
			switch {
			case errors.Is(err, sandbox.ErrNoCapacity) && freed != nil:
				// Warm sandboxes stop at the host's capacity: wait until
				// some is released rather than retry.
				p.log.Debug("warm sandboxes wait for the host's capacity", "warm", len(p.warm), "err", err)
				full = freed
			case err != nil:
				if p.ctx.Err() == nil {
					p.log.Error("start warm sandbox", "err", err)
				}
				backoff = time.Second
			case p.closed:
				p.destroyLater(sb)
			default:
				// If the shape changed while it started, the next round
				// drains it.
				p.warm = append(p.warm, warmSandbox{sb: sb, shape: sh})
			}
			p.mu.Unlock()
			continue
		}
		p.mu.Unlock()
		wait := 10 * time.Second
		if backoff > 0 {
			wait = backoff
		}
		select {
		case <-p.ctx.Done():
			return
		case <-p.refill:
		case <-full:
			full = nil
		case <-time.After(wait):
			backoff, full = 0, nil
		}
	}
}

// addWarm adds a sandbox of shape sh (a probe's) to the warm ones; nil is
// a no-op.
func (p *Pool) addWarm(sb sandbox.Sandbox, sh shape) {
	if sb == nil {
		return
	}
	if p.cluster != nil {
		ctx, cancel := context.WithTimeout(p.ctx, clusterOp)
		defer cancel()
		if err := p.claims.MarkWarm(ctx, sb.ID(), shapeHash(sh)); err != nil {
			p.destroyLater(sb)
		}
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.warm) >= p.Config().Ready {
		p.destroyLater(sb)
		return
	}
	p.warm = append(p.warm, warmSandbox{sb: sb, shape: sh})
}

// drainLocked destroys the warm sandboxes whose shape is not sh: they were
// made before an update changed what a sandbox is (its egress, say), and no
// new session may get one. Live sessions keep theirs until they end.
func (p *Pool) drainLocked(sh shape) {
	kept, drained := p.warm[:0], 0
	for _, w := range p.warm {
		if w.shape == sh {
			kept = append(kept, w)
			continue
		}
		p.destroyLater(w.sb)
		drained++
	}
	clear(p.warm[len(kept):])
	p.warm = kept
	if drained > 0 {
		p.log.Info("warm sandboxes of the old shape destroyed after an update", "count", drained)
	}
}

// reap destroys sessions idle for longer than the cooldown (while this
// Berth replica leads), and sessions whose sandbox has stopped.
func (p *Pool) reap() {
	defer p.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		}
		cooldown := p.Config().Cooldown()
		// Only the leading Berth replica expires idle sessions.
		leading := p.leader == nil || p.leader.IsLeader()
		p.mu.Lock()
		var expired []*Session
		for _, s := range p.sessions {
			if !s.isReady() {
				continue
			}
			select {
			case <-s.sb.Done():
				expired = append(expired, s)
				continue
			default:
			}
			if leading && s.idleFor() > cooldown {
				expired = append(expired, s)
			}
		}
		p.mu.Unlock()
		for _, s := range expired {
			p.remove(s, "idle past cooldown")
		}
	}
}

// remove forgets a session and destroys its sandbox in the background.
func (p *Pool) remove(s *Session, why string) bool {
	p.mu.Lock()
	if p.sessions[s.ID] != s {
		p.mu.Unlock()
		return false
	}
	delete(p.sessions, s.ID)
	if s.sb != nil {
		p.destroyLater(s.sb)
	}
	if s.transport != nil {
		s.transport.CloseIdleConnections()
	}
	p.mu.Unlock()
	p.log.Info("session ended", "session", s.ID, "reason", why)
	p.events.Add(events.Event{Kind: "session-ended", Pool: p.Name(), Session: s.ID, Message: "session ended: " + why})
	p.poke()
	return true
}

// destroyLater destroys a sandbox without holding up the caller.
func (p *Pool) destroyLater(sb sandbox.Sandbox) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := sb.Destroy(ctx); err != nil {
			p.log.Warn("destroy sandbox", "sandbox", sb.ID(), "err", err)
		}
	}()
}

// DeleteSession ends a session now.
func (p *Pool) DeleteSession(id string) error {
	if p.cluster != nil {
		return p.deleteClusterSession(id)
	}
	p.mu.Lock()
	s := p.sessions[id]
	p.mu.Unlock()
	if s == nil {
		return fmt.Errorf("%w: %q", ErrSessionNotFound, id)
	}
	<-s.ready
	p.remove(s, "deleted")
	return nil
}

// SessionInfo describes a live session.
type SessionInfo struct {
	Identifier   string    `json:"identifier"`
	CreatedAt    time.Time `json:"createdAt"`
	LastActiveAt time.Time `json:"lastActiveAt"`
	ExpiresAt    time.Time `json:"expiresAt"`
	Running      int       `json:"runningExecutions"`
}

// Sessions lists live sessions by identifier.
func (p *Pool) Sessions() []SessionInfo {
	if p.cluster != nil {
		return p.clusterSessions()
	}
	cooldown := p.Config().Cooldown()
	p.mu.Lock()
	out := make([]SessionInfo, 0, len(p.sessions))
	for _, s := range p.sessions {
		last, running := s.activity()
		out = append(out, SessionInfo{
			Identifier: s.ID, CreatedAt: s.created.UTC(), LastActiveAt: last.UTC(),
			ExpiresAt: last.Add(cooldown).UTC(), Running: running,
		})
	}
	p.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Identifier < out[j].Identifier })
	return out
}

// Stats counts a pool's sandboxes.
type Stats struct {
	Sessions int `json:"sessions"`
	Warm     int `json:"warm"`
	Starting int `json:"starting"`
}

// Stats returns current counts.
func (p *Pool) Stats() Stats {
	if p.cluster != nil {
		return p.clusterStats()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return Stats{Sessions: len(p.sessions), Warm: len(p.warm), Starting: p.starting}
}

// shutdown stops the pool as the server stops: sandboxes the replicas
// share stay for the others.
func (p *Pool) shutdown() {
	if p.cluster != nil {
		p.closeCluster(false)
		return
	}
	p.close()
}

// close destroys every sandbox of the pool and waits for it.
func (p *Pool) close() {
	if p.cluster != nil {
		p.closeCluster(true)
		return
	}
	p.mu.Lock()
	p.closed = true
	sessions := make([]*Session, 0, len(p.sessions))
	for _, s := range p.sessions {
		sessions = append(sessions, s)
	}
	warm := p.warm
	p.warm = nil
	p.mu.Unlock()
	p.cancel()
	for _, s := range sessions {
		<-s.ready
		p.remove(s, "pool closed")
	}
	for _, w := range warm {
		p.destroyLater(w.sb)
	}
	p.wg.Wait()
}

// warmSandbox is a warm sandbox with the shape it was made with.
type warmSandbox struct {
	sb    sandbox.Sandbox
	shape shape
}
