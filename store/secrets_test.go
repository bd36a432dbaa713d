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

// TestPoolSecrets: a pool's secrets are apart from an app's of the same
// name, read one by one, and deleted with the pool.
func TestPoolSecrets(t *testing.T) {
	ctx := context.Background()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.SetSecret(ctx, "x", "tok", []byte("app-value")); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPoolSecret(ctx, "x", "tok", []byte("pool-value")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		get  func(context.Context, string, string) ([]byte, error)
		want string
	}{{s.Secret, "app-value"}, {s.PoolSecret, "pool-value"}} {
		if v, err := c.get(ctx, "x", "tok"); err != nil || string(v) != c.want {
			t.Fatalf("got %q, %v; want %q", v, err, c.want)
		}
	}
	if list, err := s.ListSecrets(ctx, "x"); err != nil || len(list) != 1 {
		t.Fatalf("app list = %+v, %v", list, err)
	}
	if _, err := s.PoolSecret(ctx, "x", "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing pool secret: %v", err)
	}
	if err := s.DeletePoolSecrets(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if list, err := s.ListPoolSecrets(ctx, "x"); err != nil || len(list) != 0 {
		t.Fatalf("after delete: %+v, %v", list, err)
	}
	if v, err := s.Secret(ctx, "x", "tok"); err != nil || string(v) != "app-value" {
		t.Fatalf("the app's secret went with the pool's: %q, %v", v, err)
	}
	if err := s.DeletePoolSecret(ctx, "x", "tok"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete missing: %v", err)
	}
}
