package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/berth-dev/berth/edge/cors"
	"github.com/berth-dev/berth/store"
)

// Sync brings the manager in line with an app as stored, when the store is
// shared and something else wrote it: another Berth replica, or kubectl
// apply of an App (store/kubestore's watch calls it). An app it does not
// have is added and its active revisions started; one it has takes the
// stored document (revisions, traffic, labels, hostnames, auth) and
// reconciles; the manager's own writes come back as nothing new. The error
// says why the stored app cannot be served as it is.
func (m *Manager) Sync(ctx context.Context, sa store.App) error {
	var d Doc
	if err := json.Unmarshal(sa.Doc, &d); err != nil {
		return invalid("app %s: %v", sa.Name, err)
	}
	d.Name = sa.Name
	if d.CreatedAt.IsZero() {
		d.CreatedAt = sa.CreatedAt
	}
	if err := d.check(); err != nil {
		return err
	}
	m.mu.Lock()
	a := m.apps[sa.Name]
	if a == nil && m.pending[sa.Name] != nil {
		m.mu.Unlock()
		return nil // this replica's first deploy of it: it publishes the app
	}
	if a == nil {
		a = m.newApp(d)
		m.apps[d.Name] = a
		m.mu.Unlock()
		m.hosts.add(d.Name, d.Hostnames)
		m.prepareMissing(ctx, a, d)
		a.reconcile()
		m.log.Info("app added from the store", "app", d.Name)
		return nil
	}
	m.mu.Unlock()
	a.saveMu.Lock()
	defer a.saveMu.Unlock()
	if a.deleted {
		return nil
	}
	old := a.Doc()
	if same(old, d) {
		return nil
	}
	m.prepareMissing(ctx, a, d)
	a.mu.Lock()
	a.doc = d
	a.mu.Unlock()
	a.cors.Store(cors.CompileStored(d.CORS, m.log))
	a.internal.Store(d.Ingress == IngressInternal)
	for _, h := range old.Hostnames {
		m.hosts.remove(d.Name, h.Host)
	}
	m.hosts.add(d.Name, d.Hostnames)
	a.reconcile()
	m.log.Info("app updated from the store", "app", d.Name)
	return nil
}

// check fills the defaults of the revisions' settings (kubectl apply of
// an App may leave any out) and refuses a document whose settings are
// invalid or whose traffic or labels name revisions it does not have.
func (d *Doc) check() error {
	for i := range d.Revisions {
		r := &d.Revisions[i]
		if err := r.Config.Normalize(); err != nil {
			return invalid("revision %s: %v", r.Name, err)
		}
	}
	if len(d.Traffic) > 0 {
		if err := d.validateTraffic(d.Traffic); err != nil {
			return err
		}
	}
	for label, rev := range d.Labels {
		if d.revision(rev) == nil {
			return invalid("label %s names revision %q, which the app does not have", label, rev)
		}
	}
	return nil
}

func same(a, b Doc) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

// prepareMissing makes the files of the active revisions that another
// replica deployed (this one has no directory for them).
func (m *Manager) prepareMissing(ctx context.Context, a *App, d Doc) {
	for _, name := range d.active() {
		rev := d.revision(name)
		if rev == nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(a.revisionsDir(), name)); !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err := a.prepare(ctx, *rev); err != nil {
			m.log.Error("prepare the files of a revision deployed elsewhere", "app", d.Name, "revision", name, "err", err)
		}
	}
}

// Forget drops an app deleted elsewhere (by another replica, or kubectl
// delete): its replicas stop; its files here go.
func (m *Manager) Forget(name string) {
	m.mu.Lock()
	a := m.apps[name]
	if a != nil {
		delete(m.apps, name)
	}
	m.mu.Unlock()
	if a == nil {
		return
	}
	a.saveMu.Lock()
	a.deleted = true
	a.saveMu.Unlock()
	for _, h := range a.Doc().Hostnames {
		m.hosts.remove(name, h.Host)
	}
	a.stopAll()
	if err := os.RemoveAll(a.dir); err != nil {
		m.log.Warn("remove the files of an app deleted elsewhere", "app", name, "err", err)
	}
	m.log.Info("app deleted from the store", "app", name)
}
