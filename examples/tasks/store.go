package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite" // registers the pure Go "sqlite" driver
)

// schemaSQL is the whole database schema. It is applied on every start (it
// is idempotent) and served verbatim as the tasks://schema resource.
const schemaSQL = `CREATE TABLE IF NOT EXISTS tasks (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,         -- never reused, even after a delete
    title       TEXT    NOT NULL CHECK (length(trim(title)) > 0),
    description TEXT    NOT NULL DEFAULT '',
    due_date    TEXT,                                      -- RFC 3339 date or date-time, NULL if none
    done        INTEGER NOT NULL DEFAULT 0 CHECK (done IN (0, 1)),
    created_at  TEXT    NOT NULL                           -- RFC 3339 UTC timestamp
);
CREATE INDEX IF NOT EXISTS tasks_done_id ON tasks (done, id);
`

// busyTimeout is how long a connection waits for another writer's lock
// before failing with SQLITE_BUSY.
const busyTimeout = 5 * time.Second

// errNotFound is returned for an id that names no task.
var errNotFound = errors.New("not found")

// Task is one task, as stored and as returned by the tools.
type Task struct {
	ID          int64   `json:"id" jsonschema:"Unique numeric id of the task; pass it to completeTask or deleteTask"`
	Title       string  `json:"title" jsonschema:"Short title of the task"`
	Description string  `json:"description" jsonschema:"Longer description; empty if none was given"`
	DueDate     *string `json:"dueDate" jsonschema:"Due date as an RFC 3339 date (YYYY-MM-DD) or date-time; null if the task has no due date"`
	Done        bool    `json:"done" jsonschema:"Whether the task has been completed"`
	CreatedAt   string  `json:"createdAt" jsonschema:"When the task was created, as an RFC 3339 UTC timestamp"`
}

// Store keeps tasks in an SQLite database. It is safe for concurrent use.
type Store struct {
	db *sql.DB
}

// OpenStore opens the database at path, creating its directory, the file and
// the schema if they are missing. The database runs in WAL mode with a busy
// timeout, so several connections (and processes) can share it.
func OpenStore(ctx context.Context, path string) (*Store, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
		return nil, fmt.Errorf("create database directory: %w", err)
	}
	// A "file:" URI, so that SQLite percent-decodes the path; the _pragma
	// parameters are applied by the driver to every new connection.
	dsn := "file:" + (&url.URL{Path: abs}).EscapedPath() +
		fmt.Sprintf("?_pragma=busy_timeout(%d)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)&_txlock=immediate",
			busyTimeout.Milliseconds())
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(4)
	if _, err := db.ExecContext(ctx, schemaSQL); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: apply schema: %w", abs, err)
	}
	return &Store{db: db}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	return s.db.QueryRowContext(ctx, "SELECT 1").Scan(&one)
}

// Pragma returns the value of a PRAGMA, for diagnostics and tests.
func (s *Store) Pragma(ctx context.Context, name string) (string, error) {
	var v string
	err := s.db.QueryRowContext(ctx, "PRAGMA "+name).Scan(&v)
	return v, err
}

const taskColumns = "id, title, description, due_date, done, created_at"

func scanTask(row interface{ Scan(...any) error }) (Task, error) {
	var (
		t   Task
		due sql.NullString
	)
	if err := row.Scan(&t.ID, &t.Title, &t.Description, &due, &t.Done, &t.CreatedAt); err != nil {
		return Task{}, err
	}
	if due.Valid {
		t.DueDate = &due.String
	}
	return t, nil
}

// Create stores a new open task. title must already be validated; dueDate
// is nil for none.
func (s *Store) Create(ctx context.Context, title, description string, dueDate *string) (Task, error) {
	created := time.Now().UTC().Format(time.RFC3339)
	row := s.db.QueryRowContext(ctx,
		"INSERT INTO tasks (title, description, due_date, done, created_at) VALUES (?, ?, ?, 0, ?) RETURNING "+taskColumns,
		title, description, dueDate, created)
	return scanTask(row)
}

// Status selects tasks by completion.
type Status string

// The statuses listTasks accepts.
const (
	StatusOpen Status = "open"
	StatusDone Status = "done"
	StatusAll  Status = "all"
)

// List returns the tasks with the given status, oldest first.
func (s *Store) List(ctx context.Context, status Status) ([]Task, error) {
	query := "SELECT " + taskColumns + " FROM tasks"
	switch status {
	case StatusOpen:
		query += " WHERE done = 0"
	case StatusDone:
		query += " WHERE done = 1"
	case StatusAll:
	default:
		return nil, fmt.Errorf("unknown status %q", status)
	}
	rows, err := s.db.QueryContext(ctx, query+" ORDER BY id")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	tasks := []Task{} // never nil: an empty list is [] in JSON
	for rows.Next() {
		t, err := scanTask(rows)
		if err != nil {
			return nil, err
		}
		tasks = append(tasks, t)
	}
	return tasks, rows.Err()
}

// Complete marks a task done and returns it. Completing a done task is a
// no-op. It returns errNotFound for an unknown id.
func (s *Store) Complete(ctx context.Context, id int64) (Task, error) {
	row := s.db.QueryRowContext(ctx, "UPDATE tasks SET done = 1 WHERE id = ? RETURNING "+taskColumns, id)
	t, err := scanTask(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Task{}, errNotFound
	}
	return t, err
}

// Delete removes a task. It returns errNotFound for an unknown id.
func (s *Store) Delete(ctx context.Context, id int64) error {
	res, err := s.db.ExecContext(ctx, "DELETE FROM tasks WHERE id = ?", id)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return errNotFound
	}
	return nil
}
