package kubestore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/berth-dev/berth/store"
)

// A SessionPool's spec is the pool's configuration as package pool encodes
// it, without its name (the object's).

// toSpec turns a stored document into a spec: its JSON object without the
// name field.
func toSpec(doc []byte) (map[string]any, error) {
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(doc))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		return nil, fmt.Errorf("kubestore: document is not a JSON object: %w", err)
	}
	delete(m, "name")
	return m, nil
}

// fromSpec is the stored document of an object: its spec with its name.
func fromSpec(u *unstructured.Unstructured) ([]byte, error) {
	m := spec(u)
	m["name"] = u.GetName()
	return json.Marshal(m)
}

func poolKeySecret(pool string) string { return "berth-pool-" + pool + "-key" }

func newPoolObject(name string, sp map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"spec": sp}}
	u.SetAPIVersion(Group + "/" + Version)
	u.SetKind("SessionPool")
	u.SetName(name)
	u.SetLabels(map[string]string{LabelManagedBy: ManagedBy})
	// Its key follows at once: a replica that sees the pool first waits
	// for it instead of making one.
	u.SetAnnotations(map[string]string{AnnotKeyByBerth: "true"})
	return u
}

// CreatePool stores a new pool: a SessionPool and its key's Secret.
func (s *Store) CreatePool(ctx context.Context, name string, config []byte, key string) error {
	sp, err := toSpec(config)
	if err != nil {
		return err
	}
	u, err := s.pools().Create(ctx, newPoolObject(name, sp), metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("pool %q: %w", name, store.ErrExists)
	}
	if err != nil {
		return err
	}
	return s.putPoolKey(ctx, u, key)
}

// putPoolKey creates or replaces a pool's key Secret, owned by the pool.
func (s *Store) putPoolKey(ctx context.Context, pool *unstructured.Unstructured, key string) error {
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: poolKeySecret(pool.GetName()), Labels: labels(RolePoolKey, "pool", pool.GetName()),
			OwnerReferences: []metav1.OwnerReference{{APIVersion: Group + "/" + Version, Kind: "SessionPool", Name: pool.GetName(), UID: pool.GetUID()}}},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{keyField: []byte(key)},
	}
	return s.putSecret(ctx, sec)
}

// putSecret creates a Secret or replaces its data, labels, annotations and
// owners.
func (s *Store) putSecret(ctx context.Context, sec *corev1.Secret) error {
	secrets := s.kube.CoreV1().Secrets(s.ns)
	return onConflict(func() error {
		_, err := secrets.Create(ctx, sec, metav1.CreateOptions{})
		if !apierrors.IsAlreadyExists(err) {
			return err
		}
		cur, err := secrets.Get(ctx, sec.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Data, cur.Labels, cur.Annotations, cur.Type = sec.Data, sec.Labels, sec.Annotations, sec.Type
		if len(sec.OwnerReferences) > 0 {
			cur.OwnerReferences = sec.OwnerReferences
		}
		_, err = secrets.Update(ctx, cur, metav1.UpdateOptions{})
		return err
	})
}

// poolFromObject reads a pool's key: a pool made with kubectl apply has
// none until Berth first reads it, and gets a fresh one then (created
// once: a second replica's Create finds the first one's). A pool that
// CreatePool made gets its key from CreatePool: until it is there, the
// pool has none (its hash matches no key), unless makeKey.
func (s *Store) poolFromObject(ctx context.Context, u *unstructured.Unstructured, makeKey bool) (store.Pool, error) {
	cfg, err := fromSpec(u)
	if err != nil {
		return store.Pool{}, err
	}
	p := store.Pool{Name: u.GetName(), Config: cfg, CreatedAt: u.GetCreationTimestamp().UTC(), UpdatedAt: u.GetCreationTimestamp().UTC()}
	key, err := s.poolKey(ctx, u.GetName())
	if isNotFound(err) && !makeKey && u.GetAnnotations()[AnnotKeyByBerth] != "" {
		return p, nil
	}
	if isNotFound(err) {
		if err := s.createPoolKey(ctx, u); err != nil {
			return store.Pool{}, err
		}
		key, err = s.poolKey(ctx, u.GetName())
	}
	if err != nil {
		return store.Pool{}, err
	}
	p.KeyHash = store.HashKey(key)
	return p, nil
}

func (s *Store) createPoolKey(ctx context.Context, u *unstructured.Unstructured) error {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: poolKeySecret(u.GetName()), Labels: labels(RolePoolKey, "pool", u.GetName()),
			OwnerReferences: []metav1.OwnerReference{{APIVersion: Group + "/" + Version, Kind: "SessionPool", Name: u.GetName(), UID: u.GetUID()}}},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{keyField: []byte(base64.RawURLEncoding.EncodeToString(b))},
	}
	_, err := s.kube.CoreV1().Secrets(s.ns).Create(ctx, sec, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	if err == nil {
		s.log.Info("pool had no key (made with kubectl?): gave it one", "pool", u.GetName())
	}
	return err
}

