package store

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestRegistryCredentials(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, _, ok, err := s.RegistryCredential(ctx, "r.example:5000"); ok || err != nil {
		t.Fatalf("empty store: %v %v", ok, err)
	}
	if err := s.PutRegistryCredential(ctx, "r.example:5000", "alice", "pa55-unique-word"); err != nil {
		t.Fatal(err)
	}
	if err := s.PutRegistryCredential(ctx, "r.example:5000", "bob", "second-unique-word"); err != nil {
		t.Fatal(err)
	}
	u, p, ok, err := s.RegistryCredential(ctx, "r.example:5000")
	if err != nil || !ok || u != "bob" || p != "second-unique-word" {
		t.Fatalf("got %q %q %v %v", u, p, ok, err)
	}
	list, err := s.ListRegistries(ctx)
	if err != nil || len(list) != 1 || list[0].Host != "r.example:5000" || list[0].Username != "bob" {
		t.Fatalf("list %+v %v", list, err)
	}
	// A sealed password moved to another host does not open.
	if _, err := s.db.Exec(`INSERT INTO registry_credentials SELECT 'evil', username, password_sealed, updated_at FROM registry_credentials`); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := s.RegistryCredential(ctx, "evil"); err == nil {
		t.Fatal("a password sealed for one host opened for another")
	}
	s.Close()
	for _, f := range []string{"berth.db", "berth.db-wal"} {
		b, _ := os.ReadFile(filepath.Join(dir, f))
		if bytes.Contains(b, []byte("second-unique-word")) || bytes.Contains(b, []byte("pa55-unique-word")) {
			t.Fatalf("%s holds a password in clear", f)
		}
	}
	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, p, _, _ := s.RegistryCredential(ctx, "r.example:5000"); p != "second-unique-word" {
		t.Fatalf("after reopening: %q", p)
	}
	if err := s.DeleteRegistryCredential(ctx, "r.example:5000"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRegistryCredential(ctx, "r.example:5000"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}
