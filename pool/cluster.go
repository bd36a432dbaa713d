package pool

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/sandbox"
)

// Cluster is where a pool's sandboxes live when several Berth replicas
// share them (the kube driver with --state kube, package pool/kubepool):
// an identifier's sandbox is found through claims in the cluster, not in
// this process's memory, so that every replica routes it to the same one.
type Cluster interface {
	// Attach returns a sandbox that this replica or another started.
	Attach(ctx context.Context, sandboxID string) (sandbox.Sandbox, error)
	// Claims are the claims on the pool's sandboxes.
	Claims(pool string) Claims
}

// Claims are a pool's sandboxes in the cluster, warm or claimed by a
// session identifier. Claim and Find say ok=false when there is none.
type Claims interface {
	// List lists the pool's sandboxes.
	List(ctx context.Context) ([]ClusterSandbox, error)
	// MarkWarm makes a started, warmed-up sandbox claimable by a session
	// of shape (a hash).
	MarkWarm(ctx context.Context, sandboxID, shape string) error
	// Claim returns id's sandbox, claiming a free warm one of shape if id
	// has none.
	Claim(ctx context.Context, id, shape string) (ClusterSandbox, bool, error)
	// Find returns id's sandbox.
	Find(ctx context.Context, id string) (ClusterSandbox, bool, error)
	// Release deletes id's sandbox (ok=false: id had none).
	Release(ctx context.Context, id string) (bool, error)
	// Delete deletes a free sandbox as listed: not if it was claimed since.
	Delete(ctx context.Context, sb ClusterSandbox) error
	// Touch records that id's session, in sandbox sandboxID, was active at
	// at; first also records that the session started then.
	Touch(ctx context.Context, sandboxID string, at time.Time, first bool) error
}

// ClusterSandbox is one of a pool's sandboxes in the cluster.
type ClusterSandbox struct {
	ID string
	// Session is the identifier that claimed it ("": free).
	Session string
	// Shape is the shape hash it was warmed up for ("": not warm yet).
	Shape string
	// Created is when the sandbox was made, SessionCreated when its
	// session claimed it, LastActive when the session was last active
	// (zero: not recorded yet).
	Created, SessionCreated, LastActive time.Time
	// Gone says that it is being deleted or has ended.
	Gone bool
	// Version is what Delete checks (the object's version as listed).
	Version string
}

func (c ClusterSandbox) lastActive() time.Time {
	return maxTime(c.LastActive, c.SessionCreated, c.Created)
}

func maxTime(ts ...time.Time) time.Time {
	var m time.Time
	for _, t := range ts {
		if t.After(m) {
			m = t
		}
	}
	return m
}

// shapeHash names a shape in the cluster.
func shapeHash(sh shape) string {
	b, _ := json.Marshal(sh)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:20]
}

// clusterOp bounds one round of calls to the cluster.
const clusterOp = 30 * time.Second

// unmarkedAge is how long a sandbox may stay neither warm nor claimed
// (a replica starting and warming it up) before the leader deletes it.
const unmarkedAge = 3 * time.Minute

// clusterSession returns id's session in cluster mode: from this
// replica's cache, else from its claim in the cluster (create: claiming a
// warm sandbox, or starting one, if id has none).
func (p *Pool) clusterSession(ctx context.Context, id string, create bool) (*Session, error) {
	for round := 0; ; round++ {
		s, mine, err := p.cached(id, create)
		if err != nil {
			return nil, err
		}
		if mine {
			p.attach(s, create)
		}
		select {
		case <-s.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if s.err != nil {
			if !mine && create && errors.Is(s.err, ErrSessionNotFound) {
				continue // a Lookup's miss: this one may claim
			}
			return nil, s.err
		}
		select {
		case <-s.sb.Done():
			// Its Pod went (the cooldown, a DELETE on another replica).
			p.remove(s, "sandbox stopped")
			if !create || round >= 2 {
				return nil, fmt.Errorf("%w: %q; its state is gone, a new request starts a new session", ErrSessionLost, id)
			}
			continue
		default:
		}
		return s, nil
	}
}

// cached finds id's session in the cache, or registers a new one (mine)
// that the caller readies.
func (p *Pool) cached(id string, create bool) (s *Session, mine bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, false, ErrClosed
	}
	if s := p.sessions[id]; s != nil {
		if create {
			s.touch()
		}
		return s, false, nil
	}
	if create {
		if err := p.Unusable(); err != nil {
			return nil, false, err
		}
	}
	cfg := p.Config()
	s = &Session{ID: id, pool: p, ready: make(chan struct{}), created: time.Now(), shape: cfg.shape(), port: cfg.Container.port()}
	s.touch()
	p.sessions[id] = s
	return s, true, nil
}

