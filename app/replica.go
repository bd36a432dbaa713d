package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/sandbox"
)

// ErrNoReplica means no replica became ready in time.
var ErrNoReplica = errors.New("no replica of the app is ready")

// ErrStartFailed means a replica that a request waited for failed to start
// (its command exited, or its sandbox did not start, before it was ready).
var ErrStartFailed = errors.New("the app's replica failed to start")

// Replica is one incarnation of a replica: a sandbox running the app's
// command. A crashed replica is replaced by a new incarnation with a new
// ID, so sessions bound to the old one end (the gateway answers 404).
type Replica struct {
	ID  string
	rev *revisionRuntime
	sb  sandbox.Sandbox
	im  *image.Image // the revision's image, if it runs one

	slot    *slot
	started time.Time

	ready    atomic.Bool
	gone     chan struct{} // closed when this incarnation has ended
	inflight atomic.Int64
	sessions atomic.Int64
	// Transport reaches the app's port through the sandbox's agent.
	Transport *http.Transport
	stdioSeq  atomic.Int64
	// busyAt is when the replica's last request ended (unix ns); marked
	// and markedAt the busy mark last written on its shared sandbox and
	// when (the autoscaler's goroutine's alone).
	busyAt           atomic.Int64
	marked, markedAt time.Time
}

// Revision is the revision this replica runs.
func (r *Replica) Revision() string { return r.rev.rev.Name }

// Gone is closed once the replica has stopped.
func (r *Replica) Gone() <-chan struct{} { return r.gone }

// Agent is the replica's sandbox agent.
func (r *Replica) Agent() *agent.Client { return r.sb.Agent() }

// Addr is the address of the replica's agent for another Berth process
// (package agentaddr), or "" if only this process can reach it.
func (r *Replica) Addr() string {
	if ad, ok := r.sb.(interface{ Addr() string }); ok {
		return ad.Addr()
	}
	return ""
}

// Port is the app's port inside the replica's sandbox.
func (r *Replica) Port() int { return r.rev.rev.Config.Port }

// Done marks the end of a request that Acquire counted.
func (r *Replica) Done() {
	r.busyAt.Store(time.Now().UnixNano())
	r.inflight.Add(-1)
	r.rev.touch()
}

// slot keeps one replica running, restarting it with back-off.
type slot struct {
	// index numbers the slot; id is its shared sandbox's ID (Shared
	// runtimes only).
	index   int
	id      string
	stop    chan struct{}
	current atomic.Pointer[Replica]
	// restarts counts the replicas of this slot that failed.
	restarts atomic.Int64
	// starting is set while a replica of the slot is on its way to ready.
	starting atomic.Bool
}

// revisionRuntime runs one active revision's replicas.
type revisionRuntime struct {
	app *App
	rev Revision
	log *slog.Logger
	// shared, if set, is the runtime's set of sandboxes shared by every
	// Berth replica (see Shared).
	shared Shared
	ctx    context.Context
	end    context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	slots    []*slot
	seq      int
	lastBusy time.Time
	changed  chan struct{} // closed and replaced when a replica's state changes
	waiting  int           // requests waiting for a replica (scale from zero)
	// starting counts replicas on their way to ready; failedStarts those
	// that ended before, the last for lastStartErr. A request waiting for
	// a replica gives up when one failed and none is still starting,
	// rather than wait through the restart back-off.
	starting     int
	failedStarts uint64
	lastStartErr error

	spares chan box // hands keepSpare's sandbox to the next replica

	// secrets reads the revision's secrets once (secrets.go); secretDir
	// is its secret volume's directory, removed when it stops.
	secrets   func() (secretSet, error)
	secretDir string
}

func newRevisionRuntime(a *App, rev Revision) *revisionRuntime {
	ctx, cancel := context.WithCancel(context.Background())
	r := &revisionRuntime{app: a, rev: rev, ctx: ctx, end: cancel, lastBusy: time.Now(), changed: make(chan struct{}),
		log: a.m.log.With("app", a.name, "revision", rev.Name), spares: make(chan box), shared: a.m.shared}
	r.secrets = sync.OnceValues(r.loadSecrets)
	r.wg.Add(2)
	go r.autoscale()
	go r.keepSpare()
	return r
}

