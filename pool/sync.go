package pool

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"

	"github.com/berth-dev/berth/store"
)

// Sync brings the manager in line with a pool as stored, when the store
// is shared and something else wrote it: another Berth replica, or
// kubectl apply of a SessionPool (store/kubestore's watch calls it). A
// pool it does not have is started, one it has takes the stored settings
// and key; the manager's own writes come back as nothing new. The error
// says why the stored pool cannot be served as it is (it becomes the
// resource's Ready condition).
func (m *Manager) Sync(ctx context.Context, sp store.Pool) error {
	var cfg Config
	if err := json.Unmarshal(sp.Config, &cfg); err != nil {
		return invalid("", "pool %s: %v", sp.Name, err)
	}
	cfg.Name = sp.Name
	if err := cfg.Normalize(); err != nil {
		return err
	}
	rt, ok := m.runtimes[cfg.Runtime]
	if !ok {
		return invalid("runtime", "runtime %q is not available on this server (available: %v)", cfg.Runtime, m.RuntimeNames())
	}
	if err := m.fits(cfg); err != nil {
		return err
	}
	p, _ := m.Get(sp.Name)
	if p != nil && p.Config().ImageDigest != "" && cfg.ImageDigest == "" && cfg.Image == p.Config().Image {
		cfg.ImageDigest = p.Config().ImageDigest // a spec written without the digest Berth resolved
	}
	if p != nil && reflect.DeepEqual(p.Config(), cfg) {
		p.setKeyHash(sp.KeyHash) // a rotation elsewhere, or nothing
		return nil
	}
	// An image is resolved (and pulled) before the lock is taken.
	im, err := m.resolveImage(ctx, &cfg)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := m.pools[sp.Name]
	if cur != p {
		return fmt.Errorf("pool %s changed meanwhile; the next event brings it", sp.Name)
	}
	if p == nil {
		p = newPool(cfg, im, sp.KeyHash, sp.CreatedAt, rt, m.log, m.freed(), m.egress, m.leader, m.cluster)
		p.events = m.events
		m.pools[cfg.Name] = p
		m.log.Info("pool added from the store", "pool", cfg.Name, "type", cfg.Type, "runtime", cfg.Runtime, "image", cfg.Image)
		return nil
	}
	old := p.Config()
	if cfg.Type != old.Type || cfg.Runtime != old.Runtime {
		return invalid("name", "a pool's type and runtime cannot change (it keeps type %s, runtime %s); create a new pool", old.Type, old.Runtime)
	}
	p.setKeyHash(sp.KeyHash)
	p.setUnusable(nil)
	p.setConfig(cfg, im)
	m.log.Info("pool updated from the store", "pool", cfg.Name)
	return nil
}

// Forget drops a pool deleted elsewhere (by another replica, or kubectl
// delete): its sessions end and its sandboxes go, as with Delete.
func (m *Manager) Forget(name string) {
	m.mu.Lock()
	p := m.pools[name]
	delete(m.pools, name)
	m.mu.Unlock()
	if p != nil {
		p.close()
		m.log.Info("pool deleted from the store", "pool", name)
	}
}
