package app

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/berth-dev/berth/internal/archive"
	"github.com/berth-dev/berth/source"
)

// Sources is the store of uploaded archives (see package source).
type Sources interface {
	Stat(digest string) (source.Info, error)
	Open(digest string) (*os.File, error)
	Put(ctx context.Context, r io.Reader, want string) (source.Info, bool, error)
	GC(used func(digest string) bool) ([]string, error)
}

// sourceGCInterval is how often unreferenced sources are looked for
// (besides at start and after an app's delete).
const sourceGCInterval = 10 * time.Minute

// unpackSource unpacks the revision's archive into staging.
func (a *App) unpackSource(ctx context.Context, src *Source, staging string) error {
	if a.m.sources == nil {
		return invalid("this server keeps no uploaded sources")
	}
	// Stat first: it renews the archive's grace period, so a collection
	// cannot take it while the deploy runs.
	if _, err := a.m.sources.Stat(src.Archive); err != nil {
		if errors.Is(err, source.ErrNotFound) {
			return invalid("source %s is not on the server (uploads no revision uses are removed after a while): deploy again with --dir to upload it", src.Archive)
		}
		return err
	}
	f, err := a.m.sources.Open(src.Archive)
	if err != nil {
		return err
	}
	defer f.Close()
	// Root's: the sandbox runtime hands them to the app's sandboxes.
	if _, err := archive.Unpack(ctx, f, staging, archive.Owner{}, archive.Limits{}); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ae *archive.Error
		if errors.As(err, &ae) {
			return invalid("source %s: %v", src.Archive, err)
		}
		return err
	}
	return nil
}

// usedSources reports whether a stored revision names an archive.
func (m *Manager) usedSources() func(string) bool {
	used := map[string]bool{}
	for _, a := range m.List() {
		for _, r := range a.Doc().Revisions {
			if r.Config.Source != nil {
				used[r.Config.Source.Archive] = true
			}
		}
	}
	return func(d string) bool { return used[d] }
}

// collectSources removes the archives no revision names (after their
// grace period).
func (m *Manager) collectSources() {
	if m.sources == nil {
		return
	}
	m.gcMu.Lock()
	defer m.gcMu.Unlock()
	m.lastGC = time.Now()
	removed, err := m.sources.GC(m.usedSources())
	if err != nil {
		m.log.Warn("collect unused sources", "err", err)
	}
	for _, d := range removed {
		m.log.Info("removed an uploaded source no revision uses", "digest", d)
	}
}

// migrateDirs gives each revision deployed before uploads (its config
// names a host directory, which the deploy copied into the revision's
// files) an archive of those files as its source, and forgets the host
// path: the revision keeps running from its files, as before, and nothing
// refers to the host path again.
func (m *Manager) migrateDirs(ctx context.Context) {
	if m.sources == nil {
		return
	}
	for _, a := range m.apps {
		d := a.Doc()
		changed := false
		for i, r := range d.Revisions {
			if r.Config.Dir == "" || r.Config.Source != nil {
				continue
			}
			info, err := packInto(ctx, m.sources, filepath.Join(a.revisionsDir(), r.Name))
			if err != nil {
				m.log.Warn("migrate a revision's copied dir to an archive source", "app", a.name, "revision", r.Name, "err", err)
				continue
			}
			d.Revisions[i].Config.Source = &Source{Archive: info.Digest}
			d.Revisions[i].Config.Dir = ""
			changed = true
			m.log.Info("migrated a revision's copied dir to an archive source", "app", a.name, "revision", r.Name, "dir", r.Config.Dir, "digest", info.Digest)
		}
		if changed {
			if _, err := a.update(ctx, func(doc *Doc) error { doc.Revisions = d.Revisions; return nil }); err != nil {
				m.log.Warn("store migrated revisions", "app", a.name, "err", err)
			}
		}
	}
}

// packInto packs dir into the store.
func packInto(ctx context.Context, s Sources, dir string) (source.Info, error) {
	pr, pw := io.Pipe()
	packed := make(chan error, 1)
	go func() {
		err := archive.Pack(ctx, pw, dir, archive.PackOptions{KeepIgnored: true})
		pw.CloseWithError(err)
		packed <- err
	}()
	info, _, err := s.Put(ctx, pr, "")
	_ = pr.CloseWithError(errors.New("stopped reading"))
	return info, errors.Join(err, <-packed)
}
