package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

const registriesSchema = `
CREATE TABLE IF NOT EXISTS registry_credentials (
	host            TEXT PRIMARY KEY,
	username        TEXT NOT NULL,
	password_sealed BLOB NOT NULL,
	updated_at      TEXT NOT NULL
);
`

// Registry is a registry login without its password.
type Registry struct {
	Host      string    `json:"host"`
	Username  string    `json:"username"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// PutRegistryCredential stores (or replaces) the login for a registry
// host; the password is sealed under the master key, bound to the host.
func (s *Store) PutRegistryCredential(ctx context.Context, host, user, password string) error {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	sealed := s.aead.Seal(nonce, nonce, []byte(password), []byte("registry:"+host))
	_, err := s.db.ExecContext(ctx, `INSERT INTO registry_credentials (host, username, password_sealed, updated_at) VALUES (?, ?, ?, ?)
		ON CONFLICT(host) DO UPDATE SET username = excluded.username, password_sealed = excluded.password_sealed, updated_at = excluded.updated_at`,
		host, user, sealed, time.Now().UTC().Format(time.RFC3339Nano))
	return err
}

// RegistryCredential returns the login for host; ok is false if there is
// none.
func (s *Store) RegistryCredential(ctx context.Context, host string) (user, password string, ok bool, err error) {
	var sealed []byte
	err = s.db.QueryRowContext(ctx, `SELECT username, password_sealed FROM registry_credentials WHERE host = ?`, host).Scan(&user, &sealed)
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
	p, err := s.aead.Open(nil, sealed[:n], sealed[n:], []byte("registry:"+host))
	if err != nil {
		return "", "", false, fmt.Errorf("store: cannot unseal the password for registry %s (was master.key replaced?): %w", host, err)
	}
	return user, string(p), true, nil
}

// DeleteRegistryCredential forgets the login for host.
func (s *Store) DeleteRegistryCredential(ctx context.Context, host string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM registry_credentials WHERE host = ?`, host)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("registry %s: %w", host, ErrNotFound)
	}
	return nil
}

// ListRegistries returns the registries with a stored login, by host;
// never their passwords.
func (s *Store) ListRegistries(ctx context.Context) ([]Registry, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT host, username, updated_at FROM registry_credentials ORDER BY host`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Registry{}
	for rows.Next() {
		var r Registry
		var at string
		if err := rows.Scan(&r.Host, &r.Username, &at); err != nil {
			return nil, err
		}
		r.UpdatedAt, _ = time.Parse(time.RFC3339Nano, at)
		out = append(out, r)
	}
	return out, rows.Err()
}
