// Package pool implements session pools: each pool keeps sandboxes warm,
// hands one to each session identifier, routes later requests with the same
// identifier to the same sandbox, and destroys sessions that stay idle past
// the pool's cooldown. Pools and their API keys are persisted in the store.
package pool

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"

	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/store"
)

// Store keeps pools, their keys and their secrets: package store's SQLite
// database on one machine, or the Kubernetes API (store/kubestore).
type Store interface {
	ListPools(ctx context.Context) ([]store.Pool, error)
	GetPool(ctx context.Context, name string) (store.Pool, error)
	// CreatePool fails with store.ErrExists if the name is taken.
	CreatePool(ctx context.Context, name string, config []byte, key string) error
	// UpdatePool changes a pool's configuration: fn gets the stored one
	// and may be called again if another writer changed it meanwhile.
	UpdatePool(ctx context.Context, name string, fn func(cur []byte) ([]byte, error)) error
	DeletePool(ctx context.Context, name string) error
	PoolKey(ctx context.Context, name string) (string, error)
	SetPoolKey(ctx context.Context, name, key string) error
	SetPoolSecret(ctx context.Context, pool, name string, value []byte) error
	ListPoolSecrets(ctx context.Context, pool string) ([]store.SecretInfo, error)
	DeletePoolSecret(ctx context.Context, pool, name string) error
	DeletePoolSecrets(ctx context.Context, pool string) error
}

// Options configure a Manager.
type Options struct {
	Store Store
	// Runtimes by name ("bwrap", "gvisor"); pools name the one they use.
	Runtimes map[string]sandbox.Runtime
	Logger   *slog.Logger
	// Capacity, if set, is what the host admits (see sandbox/admit): a
	// pool whose sessions could never run on it is refused.
	Capacity Capacity
	// Images, if set, lets pools run on images (Config.Image); Resolve,
	// if set, finds a reference (default: Images.Pull).
	Images  Images
	Resolve ResolveImage
	// Events, if set, records ended sessions.
	Events *events.Ring
	// Egress makes the proxies of pools with egress rules.
	Egress EgressProxies
	// Leader, if set, says whether this Berth replica may expire idle
	// sessions (cooldown) now: only one replica of several does (package
	// leader). Nil: always, as on one machine.
	Leader Leader
	// Cluster, if set, holds every pool's sandboxes for several Berth
	// replicas (the kube driver with --state kube): sessions are claims in
	// it, warm sandboxes are kept there by the leader.
	Cluster Cluster
}

// Leader says whether this process leads the Berth replicas now.
type Leader interface {
	IsLeader() bool
}

// EgressProxies makes the egress proxy of a pool with egress rules, from
// its stored setting (package egress).
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

// Manager owns every pool.
type Manager struct {
	store    Store
	runtimes map[string]sandbox.Runtime
	log      *slog.Logger
	capacity Capacity
	images   Images
	resolve  ResolveImage
	// wg counts the watchers of probe sandboxes' containers.
	wg      sync.WaitGroup
	events  *events.Ring
	egress  EgressProxies
	leader  Leader
	cluster Cluster

	mu    sync.RWMutex
	pools map[string]*Pool
}

// NewManager returns a manager with no pools loaded; call Load.
func NewManager(o Options) *Manager {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Manager{store: o.Store, runtimes: o.Runtimes, log: o.Logger, capacity: o.Capacity, events: o.Events, egress: o.Egress, images: o.Images, resolve: o.Resolve, pools: map[string]*Pool{}, leader: o.Leader, cluster: o.Cluster}
}

