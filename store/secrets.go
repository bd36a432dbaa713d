package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

const secretsSchema = `
CREATE TABLE IF NOT EXISTS app_secrets (
	app        TEXT NOT NULL,
	name       TEXT NOT NULL,
	sealed     BLOB NOT NULL,
	updated_at TEXT NOT NULL,
	PRIMARY KEY (app, name)
);
`

// The app_secrets table holds pools' secrets too: their owner column is
// "pool/NAME", which no app name can be (app names are DNS labels).

// poolOwner is the owner key of a pool's secrets.
func poolOwner(pool string) string { return "pool/" + pool }

// SecretInfo describes a stored secret, without its value.
type SecretInfo struct {
	Name      string    `json:"name"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// secretAAD binds a sealed value to its owner and name: a sealed value
// copied to another row does not open.
func secretAAD(app, name string) []byte { return []byte("app-secret\x00" + app + "\x00" + name) }

// SetSecret creates or replaces an app's secret, sealed with AES-GCM under
// the master key.
func (s *Store) SetSecret(ctx context.Context, app, name string, value []byte) error {
	sealed, err := s.sealBytes(value, secretAAD(app, name))
	if err != nil {
		return err
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO app_secrets (app, name, sealed, updated_at) VALUES (?, ?, ?, ?)
		ON CONFLICT(app, name) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at`,
		app, name, sealed, time.Now().UTC().Format(time.RFC3339Nano))
	return err
}

// ListSecrets returns an app's secrets by name, without their values.
func (s *Store) ListSecrets(ctx context.Context, app string) ([]SecretInfo, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, updated_at FROM app_secrets WHERE app = ? ORDER BY name`, app)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []SecretInfo{}
	for rows.Next() {
		var si SecretInfo
		var at string
		if err := rows.Scan(&si.Name, &at); err != nil {
			return nil, err
		}
		si.UpdatedAt, _ = time.Parse(time.RFC3339Nano, at)
		out = append(out, si)
	}
	return out, rows.Err()
}

// Secrets unseals every secret of an app, by name.
func (s *Store) Secrets(ctx context.Context, app string) (map[string][]byte, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, sealed FROM app_secrets WHERE app = ?`, app)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]byte{}
	for rows.Next() {
		var name string
		var sealed []byte
		if err := rows.Scan(&name, &sealed); err != nil {
			return nil, err
		}
		v, err := s.openBytes(sealed, secretAAD(app, name))
		if err != nil {
			// The error names the secret, never its value.
			return nil, fmt.Errorf("store: cannot unseal secret %q of app %q (was master.key replaced?)", name, app)
		}
		out[name] = v
	}
	return out, rows.Err()
}

// DeleteSecret removes one of an app's secrets.
func (s *Store) DeleteSecret(ctx context.Context, app, name string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM app_secrets WHERE app = ? AND name = ?`, app, name)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("secret %q of app %q: %w", name, app, ErrNotFound)
	}
	return nil
}

// Secret unseals one secret of an app; ErrNotFound if it has none of
// that name.
func (s *Store) Secret(ctx context.Context, app, name string) ([]byte, error) {
	var sealed []byte
	err := s.db.QueryRowContext(ctx, `SELECT sealed FROM app_secrets WHERE app = ? AND name = ?`, app, name).Scan(&sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("secret %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	v, err := s.openBytes(sealed, secretAAD(app, name))
	if err != nil {
		return nil, fmt.Errorf("store: cannot unseal secret %q (was master.key replaced?)", name)
	}
	return v, nil
}

// SetPoolSecret creates or replaces a pool's secret, sealed as apps' are.
func (s *Store) SetPoolSecret(ctx context.Context, pool, name string, value []byte) error {
	return s.SetSecret(ctx, poolOwner(pool), name, value)
}

// ListPoolSecrets returns a pool's secrets by name, without their values.
func (s *Store) ListPoolSecrets(ctx context.Context, pool string) ([]SecretInfo, error) {
	return s.ListSecrets(ctx, poolOwner(pool))
}

// PoolSecret unseals one secret of a pool; ErrNotFound if it has none of
// that name.
func (s *Store) PoolSecret(ctx context.Context, pool, name string) ([]byte, error) {
	return s.Secret(ctx, poolOwner(pool), name)
}

// DeletePoolSecret removes one of a pool's secrets.
func (s *Store) DeletePoolSecret(ctx context.Context, pool, name string) error {
	err := s.DeleteSecret(ctx, poolOwner(pool), name)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("secret %q of pool %q: %w", name, pool, ErrNotFound)
	}
	return err
}

// DeletePoolSecrets removes every secret of a pool.
func (s *Store) DeletePoolSecrets(ctx context.Context, pool string) error {
	return s.DeleteSecrets(ctx, poolOwner(pool))
}

// DeleteSecrets removes every secret of an app.
func (s *Store) DeleteSecrets(ctx context.Context, app string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM app_secrets WHERE app = ?`, app)
	return err
}

func (s *Store) sealBytes(plain, aad []byte) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := randRead(nonce); err != nil {
		return nil, err
	}
	return s.aead.Seal(nonce, nonce, plain, aad), nil
}

func (s *Store) openBytes(sealed, aad []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return nil, errors.New("store: sealed value is corrupt")
	}
	return s.aead.Open(nil, sealed[:n], sealed[n:], aad)
}
