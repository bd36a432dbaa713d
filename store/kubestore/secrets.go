package kubestore

import (
	"context"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/store"
)

// An app's or a pool's secret is a Secret of its own (one object per
// secret: setting one never rewrites another), named for a hash of its
// owner and name, which its annotation keeps.

func secretObjectName(kind, owner, name string) string {
	return objectName("berth-secret", kind, owner, name)
}

func (s *Store) setSecret(ctx context.Context, kind, owner, name string, value []byte) error {
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: secretObjectName(kind, owner, name), Labels: labels(RoleSecret, kind, owner),
			Annotations:     map[string]string{AnnotSecretName: name, AnnotUpdatedAt: now()},
			OwnerReferences: s.ownerRef(ctx, kind, owner),
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{valueField: value},
	}
	return s.putSecret(ctx, sec)
}

func (s *Store) listSecrets(ctx context.Context, kind, owner string) ([]corev1.Secret, error) {
	l, err := s.kube.CoreV1().Secrets(s.ns).List(ctx, metav1.ListOptions{LabelSelector: selector(RoleSecret, kind, owner)})
	if err != nil {
		return nil, err
	}
	return l.Items, nil
}

func (s *Store) secretInfos(ctx context.Context, kind, owner string) ([]store.SecretInfo, error) {
	items, err := s.listSecrets(ctx, kind, owner)
	if err != nil {
		return nil, err
	}
	out := []store.SecretInfo{}
	for _, sec := range items {
		at, _ := time.Parse(time.RFC3339Nano, sec.Annotations[AnnotUpdatedAt])
		out = append(out, store.SecretInfo{Name: sec.Annotations[AnnotSecretName], UpdatedAt: at})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (s *Store) secret(ctx context.Context, kind, owner, name string) ([]byte, error) {
	sec, err := s.kube.CoreV1().Secrets(s.ns).Get(ctx, secretObjectName(kind, owner, name), metav1.GetOptions{})
	if isNotFound(err) {
		return nil, fmt.Errorf("secret %q: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	return sec.Data[valueField], nil
}

func (s *Store) deleteSecret(ctx context.Context, kind, owner, name string) error {
	err := s.kube.CoreV1().Secrets(s.ns).Delete(ctx, secretObjectName(kind, owner, name), metav1.DeleteOptions{})
	if isNotFound(err) {
		return fmt.Errorf("secret %q of %s %q: %w", name, kind, owner, store.ErrNotFound)
	}
	return err
}

func (s *Store) deleteAll(ctx context.Context, sel string) error {
	return s.kube.CoreV1().Secrets(s.ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: sel})
}

// SetSecret creates or replaces an app's secret.
func (s *Store) SetSecret(ctx context.Context, app, name string, value []byte) error {
	return s.setSecret(ctx, "app", app, name, value)
}

// ListSecrets returns an app's secrets by name, without their values.
func (s *Store) ListSecrets(ctx context.Context, app string) ([]store.SecretInfo, error) {
	return s.secretInfos(ctx, "app", app)
}

// Secrets returns every secret of an app, by name.
func (s *Store) Secrets(ctx context.Context, app string) (map[string][]byte, error) {
	items, err := s.listSecrets(ctx, "app", app)
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, sec := range items {
		out[sec.Annotations[AnnotSecretName]] = sec.Data[valueField]
	}
	return out, nil
}

// Secret returns one secret of an app.
func (s *Store) Secret(ctx context.Context, app, name string) ([]byte, error) {
	return s.secret(ctx, "app", app, name)
}

// DeleteSecret removes one of an app's secrets.
func (s *Store) DeleteSecret(ctx context.Context, app, name string) error {
	return s.deleteSecret(ctx, "app", app, name)
}

// DeleteSecrets removes every secret of an app.
func (s *Store) DeleteSecrets(ctx context.Context, app string) error {
	return s.deleteAll(ctx, selector(RoleSecret, "app", app))
}

// SetPoolSecret creates or replaces a pool's secret.
func (s *Store) SetPoolSecret(ctx context.Context, pool, name string, value []byte) error {
	return s.setSecret(ctx, "pool", pool, name, value)
}

// ListPoolSecrets returns a pool's secrets by name, without their values.
func (s *Store) ListPoolSecrets(ctx context.Context, pool string) ([]store.SecretInfo, error) {
	return s.secretInfos(ctx, "pool", pool)
}

// PoolSecret returns one secret of a pool.
func (s *Store) PoolSecret(ctx context.Context, pool, name string) ([]byte, error) {
	return s.secret(ctx, "pool", pool, name)
}

// DeletePoolSecret removes one of a pool's secrets.
func (s *Store) DeletePoolSecret(ctx context.Context, pool, name string) error {
	return s.deleteSecret(ctx, "pool", pool, name)
}

// DeletePoolSecrets removes every secret of a pool.
func (s *Store) DeletePoolSecrets(ctx context.Context, pool string) error {
	return s.deleteAll(ctx, selector(RoleSecret, "pool", pool))
}