// attach readies a session registered by cached: it finds (or claims) its
// sandbox in the cluster and attaches to it.
func (p *Pool) attach(s *Session, create bool) {
	// On the pool's context: other requests for id may wait on it too.
	ctx, cancel := context.WithTimeout(p.ctx, 2*time.Minute)
	defer cancel()
	t0 := time.Now()
	sb, err := p.claimed(ctx, s, create)
	if err != nil {
		s.err = err
		p.mu.Lock()
		if p.sessions[s.ID] == s {
			delete(p.sessions, s.ID)
		}
		p.mu.Unlock()
		if !errors.Is(err, ErrSessionNotFound) && !errors.Is(err, ErrPoolFull) {
			p.log.Error("claim session sandbox", "session", s.ID, "err", err)
		}
		close(s.ready)
		return
	}
	s.sb = sb
	if s.shape.Type == TypeCustom {
		s.transport = newTransport(s.sb, s.port)
	}
	p.log.Debug("session attached", "session", s.ID, "sandbox", sb.ID(), "took", time.Since(t0))
	close(s.ready)
}

// claimed returns s's sandbox, claimed in the cluster.
func (p *Pool) claimed(ctx context.Context, s *Session, create bool) (sandbox.Sandbox, error) {
	cs, ok, err := p.claims.Find(ctx, s.ID)
	if err != nil {
		return nil, err
	}
	if !ok && !create {
		return nil, fmt.Errorf("%w: %q (it may have expired after %ds idle)", ErrSessionNotFound, s.ID, p.Config().CooldownSeconds)
	}
	if !ok {
		if cs, err = p.claim(ctx, s); err != nil {
			return nil, err
		}
	}
	sb, err := p.cluster.Attach(ctx, cs.ID)
	if errors.Is(err, sandbox.ErrNotFound) {
		return nil, fmt.Errorf("%w: %q; its state is gone, a new request starts a new session", ErrSessionLost, s.ID)
	}
	if err != nil {
		return nil, err
	}
	if cs.SessionCreated.IsZero() {
		now := time.Now()
		if err := p.claims.Touch(ctx, cs.ID, now, true); err != nil {
			p.log.Warn("record session start", "session", s.ID, "err", err)
		}
		s.written = now
	}
	return sb, nil
}

// claim claims a warm sandbox for s, starting one when none is free (the
// race between replicas that start one each is the claims' to settle:
// the other sandbox stays warm).
func (p *Pool) claim(ctx context.Context, s *Session) (ClusterSandbox, error) {
	sh := shapeHash(s.shape)
	for range 3 {
		all, err := p.claims.List(ctx)
		if err != nil {
			return ClusterSandbox{}, err
		}
		cfg := p.Config()
		if n := countClaimed(all); n >= cfg.Max {
			return ClusterSandbox{}, fmt.Errorf("%w: %d of %d sessions are in use; wait for idle sessions to expire (cooldown %ds) or delete some", ErrPoolFull, n, cfg.Max, cfg.CooldownSeconds)
		}
		cs, ok, err := p.claims.Claim(ctx, s.ID, sh)
		if err != nil || ok {
			p.poke()
			return cs, err
		}
		if err := p.startWarm(ctx, s.shape); err != nil {
			return ClusterSandbox{}, fmt.Errorf("start sandbox: %w", err)
		}
	}
	return ClusterSandbox{}, errors.New("no warm sandbox could be claimed: other sessions took each one started")
}

func countClaimed(all []ClusterSandbox) int {
	n := 0
	for _, c := range all {
		if c.Session != "" && !c.Gone {
			n++
		}
	}
	return n
}

// startWarm starts a sandbox of shape sh, warms it up and marks it warm.
func (p *Pool) startWarm(ctx context.Context, sh shape) error {
	p.mu.Lock()
	p.starting++
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.starting--
		p.mu.Unlock()
	}()
	sb, err := p.startSandbox(ctx, sh)
	if err != nil {
		return err
	}
	if err := p.claims.MarkWarm(ctx, sb.ID(), shapeHash(sh)); err != nil {
		p.destroyLater(sb)
		return fmt.Errorf("mark sandbox warm: %w", err)
	}
	return nil
}

