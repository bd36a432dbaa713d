package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/archive"
	"github.com/berth-dev/berth/source"
	"github.com/berth-dev/berth/store"
)

// TestSourcesAtStart: at start, a revision stored with a host dir gets
// an archive of its copied files as its source (the host path is not
// read), sources no revision names are collected, and an app's delete
// frees its sources.
func TestSourcesAtStart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown)")
	}
	ctx := context.Background()
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srcs, err := source.New(source.Options{Dir: t.TempDir(), Grace: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	put := func(body string) string {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "f"), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := archive.Pack(ctx, &buf, dir, archive.PackOptions{}); err != nil {
			t.Fatal(err)
		}
		info, _, err := srcs.Put(ctx, &buf, "")
		if err != nil {
			t.Fatal(err)
		}
		return info.Digest
	}
	used, unused := put("used"), put("unused")
	stateDir := t.TempDir()
	// The old revision's files, as an older Berth copied them.
	oldFiles := filepath.Join(stateDir, "keep", "revisions", "keep--r2")
	if err := os.MkdirAll(oldFiles, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(oldFiles, "old.txt"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	doc := Doc{Name: "keep", Revisions: []Revision{
		{Name: "keep--r1", Config: Config{Command: "x", Source: &Source{Archive: used}}},
		{Name: "keep--r2", Config: Config{Command: "x", Dir: "/nonexistent/old-host-dir"}},
	}}
	raw, _ := json.Marshal(doc)
	if err := st.PutApp(ctx, "keep", raw); err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-2 * time.Hour)
	for _, d := range []string{used, unused} {
		touch(t, srcs, d, past)
	}

	m, err := NewManager(ctx, Options{Store: st, StateDir: stateDir, Sources: srcs, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := srcs.Stat(unused); !errors.Is(err, source.ErrNotFound) {
		t.Errorf("the unused source: %v, want it collected", err)
	}
	if _, err := srcs.Stat(used); err != nil {
		t.Errorf("the source a revision names: %v, want it kept", err)
	}
	a, err := m.Get("keep")
	if err != nil {
		t.Fatal(err)
	}
	migrated := a.Doc().Revisions[1].Config
	if migrated.Dir != "" || migrated.Source == nil {
		t.Fatalf("old revision after start: %+v, want a source and no dir", migrated)
	}
	// The migrated archive holds the copied files.
	f, err := srcs.Open(migrated.Source.Archive)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	_, err = archive.Unpack(ctx, f, out, archive.Owner{}, archive.Limits{})
	f.Close()
	if b, rerr := os.ReadFile(filepath.Join(out, "old.txt")); err != nil || string(b) != "old" {
		t.Fatalf("migrated archive: %q %v %v", b, err, rerr)
	}
	stored, _ := st.ListApps(ctx)
	if !bytes.Contains(stored[0].Doc, []byte(migrated.Source.Archive)) || bytes.Contains(stored[0].Doc, []byte("old-host-dir")) {
		t.Errorf("stored doc not migrated: %s", stored[0].Doc)
	}

	// Deleted, the app frees its sources (past their grace period).
	touch(t, srcs, used, past)
	touch(t, srcs, migrated.Source.Archive, past)
	if err := m.Delete(ctx, "keep"); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{used, migrated.Source.Archive} {
		if _, err := srcs.Stat(d); !errors.Is(err, source.ErrNotFound) {
			t.Errorf("source %s after the app's delete: %v, want it collected", d, err)
		}
	}
}

// touch sets a stored archive's time (Stat would renew it).
func touch(t *testing.T, s *source.Store, digest string, when time.Time) {
	t.Helper()
	f, err := s.Open(digest)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Chtimes(f.Name(), when, when); err != nil {
		t.Fatal(err)
	}
}
