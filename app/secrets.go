package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"sync"
	"syscall"

	"github.com/berth-dev/berth/egress"
	"github.com/berth-dev/berth/store"
)

// Secrets are Container Apps' model: values set per app (berth secret
// set), sealed in the store, never shown; a revision references them as
// environment variables (Config.SecretEnv) and as files (Config.SecretVolume).
// A revision reads them when it starts running: a changed secret reaches
// the next revision, or the running ones after Restart.

// MaxSecretBytes bounds a secret's value.
const MaxSecretBytes = 64 << 10

var secretNameRE = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$`)
})

// ValidSecretName checks a secret's name (Container Apps' rule: lowercase
// letters, digits, '-' and '.', starting and ending with a letter or digit).
func ValidSecretName(name string) error {
	if !secretNameRE().MatchString(name) {
		return invalid("%q is not a valid secret name: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit (at most 253)", name)
	}
	return nil
}

// SecretApplies is what the CLI says after a secret changes.
func SecretApplies(app string) string {
	return fmt.Sprintf("it takes effect on the next revision, or on the running ones after: berth app restart %s", app)
}

// SetSecret creates or replaces a secret of app name (which need not be
// deployed yet).
func (m *Manager) SetSecret(ctx context.Context, name, secret string, value []byte) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if err := ValidSecretName(secret); err != nil {
		return err
	}
	if len(value) > MaxSecretBytes {
		return invalid("secret %s is %d bytes; the limit is %d KiB", secret, len(value), MaxSecretBytes>>10)
	}
	return m.store.SetSecret(ctx, name, secret, value)
}

// ListSecrets lists the secrets of app name, without their values.
func (m *Manager) ListSecrets(ctx context.Context, name string) ([]store.SecretInfo, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	return m.store.ListSecrets(ctx, name)
}

// DeleteSecret removes a secret of app name. Running revisions keep the
// value they read; a revision that references it can no longer start.
func (m *Manager) DeleteSecret(ctx context.Context, name, secret string) error {
	err := m.store.DeleteSecret(ctx, name, secret)
	if errors.Is(err, store.ErrNotFound) {
		return &ConfigError{Message: fmt.Sprintf("app %s has no secret %q", name, secret), NotFound: true}
	}
	return err
}

// Restart replaces every replica of app name: its running revisions start
// again, and read its secrets anew.
func (m *Manager) Restart(ctx context.Context, name string) error {
	a, err := m.Get(name)
	if err != nil {
		return err
	}
	a.stopAll()
	a.logf("", "", "app restarted")
	a.reconcile()
	return nil
}

// checkSecrets refuses a revision that references a secret the app does
// not have.
func (m *Manager) checkSecrets(ctx context.Context, name string, cfg Config) error {
	if len(cfg.SecretEnv) == 0 && len(cfg.EgressInject) == 0 {
		return nil
	}
	list, err := m.store.ListSecrets(ctx, name)
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, s := range list {
		have[s.Name] = true
	}
	if err := missingSecret(name, cfg, have); err != nil {
		return err
	}
	return missingInjectSecret(name, cfg, have)
}

// missingInjectSecret refuses egress inject rules naming a secret the app
// does not have (the proxy reads it at each request).
func missingInjectSecret(name string, cfg Config, have map[string]bool) error {
	for _, r := range cfg.EgressInject {
		in, err := egress.ParseInject(r)
		if err != nil {
			return invalid("%s", err)
		}
		if err := ValidSecretName(in.Secret); err != nil {
			return invalid("egress inject rule %s: %s", r, err)
		}
		if !have[in.Secret] {
			return invalid("egress inject rule %s references secret %q, which app %s does not have: set it first with: berth secret set %s %s", r, in.Secret, name, name, in.Secret)
		}
	}
	return nil
}

func missingSecret(name string, cfg Config, have map[string]bool) error {
	keys := make([]string, 0, len(cfg.SecretEnv))
	for k := range cfg.SecretEnv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if s := cfg.SecretEnv[k]; !have[s] {
			return invalid("environment variable %s references secret %q, which app %s does not have: set it first with: berth secret set %s %s", k, s, name, name, s)
		}
	}
	return nil
}

// secretSet is what a running revision gives its replicas: the values of
// its secret environment variables, and the host directory of its secret
// volume (one file per secret of the app, on the secrets tmpfs).
type secretSet struct {
	env map[string]string
	dir string
}

// loadSecrets reads the app's secrets once for the revision runtime.
func (r *revisionRuntime) loadSecrets() (secretSet, error) {
	cfg := r.rev.Config
	if len(cfg.SecretEnv) == 0 && cfg.SecretVolume == "" {
		return secretSet{}, nil
	}
	values, err := r.app.m.store.Secrets(r.ctx, r.app.name)
	if err != nil {
		return secretSet{}, err
	}
	have := map[string]bool{}
	for k := range values {
		have[k] = true
	}
	if err := missingSecret(r.app.name, cfg, have); err != nil {
		return secretSet{}, err
	}
	set := secretSet{env: map[string]string{}}
	for k, s := range cfg.SecretEnv {
		set.env[k] = string(values[s])
	}
	if cfg.SecretVolume != "" {
		if set.dir, err = r.app.m.writeSecretFiles(r.rev.Name, values); err != nil {
			return secretSet{}, fmt.Errorf("write the secret volume: %w", err)
		}
		r.mu.Lock()
		r.secretDir = set.dir
		r.mu.Unlock()
	}
	return set, nil
}

// writeSecretFiles writes one file per secret, mode 0400, in a new
// directory (0500), root's, on the secrets tmpfs: the sandbox runtime
// hands it to the app's sandboxes (sandbox.Files).
func (m *Manager) writeSecretFiles(rev string, values map[string][]byte) (string, error) {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	dir := filepath.Join(m.secretsDir, rev+"-"+hex.EncodeToString(b))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", err
	}
	for name, v := range values {
		if err := os.WriteFile(filepath.Join(dir, name), v, 0o400); err != nil {
			return "", errors.Join(err, os.RemoveAll(dir))
		}
	}
	return dir, os.Chmod(dir, 0o500)
}

// removeSecretFiles removes a stopped revision runtime's secret volume.
func (r *revisionRuntime) removeSecretFiles() {
	r.mu.Lock()
	dir := r.secretDir
	r.secretDir = ""
	r.mu.Unlock()
	if dir != "" {
		if err := os.RemoveAll(dir); err != nil {
			r.log.Warn("remove the secret volume's files", "err", err)
		}
	}
}

// mountSecrets makes the directory of secret volumes a tmpfs of its own
// (memory, never the host's disk), empty: what a crashed run left goes.
// If it cannot mount one, the files stay in a plain directory only root
// and each app's uid can enter, and it says so.
func (m *Manager) mountSecrets() error {
	_ = syscall.Unmount(m.secretsDir, syscall.MNT_DETACH) // a crashed run's
	if err := os.RemoveAll(m.secretsDir); err != nil {
		return err
	}
	if err := os.MkdirAll(m.secretsDir, 0o711); err != nil {
		return err
	}
	err := syscall.Mount("tmpfs", m.secretsDir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, "mode=0711,size=64m")
	if err != nil {
		m.log.Warn("secret volumes are kept on the host's disk: cannot mount a tmpfs for them", "dir", m.secretsDir, "err", err)
		return nil
	}
	m.secretsMounted = true
	return nil
}

// unmountSecrets removes the secret volumes' tmpfs.
func (m *Manager) unmountSecrets() {
	if m.secretsMounted {
		if err := syscall.Unmount(m.secretsDir, syscall.MNT_DETACH); err != nil {
			m.log.Warn("unmount the secret volumes' tmpfs", "dir", m.secretsDir, "err", err)
			return
		}
	}
	_ = os.RemoveAll(m.secretsDir)
}

// addEnv adds the revision's environment variables, its secrets' among
// them, to env.
func (r *revisionRuntime) addEnv(env map[string]string) error {
	for k, v := range r.rev.Config.Env {
		env[k] = v
	}
	secrets, err := r.secrets()
	if err != nil {
		return err
	}
	for k, v := range secrets.env {
		env[k] = v
	}
	return nil
}
