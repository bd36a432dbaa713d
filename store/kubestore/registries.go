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

// Registry logins are Secrets too: the server's one per host, an app's one
// per app and host (owned by the App).

func (s *Store) putLogin(ctx context.Context, name string, lbl map[string]string, owners []metav1.OwnerReference, host, user, password string) error {
	return s.putSecret(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbl, OwnerReferences: owners,
			Annotations: map[string]string{AnnotRegistry: host, AnnotUsername: user, AnnotUpdatedAt: now()}},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{passwordField: []byte(password)},
	})
}

func (s *Store) login(ctx context.Context, name string) (user, password string, ok bool, err error) {
	sec, err := s.kube.CoreV1().Secrets(s.ns).Get(ctx, name, metav1.GetOptions{})
	if isNotFound(err) {
		return "", "", false, nil
	}
	if err != nil {
		return "", "", false, err
	}
	return sec.Annotations[AnnotUsername], string(sec.Data[passwordField]), true, nil
}

func registrySecret(host string) string         { return objectName("berth-registry", host) }
func appRegistrySecret(app, host string) string { return objectName("berth-registry", app, host) }

// PutRegistryCredential stores (or replaces) the login for a registry host.
func (s *Store) PutRegistryCredential(ctx context.Context, host, user, password string) error {
	return s.putLogin(ctx, registrySecret(host), labels(RoleRegistry, "", ""), nil, host, user, password)
}

// RegistryCredential returns the login for host; ok is false if there is
// none.
func (s *Store) RegistryCredential(ctx context.Context, host string) (user, password string, ok bool, err error) {
	return s.login(ctx, registrySecret(host))
}

// DeleteRegistryCredential forgets the login for host.
func (s *Store) DeleteRegistryCredential(ctx context.Context, host string) error {
	err := s.kube.CoreV1().Secrets(s.ns).Delete(ctx, registrySecret(host), metav1.DeleteOptions{})
	if isNotFound(err) {
		return fmt.Errorf("registry %s: %w", host, store.ErrNotFound)
	}
	return err
}

// ListRegistries returns the registries with a stored login, by host;
// never their passwords.
func (s *Store) ListRegistries(ctx context.Context) ([]store.Registry, error) {
	l, err := s.kube.CoreV1().Secrets(s.ns).List(ctx, metav1.ListOptions{LabelSelector: selector(RoleRegistry, "", "")})
	if err != nil {
		return nil, err
	}
	out := []store.Registry{}
	for _, sec := range l.Items {
		at, _ := time.Parse(time.RFC3339Nano, sec.Annotations[AnnotUpdatedAt])
		out = append(out, store.Registry{Host: sec.Annotations[AnnotRegistry], Username: sec.Annotations[AnnotUsername], UpdatedAt: at})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Host < out[j].Host })
	return out, nil
}

// PutAppRegistryCredential stores (or replaces) an app's own login for a
// registry host.
func (s *Store) PutAppRegistryCredential(ctx context.Context, app, host, user, password string) error {
	return s.putLogin(ctx, appRegistrySecret(app, host), labels(RoleAppRegistry, "app", app), s.ownerRef(ctx, "app", app), host, user, password)
}

// AppRegistryCredential returns an app's login for host; ok is false if it
// has none.
func (s *Store) AppRegistryCredential(ctx context.Context, app, host string) (user, password string, ok bool, err error) {
	return s.login(ctx, appRegistrySecret(app, host))
}

// DeleteAppRegistryCredentials forgets an app's registry logins.
func (s *Store) DeleteAppRegistryCredentials(ctx context.Context, app string) error {
	return s.deleteAll(ctx, selector(RoleAppRegistry, "app", app))
}