// Load starts every stored pool.
func (m *Manager) Load(ctx context.Context) error {
	stored, err := m.store.ListPools(ctx)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, sp := range stored {
		var cfg Config
		if err := json.Unmarshal(sp.Config, &cfg); err != nil {
			return fmt.Errorf("pool %q: stored config: %w", sp.Name, err)
		}
		if cfg.DiskBytes == 0 { // stored before pools had a disk limit
			cfg.DiskBytes = DefaultDisk
		}
		rt, ok := m.runtimes[cfg.Runtime]
		if !ok {
			m.log.Error("pool's runtime is not available; the pool is not served", "pool", cfg.Name, "runtime", cfg.Runtime)
			continue
		}
		im, imgErr := m.storedImage(cfg)
		p := newPool(cfg, im, sp.KeyHash, sp.CreatedAt, rt, m.log, m.freed(), m.egress, m.leader, m.cluster)
		p.events = m.events
		if imgErr != nil {
			m.log.Error("pool's image is missing; it starts no sandboxes until it is changed (berth pool update --image)", "pool", cfg.Name, "err", imgErr)
			p.setUnusable(imgErr)
		} else if err := m.fits(cfg); err != nil {
			// Served no sandbox until an update makes it fit; not fatal
			// for the server and its other pools.
			m.log.Error("pool cannot run on this host; it starts no sandboxes until it is changed (berth pool update)", "pool", cfg.Name, "err", err)
			p.setUnusable(err)
		}
		m.pools[cfg.Name] = p
	}
	return nil
}

// fits checks a pool's settings against the host's capacity: one session,
// and its warm sandboxes all at once, must be able to run.
func (m *Manager) fits(cfg Config) error {
	if m.capacity == nil {
		return nil
	}
	if err := m.capacity.Fits(cfg.MemoryBytes, cfg.DiskBytes, max(cfg.Ready, 1)); err != nil {
		return invalid("memoryBytes", "pool %s: %v; lower --memory, --disk or --ready, or raise berth up --memory-overcommit/--disk-overcommit", cfg.Name, err)
	}
	return nil
}

func (m *Manager) freed() func() <-chan struct{} {
	if m.capacity == nil {
		return nil
	}
	return m.capacity.Freed
}

// NewKey returns a fresh random API key.
func NewKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Create creates a pool and returns it with its API key.
func (m *Manager) Create(ctx context.Context, cfg Config) (*Pool, string, error) {
	if err := cfg.Normalize(); err != nil {
		return nil, "", err
	}
	rt, ok := m.runtimes[cfg.Runtime]
	if !ok {
		return nil, "", invalid("runtime", "runtime %q is not available on this server (available: %v)", cfg.Runtime, m.RuntimeNames())
	}
	if err := m.fits(cfg); err != nil {
		return nil, "", err
	}
	if err := m.checkSecrets(ctx, cfg); err != nil {
		return nil, "", err
	}
	im, err := m.resolveImage(ctx, &cfg)
	if err != nil {
		return nil, "", err
	}
	// A pool on an image starts one sandbox now, to tell at once if the
	// image can run it; it becomes the first warm one.
	probe, err := m.probe(ctx, rt, cfg, im)
	if err != nil {
		return nil, "", err
	}
	p, key, err := m.create(ctx, cfg, im, rt)
	if err != nil {
		if probe != nil {
			_ = probe.Destroy(context.WithoutCancel(ctx))
		}
		return nil, "", err
	}
	p.addWarm(probe, cfg.shape())
	m.log.Info("pool created", "pool", cfg.Name, "type", cfg.Type, "runtime", cfg.Runtime, "image", cfg.Image, "digest", cfg.ImageDigest)
	return p, key, nil
}

func (m *Manager) create(ctx context.Context, cfg Config, im *image.Image, rt sandbox.Runtime) (*Pool, string, error) {
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, "", err
	}
	key := NewKey()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.store.CreatePool(ctx, cfg.Name, b, key); err != nil {
		if errors.Is(err, store.ErrExists) {
			return nil, "", fmt.Errorf("%w: %q", ErrPoolExists, cfg.Name)
		}
		return nil, "", err
	}
	sp, err := m.store.GetPool(ctx, cfg.Name)
	if err != nil {
		return nil, "", err
	}
	p := newPool(cfg, im, store.HashKey(key), sp.CreatedAt, rt, m.log, m.freed(), m.egress, m.leader, m.cluster)
	p.events = m.events
	m.pools[cfg.Name] = p
	return p, key, nil
}