// keepWarmCluster keeps, while this replica leads, min(Ready, Max-claimed)
// free warm sandboxes of the current shape in the cluster, counted there;
// it deletes free ones of an older shape, the surplus, and those a
// replica left unmarked (it died while warming one up).
func (p *Pool) keepWarmCluster() {
	defer p.wg.Done()
	backoff := time.Duration(0)
	for {
		wait := 2 * time.Second
		if p.leading() && p.Unusable() == nil {
			if err := p.warmRound(); err != nil {
				if p.ctx.Err() == nil {
					p.log.Error("keep warm sandboxes", "err", err)
				}
				backoff = min(max(2*backoff, time.Second), 30*time.Second)
				wait = backoff
			} else {
				backoff = 0
			}
		}
		select {
		case <-p.ctx.Done():
			return
		case <-p.refill:
		case <-time.After(wait):
		}
	}
}

func (p *Pool) leading() bool { return p.leader == nil || p.leader.IsLeader() }

// warmRound does one round of keepWarmCluster: it starts at most one.
func (p *Pool) warmRound() error {
	ctx, cancel := context.WithTimeout(p.ctx, 2*time.Minute)
	defer cancel()
	all, err := p.claims.List(ctx)
	if err != nil {
		return err
	}
	cfg := p.Config()
	sh := cfg.shape()
	want := shapeHash(sh)
	var free []ClusterSandbox
	unmarked := 0
	for _, c := range all {
		switch {
		case c.Gone || c.Session != "":
		case c.Shape == want:
			free = append(free, c)
		case c.Shape != "" || time.Since(c.Created) > unmarkedAge:
			p.deleteFree(ctx, c, "of an older shape or left unmarked")
		default:
			unmarked++ // being warmed up by some replica
		}
	}
	target := max(min(cfg.Ready, cfg.Max-countClaimed(all)), 0)
	sort.Slice(free, func(i, j int) bool { return free[i].Created.Before(free[j].Created) })
	for len(free) > target {
		p.deleteFree(ctx, free[len(free)-1], "surplus")
		free = free[:len(free)-1]
	}
	p.mu.Lock()
	starting := p.starting
	p.mu.Unlock()
	if len(free)+max(unmarked, starting) >= target {
		return nil
	}
	t0 := time.Now()
	if err := p.startWarm(ctx, sh); err != nil {
		return err
	}
	p.log.Debug("warm sandbox started for the cluster", "took", time.Since(t0))
	p.poke() // the next one at once
	return nil
}

func (p *Pool) deleteFree(ctx context.Context, c ClusterSandbox, why string) {
	if err := p.claims.Delete(ctx, c); err != nil {
		p.log.Warn("delete warm sandbox", "sandbox", c.ID, "why", why, "err", err)
		return
	}
	p.log.Debug("warm sandbox deleted", "sandbox", c.ID, "why", why)
}

// reapCluster records the activity of this replica's sessions in the
// cluster (at most every cooldown/10, at least a second apart), drops
// cached sessions whose sandbox went, and, while this replica leads,
// deletes the sandboxes of sessions idle past the cooldown, whichever
// replica served them.
func (p *Pool) reapCluster() {
	defer p.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		}
		p.flushActivity()
		if p.leading() {
			p.reapIdle()
		}
	}
}

// activityEvery is how often a session's activity is written at most.
func activityEvery(cooldown time.Duration) time.Duration {
	return max(cooldown/10, time.Second)
}

// flushActivity writes the activity of cached sessions and drops those
// whose sandbox went.
func (p *Pool) flushActivity() {
	every := activityEvery(p.Config().Cooldown())
	now := time.Now()
	p.mu.Lock()
	var gone, due []*Session
	for _, s := range p.sessions {
		if !s.isReady() {
			continue
		}
		select {
		case <-s.sb.Done():
			gone = append(gone, s)
			continue
		default:
		}
		last, running := s.activity()
		if running > 0 {
			last = now
		}
		if last.Sub(s.written) >= every || (last.After(s.written) && now.Sub(s.written) >= every) {
			due = append(due, s)
		}
	}
	p.mu.Unlock()
	for _, s := range gone {
		p.remove(s, "sandbox stopped")
	}
	for _, s := range due {
		last, running := s.activity()
		if running > 0 {
			last = now
		}
		ctx, cancel := context.WithTimeout(p.ctx, clusterOp)
		err := p.claims.Touch(ctx, s.sb.ID(), last, false)
		cancel()
		if err != nil {
			p.log.Debug("record session activity", "session", s.ID, "err", err)
			continue
		}
		s.written = last
	}
}