func (r *revisionRuntime) touch() {
	r.mu.Lock()
	r.lastBusy = time.Now()
	r.mu.Unlock()
}

func (r *revisionRuntime) notify() {
	r.mu.Lock()
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

// Replicas returns the current incarnations.
func (r *revisionRuntime) Replicas() []*Replica {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*Replica
	for _, s := range r.slots {
		if rep := s.current.Load(); rep != nil {
			out = append(out, rep)
		}
	}
	return out
}

// Acquire returns the ready replica with the fewest requests in flight,
// starting one (and waiting for it) if the revision is at zero. The caller
// calls Done on it when the request ends.
func (r *revisionRuntime) Acquire(ctx context.Context) (*Replica, error) {
	r.mu.Lock()
	failed := r.failedStarts
	r.mu.Unlock()
	for {
		r.mu.Lock()
		var best *Replica
		for _, s := range r.slots {
			rep := s.current.Load()
			if rep == nil || !rep.ready.Load() {
				continue
			}
			// Least loaded; on a tie, the one with the fewest sessions, so
			// that new sessions spread across replicas.
			if best == nil || rep.inflight.Load() < best.inflight.Load() ||
				rep.inflight.Load() == best.inflight.Load() && rep.sessions.Load() < best.sessions.Load() {
				best = rep
			}
		}
		if best != nil {
			best.inflight.Add(1)
			r.lastBusy = time.Now()
			r.mu.Unlock()
			return best, nil
		}
		if r.failedStarts != failed && r.starting == 0 {
			err := r.lastStartErr
			r.mu.Unlock()
			return nil, fmt.Errorf("%w: %w", ErrStartFailed, err)
		}
		// At zero (or none ready yet): make sure one is coming, and wait.
		if len(r.slots) == 0 {
			r.addSlotLocked()
		}
		r.waiting++
		changed := r.changed
		r.mu.Unlock()
		select {
		case <-changed:
			r.mu.Lock()
			r.waiting--
			r.mu.Unlock()
		case <-ctx.Done():
			r.mu.Lock()
			r.waiting--
			r.mu.Unlock()
			return nil, fmt.Errorf("%w: %w", ErrNoReplica, ctx.Err())
		case <-r.ctx.Done():
			r.mu.Lock()
			r.waiting--
			r.mu.Unlock()
			return nil, fmt.Errorf("%w: the revision was stopped", ErrNoReplica)
		}
	}
}

// addSlotLocked adds a replica: in a Shared runtime, the next one no
// Berth replica runs.
func (r *revisionRuntime) addSlotLocked() {
	i := 0
	if r.shared != nil {
		i = r.nextIndexLocked()
	}
	r.startSlotLocked(i)
}

// startSlotLocked adds slot number i and starts keeping its replica.
func (r *revisionRuntime) startSlotLocked(i int) {
	s := &slot{index: i, stop: make(chan struct{})}
	if r.shared != nil {
		s.id = r.slotID(i)
	}
	r.slots = append(r.slots, s)
	r.wg.Add(1)
	go r.run(s)
}

// removeIdleSlotLocked stops one replica that holds no sessions and no
// requests; it reports whether it found one.
func (r *revisionRuntime) removeIdleSlotLocked() bool {
	for i := len(r.slots) - 1; i >= 0; i-- {
		s := r.slots[i]
		rep := s.current.Load()
		if rep != nil && (rep.inflight.Load() > 0 || rep.sessions.Load() > 0) {
			continue
		}
		if r.shared != nil && s.starting.Load() {
			continue // maybe for requests another Berth replica holds
		}
		r.slots = append(r.slots[:i], r.slots[i+1:]...)
		close(s.stop)
		return true
	}
	return false
}

// autoscale sets the number of replicas from the load: ceil(requests in
// flight / concurrency) within [min, max]; it scales down one idle replica
// at a time, only after ScaleDownAfter without traffic, and only while this
// Berth replica leads (package leader).
func (r *revisionRuntime) autoscale() {
	defer r.wg.Done()
	cfg := r.rev.Config
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		var cluster map[int]bool
		var clusterBusy time.Time
		if r.shared != nil {
			cluster, _, clusterBusy = r.clusterSlots()
		}
		r.mu.Lock()
		if r.shared != nil {
			r.adoptLocked(cluster)
		}
		lastBusy := r.lastBusy
		if clusterBusy.After(lastBusy) {
			lastBusy = clusterBusy // requests other Berth replicas served
		}
		var inflight, sessions int64
		for _, s := range r.slots {
			if rep := s.current.Load(); rep != nil {
				inflight += rep.inflight.Load()
				sessions += rep.sessions.Load()
			}
		}
		inflight += int64(r.waiting)
		desired := int((inflight + int64(cfg.Concurrency) - 1) / int64(cfg.Concurrency))
		desired = min(max(desired, cfg.Min), cfg.Max)
		switch {
		case len(r.slots) < desired:
			for len(r.slots) < desired {
				r.addSlotLocked()
			}
			r.log.Info("scaled up", "replicas", len(r.slots), "inFlight", inflight)
		case len(r.slots) > desired && time.Since(lastBusy) > cfg.ScaleDownAfter() && r.app.m.leading():
			if r.removeIdleSlotLocked() {
				r.log.Info("scaled down", "replicas", len(r.slots), "sessions", sessions)
			}
		}
		var reps []*Replica // the sandboxes to mark busy, started ones
		if r.shared != nil {
			for _, s := range r.slots {
				if rep := s.current.Load(); rep != nil {
					reps = append(reps, rep)
				}
			}
		}
		waiting := r.waiting > 0
		r.mu.Unlock()
		if r.shared != nil {
			r.markBusy(reps, waiting)
		}
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// run keeps a slot's replica alive until the slot or the revision stops.
func (r *revisionRuntime) run(s *slot) {
	defer r.wg.Done()
	backoff := time.Second
	for {
		started := time.Now()
		err := r.incarnate(s)
		select {
		case <-s.stop:
			return
		case <-r.ctx.Done():
			return
		default:
		}
		if r.shared != nil && r.scaledDownElsewhere(s) {
			r.dropSlot(s)
			return
		}
		if time.Since(started) > time.Minute {
			backoff = time.Second
		}
		s.restarts.Add(1)
		r.app.logf(r.rev.Name, "", "replica failed: %v; restarting in %s", err, backoff)
		r.log.Warn("replica failed; restarting", "err", err, "backoff", backoff)
		select {
		case <-s.stop:
			return
		case <-r.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

// incarnate runs one replica until it ends, and says why it did.
func (r *revisionRuntime) incarnate(s *slot) error {
	cfg := r.rev.Config
	r.mu.Lock()
	r.starting++ // until ready (started) or failed (startFailed)
	r.mu.Unlock()
	s.starting.Store(true)
	defer s.starting.Store(false)
	t0 := time.Now()
	sp, err := r.takeSandbox(s)
	if err != nil {
		return r.startFailed(fmt.Errorf("start sandbox: %w", err))
	}
	id, sb := sp.id, sp.sb
	rep := &Replica{ID: id, rev: r, sb: sb, im: sp.im, gone: make(chan struct{}), slot: s, started: time.Now()}
	rep.Transport = &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return sb.Agent().DialPort(ctx, cfg.Port)
		},
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	defer func() {
		rep.ready.Store(false)
		close(rep.gone)
		s.current.CompareAndSwap(rep, nil)
		r.notify()
		rep.Transport.CloseIdleConnections()
		if r.shared == nil || !r.app.m.closing.Load() {
			r.destroy(sp)
		} // else other Berth replicas keep using it, and this one will again
	}()
	s.current.Store(rep)
	t1 := time.Now()

	if cfg.Transport == TransportHTTP {
		stopLogs, err := r.startCommand(rep)
		if err != nil {
			return r.startFailed(err)
		}
		defer stopLogs()
	}
	t2 := time.Now()
	exited := make(chan error, 1)
	if cfg.Transport == TransportHTTP {
		go func() {
			e, err := sb.Agent().WaitService(r.ctx, "app")
			if err == nil {
				err = fmt.Errorf("the app exited with code %d%s", e.ExitCode, map[bool]string{true: " (" + e.Signal + ")"}[e.Signal != ""])
			}
			exited <- err
		}()
	}
	if err := r.probe(rep, exited); err != nil {
		return r.startFailed(err)
	}
	rep.ready.Store(true) // first: a waiter that sees starting drop finds it
	s.starting.Store(false)
	r.mu.Lock()
	r.starting--
	if r.shared != nil {
		// Idle from now on at most: another Berth replica may have
		// started it for requests whose busy marks are on their way.
		r.lastBusy = time.Now()
	}
	r.mu.Unlock()
	r.app.logf(r.rev.Name, id, "replica ready")
	t3 := time.Now()
	r.log.Info("replica ready", "replica", id, "attached", sp.attached, "took", t3.Sub(t0).Round(time.Microsecond),
		"sandbox", t1.Sub(t0).Round(time.Microsecond), "command", t2.Sub(t1).Round(time.Microsecond), "probe", t3.Sub(t2).Round(time.Microsecond))
	r.notify()
	return r.serve(rep, exited)
}

// startCommand starts an HTTP app's command in rep's sandbox (or finds it
// running there, in a sandbox another Berth replica shares) and follows
// its log; the caller calls stopLogs when the replica ends.
func (r *revisionRuntime) startCommand(rep *Replica) (stopLogs func(), err error) {
	cfg, id, sb := r.rev.Config, rep.ID, rep.sb
	env := map[string]string{"PORT": strconv.Itoa(cfg.Port), "BERTH_APP": r.app.name, "BERTH_REVISION": r.rev.Name, "BERTH_REPLICA": id}
	if err := r.addEnv(env); err != nil {
		return nil, err
	}
	if err := sb.Agent().StartService(r.ctx, rep.serviceSpec("app", env, false)); err != nil && !(r.shared != nil && serviceRunning(err)) {
		return nil, fmt.Errorf("start command: %w", err)
	}
	logCtx, cancel := context.WithCancel(r.ctx)
	logsDone := make(chan struct{})
	go func() {
		defer close(logsDone)
		_ = sb.Agent().ServiceLogs(logCtx, "app", true, func(l agent.LogLine) { r.app.log(r.rev.Name, id, l) })
	}()
	return func() {
		// An app that exited may have its last lines (the ones that say
		// why) still on their way: let them arrive, briefly, before the
		// sandbox goes.
		select {
		case <-logsDone:
		case <-time.After(time.Second):
		}
		cancel()
	}, nil
}

// serve waits until the ready replica rep ends: its app exits (the error
// says how), its sandbox stops, it is scaled down, or the revision stops.
func (r *revisionRuntime) serve(rep *Replica, exited <-chan error) error {
	id, sb, s := rep.ID, rep.sb, rep.slot
	select {
	case err := <-exited:
		return err
	case <-sb.Done():
		return errors.New("the sandbox stopped")
	case <-s.stop:
		r.app.logf(r.rev.Name, id, "replica stopping (scaled down)")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if r.shared != nil {
			// Before it goes: the other Berth replicas then drop it
			// rather than start it again.
			if err := r.shared.MarkScaledDown(ctx, id); err != nil {
				r.log.Warn("mark replica scaled down", "replica", id, "err", err)
			}
		}
		_ = sb.Agent().StopService(ctx, "app", 5*time.Second)
		return nil
	case <-r.ctx.Done():
		return nil
	}
}

// startFailed records that a replica ended before it was ready, which ends
// the wait of the requests that wait for one, and returns err.
func (r *revisionRuntime) startFailed(err error) error {
	r.mu.Lock()
	r.starting--
	if r.ctx.Err() == nil { // else the revision is stopping: not the app's failure
		r.failedStarts++
		r.lastStartErr = err
	}
	r.mu.Unlock()
	r.notify()
	return err
}

// probe waits until the replica answers its readiness probe.
func (r *revisionRuntime) probe(rep *Replica, exited <-chan error) error {
	cfg := r.rev.Config
	deadline := time.Now().Add(2 * time.Minute)
	// Probe every millisecond at first: the app is usually up within tens
	// of milliseconds, and a request may be waiting for this replica (scale
	// from zero), so each millisecond between the app listening and the
	// probe noticing counts. A slow starter is probed less and less often.
	start := time.Now()
	wait := time.Millisecond
	for {
		var err error
		ctx, cancel := context.WithTimeout(r.ctx, 2*time.Second)
		switch cfg.Probe.Type {
		case "none":
			cancel()
			return nil
		case "tcp":
			var c net.Conn
			if c, err = rep.sb.Agent().DialPort(ctx, cfg.Port); err == nil {
				c.Close()
			}
		case "http":
			var req *http.Request
			req, err = http.NewRequestWithContext(ctx, http.MethodGet, "http://replica"+cfg.Probe.Path, nil)
			if err == nil {
				var resp *http.Response
				if resp, err = rep.Transport.RoundTrip(req); err == nil {
					resp.Body.Close()
					if resp.StatusCode >= 500 {
						err = fmt.Errorf("probe answered %s", resp.Status)
					}
				}
			}
		}
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after 2m: %v", err)
		}
		select {
		case e := <-exited:
			return e
		case <-rep.sb.Done():
			return errors.New("the sandbox stopped before the app was ready")
		case <-r.ctx.Done():
			return r.ctx.Err()
		case <-time.After(wait):
		}
		if time.Since(start) > 250*time.Millisecond {
			wait = min(wait*2, 50*time.Millisecond)
		}
	}
}

// stop ends every replica of the revision.
func (r *revisionRuntime) stop() {
	r.end()
	r.wg.Wait()
	r.removeSecretFiles()
}

// StdioProcess is a stdio MCP server process in a replica, one per MCP
// session: its stdin and stdout reach the host through the agent.
type StdioProcess struct {
	rep  *Replica
	id   string
	conn net.Conn
	once sync.Once
}

// Stdin implements stdiobridge.Process.
func (p *StdioProcess) Stdin() io.WriteCloser { return halfCloser{p.conn} }

// Stdout implements stdiobridge.Process.
func (p *StdioProcess) Stdout() io.Reader { return p.conn }

// Close stops the process and releases the replica.
func (p *StdioProcess) Close() error {
	p.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = p.rep.Agent().StopService(ctx, p.id, 2*time.Second)
		p.conn.Close()
		p.rep.sessions.Add(-1)
		p.rep.Done()
	})
	return nil
}

// halfCloser closes only the writing side of a connection (EOF on stdin).
type halfCloser struct{ net.Conn }

func (h halfCloser) Close() error {
	if cw, ok := h.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return h.Conn.Close()
}

// StartStdio starts the app's command as a stdio MCP server in a replica of
// the (label's or traffic-picked) revision. The replica counts it as a
// session and as work in flight until the process is closed.
func (a *App) StartStdio(ctx context.Context, label string) (*StdioProcess, error) {
	rep, err := a.Acquire(ctx, label)
	if err != nil {
		return nil, err
	}
	id := fmt.Sprintf("stdio-%d", rep.stdioSeq.Add(1))
	env := map[string]string{"BERTH_APP": a.name, "BERTH_REVISION": rep.Revision(), "BERTH_REPLICA": rep.ID}
	if err := rep.rev.addEnv(env); err != nil {
		rep.Done()
		return nil, err
	}
	if err := rep.Agent().StartService(ctx, rep.serviceSpec(id, env, true)); err != nil {
		rep.Done()
		return nil, fmt.Errorf("start the stdio server: %w", err)
	}
	go func() {
		_ = rep.Agent().ServiceLogs(rep.rev.ctx, id, true, func(l agent.LogLine) { a.log(rep.Revision(), rep.ID+"/"+id, l) })
	}()
	conn, err := rep.Agent().Attach(ctx, id)
	if err != nil {
		_ = rep.Agent().StopService(context.Background(), id, time.Second)
		rep.Done()
		return nil, fmt.Errorf("attach to the stdio server: %w", err)
	}
	rep.sessions.Add(1)
	return &StdioProcess{rep: rep, id: id, conn: conn}, nil
}

// serviceSpec is how the agent runs the app's command: a shell command in
// /app, or an image's argv, environment and working directory.
func (r *Replica) serviceSpec(id string, env map[string]string, stdio bool) agent.ServiceSpec {
	cfg := r.rev.rev.Config
	if r.im == nil {
		return agent.ServiceSpec{ID: id, Command: cfg.Command, Env: env, Dir: "/app", Stdio: stdio}
	}
	argv, env, dir := imageCommand(cfg, r.im, env)
	return agent.ServiceSpec{ID: id, Argv: argv, Env: env, Dir: dir, Stdio: stdio}
}