// probe starts a sandbox of a pool on an image (nil for a pool on the
// host's /usr), or says why the image cannot back the pool.
func (m *Manager) probe(ctx context.Context, rt sandbox.Runtime, cfg Config, im *image.Image) (sandbox.Sandbox, error) {
	if im == nil {
		return nil, nil
	}
	sb, err := startSandbox(ctx, rt, cfg, cfg.shape(), im, m.egress, &m.wg, m.log.With("pool", cfg.Name))
	if err != nil {
		return nil, probeError(cfg, err)
	}
	return sb, nil
}

// storedImage finds the image a stored pool runs.
func (m *Manager) storedImage(cfg Config) (*image.Image, error) {
	if cfg.ImageDigest == "" {
		return nil, nil
	}
	if m.images == nil {
		return nil, invalid("image", "pool %s runs image %s, and this server has no image store", cfg.Name, cfg.Image)
	}
	im, err := m.images.Get(cfg.ImageDigest)
	if err != nil {
		return nil, invalid("image", "pool %s runs image %s (%s), which is not in the image store any more: berth pool update %s --image %s pulls it again", cfg.Name, cfg.Image, cfg.ImageDigest, cfg.Name, cfg.Image)
	}
	return im, nil
}

// RuntimeNames lists the available runtimes.
func (m *Manager) RuntimeNames() []string {
	names := make([]string, 0, len(m.runtimes))
	for n := range m.runtimes {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Get returns a pool by name.
func (m *Manager) Get(name string) (*Pool, error) {
	m.mu.RLock()
	p := m.pools[name]
	m.mu.RUnlock()
	if p == nil {
		return nil, fmt.Errorf("%w: %q", ErrPoolNotFound, name)
	}
	return p, nil
}

// List returns every pool, by name.
func (m *Manager) List() []*Pool {
	m.mu.RLock()
	out := make([]*Pool, 0, len(m.pools))
	for _, p := range m.pools {
		out = append(out, p)
	}
	m.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out
}

// Update changes a pool's settings. Name, type and runtime cannot change.
// A change to what a sandbox is made with (egress, memory, cpu: the
// sandbox shape) applies to every session created after Update returns:
// warm sandboxes of the old shape are never handed out and are replaced in
// the background. Live sessions keep the sandbox they have until they end
// (destroying it would lose their state); per-request settings such as the
// timeout apply to them at once.
func (m *Manager) Update(ctx context.Context, name string, change func(*Config)) (*Pool, error) {
	p, err := m.Get(name)
	if err != nil {
		return nil, err
	}
	// A new image is pulled and tried before the lock is taken: that may
	// take a while.
	pre := p.Config()
	change(&pre)
	im, probe, imageChanged, err := m.updateImage(ctx, p, &pre)
	if err != nil {
		return nil, err
	}
	defer func() {
		if probe != nil { // not handed to the pool
			_ = probe.Destroy(context.WithoutCancel(ctx))
		}
	}()
	m.mu.Lock()
	defer m.mu.Unlock()
	apply := func(old Config) (Config, error) {
		cfg := old
		change(&cfg)
		if imageChanged {
			cfg.Image, cfg.ImageDigest = pre.Image, pre.ImageDigest
		} else {
			cfg.ImageDigest = old.ImageDigest
		}
		if cfg.Name != old.Name || cfg.Type != old.Type || cfg.Runtime != old.Runtime {
			return Config{}, invalid("name", "a pool's name, type and runtime cannot change; create a new pool")
		}
		if err := cfg.Normalize(); err != nil {
			return Config{}, err
		}
		return cfg, m.fits(cfg)
	}
	cfg, err := apply(p.Config())
	if err != nil {
		return nil, err
	}
	if err := m.checkSecrets(ctx, cfg); err != nil {
		return nil, err
	}
	// Applied again to what is stored: another replica may have changed
	// it since this one last saw it.
	err = m.store.UpdatePool(ctx, name, func(cur []byte) ([]byte, error) {
		var stored Config
		if err := json.Unmarshal(cur, &stored); err != nil {
			return nil, fmt.Errorf("pool %q: stored config: %w", name, err)
		}
		if cfg, err = apply(stored); err != nil {
			return nil, err
		}
		return json.Marshal(cfg)
	})
	if err != nil {
		return nil, err
	}
	if !imageChanged {
		im = p.img.Load()
	}
	p.setUnusable(nil)
	p.setConfig(cfg, im)
	if probe != nil && cfg.shape() == pre.shape() {
		p.addWarm(probe, cfg.shape())
		probe = nil
	}
	if imageChanged {
		m.log.Info("pool image updated; warm sandboxes of the old image are replaced", "pool", name, "image", cfg.Image, "digest", cfg.ImageDigest)
	}
	return p, nil
}

// updateImage resolves and tries the image of an update, if it names a
// new one (or the same tag again, which may have moved).
func (m *Manager) updateImage(ctx context.Context, p *Pool, cfg *Config) (*image.Image, sandbox.Sandbox, bool, error) {
	old := p.Config()
	if cfg.Image == old.Image && cfg.ImageDigest == old.ImageDigest {
		return nil, nil, false, nil
	}
	if err := cfg.Normalize(); err != nil {
		return nil, nil, false, err
	}
	im, err := m.resolveImage(ctx, cfg)
	if err != nil {
		return nil, nil, false, err
	}
	if im != nil && old.ImageDigest == im.Digest && old.Image == cfg.Image {
		return nil, nil, false, nil // the same image: nothing changes
	}
	probe, err := m.probe(ctx, p.rt, *cfg, im)
	if err != nil {
		return nil, nil, false, err
	}
	return im, probe, true, nil
}

// Delete destroys a pool, its sessions and its key.
func (m *Manager) Delete(ctx context.Context, name string) error {
	p, err := m.Get(name)
	if err != nil {
		return err
	}
	m.mu.Lock()
	if err := m.store.DeletePool(ctx, name); err != nil {
		m.mu.Unlock()
		return err
	}
	delete(m.pools, name)
	m.mu.Unlock()
	if err := m.store.DeletePoolSecrets(ctx, name); err != nil {
		m.log.Error("delete the pool's secrets", "pool", name, "err", err)
	}
	p.close()
	if m.egress != nil {
		if err := m.egress.Forget("pool/" + name); err != nil {
			m.log.Warn("remove the pool's egress CA", "pool", name, "err", err)
		}
	}
	m.log.Info("pool deleted", "pool", name)
	return nil
}

// Key returns a pool's API key.
func (m *Manager) Key(ctx context.Context, name string) (string, error) {
	if _, err := m.Get(name); err != nil {
		return "", err
	}
	return m.store.PoolKey(ctx, name)
}

// RotateKey gives a pool a new key; the old one stops working at once.
func (m *Manager) RotateKey(ctx context.Context, name string) (string, error) {
	p, err := m.Get(name)
	if err != nil {
		return "", err
	}
	key := NewKey()
	if err := m.store.SetPoolKey(ctx, name, key); err != nil {
		return "", err
	}
	p.setKeyHash(store.HashKey(key))
	m.log.Info("pool key rotated", "pool", name)
	return key, nil
}

// Close stops every pool and destroys their sandboxes.
func (m *Manager) Close() {
	m.mu.Lock()
	pools := m.pools
	m.pools = map[string]*Pool{}
	m.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range pools {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.shutdown()
		}()
	}
	wg.Wait()
	m.wg.Wait()
}
