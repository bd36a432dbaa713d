package app

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/edge/cors"
	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/store"
)

// Sentinel errors.
var (
	ErrNotFound      = errors.New("app not found")
	ErrLabelNotFound = errors.New("label not found")
)

// Store keeps apps' documents and secrets: package store's SQLite database
// on one machine, or the Kubernetes API (store/kubestore).
type Store interface {
	ListApps(ctx context.Context) ([]store.App, error)
	// UpdateApp changes an app's document: fn gets the stored one (nil if
	// none) and may be called again if another writer changed it meanwhile.
	UpdateApp(ctx context.Context, name string, fn func(cur []byte) ([]byte, error)) ([]byte, error)
	DeleteApp(ctx context.Context, name string) error
	SetSecret(ctx context.Context, app, name string, value []byte) error
	ListSecrets(ctx context.Context, app string) ([]store.SecretInfo, error)
	DeleteSecret(ctx context.Context, app, name string) error
	Secrets(ctx context.Context, app string) (map[string][]byte, error)
	DeleteSecrets(ctx context.Context, app string) error
}

// Options configure a Manager.
type Options struct {
	Store   Store
	Runtime sandbox.Runtime
	// StateDir holds revisions' files and volumes; its parents must be
	// traversable by unprivileged uids.
	StateDir string
	Logger   *slog.Logger
	// SecretsDir holds the secret volumes' files, on a tmpfs mounted there
	// (default: StateDir + "-secrets").
	SecretsDir string
	// Capacity, if set, is what the host admits (see sandbox/admit): a
	// deploy whose replicas could never run on it is refused.
	Capacity Capacity
	// Events, if set, records the apps' lifecycle (the system lines of
	// their logs: revision created, replica ready, failed, scaled down).
	Events *events.Ring
	// Sources, if set, holds uploaded archives that revisions name;
	// without it a deploy that names one is refused.
	Sources Sources
	// Egress makes the proxies of apps with egress rules.
	Egress EgressProxies
	// Images, if set, is the image store apps from images run from;
	// without it a deploy that names an image is refused.
	Images Images
	// RegistryLogins, if set, keeps apps' own registry logins.
	RegistryLogins RegistryLogins
	// Leader, if set, says whether this Berth replica may scale
	// revisions down (and to zero) now: only one replica of several does
	// (package leader). Scaling up for the load a replica sees is never
	// held back. Nil: always, as on one machine.
	Leader Leader
	// Shared, if set, says that Runtime's sandboxes are shared by every
	// Berth replica: an app revision's replicas are then one set for all
	// of them (see Shared). Nil: this process runs replicas of its own.
	Shared Shared
	// NoBusyMarks, with Shared, stops this replica from marking the
	// sandboxes it sends requests to busy, so that the leader no longer
	// sees them (a switch for tests that show what the marks do).
	NoBusyMarks bool
}

// Leader says whether this process leads the Berth replicas now.
type Leader interface {
	IsLeader() bool
}

// EgressProxies makes the egress proxy of an app with egress rules, from
// its revision's setting (package egress).
type EgressProxies interface {
	ProxyFor(scope, egress string, inject []string) (sandbox.EgressProxy, error)
	// Forget drops a deleted scope's proxies and CA.
	Forget(scope string) error
}

// Capacity is the host's budget for sandboxes.
type Capacity interface {
	// Fits reports whether n sandboxes of mem and disk bytes could ever
	// run at once.
	Fits(mem, disk int64, n int) error
	// Freed is closed the next time a sandbox gives its share back.
	Freed() <-chan struct{}
}

