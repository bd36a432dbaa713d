package pool

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sync"

	"github.com/berth-dev/berth/egress"
	"github.com/berth-dev/berth/store"
)

// A pool's secrets (berth secret set --pool POOL NAME) are sealed in the
// store like an app's; the egress proxy reads them at each request its
// inject rules (HOST:Header=secretref:NAME) apply to, so a change takes
// effect at once. Sandboxes never see them.

// MaxSecretBytes bounds a secret's value (as an app's).
const MaxSecretBytes = 64 << 10

var secretNameRE = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$`)
})

func validSecret(pool, secret string) error {
	if !nameRE().MatchString(pool) {
		return invalid("name", "%q is not a valid pool name: use 1-40 lowercase letters, digits and dashes, starting with a letter", pool)
	}
	if !secretNameRE().MatchString(secret) {
		return invalid("secret", "%q is not a valid secret name: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit (at most 253)", secret)
	}
	return nil
}

// SetSecret creates or replaces a secret of pool name (which need not
// exist yet: a pool's inject rules need their secrets first).
func (m *Manager) SetSecret(ctx context.Context, name, secret string, value []byte) error {
	if err := validSecret(name, secret); err != nil {
		return err
	}
	if len(value) > MaxSecretBytes {
		return invalid("value", "secret %s is %d bytes; the limit is %d KiB", secret, len(value), MaxSecretBytes>>10)
	}
	return m.store.SetPoolSecret(ctx, name, secret, value)
}

// ListSecrets lists the secrets of pool name, without their values.
func (m *Manager) ListSecrets(ctx context.Context, name string) ([]store.SecretInfo, error) {
	if err := validSecret(name, "x"); err != nil {
		return nil, err
	}
	return m.store.ListPoolSecrets(ctx, name)
}

// ErrSecretNotFound is a pool secret that is not set.
var ErrSecretNotFound = errors.New("secret not found")

// DeleteSecret removes a secret of pool name: requests its inject rules
// name it for are refused until it is set again.
func (m *Manager) DeleteSecret(ctx context.Context, name, secret string) error {
	err := m.store.DeletePoolSecret(ctx, name, secret)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: pool %s has no secret %q", ErrSecretNotFound, name, secret)
	}
	return err
}

// checkSecrets refuses inject rules that name a secret the pool does not
// have.
func (m *Manager) checkSecrets(ctx context.Context, cfg Config) error {
	if len(cfg.EgressInject) == 0 {
		return nil
	}
	list, err := m.store.ListPoolSecrets(ctx, cfg.Name)
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, s := range list {
		have[s.Name] = true
	}
	for _, r := range cfg.EgressInject {
		in, err := egress.ParseInject(r)
		if err != nil {
			return invalid("egressInject", "%s", err)
		}
		if !secretNameRE().MatchString(in.Secret) {
			return invalid("egressInject", "egress inject rule %s: %q is not a valid secret name: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit", r, in.Secret)
		}
		if !have[in.Secret] {
			return invalid("egressInject", "egress inject rule %s references secret %q, which pool %s does not have: set it first with: berth secret set --pool %s %s", r, in.Secret, cfg.Name, cfg.Name, in.Secret)
		}
	}
	return nil
}
