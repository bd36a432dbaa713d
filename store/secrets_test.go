package store

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestSecrets: values are sealed (the database files never hold them),
// bound to their app and name, listed without values, and deleted with
// their app.
func TestSecrets(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	value := []byte("s3cret-value-4f9a1c")
	for _, x := range []struct{ app, name string }{{"a", "db"}, {"a", "token"}, {"b", "db"}} {
		if err := s.SetSecret(ctx, x.app, x.name, append([]byte(x.app+x.name+"-"), value...)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Secrets(ctx, "a")
	if err != nil || len(got) != 2 || string(got["db"]) != "adb-"+string(value) {
		t.Fatalf("Secrets(a) = %q, %v", got, err)
	}
	list, err := s.ListSecrets(ctx, "a")
	if err != nil || len(list) != 2 || list[0].Name != "db" || list[1].Name != "token" || list[0].UpdatedAt.IsZero() {
		t.Fatalf("ListSecrets(a) = %+v, %v", list, err)
	}
	// A sealed value moved to another app's row does not open.
	if _, err := s.db.ExecContext(ctx, `UPDATE app_secrets SET sealed = (SELECT sealed FROM app_secrets WHERE app = 'a' AND name = 'db') WHERE app = 'b'`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Secrets(ctx, "b"); err == nil || bytes.Contains([]byte(err.Error()), value) {
		t.Fatalf("a value moved to app b opened, or the error shows it: %v", err)
	}
	if err := s.DeleteSecret(ctx, "a", "token"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSecret(ctx, "a", "token"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if err := s.DeleteSecrets(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Secrets(ctx, "a"); len(got) != 0 {
		t.Fatalf("after DeleteSecrets: %q", got)
	}
	if err := s.SetSecret(ctx, "c", "db", value); err != nil {
		t.Fatal(err)
	}
	// The database and its WAL hold no value in clear.
	files, _ := filepath.Glob(filepath.Join(dir, "berth.db*"))
	if len(files) == 0 {
		t.Fatal("no database files")
	}
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if bytes.Contains(b, value) {
			t.Errorf("%s holds a secret in clear", f)
		}
	}
}
