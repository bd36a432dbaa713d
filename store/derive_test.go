package store

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestDeriveKey: two servers with the same master key derive the same key
// for a purpose; another purpose, or another master key, gives another.
func TestDeriveKey(t *testing.T) {
	open := func(dir string) *Store {
		s, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, other := t.TempDir(), t.TempDir()
	sa, sother := open(a), open(other)
	shared := t.TempDir()
	key, err := os.ReadFile(filepath.Join(a, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(shared, "master.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	sb := open(shared)
	k := sa.DeriveKey("berth mcp session ids v1")
	if len(k) != 32 || !bytes.Equal(k, sb.DeriveKey("berth mcp session ids v1")) {
		t.Fatal("two stores with one master key derive different keys")
	}
	if bytes.Equal(k, sa.DeriveKey("another purpose")) || bytes.Equal(k, sother.DeriveKey("berth mcp session ids v1")) || bytes.Equal(k, key) {
		t.Fatal("a derived key repeats another purpose's, another master key's, or the master key")
	}
}
