package app

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/berth-dev/berth/edge/cors"
	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/sandbox"
)

// stagingPrefix names the directories a deploy copies a revision's files
// into before it renames them into place.
const stagingPrefix = ".staging-"

// Deploy creates a revision of app name (creating the app if needed) and
// rolls it out: with the default "latest" traffic mode it takes all new
// sessions; old revisions keep the sessions they have until they end.
//
// The slow part (unpacking the source, writing the store) holds no lock that
// traffic needs: requests to the app's current revisions go on meanwhile.
// The revision becomes the app's only once its files and the store say so;
// a deploy that fails leaves the app as it was, and a failed first deploy
// leaves no app.
func (m *Manager) Deploy(ctx context.Context, name string, cfg Config) (Doc, Revision, error) {
	return m.DeployProgress(ctx, name, cfg, nil)
}

// DeployProgress is Deploy telling progress how the pull of the
// revision's image goes (nil: not told).
func (m *Manager) DeployProgress(ctx context.Context, name string, cfg Config, progress func(image.Progress)) (Doc, Revision, error) {
	if err := ValidName(name); err != nil {
		return Doc{}, Revision{}, err
	}
	if cfg.Source != nil {
		src := *cfg.Source
		cfg.Source = &src
	}
	cfg.Registries = append([]Registry(nil), cfg.Registries...)
	if err := m.resolveImage(ctx, name, &cfg, progress); err != nil {
		return Doc{}, Revision{}, err
	}
	if err := cfg.Normalize(); err != nil {
		return Doc{}, Revision{}, err
	}
	auth, ingress := cfg.Auth, cfg.Ingress
	cfg.Auth, cfg.Ingress = nil, ""
	if auth != nil {
		if err := auth.Normalize(); err != nil {
			return Doc{}, Revision{}, err
		}
	}
	if m.cap != nil {
		// Its minimum replicas and the revision's spare sandbox.
		if err := m.cap.Fits(cfg.MemoryBytes, cfg.DiskBytes, cfg.Min+1); err != nil {
			return Doc{}, Revision{}, invalid("app %s: %v; lower --memory, --disk or --min, or raise berth up --memory-overcommit/--disk-overcommit", name, err)
		}
	}
	if err := m.checkSecrets(ctx, name, cfg); err != nil {
		return Doc{}, Revision{}, err
	}
	a, first := m.appForDeploy(name)
	ok := false
	if first {
		defer func() { m.endFirstDeploy(a, ok) }()
	}
	rev, seq, err := a.reserve(cfg)
	if err != nil {
		return Doc{}, Revision{}, err
	}
	defer a.release(rev.Name, seq)
	if err := a.prepare(ctx, rev); err != nil {
		return Doc{}, Revision{}, err
	}
	doc, err := a.update(ctx, func(d *Doc) error {
		if d.revision(rev.Name) != nil {
			return invalid("revision %s exists already: choose another --revision-suffix", rev.Name)
		}
		d.Next = max(d.Next, seq)
		d.Revisions = append(d.Revisions, rev)
		if auth != nil {
			d.Auth = auth
		}
		if ingress != "" {
			d.Ingress = ingress
		}
		d.CORS = rev.Config.CORS
		if d.Latest || len(d.Traffic) == 0 {
			d.Latest = true
			d.Traffic = []TrafficTarget{{Revision: rev.Name, Percent: 100}}
		}
		return nil
	})
	if err != nil {
		a.discard(rev.Name)
		return Doc{}, Revision{}, err
	}
	ok = true
	a.logf(rev.Name, "", "revision created")
	a.reconcile()
	return doc, rev, nil
}

// appForDeploy returns the app to deploy to: the existing one, or one that
// stays out of m.apps (not listed, not routed) until its first revision is
// stored; concurrent first deploys share it.
func (m *Manager) appForDeploy(name string) (a *App, first bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a := m.apps[name]; a != nil {
		return a, false
	}
	a = m.pending[name]
	if a == nil {
		a = m.newApp(Doc{Name: name, Latest: true, CreatedAt: time.Now().UTC()})
		m.pending[name] = a
	}
	a.firstDeploys++
	return a, true
}

// endFirstDeploy publishes a new app once a first deploy has stored it.
func (m *Manager) endFirstDeploy(a *App, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ok && m.apps[a.name] == nil {
		m.apps[a.name] = a
	}
	if a.firstDeploys--; a.firstDeploys == 0 && m.pending[a.name] == a {
		delete(m.pending, a.name)
	}
}

// reserve picks the new revision's name and number and holds the name for
// this deploy until release.
func (a *App) reserve(cfg Config) (Revision, int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.seq = max(a.seq, a.doc.Next) + 1
	revName := fmt.Sprintf("%s--r%d", a.name, a.seq)
	if cfg.RevisionSuffix != "" {
		revName = a.name + "--" + cfg.RevisionSuffix
	}
	if a.doc.revision(revName) != nil || a.reserved[revName] {
		a.seq--
		return Revision{}, 0, invalid("revision %s exists already: choose another --revision-suffix", revName)
	}
	a.reserved[revName] = true
	return Revision{Name: revName, Config: cfg, CreatedAt: time.Now().UTC()}, a.seq, nil
}

// release ends a reservation; a deploy that stored nothing gives its
// number back if no later one took the next.
func (a *App) release(revName string, seq int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.reserved, revName)
	if a.doc.revision(revName) == nil && a.seq == seq {
		a.seq--
	}
}

