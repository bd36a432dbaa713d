package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

const appsSchema = `
CREATE TABLE IF NOT EXISTS apps (
	name       TEXT PRIMARY KEY,
	doc        TEXT NOT NULL,
	created_at TEXT NOT NULL,
	updated_at TEXT NOT NULL
);
`

// App is a stored app: its name and the document the app package keeps
// (revisions, traffic, labels) as JSON.
type App struct {
	Name      string
	Doc       []byte
	CreatedAt time.Time
}

// PutApp creates or replaces an app's document.
func (s *Store) PutApp(ctx context.Context, name string, doc []byte) error {
	now := time.Now().UTC().Format(time.RFC3339Nano)
	_, err := s.db.ExecContext(ctx, `INSERT INTO apps (name, doc, created_at, updated_at) VALUES (?, ?, ?, ?)
		ON CONFLICT(name) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at`, name, string(doc), now, now)
	return err
}

// ListApps returns every app, by name.
func (s *Store) ListApps(ctx context.Context) ([]App, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, doc, created_at FROM apps ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []App
	for rows.Next() {
		var a App
		var doc, created string
		if err := rows.Scan(&a.Name, &doc, &created); err != nil {
			return nil, err
		}
		a.Doc = []byte(doc)
		a.CreatedAt, _ = time.Parse(time.RFC3339Nano, created)
		out = append(out, a)
	}
	return out, rows.Err()
}

// DeleteApp removes an app.
func (s *Store) DeleteApp(ctx context.Context, name string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM apps WHERE name = ?`, name)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("app %q: %w", name, ErrNotFound)
	}
	return nil
}

// UpdateApp changes an app's document in one transaction: fn gets the
// stored document (nil if there is none) and returns the new one, which is
// stored and returned. An error from fn leaves the store as it was.
func (s *Store) UpdateApp(ctx context.Context, name string, fn func(cur []byte) ([]byte, error)) ([]byte, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	var cur []byte
	var doc string
	err = tx.QueryRowContext(ctx, `SELECT doc FROM apps WHERE name = ?`, name).Scan(&doc)
	switch {
	case err == nil:
		cur = []byte(doc)
	case !errors.Is(err, sql.ErrNoRows):
		return nil, err
	}
	next, err := fn(cur)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	if _, err := tx.ExecContext(ctx, `INSERT INTO apps (name, doc, created_at, updated_at) VALUES (?, ?, ?, ?)
		ON CONFLICT(name) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at`, name, string(next), now, now); err != nil {
		return nil, err
	}
	return next, tx.Commit()
}