// reapIdle deletes the sandboxes of sessions idle past the cooldown.
func (p *Pool) reapIdle() {
	ctx, cancel := context.WithTimeout(p.ctx, clusterOp)
	defer cancel()
	all, err := p.claims.List(ctx)
	if err != nil {
		p.log.Warn("list sessions", "err", err)
		return
	}
	cooldown := p.Config().Cooldown()
	for _, c := range all {
		if c.Session == "" {
			continue
		}
		idle := time.Since(p.localActivity(c))
		if !c.Gone && idle <= cooldown {
			continue
		}
		if _, err := p.claims.Release(ctx, c.Session); err != nil {
			p.log.Warn("release idle session", "session", c.Session, "err", err)
			continue
		}
		why := "idle past cooldown"
		if c.Gone {
			why = "sandbox stopped"
		}
		p.log.Info("session ended", "session", c.Session, "reason", why)
		p.events.Add(events.Event{Kind: "session-ended", Pool: p.Name(), Session: c.Session, Message: "session ended: " + why})
	}
}

// localActivity is when c's session was last active, as the cluster and
// this replica's cache know it.
func (p *Pool) localActivity(c ClusterSandbox) time.Time {
	last := c.lastActive()
	p.mu.Lock()
	s := p.sessions[c.Session]
	p.mu.Unlock()
	if s != nil && s.isReady() && s.sb.ID() == c.ID {
		l, running := s.activity()
		if running > 0 {
			l = time.Now()
		}
		last = maxTime(last, l)
	}
	return last
}

// deleteClusterSession ends id's session in the cluster (DELETE).
func (p *Pool) deleteClusterSession(id string) error {
	ctx, cancel := context.WithTimeout(p.ctx, clusterOp)
	defer cancel()
	p.mu.Lock()
	s := p.sessions[id]
	p.mu.Unlock()
	if s != nil {
		<-s.ready
	}
	ok, err := p.claims.Release(ctx, id)
	if err != nil {
		return err
	}
	if s != nil && s.err == nil {
		p.remove(s, "deleted")
		return nil
	}
	if !ok {
		return fmt.Errorf("%w: %q", ErrSessionNotFound, id)
	}
	p.log.Info("session ended", "session", id, "reason", "deleted")
	return nil
}

// clusterSessions lists the sessions claimed in the cluster.
func (p *Pool) clusterSessions() []SessionInfo {
	ctx, cancel := context.WithTimeout(p.ctx, clusterOp)
	defer cancel()
	all, err := p.claims.List(ctx)
	if err != nil {
		p.log.Warn("list sessions", "err", err)
		return []SessionInfo{}
	}
	cooldown := p.Config().Cooldown()
	out := make([]SessionInfo, 0, len(all))
	for _, c := range all {
		if c.Session == "" || c.Gone {
			continue
		}
		last := p.localActivity(c)
		running := 0
		p.mu.Lock()
		if s := p.sessions[c.Session]; s != nil {
			_, running = s.activity()
		}
		p.mu.Unlock()
		out = append(out, SessionInfo{
			Identifier: c.Session, CreatedAt: maxTime(c.SessionCreated, c.Created).UTC(), LastActiveAt: last.UTC(),
			ExpiresAt: last.Add(cooldown).UTC(), Running: running,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Identifier < out[j].Identifier })
	return out
}

// clusterStats counts the pool's sandboxes in the cluster.
func (p *Pool) clusterStats() Stats {
	ctx, cancel := context.WithTimeout(p.ctx, clusterOp)
	defer cancel()
	all, err := p.claims.List(ctx)
	p.mu.Lock()
	st := Stats{Starting: p.starting}
	p.mu.Unlock()
	if err != nil {
		p.log.Warn("list sessions", "err", err)
		return st
	}
	want := shapeHash(p.Config().shape())
	for _, c := range all {
		switch {
		case c.Gone:
		case c.Session != "":
			st.Sessions++
		case c.Shape == want:
			st.Warm++
		}
	}
	return st
}

// closeCluster stops the pool on this replica; with deleted (the pool was
// deleted), its sandboxes in the cluster go too. Otherwise they stay: the
// other replicas serve them.
func (p *Pool) closeCluster(deleted bool) {
	p.mu.Lock()
	p.closed = true
	p.sessions = map[string]*Session{}
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
	if !deleted {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterOp)
	defer cancel()
	all, err := p.claims.List(ctx)
	if err != nil {
		p.log.Warn("delete the pool's sandboxes", "err", err)
		return
	}
	for _, c := range all {
		var err error
		if c.Session != "" {
			_, err = p.claims.Release(ctx, c.Session)
		} else {
			err = p.claims.Delete(ctx, c)
		}
		if err != nil {
			p.log.Warn("delete the pool's sandbox", "sandbox", c.ID, "err", err)
		}
	}
}