func (s *Store) poolKey(ctx context.Context, name string) (string, error) {
	sec, err := s.kube.CoreV1().Secrets(s.ns).Get(ctx, poolKeySecret(name), metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	return string(sec.Data[keyField]), nil
}

// GetPool returns one pool.
func (s *Store) GetPool(ctx context.Context, name string) (store.Pool, error) {
	u, err := s.pools().Get(ctx, name, metav1.GetOptions{})
	if isNotFound(err) {
		return store.Pool{}, fmt.Errorf("pool %q: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return store.Pool{}, err
	}
	return s.poolFromObject(ctx, u, false)
}

// ListPools returns every pool, by name.
func (s *Store) ListPools(ctx context.Context) ([]store.Pool, error) {
	l, err := s.pools().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	out := make([]store.Pool, 0, len(l.Items))
	for i := range l.Items {
		p, err := s.poolFromObject(ctx, &l.Items[i], false)
		if err != nil {
			return nil, fmt.Errorf("pool %q: %w", l.Items[i].GetName(), err)
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// UpdatePool changes a pool's spec: fn gets the stored configuration; the
// Update carries the resourceVersion it was read at, and on a conflict
// (another writer came first) fn runs again on the newer one.
func (s *Store) UpdatePool(ctx context.Context, name string, fn func(cur []byte) ([]byte, error)) error {
	return onConflict(func() error {
		u, err := s.pools().Get(ctx, name, metav1.GetOptions{})
		if isNotFound(err) {
			return fmt.Errorf("pool %q: %w", name, store.ErrNotFound)
		}
		if err != nil {
			return err
		}
		cur, err := fromSpec(u)
		if err != nil {
			return err
		}
		next, err := fn(cur)
		if err != nil {
			return err
		}
		sp, err := toSpec(next)
		if err != nil {
			return err
		}
		u.Object["spec"] = sp
		_, err = s.pools().Update(ctx, u, metav1.UpdateOptions{})
		return err
	})
}

// UpdatePoolConfig replaces a pool's configuration.
func (s *Store) UpdatePoolConfig(ctx context.Context, name string, config []byte) error {
	return s.UpdatePool(ctx, name, func([]byte) ([]byte, error) { return config, nil })
}

// SetPoolKey replaces a pool's key.
func (s *Store) SetPoolKey(ctx context.Context, name, key string) error {
	u, err := s.pools().Get(ctx, name, metav1.GetOptions{})
	if isNotFound(err) {
		return fmt.Errorf("pool %q: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return err
	}
	return s.putPoolKey(ctx, u, key)
}

// PoolKey returns a pool's key.
func (s *Store) PoolKey(ctx context.Context, name string) (string, error) {
	p, err := s.pools().Get(ctx, name, metav1.GetOptions{})
	if isNotFound(err) {
		return "", fmt.Errorf("pool %q: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return "", err
	}
	if _, err := s.poolFromObject(ctx, p, true); err != nil { // gives it one if it has none
		return "", err
	}
	return s.poolKey(ctx, name)
}

// DeletePool removes a pool and its key.
func (s *Store) DeletePool(ctx context.Context, name string) error {
	err := s.pools().Delete(ctx, name, metav1.DeleteOptions{})
	if isNotFound(err) {
		return fmt.Errorf("pool %q: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return err
	}
	// Its owner reference would remove it too, where a garbage collector
	// runs; not waited for.
	err = s.kube.CoreV1().Secrets(s.ns).Delete(ctx, poolKeySecret(name), metav1.DeleteOptions{})
	if err != nil && !isNotFound(err) {
		return err
	}
	return nil
}
