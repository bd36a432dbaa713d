package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

const appRegistriesSchema = `
CREATE TABLE IF NOT EXISTS app_registry_credentials (
	app             TEXT NOT NULL,
	host            TEXT NOT NULL,
	username        TEXT NOT NULL,
	password_sealed BLOB NOT NULL,
	updated_at      TEXT NOT NULL,
	PRIMARY KEY (app, host)
);
`

func appRegistryAD(app, host string) []byte { return []byte("app-registry:" + app + "\x00" + host) }

// PutAppRegistryCredential stores (or replaces) an app's own login for a
// registry host; the password is sealed under the master key, bound to
// the app and the host.
func (s *Store) PutAppRegistryCredential(ctx context.Context, app, host, user, password string) error {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	sealed := s.aead.Seal(nonce, nonce, []byte(password), appRegistryAD(app, host))
	_, err := s.db.ExecContext(ctx, `INSERT INTO app_registry_credentials (app, host, username, password_sealed, updated_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT(app, host) DO UPDATE SET username = excluded.username, password_sealed = excluded.password_sealed, updated_at = excluded.updated_at`,
		app, host, user, sealed, time.Now().UTC().Format(time.RFC3339Nano))
	return err
}

// AppRegistryCredential returns an app's login for host; ok is false if
// it has none.
func (s *Store) AppRegistryCredential(ctx context.Context, app, host string) (user, password string, ok bool, err error) {
	var sealed []byte
	err = s.db.QueryRowContext(ctx, `SELECT username, password_sealed FROM app_registry_credentials WHERE app = ? AND host = ?`, app, host).Scan(&user, &sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", false, nil
	}
	if err != nil {
		return "", "", false, err
	}
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return "", "", false, errors.New("store: sealed registry password is corrupt")
	}
	p, err := s.aead.Open(nil, sealed[:n], sealed[n:], appRegistryAD(app, host))
	if err != nil {
		return "", "", false, fmt.Errorf("store: cannot unseal app %s's password for registry %s (was master.key replaced?): %w", app, host, err)
	}
	return user, string(p), true, nil
}

// DeleteAppRegistryCredentials forgets an app's registry logins.
func (s *Store) DeleteAppRegistryCredentials(ctx context.Context, app string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM app_registry_credentials WHERE app = ?`, app)
	return err
}