// Manager owns every app.
type Manager struct {
	store   Store
	runtime sandbox.Runtime
	egress  EgressProxies
	dir     string
	log     *slog.Logger
	cap     Capacity
	events  *events.Ring
	sources Sources
	images  Images
	logins  RegistryLogins
	leader  Leader
	shared  Shared
	// noBusyMarks: see Options.NoBusyMarks.
	noBusyMarks bool
	// closing is set when Close begins: shared replicas' sandboxes then
	// stay for the other Berth replicas.
	closing atomic.Bool
	// gcMu orders collections of sources; lastGC is when the last began.
	gcMu   sync.Mutex
	lastGC time.Time

	secretsDir     string
	secretsMounted bool

	mu   sync.Mutex
	apps map[string]*App
	// pending holds apps whose first deploy is in progress: not listed and
	// not routed until their first revision is stored.
	pending map[string]*App
	// hosts routes the apps' custom domains.
	hosts hostIndex

	stop      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// checkCapacity logs the active revisions of a stored app that the host
// cannot back (deployed under a larger budget): their replicas will be
// refused with 503 until the app is redeployed or the budget raised.
func (m *Manager) checkCapacity(d Doc) {
	if m.cap == nil {
		return
	}
	for _, name := range d.active() {
		if rev := d.revision(name); rev != nil {
			if err := m.cap.Fits(rev.Config.MemoryBytes, rev.Config.DiskBytes, rev.Config.Min+1); err != nil {
				m.log.Error("app revision cannot run on this host; its replicas are refused until it is redeployed smaller", "app", d.Name, "revision", name, "err", err)
			}
		}
	}
}

// NewManager loads the stored apps and starts their active revisions.
func NewManager(ctx context.Context, o Options) (*Manager, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if err := os.MkdirAll(o.StateDir, 0o711); err != nil {
		return nil, err
	}
	m := &Manager{store: o.Store, runtime: o.Runtime, dir: o.StateDir, log: o.Logger, cap: o.Capacity, sources: o.Sources, events: o.Events, egress: o.Egress, images: o.Images, logins: o.RegistryLogins, leader: o.Leader, shared: o.Shared, noBusyMarks: o.NoBusyMarks, apps: map[string]*App{}, pending: map[string]*App{}, stop: make(chan struct{})}
	m.secretsDir = cmp.Or(o.SecretsDir, filepath.Clean(o.StateDir)+"-secrets")
	if err := m.mountSecrets(); err != nil {
		return nil, err
	}
	stored, err := o.Store.ListApps(ctx)
	if err != nil {
		m.unmountSecrets()
		return nil, err
	}
	for _, sa := range stored {
		var d Doc
		if err := json.Unmarshal(sa.Doc, &d); err != nil {
			m.unmountSecrets()
			return nil, fmt.Errorf("app %q: %w", sa.Name, err)
		}
		m.apps[d.Name] = m.newApp(d)
		m.hosts.add(d.Name, d.Hostnames)
		m.checkCapacity(d)
	}
	m.removeStale()
	m.migrateDirs(ctx)
	m.collectSources()
	for _, a := range m.apps {
		a.reconcile()
	}
	m.wg.Add(1)
	go m.janitor()
	return m, nil
}

// App is one app.
type App struct {
	m    *Manager
	name string
	dir  string

	// saveMu orders changes to the stored doc (see update); traffic never
	// takes it. deleted is set under it when the app is deleted.
	saveMu  sync.Mutex
	deleted bool
	// firstDeploys counts the deploys of an app not yet in Manager.apps
	// (guarded by Manager.mu).
	firstDeploys int

	// cors is the compiled CORS policy of doc (nil: none).
	cors atomic.Pointer[cors.Policy]
	// internal is set when the doc's ingress is internal.
	internal atomic.Bool

	mu       sync.Mutex
	doc      Doc
	running  map[string]*revisionRuntime
	sessions map[string]*session
	// reserved holds the revision names of deploys in progress, seq the
	// last revision number handed out.
	reserved map[string]bool
	seq      int

	logMu   sync.Mutex
	logs    []LogEntry
	logSubs map[chan LogEntry]struct{}
}

type session struct {
	replica  *Replica
	lastSeen time.Time
	active   int // requests of the session in flight (an open stream, say)
}

// LogEntry is a line of an app's log.
type LogEntry struct {
	Time     time.Time `json:"time"`
	Revision string    `json:"revision"`
	Replica  string    `json:"replica,omitempty"`
	Stream   string    `json:"stream"`
	Line     string    `json:"line"`
}

func (m *Manager) newApp(d Doc) *App {
	a := &App{
		m: m, name: d.Name, doc: d, dir: filepath.Join(m.dir, d.Name),
		running: map[string]*revisionRuntime{}, sessions: map[string]*session{},
		reserved: map[string]bool{}, logSubs: map[chan LogEntry]struct{}{},
	}
	a.cors.Store(cors.CompileStored(d.CORS, m.log))
	a.internal.Store(d.Ingress == IngressInternal)
	return a
}

// leading says whether this Berth replica may scale revisions down now.
func (m *Manager) leading() bool { return m.leader == nil || m.leader.IsLeader() }

// CORS is the app's compiled CORS policy (nil if it has none); the front
// door asks on every request.
func (a *App) CORS() *cors.Policy { return a.cors.Load() }

// reconcile runs the active revisions and stops the others.
func (a *App) reconcile() {
	a.mu.Lock()
	want := map[string]bool{}
	for _, r := range a.doc.active() {
		want[r] = true
		if a.running[r] == nil {
			if rev := a.doc.revision(r); rev != nil {
				a.running[r] = newRevisionRuntime(a, *rev)
			}
		}
	}
	var stop []*revisionRuntime
	for name, rt := range a.running {
		if !want[name] && !a.hasSessionsLocked(name) {
			stop = append(stop, rt)
			delete(a.running, name)
		}
	}
	a.mu.Unlock()
	for _, rt := range stop {
		a.logf(rt.rev.Name, "", "revision deactivated")
		rt.stop()
	}
}

func (a *App) hasSessionsLocked(rev string) bool {
	for _, s := range a.sessions {
		if s.replica.Revision() == rev {
			select {
			case <-s.replica.gone:
			default:
				return true
			}
		}
	}
	return false
}

// Get returns an app.
func (m *Manager) Get(name string) (*App, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a := m.apps[name]
	if a == nil {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return a, nil
}

// List returns every app by name.
func (m *Manager) List() []*App {
	m.mu.Lock()
	out := make([]*App, 0, len(m.apps))
	for _, a := range m.apps {
		out = append(out, a)
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// SetTraffic replaces the traffic split (if not nil) and sets labels
// (label → revision; an empty revision removes the label).
func (m *Manager) SetTraffic(ctx context.Context, name string, traffic []TrafficTarget, labels map[string]string) (Doc, error) {
	a, err := m.Get(name)
	if err != nil {
		return Doc{}, err
	}
	doc, err := a.update(ctx, func(d *Doc) error {
		if traffic != nil {
			if err := d.validateTraffic(traffic); err != nil {
				return err
			}
			d.Traffic = traffic
			latest := d.Revisions[len(d.Revisions)-1].Name
			d.Latest = len(traffic) == 1 && traffic[0].Revision == latest
		}
		for label, rev := range labels {
			if !nameRE().MatchString(label) {
				return invalid("%q is not a valid label", label)
			}
			if rev == "" {
				delete(d.Labels, label)
				continue
			}
			if d.revision(rev) == nil {
				return invalid("revision %q does not exist", rev)
			}
			if d.Labels == nil {
				d.Labels = map[string]string{}
			}
			d.Labels[label] = rev
		}
		return nil
	})
	if err != nil {
		return Doc{}, err
	}
	a.reconcile()
	return doc, nil
}

// Delete stops an app and removes it with its revisions and volumes.
func (m *Manager) Delete(ctx context.Context, name string) error {
	a, err := m.Get(name)
	if err != nil {
		return err
	}
	a.saveMu.Lock()
	if a.deleted {
		a.saveMu.Unlock()
		return fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	if err := m.store.DeleteApp(ctx, name); err != nil && !errors.Is(err, store.ErrNotFound) {
		a.saveMu.Unlock()
		return err
	}
	if err := m.store.DeleteSecrets(ctx, name); err != nil {
		a.saveMu.Unlock()
		return err
	}
	a.deleted = true // a deploy in progress now fails instead of storing it again
	a.saveMu.Unlock()
	// Move its files aside before the name is free again, so that removing
	// them cannot race with a new app of the same name.
	trash := filepath.Join(m.dir, fmt.Sprintf(".deleted-%s-%d", name, time.Now().UnixNano()))
	if err := os.Rename(a.dir, trash); err != nil && !errors.Is(err, fs.ErrNotExist) {
		m.log.Warn("move deleted app's files aside", "app", name, "err", err)
		trash = a.dir
	}
	m.mu.Lock()
	if m.apps[name] == a {
		delete(m.apps, name)
	}
	m.mu.Unlock()
	for _, h := range a.Doc().Hostnames {
		m.hosts.remove(name, h.Host)
	}
	a.stopAll()
	if m.egress != nil {
		if err := m.egress.Forget("app/" + name); err != nil {
			m.log.Warn("remove the app's egress CA", "app", name, "err", err)
		}
	}
	m.removeVolumes(ctx, name)
	if m.logins != nil {
		if err := m.logins.DeleteAppRegistryCredentials(ctx, name); err != nil {
			m.log.Warn("forget deleted app's registry logins", "app", name, "err", err)
		}
	}
	defer m.collectSources()
	return os.RemoveAll(trash)
}

// group is the sandbox group of the app's replicas (sandbox.Spec.Group):
// they share its volumes.
func (a *App) group() string { return groupOf(a.name) }

func groupOf(app string) string { return "app/" + app }

// removeVolumes removes a deleted app's volumes, which its runtime keeps.
func (m *Manager) removeVolumes(ctx context.Context, app string) {
	if m.runtime == nil {
		return
	}
	if err := m.runtime.RemoveVolumes(ctx, groupOf(app)); err != nil {
		m.log.Warn("remove a deleted app's volumes", "app", app, "err", err)
	}
}

func (a *App) stopAll() {
	a.mu.Lock()
	running := a.running
	a.running = map[string]*revisionRuntime{}
	a.sessions = map[string]*session{}
	a.mu.Unlock()
	var wg sync.WaitGroup
	for _, rt := range running {
		wg.Add(1)
		go func() { defer wg.Done(); rt.stop() }()
	}
	wg.Wait()
}

// Close stops every app's replicas (their state stays stored). It is safe
// to call more than once.
func (m *Manager) Close() {
	m.closeOnce.Do(func() {
		m.closing.Store(true)
		close(m.stop)
		m.wg.Wait()
		var wg sync.WaitGroup
		for _, a := range m.List() {
			wg.Add(1)
			go func() { defer wg.Done(); a.stopAll() }()
		}
		wg.Wait()
		m.unmountSecrets()
	})
}

// janitor ends MCP sessions that idled out or whose replica is gone, and
// stops deactivated revisions once their last session has ended.
func (m *Manager) janitor() {
	defer m.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
		for _, a := range m.List() {
			a.mu.Lock()
			for id, s := range a.sessions {
				idle := s.replica.rev.rev.Config.ScaleDownAfter()
				select {
				case <-s.replica.gone:
					delete(a.sessions, id)
					continue
				default:
				}
				if s.active == 0 && time.Since(s.lastSeen) > idle {
					s.replica.sessions.Add(-1)
					delete(a.sessions, id)
				}
			}
			a.mu.Unlock()
			a.reconcile()
		}
		m.gcMu.Lock()
		due := time.Since(m.lastGC) > sourceGCInterval
		m.gcMu.Unlock()
		if due {
			m.collectSources()
		}
	}
}

// Stdio reports whether the app's latest revision is a stdio server.
func (a *App) Stdio() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := len(a.doc.Revisions)
	return n > 0 && a.doc.Revisions[n-1].Config.Transport == TransportStdio
}

// Name is the app's name.
func (a *App) Name() string { return a.name }

// Doc returns the app's stored document.
func (a *App) Doc() Doc {
	a.mu.Lock()
	defer a.mu.Unlock()
	d := a.doc
	d.Revisions = append([]Revision(nil), a.doc.Revisions...)
	d.Traffic = append([]TrafficTarget(nil), a.doc.Traffic...)
	return d
}

// ReplicaInfo describes a running replica.
type ReplicaInfo struct {
	ID       string `json:"id"`
	Revision string `json:"revision"`
	Ready    bool   `json:"ready"`
	// Phase is "starting" until the replica answers its probe, then "ready".
	Phase    string `json:"phase"`
	InFlight int64  `json:"inFlight"`
	Sessions int64  `json:"sessions"`
	// Restarts counts the replicas that failed in this replica's place.
	Restarts    int64     `json:"restarts"`
	StartedAt   time.Time `json:"startedAt"`
	MemoryBytes uint64    `json:"memoryBytes"`
}

// Replicas lists the running replicas of every active revision.
func (a *App) Replicas() []ReplicaInfo {
	a.mu.Lock()
	rts := make([]*revisionRuntime, 0, len(a.running))
	for _, rt := range a.running {
		rts = append(rts, rt)
	}
	a.mu.Unlock()
	var out []ReplicaInfo
	for _, rt := range rts {
		for _, r := range rt.Replicas() {
			ri := ReplicaInfo{ID: r.ID, Revision: rt.rev.Name, Ready: r.ready.Load(), Phase: "starting", InFlight: r.inflight.Load(), Sessions: r.sessions.Load(),
				StartedAt: r.started.UTC()}
			if ri.Ready {
				ri.Phase = "ready"
			}
			if r.slot != nil {
				ri.Restarts = r.slot.restarts.Load()
			}
			if sr, ok := r.sb.(sandbox.StatsReporter); ok {
				ri.MemoryBytes = sr.Stats().MemoryBytes
			}
			out = append(out, ri)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Config returns the configuration of the revision a replica belongs to.
func (r *Replica) Config() Config { return r.rev.rev.Config }

// Acquire picks a revision (the label's, or by traffic weight) and one of
// its replicas for a request that starts no session of its own yet.
func (a *App) Acquire(ctx context.Context, label string) (*Replica, error) {
	a.mu.Lock()
	var rev string
	if label != "" {
		rev = a.doc.Labels[label]
		if rev == "" {
			a.mu.Unlock()
			return nil, fmt.Errorf("%w: %q on app %s", ErrLabelNotFound, label, a.name)
		}
	} else {
		n := rand.IntN(100)
		for _, t := range a.doc.Traffic {
			if n < t.Percent {
				rev = t.Revision
				break
			}
			n -= t.Percent
		}
	}
	rt := a.running[rev]
	a.mu.Unlock()
	if rt == nil {
		return nil, fmt.Errorf("%w: revision %q is not running", ErrNoReplica, rev)
	}
	return rt.Acquire(ctx)
}

// Session returns the replica an MCP session is bound to, counting the
// request (call Replica.Done and SessionDone when it ends). replicaID and
// addr name the replica the session's id names (the gateway seals them
// in; the address tells apart replicas of the same ID in different Berth
// processes, and in one process across restarts): a session
// this process has not seen (started through another Berth replica, or
// before a restart of the gateway's memory) is bound here if that replica
// runs in this process. ok is false if the replica is not here or gone.
func (a *App) Session(id, replicaID, addr string) (*Replica, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.sessions[id]
	if s == nil || s.replica.ID != replicaID || s.replica.Addr() != addr {
		rep := a.replicaLocked(replicaID, addr)
		if rep == nil {
			return nil, false
		}
		if s != nil {
			s.replica.sessions.Add(-1)
		}
		rep.sessions.Add(1)
		s = &session{replica: rep}
		a.sessions[id] = s
	}
	select {
	case <-s.replica.gone:
		delete(a.sessions, id)
		return nil, false
	default:
	}
	s.lastSeen = time.Now()
	s.active++
	s.replica.inflight.Add(1)
	s.replica.rev.touch()
	return s.replica, true
}

// replicaLocked finds a running replica by ID and address (nil if none
// here).
func (a *App) replicaLocked(id, addr string) *Replica {
	for _, rt := range a.running {
		for _, rep := range rt.Replicas() {
			if rep.ID == id && rep.Addr() == addr {
				return rep
			}
		}
	}
	return nil
}

// SessionDone marks the end of a request that Session counted; the session
// is idle from now until its next request.
func (a *App) SessionDone(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s := a.sessions[id]; s != nil && s.active > 0 {
		s.active--
		s.lastSeen = time.Now()
	}
}

// BindSession records that an MCP session lives on a replica.
func (a *App) BindSession(id string, r *Replica) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sessions[id] == nil {
		r.sessions.Add(1)
	}
	a.sessions[id] = &session{replica: r, lastSeen: time.Now()}
}

// EndSession forgets an MCP session.
func (a *App) EndSession(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s := a.sessions[id]; s != nil {
		s.replica.sessions.Add(-1)
		delete(a.sessions, id)
	}
}

func (a *App) log(rev, replica string, l agent.LogLine) {
	a.appendLog(LogEntry{Time: l.Time, Revision: rev, Replica: replica, Stream: l.Stream, Line: l.Line})
}

func (a *App) logf(rev, replica, format string, args ...any) {
	e := LogEntry{Time: time.Now().UTC(), Revision: rev, Replica: replica, Stream: "system", Line: fmt.Sprintf(format, args...)}
	a.appendLog(e)
	a.m.events.Add(events.Event{Time: e.Time, Kind: eventKind(e.Line), App: a.name, Revision: rev, Replica: replica, Message: e.Line})
}

// eventKind names the kind of event a system log line is.
func eventKind(line string) string {
	for _, k := range []struct{ prefix, kind string }{
		{"revision created", "deploy"}, {"replica failed", "crash"}, {"replica ready", "ready"},
		{"replica stopping (scaled down)", "scale-down"}, {"revision deactivated", "deactivated"},
	} {
		if strings.HasPrefix(line, k.prefix) {
			return k.kind
		}
	}
	return "app"
}

func (a *App) appendLog(e LogEntry) {
	a.logMu.Lock()
	defer a.logMu.Unlock()
	a.logs = append(a.logs, e)
	if len(a.logs) > 5000 {
		a.logs = a.logs[len(a.logs)-5000:]
	}
	for ch := range a.logSubs {
		select {
		case ch <- e:
		default:
		}
	}
}

// Logs passes the app's recent log lines to fn and, with follow, new ones
// until ctx ends.
func (a *App) Logs(ctx context.Context, follow bool, fn func(LogEntry) error) error {
	ch := make(chan LogEntry, 1024)
	a.logMu.Lock()
	past := append([]LogEntry(nil), a.logs...)
	if follow {
		a.logSubs[ch] = struct{}{}
	}
	a.logMu.Unlock()
	defer func() {
		a.logMu.Lock()
		delete(a.logSubs, ch)
		a.logMu.Unlock()
	}()
	for _, e := range past {
		if err := fn(e); err != nil {
			return err
		}
	}
	if !follow {
		return nil
	}
	for {
		select {
		case e := <-ch:
			if err := fn(e); err != nil {
				return err
			}
		case <-ctx.Done():
			return nil
		}
	}
}