// update changes the app's stored doc: fn edits a copy, the copy is
// written to the store, and only then does it become the app's. saveMu
// orders updates (so the store always ends with the newest doc); a.mu is
// held only to copy and to swap, never across the store write.
func (a *App) update(ctx context.Context, fn func(*Doc) error) (Doc, error) {
	a.saveMu.Lock()
	defer a.saveMu.Unlock()
	if a.deleted {
		return Doc{}, fmt.Errorf("%w: %q (it was deleted)", ErrNotFound, a.name)
	}
	d := a.Doc()
	d.Labels = maps.Clone(d.Labels)
	if err := fn(&d); err != nil {
		return Doc{}, err
	}
	b, err := json.Marshal(d)
	if err != nil {
		return Doc{}, err
	}
	if err := a.m.store.PutApp(ctx, a.name, b); err != nil {
		return Doc{}, err
	}
	a.mu.Lock()
	a.doc = d
	a.mu.Unlock()
	a.cors.Store(cors.CompileStored(d.CORS, a.m.log))
	a.internal.Store(d.Ingress == IngressInternal)
	return a.Doc(), nil
}

// revisionsDir holds the app's revisions' files.
func (a *App) revisionsDir() string { return filepath.Join(a.dir, "revisions") }

// prepare copies the revision's files and makes its volumes. The copy is
// staged in a fresh directory and renamed into place only when complete,
// so a deploy killed half-way leaves nothing that a later revision of the
// same name could pick up (stale staging directories are removed at
// start).
func (a *App) prepare(ctx context.Context, rev Revision) error {
	revs := a.revisionsDir()
	if err := os.MkdirAll(revs, 0o711); err != nil {
		return err
	}
	// Traversable, not listable, by the sandbox's uid.
	for d := revs; d != filepath.Dir(a.m.dir); d = filepath.Dir(d) {
		_ = os.Chmod(d, 0o711)
	}
	staging, err := os.MkdirTemp(revs, stagingPrefix)
	if err != nil {
		return err
	}
	if err := a.stage(ctx, rev, staging); err != nil {
		_ = os.RemoveAll(staging)
		return err
	}
	final := filepath.Join(revs, rev.Name)
	// A directory of this name is what a crashed deploy left: no stored
	// revision has the name (it is reserved).
	if err := os.RemoveAll(final); err != nil {
		_ = os.RemoveAll(staging)
		return err
	}
	if err := os.Rename(staging, final); err != nil {
		_ = os.RemoveAll(staging)
		return err
	}
	return nil
}

// stage fills a staging directory with the revision's files, root's and
// private: the sandbox runtime hands them to the app's sandboxes
// (sandbox.Files), as it sees fit.
func (a *App) stage(ctx context.Context, rev Revision, staging string) error {
	if src := rev.Config.Source; src != nil && src.Archive != "" {
		if err := a.unpackSource(ctx, src, staging); err != nil {
			return err
		}
	}
	return os.Chmod(staging, 0o700)
}

// discard removes the files of a revision that was not stored.
func (a *App) discard(revName string) {
	if err := os.RemoveAll(filepath.Join(a.revisionsDir(), revName)); err != nil {
		a.m.log.Warn("remove files of a failed deploy", "app", a.name, "revision", revName, "err", err)
	}
}

// files are the revision's files its sandboxes see at /app.
func (a *App) files(rev Revision) []sandbox.Files {
	// An image app's files are its image's (many keep theirs in /app):
	// /app is the revision's only when it has an archive or no source.
	if !rev.Config.HasImage() || rev.Config.Source.Archive != "" {
		return []sandbox.Files{{Dir: filepath.Join(a.revisionsDir(), rev.Name), Target: "/app"}}
	}
	return nil
}

// volumes are the revision's volumes, the app's group's (see group).
func volumes(rev Revision) []sandbox.Volume {
	var vs []sandbox.Volume
	for _, v := range rev.Config.Volumes {
		vs = append(vs, sandbox.Volume{Name: v.Name, Path: v.Path})
	}
	return vs
}

// removeStale removes what crashed deploys and deletes left in the state
// dir: directories of apps that are not stored (a first deploy or a
// delete that did not finish) with their volumes, staging directories,
// and revision directories that no stored revision names.
func (m *Manager) removeStale() {
	entries, err := os.ReadDir(m.dir)
	if err != nil {
		m.log.Warn("list app state", "err", err)
		return
	}
	for _, e := range entries {
		a := m.apps[e.Name()]
		if a == nil {
			if name := staleAppName(e.Name()); name != "" {
				m.removeVolumes(context.Background(), name)
			}
			m.removeStalePath(filepath.Join(m.dir, e.Name()))
			continue
		}
		revs, _ := os.ReadDir(a.revisionsDir())
		for _, r := range revs {
			p := filepath.Join(a.revisionsDir(), r.Name())
			if a.doc.revision(r.Name()) == nil {
				m.removeStalePath(p)
			}
		}
	}
}

// staleAppName is the app whose files a stale entry of the state dir
// held: NAME or .deleted-NAME-N (see Delete); "" for anything else.
func staleAppName(entry string) string {
	if rest, ok := strings.CutPrefix(entry, ".deleted-"); ok {
		if i := strings.LastIndexByte(rest, '-'); i > 0 {
			entry = rest[:i]
		}
	}
	if !nameRE().MatchString(entry) {
		return ""
	}
	return entry
}

func (m *Manager) removeStalePath(p string) {
	m.log.Info("removing what an interrupted deploy or delete left", "path", p)
	if err := os.RemoveAll(p); err != nil {
		m.log.Warn("remove stale app files", "path", p, "err", err)
	}
}
