// Package store is Berth's embedded state: an SQLite database (pure Go,
// modernc.org/sqlite) in the data directory holding pools and their API
// keys, apps, and apps' secrets (secrets.go), so that all survive restarts.
//
// Keys are stored twice, for two readers: a SHA-256 hash that requests are
// checked against, and a copy sealed with AES-GCM under a master key kept in
// a separate 0600 file, so that an administrator can fetch a pool's key again
// (Azure's fetchMCPServerCredentials) while the database alone reveals none.
package store

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Sentinel errors.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
)

// Store is the database. It is safe for concurrent use.
type Store struct {
	db     *sql.DB
	aead   cipher.AEAD
	master []byte // for DeriveKey
}

const schema = `
CREATE TABLE IF NOT EXISTS pools (
	name       TEXT PRIMARY KEY,
	config     TEXT NOT NULL,
	key_hash   BLOB NOT NULL,
	key_sealed BLOB NOT NULL,
	created_at TEXT NOT NULL,
	updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
	k TEXT PRIMARY KEY,
	v TEXT NOT NULL
);
`

// Open opens (creating if needed) the database in dir.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	key, err := masterKey(filepath.Join(dir, "master.key"))
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	dsn := "file:" + filepath.Join(dir, "berth.db") + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1) // one writer; reads are cheap and rare
	if _, err := db.Exec(schema + appsSchema + registriesSchema + appRegistriesSchema + secretsSchema); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: migrate: %w", err)
	}
	_ = os.Chmod(filepath.Join(dir, "berth.db"), 0o600)
	return &Store{db: db, aead: aead, master: key}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

func masterKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if len(b) != 32 {
			return nil, fmt.Errorf("store: %s is not a 32-byte key", path)
		}
		return b, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	b = make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, err
	}
	return b, f.Close()
}

// HashKey is how keys are stored for verification.
func HashKey(key string) [32]byte { return sha256.Sum256([]byte(key)) }

// Pool is a stored pool: its name, its configuration as the pool package
// encodes it, and the hash of its key.
type Pool struct {
	Name      string
	Config    []byte
	KeyHash   [32]byte
	CreatedAt time.Time
	UpdatedAt time.Time
}

var randRead = rand.Read

func (s *Store) seal(key string) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return s.aead.Seal(nonce, nonce, []byte(key), nil), nil
}

// CreatePool stores a new pool with its key.
func (s *Store) CreatePool(ctx context.Context, name string, config []byte, key string) error {
	sealed, err := s.seal(key)
	if err != nil {
		return err
	}
	h := HashKey(key)
	now := time.Now().UTC().Format(time.RFC3339Nano)
	_, err = s.db.ExecContext(ctx,
		`INSERT INTO pools (name, config, key_hash, key_sealed, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)`,
		name, string(config), h[:], sealed, now, now)
	if err != nil && strings.Contains(err.Error(), "UNIQUE constraint") {
		return fmt.Errorf("pool %q: %w", name, ErrExists)
	}
	return err
}

// GetPool returns one pool.
func (s *Store) GetPool(ctx context.Context, name string) (Pool, error) {
	row := s.db.QueryRowContext(ctx, `SELECT name, config, key_hash, created_at, updated_at FROM pools WHERE name = ?`, name)
	p, err := scanPool(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Pool{}, fmt.Errorf("pool %q: %w", name, ErrNotFound)
	}
	return p, err
}

// ListPools returns every pool, by name.
func (s *Store) ListPools(ctx context.Context) ([]Pool, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, config, key_hash, created_at, updated_at FROM pools ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Pool
	for rows.Next() {
		p, err := scanPool(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

type scanner interface{ Scan(...any) error }

func scanPool(row scanner) (Pool, error) {
	var p Pool
	var config, created, updated string
	var hash []byte
	if err := row.Scan(&p.Name, &config, &hash, &created, &updated); err != nil {
		return Pool{}, err
	}
	p.Config = []byte(config)
	copy(p.KeyHash[:], hash)
	p.CreatedAt, _ = time.Parse(time.RFC3339Nano, created)
	p.UpdatedAt, _ = time.Parse(time.RFC3339Nano, updated)
	return p, nil
}

// UpdatePoolConfig replaces a pool's configuration.
func (s *Store) UpdatePoolConfig(ctx context.Context, name string, config []byte) error {
	return s.affectOne(ctx, name, `UPDATE pools SET config = ?, updated_at = ? WHERE name = ?`,
		string(config), time.Now().UTC().Format(time.RFC3339Nano), name)
}

// UpdatePool changes a pool's configuration in one transaction: fn gets
// the stored configuration and returns the new one. An error from fn
// leaves the store as it was.
func (s *Store) UpdatePool(ctx context.Context, name string, fn func(cur []byte) ([]byte, error)) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var cur string
	err = tx.QueryRowContext(ctx, `SELECT config FROM pools WHERE name = ?`, name).Scan(&cur)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("pool %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return err
	}
	next, err := fn([]byte(cur))
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE pools SET config = ?, updated_at = ? WHERE name = ?`,
		string(next), time.Now().UTC().Format(time.RFC3339Nano), name); err != nil {
		return err
	}
	return tx.Commit()
}

// SetPoolKey replaces a pool's key.
func (s *Store) SetPoolKey(ctx context.Context, name, key string) error {
	sealed, err := s.seal(key)
	if err != nil {
		return err
	}
	h := HashKey(key)
	return s.affectOne(ctx, name, `UPDATE pools SET key_hash = ?, key_sealed = ?, updated_at = ? WHERE name = ?`,
		h[:], sealed, time.Now().UTC().Format(time.RFC3339Nano), name)
}

// PoolKey unseals a pool's key.
func (s *Store) PoolKey(ctx context.Context, name string) (string, error) {
	var sealed []byte
	err := s.db.QueryRowContext(ctx, `SELECT key_sealed FROM pools WHERE name = ?`, name).Scan(&sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("pool %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return "", err
	}
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return "", errors.New("store: sealed key is corrupt")
	}
	key, err := s.aead.Open(nil, sealed[:n], sealed[n:], nil)
	if err != nil {
		return "", fmt.Errorf("store: cannot unseal the key of pool %q (was master.key replaced?): %w", name, err)
	}
	return string(key), nil
}

// DeletePool removes a pool.
func (s *Store) DeletePool(ctx context.Context, name string) error {
	return s.affectOne(ctx, name, `DELETE FROM pools WHERE name = ?`, name)
}

func (s *Store) affectOne(ctx context.Context, name, query string, args ...any) error {
	res, err := s.db.ExecContext(ctx, query, args...)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("pool %q: %w", name, ErrNotFound)
	}
	return nil
}

// Meta reads a value from the key-value table ("" if absent).
func (s *Store) Meta(ctx context.Context, k string) (string, error) {
	var v string
	err := s.db.QueryRowContext(ctx, `SELECT v FROM meta WHERE k = ?`, k).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return v, err
}

// SetMeta writes a value to the key-value table.
func (s *Store) SetMeta(ctx context.Context, k, v string) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v`, k, v)
	return err
}
