package main

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func TestOpenStore(t *testing.T) {
	ctx := testContext(t)
	// Missing directories are created; odd characters in the path survive
	// the file: URI.
	path := filepath.Join(t.TempDir(), "a b", "c?d#e%f", "tasks.db")
	s, err := OpenStore(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database file: %v", err)
	}
	for pragma, want := range map[string]string{
		"journal_mode": "wal",
		"busy_timeout": strconv.Itoa(int(busyTimeout.Milliseconds())),
		"foreign_keys": "1",
	} {
		if got, err := s.Pragma(ctx, pragma); err != nil || got != want {
			t.Errorf("PRAGMA %s = %q, %v; want %q", pragma, got, err, want)
		}
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	task, err := s.Create(ctx, "persist me", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.List(ctx, "bogus"); err == nil {
		t.Error("List(bogus) succeeded")
	}
	if _, err := s.Complete(ctx, 42); !errors.Is(err, errNotFound) {
		t.Errorf("Complete(42) = %v, want errNotFound", err)
	}
	if err := s.Delete(ctx, 42); !errors.Is(err, errNotFound) {
		t.Errorf("Delete(42) = %v, want errNotFound", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopening keeps the data (and applying the schema again is harmless).
	s, err = OpenStore(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tasks, err := s.List(ctx, StatusAll)
	if err != nil || len(tasks) != 1 || tasks[0] != task {
		t.Fatalf("after reopen: %+v, %v; want [%+v]", tasks, err, task)
	}
}

func TestOpenStoreErrors(t *testing.T) {
	ctx := testContext(t)
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenStore(ctx, filepath.Join(file, "tasks.db")); err == nil {
		t.Error("OpenStore under a regular file succeeded")
	}
	garbage := filepath.Join(t.TempDir(), "garbage.db")
	if err := os.WriteFile(garbage, []byte("this is not an SQLite database, not at all, no"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenStore(ctx, garbage); err == nil {
		t.Error("OpenStore on a non-database file succeeded")
	}
}
