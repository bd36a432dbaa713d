package store

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

func TestAppRegistryCredentials(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.PutAppRegistryCredential(ctx, "a", "r.example:5000", "u1", "app-a-secret"))
	must(s.PutAppRegistryCredential(ctx, "b", "r.example:5000", "u2", "app-b-secret"))
	must(s.PutAppRegistryCredential(ctx, "a", "r.example:5000", "u3", "app-a-secret-2"))
	for _, tc := range []struct{ app, host, user, pass string }{
		{"a", "r.example:5000", "u3", "app-a-secret-2"},
		{"b", "r.example:5000", "u2", "app-b-secret"},
		{"c", "r.example:5000", "", ""},
		{"a", "other.example", "", ""},
	} {
		u, p, ok, err := s.AppRegistryCredential(ctx, tc.app, tc.host)
		if err != nil || u != tc.user || p != tc.pass || ok != (tc.user != "") {
			t.Errorf("%s %s: %q %q %v %v", tc.app, tc.host, u, p, ok, err)
		}
	}
	if _, _, ok, _ := s.RegistryCredential(ctx, "r.example:5000"); ok {
		t.Fatal("an app's login became the server's")
	}
	// Sealed: bound to app and host, never in clear on disk.
	if _, err := s.db.ExecContext(ctx, `UPDATE app_registry_credentials SET app = 'c' WHERE app = 'b'`); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := s.AppRegistryCredential(ctx, "c", "r.example:5000"); err == nil {
		t.Fatal("a password moved to another app unsealed")
	}
	must(s.DeleteAppRegistryCredentials(ctx, "a"))
	if _, _, ok, _ := s.AppRegistryCredential(ctx, "a", "r.example:5000"); ok {
		t.Fatal("deleted login still there")
	}
	s.Close()
	for _, f := range []string{"berth.db", "berth.db-wal"} {
		if raw, _ := os.ReadFile(filepath.Join(dir, f)); bytes.Contains(raw, []byte("app-a-secret")) || bytes.Contains(raw, []byte("app-b-secret")) {
			t.Fatalf("%s holds a password in clear", f)
		}
	}
}
